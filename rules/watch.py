"""Hot reload of a config file with watchfiles: valid changes apply, invalid ones are refused.

:class:`FileWatcher` holds the last good value loaded from one file.  Its
:meth:`~FileWatcher.run` task re-reads the file on every change that concerns it:

* unchanged content (an equal value, e.g. after a ``touch``): nothing happens;
* valid: it becomes the current value and ``on_reload`` is called;
* invalid or unreadable: the current value stays in force and ``on_error`` is called with
  the error, whose message names the file (and, for the rules, the line and field).

What is watched (:func:`watch_targets`): the file itself, not its folder, so writes to other
files there (a store's WAL beside the mapping file) cost nothing; plus the folder of every
symlink on the way to it, which is how a Kubernetes ConfigMap volume's update is seen
(``rules.toml -> ..data/rules.toml``, and ``..data`` is swapped by renaming a new symlink
over it).  A watch on a file follows its inode, which an editor's rename-over save or a
delete replaces: after every change the targets are resolved again and, if the inode or a
symlink changed, the watch is moved before the file is re-read, so no later change is
missed.  A missing file is watched from its nearest existing folder (for the next name on
its path only) until it appears.  Every few seconds the targets are resolved again anyway,
in case a replaced folder on the way gave no event.

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
import os
import platform
import stat
import threading
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from watchfiles._rust_notify import RustNotify

from rules.file import LoadedRules, RulesFileError, ensure_rules_file, load_rules

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=Exception)

OnReload = Callable[[LoadedRules], Awaitable[None] | None]
"""Called with the new rules after a valid change (sync or async)."""
OnError = Callable[[RulesFileError], Awaitable[None] | None]
"""Called when a change was refused; the last good rules stay (sync or async)."""


RESOLVE_EVERY_MS = 5_000
"""How often the targets are resolved again without an event (a replaced folder on the way)."""
_MAX_SYMLINKS = 40


@dataclass(frozen=True)
class WatchTargets:
    """What to watch for one file, as resolved at one moment."""

    paths: tuple[str, ...]
    """The paths the OS watch is put on: the file (its real path) and the folders holding
    the symlinks on the way to it; or, while it is missing, its nearest existing folder."""
    relevant: frozenset[str]
    """The changed paths that concern the file: the file, the symlinks on the way to it, or
    (while it is missing) the next name on its path inside the watched folder."""
    identity: tuple[tuple[str, int, int], ...]
    """Each watched path with its device and inode: when this changes, the watch is moved."""
    stamp: tuple[int, int] | None = None
    """The file's modification time (ns) and size, None while it is missing: a change seen
    when resolving again re-reads the file even without an event (polling notices an edit
    only if it lands in another second than the previous one)."""


def watch_targets(path: Path) -> WatchTargets:
    """Resolve ``path`` one name at a time, noting the folder of every symlink followed.

    A file that exists is watched itself (a watch on a folder would wake on every write to
    any file in it).  A symlink's folder is watched for that symlink's name, because a swap
    of the link (``os.replace`` of a new one over it) happens in the folder, not in the
    file.  A missing file is watched from the nearest folder that exists, for the next name
    on its path.  Blocking (a few ``lstat`` calls).
    """
    absolute = Path(os.path.abspath(path))
    current = Path(absolute.anchor)  # resolved so far: a real folder, no symlink in it
    pending = list(absolute.parts[1:])
    watched: dict[str, None] = {}  # an ordered set of the paths to watch
    relevant: set[str] = set()
    hops = 0
    missing: Path | None = None
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent
            continue
        candidate = current / part
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
            target = Path(os.readlink(candidate)) if is_link else None
        except OSError:  # missing (or unreadable): wait for this name in the folder above
            missing = candidate
            break
        if target is None:
            current = candidate
            continue
        watched[str(current)] = None  # a swap of this link happens in its folder
        relevant.add(str(candidate))
        hops += 1
        if hops > _MAX_SYMLINKS:  # a loop: nothing to resolve, the link's folder is watched
            missing = candidate
            break
        if target.is_absolute():
            current = Path(target.anchor)
            pending[:0] = target.parts[1:]
        else:
            pending[:0] = target.parts
    if missing is not None:
        watched[str(missing.parent)] = None
        relevant.add(str(missing))
    else:
        watched[str(current)] = None
        relevant.add(str(current))
    identity = []
    stamp = None
    for one in watched:
        try:
            info = os.stat(one)
        except OSError:
            identity.append((one, -1, -1))
            continue
        identity.append((one, info.st_dev, info.st_ino))
        if missing is None and one == str(current):
            stamp = (info.st_mtime_ns, info.st_size)
    return WatchTargets(tuple(watched), frozenset(relevant), tuple(identity), stamp)


def _force_polling(asked: bool | None) -> bool:
    """Whether to poll: as asked, else as watchfiles decides (its env var, then WSL's /mnt)."""
    if asked is not None:
        return asked
    env = os.getenv("WATCHFILES_FORCE_POLLING")
    if env:
        return env.lower() not in {"false", "disable", "disabled"}
    uname = platform.uname()  # WSL 2: no notifications across /mnt
    return "microsoft-standard" in uname.release.lower() and uname.system.lower() == "linux"


def _poll_delay_ms() -> int:
    env = os.getenv("WATCHFILES_POLL_DELAY_MS")
    return int(env) if env and env.isdecimal() else 300


class _Stop:
    """What the watch thread checks each step: the caller's stop event, or a cancellation."""

    def __init__(self, outer: asyncio.Event | None) -> None:
        self.outer = outer
        self.cancelled = threading.Event()

    def is_set(self) -> bool:
        return self.cancelled.is_set() or (self.outer is not None and self.outer.is_set())


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
        """Set once the file is being watched (changes from then on are seen)."""

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
        # A value the caller loaded (``current``) is checked against the file once the
        # watch is on: an edit saved between that load and the watch is not missed.
        given = self.current is not None or self.error is not None
        if not given:
            await asyncio.to_thread(self.load_initial)
            if self.current is not None:
                await _call(self.on_reload, self.current)
            elif self.error is not None:
                await _call(self.on_error, self.error)
        stop = _Stop(stop_event)
        notify: RustNotify | None = None
        targets: WatchTargets | None = None
        started = False  # a watch was on once (a move after that re-reads the file)
        changed = given  # a change concerning the file came since the last re-read
        try:
            while not stop.is_set():
                fresh = await asyncio.to_thread(watch_targets, self.path)
                if notify is None or targets is None or fresh.identity != targets.identity:
                    # After a rename, a delete or a swapped link the watch is moved first
                    # and the file re-read after, so nothing in between is missed.
                    if notify is not None:
                        notify.close()
                        notify = None
                    changed = changed or started
                    try:
                        notify = self._notify(fresh)
                    except FileNotFoundError:  # gone since resolved: resolve again
                        await asyncio.sleep(0.05)
                        continue
                    targets = fresh
                    started = True
                    again = await asyncio.to_thread(watch_targets, self.path)
                    if again.identity != fresh.identity:
                        continue  # changed while the watch was put on: move it again
                    self.watching.set()
                elif fresh.stamp != targets.stamp:
                    changed = True  # written (seen by an event or, polling, only now)
                    targets = fresh
                if changed:
                    changed = False
                    await self._check_logged()
                try:
                    changes = await asyncio.to_thread(
                        notify.watch, self.debounce_ms, 50, RESOLVE_EVERY_MS, stop
                    )
                except asyncio.CancelledError:
                    stop.cancelled.set()  # the thread returns at its next step
                    raise
                except RuntimeError as exc:  # watchfiles' internal error: watch afresh
                    log.warning("%s watch failed, watching again: %s", self.what, exc)
                    notify.close()
                    notify = None
                    changed = True
                    await asyncio.sleep(0.1)
                    continue
                if not isinstance(changes, str):  # not "timeout" (resolve again) or "stop"
                    changed = any(path in targets.relevant for _, path in changes)
        finally:
            if notify is not None:
                notify.close()

    def _notify(self, targets: WatchTargets) -> RustNotify:
        """Start the OS watch on ``targets`` (registered when this returns)."""
        return RustNotify(
            list(targets.paths),
            False,  # debug
            _force_polling(self.force_polling),
            _poll_delay_ms(),
            False,  # recursive
            False,  # ignore_permission_denied
        )

    async def _check_logged(self) -> None:
        """:meth:`check`, logging (not raising) a callback's failure."""
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
