"""Hot reload of a config file with watchfiles: valid changes apply, invalid ones are refused.

:class:`FileWatcher` holds the last good value loaded from one file.  Its
:meth:`~FileWatcher.run` task watches the file's folder (editors often save by writing a
new file and renaming it over the old one; a watch on the file itself follows the old
inode and misses the second and later saves), and on every change re-reads the file:

* unchanged content (an equal value, e.g. after a ``touch``): nothing happens;
* valid: it becomes the current value and ``on_reload`` is called;
* invalid or unreadable: the current value stays in force and ``on_error`` is called with
  the error, whose message names the file (and, for the rules, the line and field).

:class:`RulesWatcher` is the one for the rules file; every process (``serve``, the demo,
each console) runs one, so a save from any console or editor takes effect everywhere
within about a second.  The id mapping of ``serve`` uses the same class
(:func:`feeds.webhooks.mapping.mapping_watcher`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import operator
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Generic, TypeVar

from watchfiles import Change, awatch

from rules.file import LoadedRules, RulesFileError, ensure_rules_file, load_rules

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

OnReload = Callable[[LoadedRules], Awaitable[None] | None]
"""Called with the new rules after a valid change (sync or async)."""
OnError = Callable[[RulesFileError], Awaitable[None] | None]
"""Called when a change was refused; the last good rules stay (sync or async)."""


class FileWatcher(Generic[T, E]):
    """The last good value loaded from one file, kept up to date while :meth:`run` runs."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        error: type[E],
        *,
        what: str = "file",
        on_reload: Callable[[T], Awaitable[None] | None] | None = None,
        on_error: Callable[[E], Awaitable[None] | None] | None = None,
        same: Callable[[T, T], bool] = operator.eq,
        current: T | None = None,
        debounce_ms: int = 150,
        force_polling: bool | None = None,
    ) -> None:
        """Watch ``path``.

        Args:
            path: The file.
            load: Reads and validates the file (blocking; run in a thread).
            error: What ``load`` raises for a refused file; other errors propagate.
            what: Names the file in the log (``"rules file"``, ``"mapping file"``).
            on_reload: Called after a valid change with the new value.
            on_error: Called after a refused change (invalid, unreadable or deleted file).
            same: Whether two loaded values are the same (then nothing is reloaded).
            current: A value already loaded (then :meth:`run` does not load it again).
            debounce_ms: Changes within this many milliseconds are taken as one.
            force_polling: Poll instead of OS notifications (network file systems).
        """
        self.path = Path(path).expanduser().absolute()
        self.load = load
        self.error_type = error
        self.what = what
        self.on_reload = on_reload
        self.on_error = on_error
        self.same = same
        self.debounce_ms = debounce_ms
        self.force_polling = force_polling
        self.current: T | None = current
        """The value in force (None until a valid file was read)."""
        self.error: E | None = None
        """Why the latest change was refused (None after a valid load)."""
        self.reloads = 0 if current is None else 1
        """Valid changes applied since the start (the first load included)."""
        self.watching = asyncio.Event()
        """Set once the folder is being watched (changes from then on are seen)."""

    def load_initial(self) -> T | None:
        """Read the file once; blocking.

        Returns the value, or None if the file is refused (then :attr:`error` says why).
        """
        try:
            self.current = self.load(self.path)
        except self.error_type as exc:
            self.error = exc
            log.error("%s refused, nothing in force: %s", self.what, exc)
            return None
        self.error = None
        self.reloads += 1
        return self.current

    def _reloaded(self, value: T) -> str:
        """The log line of a valid change."""
        return f"{self.what} reloaded from {self.path}"

    async def check(self) -> bool:
        """Re-read the file now; True if a new value was applied."""
        try:
            loaded = await asyncio.to_thread(self.load, self.path)
        except self.error_type as exc:
            if self.error is not None and str(self.error) == str(exc):
                return False  # the same mistake reported again: say it once
            self.error = exc
            kept = "keeping the last good one" if self.current is not None else "none in force"
            log.error("%s change refused (%s): %s", self.what, kept, exc)
            await _call(self.on_error, exc)
            return False
        if self.current is not None and self.same(loaded, self.current):
            if self.error is not None:  # back to the value in force: clear the reported error
                self.error = None
                await _call(self.on_reload, self.current)
            return False
        self.current = loaded
        self.error = None
        self.reloads += 1
        log.info("%s", self._reloaded(loaded))
        await _call(self.on_reload, loaded)
        return True

    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Watch until cancelled (or ``stop_event`` is set), reloading on every change."""
        if self.current is None and self.error is None:
            await asyncio.to_thread(self.load_initial)
            if self.current is not None:
                await _call(self.on_reload, self.current)
            elif self.error is not None:
                await _call(self.on_error, self.error)
        name = self.path.name

        def only_this_file(change: Change, changed: str) -> bool:
            return Path(changed).name == name

        changes = awatch(
            self.path.parent,
            watch_filter=only_this_file,
            debounce=self.debounce_ms,
            step=50,
            stop_event=stop_event,
            force_polling=self.force_polling,
            recursive=False,
        )
        # awatch registers the OS watch synchronously on its first step, which runs right
        # after this without yielding to other tasks: anyone awaiting `watching` then knows
        # that a write from now on is seen.
        self.watching.set()
        async for _batch in changes:
            try:
                await self.check()
            except Exception:  # a callback bug must not end the watch
                log.exception("%s reload callback failed", self.what)

    def start(self, stop_event: asyncio.Event | None = None) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (keep a reference; cancel it to stop)."""
        return asyncio.create_task(self.run(stop_event), name=f"watch:{self.path.name}")


def _same_rules(a: LoadedRules, b: LoadedRules) -> bool:
    return a.digest == b.digest


class RulesWatcher(FileWatcher[LoadedRules, RulesFileError]):
    """The last good rules of one file, kept up to date while :meth:`run` is running."""

    def __init__(
        self,
        path: Path,
        *,
        on_reload: OnReload | None = None,
        on_error: OnError | None = None,
        debounce_ms: int = 150,
        create: bool = False,
        force_polling: bool | None = None,
        known_nodes: Callable[[], Collection[str] | None] | None = None,
    ) -> None:
        """Watch ``path``.

        Args:
            path: The rules file.
            on_reload: Called after a valid change with the new rules.
            on_error: Called after a refused change (invalid, unreadable or deleted file).
            debounce_ms: Changes within this many milliseconds are taken as one.
            create: Write the shipped defaults first if the file does not exist.
            force_polling: Poll instead of OS notifications (network file systems).
            known_nodes: The node ids in the store, read at each load: a ``[fulfillment]``
                section naming another node is refused (None, or a call answering None:
                node ids unchecked).
        """
        self.known_nodes = known_nodes

        def load(file: Path) -> LoadedRules:
            nodes = known_nodes() if known_nodes is not None else None
            return load_rules(file, known_nodes=nodes)

        super().__init__(
            path,
            load,
            RulesFileError,
            what="rules file",
            on_reload=on_reload,
            on_error=on_error,
            same=_same_rules,
            debounce_ms=debounce_ms,
            force_polling=force_polling,
        )
        self.create = create

    def load_initial(self) -> LoadedRules | None:
        """Read the file once (writing the defaults first when ``create``); blocking.

        Returns the rules, or None if the file is invalid (then :attr:`error` says why).
        """
        if self.create:
            ensure_rules_file(self.path)
        return super().load_initial()

    def _reloaded(self, value: LoadedRules) -> str:
        return f"rules reloaded from {self.path} ({len(value.rules.alert)} alert rules)"


async def _call(callback: Callable[..., Awaitable[None] | None] | None, arg: object) -> None:
    if callback is None:
        return
    result = callback(arg)
    if inspect.isawaitable(result):
        await result
