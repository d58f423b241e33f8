"""Demo mode: the fixture day's history, loaded once through the real pipeline and cached.

The fixture folder holds four weeks of history before the replayed day.  Loading it
through the writer takes tens of seconds, so the first demo builds a store of that
history in the user's cache folder (keyed by the fixture files and the schema) and every
demo after copies it and replays only the day itself on the replay clock.

A build writes to ``demo-KEY.PID.tmp`` and renames it into place when complete, under an
exclusive lock on ``demo-KEY.lock``: a second demo started meanwhile waits for the first
and then copies its store.  A build can be cancelled (the console's ``q``/Ctrl-C during the
load) at any chunk; it then removes its temporary store.  Temporary stores of builds that
died (their process is gone) are removed by the next build.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from store.schema import MIGRATIONS

if TYPE_CHECKING:
    from feeds.runtime.ingest import Progress

# The writer, the feeds and the event models are imported where a build runs: a demo on a
# terminal finds its cached store, or puts its loading screen up, before loading them.

HISTORY_FEED = "replay-history"

FEED_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")
"""The event files' suffixes, as :data:`feeds.jsonl.SUFFIXES` (a test checks they agree)."""


def load_manifest(folder: Path) -> dict[str, object]:
    """The fixture folder's ``manifest.json``, as :func:`feeds.replay.load_manifest` reads it.

    Here without the feeds' imports (the event models): the demo reads it before its first
    screen.
    """
    path = folder / "manifest.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def feed_files(fixtures: Path) -> list[Path]:
    """The event files of a fixture folder (or the one file), as :func:`feeds.jsonl.feed_files`."""
    if fixtures.is_dir():
        return sorted(p for p in fixtures.iterdir() if p.name.endswith(FEED_SUFFIXES))
    if not fixtures.exists():
        raise FileNotFoundError(f"{fixtures}: no such file or folder")
    return [fixtures]


def cache_dir() -> Path:
    """Where built demo stores are kept (``$XDG_CACHE_HOME/omniops`` or ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "omniops"


def history_key(fixtures: Path, start: datetime) -> str:
    """A digest of everything the cached history depends on."""
    digest = hashlib.sha256()
    for path in feed_files(fixtures):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update("".join(MIGRATIONS).encode())
    digest.update(start.isoformat().encode())
    return digest.hexdigest()[:16]


async def load_history(
    fixtures: Path,
    db: Path,
    start: datetime,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Write every fixture event stamped before ``start`` into the store at ``db``.

    Through the writer's bulk path, in time order, parsed in a worker thread while the
    writer commits.  Setting ``stop`` ends the load within a batch (the store is then
    incomplete).
    """
    from feeds.replay import ReplayFeed
    from feeds.runtime.ingest import write_stream
    from feeds.runtime.routing import router_hook
    from store.clock import ReplayClock
    from store.writer import StoreWriter

    feed = ReplayFeed([fixtures], ReplayClock(start), name=HISTORY_FEED, until=start)
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        await write_stream(writer, feed.backfill(), progress=progress, stop=stop)
    return feed.health.events


class BuildCancelled(Exception):
    """The history build was cancelled before it finished (nothing was kept)."""


@dataclass
class BuildProgress:
    """The live state of a history build, read by whoever shows it (another thread).

    Attributes:
        loaded: Events committed so far.
        total: The estimated number of history events, or ``None`` when unknown.
        started: ``time.monotonic()`` when the build (or the wait for another) began.
        waiting: True while another process holds the build lock.
        building: True once this process is writing the history.
    """

    loaded: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    waiting: bool = False
    building: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def rate(self) -> float:
        """Events a second since the build began."""
        return self.loaded / max(time.monotonic() - self.started, 1e-9)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate, or ``None`` when unknown."""
        if self.total is None or self.loaded == 0:
            return None
        return max(self.total - self.loaded, 0) / max(self.rate, 1e-9)

    def update(self, loaded: int) -> None:
        """Record ``loaded`` events; raise :class:`BuildCancelled` when cancelled."""
        self.loaded = loaded
        if self.total is not None and loaded > self.total:
            self.total = loaded
        if self.cancel.is_set():
            raise BuildCancelled("history build cancelled")


def history_estimate(fixtures: Path, start: datetime) -> int | None:
    """About how many fixture events come before ``start`` (from the manifest), or ``None``.

    The manifest's per-file counts, scaled by the share of the covered time that lies
    before ``start``: good enough for a progress bar's ETA.
    """
    try:
        manifest = load_manifest(fixtures)
        counts = manifest.get("counts")
        first = datetime.fromisoformat(str(manifest["history_start_utc"]))
        last = datetime.fromisoformat(str(manifest["day_end_utc"]))
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return None
    if not isinstance(counts, dict) or last <= first:
        return None
    share = min(max((start - first) / (last - first), 0.0), 1.0)
    return int(sum(int(n) for n in counts.values()) * share) or None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_TMP = re.compile(r"^demo-(?P<key>[0-9a-f]+)\.(?P<pid>\d+)\.tmp(-wal|-shm|-journal)?$")


def clean_leftovers(folder: Path, *, key: str | None = None) -> list[Path]:
    """Remove temporary stores of builds that cannot finish any more; return what went.

    A temporary store of ``key`` goes whatever its process (the caller holds that key's
    lock, so no build of it is running); of other keys, only when its process is gone.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TMP.match(path.name)
        if match is None:
            continue
        if match["key"] == key or not _pid_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _remove_store(path: Path) -> None:
    for part in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        part.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock(lock_path: Path, progress: BuildProgress) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``; wait (cancellably) while another holds it."""
    with lock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                progress.waiting = True
                if progress.cancel.wait(0.1):
                    raise BuildCancelled("history build cancelled") from None
        progress.waiting = False
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def cached_store(fixtures: Path, start: datetime, cache: Path | None = None) -> Path:
    """Where the built history of ``fixtures`` before ``start`` is (or will be) cached."""
    return (cache or cache_dir()) / f"demo-{history_key(fixtures, start)}.db"


def build_history(
    fixtures: Path,
    start: datetime,
    *,
    cache: Path | None = None,
    progress: BuildProgress | None = None,
    say: Callable[[str], None] | None = None,
) -> Path:
    """The cached history store of ``fixtures`` before ``start``; built first if missing.

    Raises :class:`BuildCancelled` when ``progress.cancel`` is set before the end; no
    temporary store is left behind then.
    """
    state = progress or BuildProgress()
    cached = cached_store(fixtures, start, cache)
    if cached.exists():
        return cached
    folder = cached.parent
    folder.mkdir(parents=True, exist_ok=True)
    key = cached.name.removeprefix("demo-").removesuffix(".db")
    with build_lock(cached.with_suffix(".lock"), state):
        if cached.exists():  # another demo built it while this one waited
            return cached
        clean_leftovers(folder, key=key)
        building = cached.with_suffix(f".{os.getpid()}.tmp")
        state.total = history_estimate(fixtures, start)
        state.started = time.monotonic()
        state.building = True
        if say is not None:
            say("omniops demo: loading four weeks of fixture history (first run only) ...")
        try:
            events = asyncio.run(
                load_history(fixtures, building, start, progress=state.update, stop=state.cancel)
            )
            if state.cancel.is_set():
                raise BuildCancelled("history build cancelled")
            os.replace(building, cached)
        finally:
            _remove_store(building)  # the renamed store's -wal/-shm were checkpointed away
        state.loaded = events
        if say is not None:
            took = time.monotonic() - state.started
            say(f"omniops demo: {events:,} events in {took:.0f} s, cached")
    return cached


def copy_store(cached: Path, target: Path) -> Path:
    """Copy the cached history store to ``target`` (a demo writes its own copy)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_store(target)  # an old run's WAL would be replayed over the copy
    shutil.copyfile(cached, target)
    return target


def prepare_demo_store(
    fixtures: Path,
    start: datetime,
    target: Path,
    *,
    cache: Path | None = None,
    say: Callable[[str], None] = print,
    progress: BuildProgress | None = None,
) -> Path:
    """Put a store holding the history before ``start`` at ``target``; build it if needed."""
    cached = build_history(fixtures, start, cache=cache, progress=progress, say=say)
    return copy_store(cached, target)


class HistoryBuild(threading.Thread):
    """:func:`build_history` on a thread of its own, so a console can show its progress.

    After :meth:`join`, ``result`` is the cached store, or ``error`` what went wrong
    (:class:`BuildCancelled` after :meth:`cancel`).
    """

    def __init__(self, fixtures: Path, start: datetime, *, cache: Path | None = None) -> None:
        super().__init__(name="omniops-demo-history", daemon=True)
        self.fixtures = fixtures
        self.start_at = start
        self.cache = cache
        self.progress = BuildProgress()
        self.result: Path | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Build (or find) the cached history store."""
        try:
            self.result = build_history(
                self.fixtures, self.start_at, cache=self.cache, progress=self.progress
            )
        except BaseException as exc:  # handed to the thread that waits for it
            self.error = exc

    @property
    def finished(self) -> bool:
        """True once the build ended, done, failed or cancelled."""
        return not self.is_alive() and (self.result is not None or self.error is not None)

    def cancel(self) -> None:
        """Ask the build to stop at its next chunk and remove its temporary store."""
        self.progress.cancel.set()
