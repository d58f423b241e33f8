"""Hot reload of the rules file with watchfiles: valid changes apply, invalid ones are refused.

:class:`RulesWatcher` holds the last good :class:`~rules.file.LoadedRules` of one file.
Its :meth:`~RulesWatcher.run` task watches the file's folder (editors often save by
writing a new file and renaming it over the old one, which a watch on the file itself
would miss), and on every change re-reads the file:

* unchanged content (same hash, e.g. a ``touch``): nothing happens;
* valid: it becomes the current rules and ``on_reload`` is called;
* invalid or unreadable: the current rules stay in force and ``on_error`` is called with
  the :class:`~rules.file.RulesFileError`, whose problems name the line and field.

Every process (``serve``, the demo, each console) runs one, so a save from any console or
editor takes effect everywhere within about a second.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path

from watchfiles import Change, awatch

from rules.file import LoadedRules, RulesFileError, ensure_rules_file, load_rules

log = logging.getLogger(__name__)

OnReload = Callable[[LoadedRules], Awaitable[None] | None]
"""Called with the new rules after a valid change (sync or async)."""
OnError = Callable[[RulesFileError], Awaitable[None] | None]
"""Called when a change was refused; the last good rules stay (sync or async)."""


class RulesWatcher:
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
        known_nodes: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """Watch ``path``.

        Args:
            path: The rules file.
            on_reload: Called after a valid change with the new rules.
            on_error: Called after a refused change (invalid, unreadable or deleted file).
            debounce_ms: Changes within this many milliseconds are taken as one.
            create: Write the shipped defaults first if the file does not exist.
            force_polling: Poll instead of OS notifications (network file systems).
            known_nodes: The node ids in the store, read at each load: a ``[fulfilment]``
                section naming another node is refused (None: node ids unchecked).
        """
        self.path = Path(path).expanduser().absolute()
        self.on_reload = on_reload
        self.on_error = on_error
        self.debounce_ms = debounce_ms
        self.create = create
        self.force_polling = force_polling
        self.known_nodes = known_nodes
        self.current: LoadedRules | None = None
        """The rules in force (None until a valid file was read)."""
        self.error: RulesFileError | None = None
        """Why the latest change was refused (None after a valid load)."""
        self.reloads = 0
        """Valid changes applied since the start (the first load included)."""
        self.watching = asyncio.Event()
        """Set once the folder is being watched (changes from then on are seen)."""

    def load_initial(self) -> LoadedRules | None:
        """Read the file once (writing the defaults first when ``create``); blocking.

        Returns the rules, or None if the file is invalid (then :attr:`error` says why).
        """
        if self.create:
            ensure_rules_file(self.path)
        try:
            self.current = self._load()
        except RulesFileError as exc:
            self.error = exc
            log.error("rules file refused, no rules in force: %s", exc)
            return None
        self.error = None
        self.reloads += 1
        return self.current

    def _load(self) -> LoadedRules:
        nodes = self.known_nodes() if self.known_nodes is not None else None
        return load_rules(self.path, known_nodes=nodes)

    async def check(self) -> bool:
        """Re-read the file now; True if new rules were applied."""
        try:
            loaded = await asyncio.to_thread(self._load)
        except RulesFileError as exc:
            if self.error is not None and str(self.error) == str(exc):
                return False  # the same mistake reported again: say it once
            self.error = exc
            kept = "keeping the last good rules" if self.current else "no rules in force"
            log.error("rules file change refused (%s): %s", kept, exc)
            await _call(self.on_error, exc)
            return False
        if self.current is not None and loaded.digest == self.current.digest:
            if self.error is not None:  # back to the rules in force: clear the reported error
                self.error = None
                await _call(self.on_reload, self.current)
            return False
        self.current = loaded
        self.error = None
        self.reloads += 1
        log.info("rules reloaded from %s (%d alert rules)", self.path, len(loaded.rules.alert))
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
                log.exception("rules reload callback failed")

    def start(self, stop_event: asyncio.Event | None = None) -> asyncio.Task[None]:
        """Run :meth:`run` as a task (keep a reference; cancel it to stop)."""
        return asyncio.create_task(self.run(stop_event), name=f"rules-watch:{self.path.name}")


async def _call(callback: Callable[..., Awaitable[None] | None] | None, arg: object) -> None:
    if callback is None:
        return
    result = callback(arg)
    if inspect.isawaitable(result):
        await result
