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

While it loads, the build says up to which moment everything is committed
(:attr:`BuildProgress.committed_until`, from :class:`HighWater`): the history is written in
time order, so a console reading the temporary store as of that moment shows figures that
are true as of it, before the rest of the four weeks is in.
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
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

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


T = TypeVar("T")


class HighWater:
    """The moment up to which every item of a time-ordered load is committed.

    :meth:`watch` wraps the items handed to the writer and notes each one's second (the
    store keeps whole seconds); :meth:`moment` turns "the first ``done`` items are
    committed" (what :func:`feeds.runtime.ingest.write_stream` reports, chunk by chunk, in
    order) into the latest second ``m`` such that every item stamped at or before ``m`` is
    among them: one second before the first item not yet committed (a chunk that ends
    inside a second does not count that second).  If an item comes earlier than one
    before it (the feeds were not in time order) there is no such moment: :attr:`ordered`
    turns False and :meth:`moment` says None from then on.
    """

    def __init__(self) -> None:
        self._seconds = array("q")
        self._latest: int | None = None
        self.ordered = True
        """False once an item came earlier than one before it."""
        self.exhausted = False
        """True once every item was handed over."""

    def watch(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, unchanged, their seconds noted (a quarantined line keeps the last)."""
        for item in items:
            ts = getattr(item, "ts", None)
            if isinstance(ts, datetime):
                second = int(ts.timestamp())
                if self._latest is not None and second < self._latest:
                    self.ordered = False
                self._latest = second if self._latest is None else max(self._latest, second)
            self._seconds.append(self._latest if self._latest is not None else 0)
            yield item
        self.exhausted = True

    @property
    def first(self) -> datetime | None:
        """The first item's moment, once one was handed over."""
        return datetime.fromtimestamp(self._seconds[0], UTC) if self._seconds else None

    def moment(self, done: int) -> datetime | None:
        """Every item stamped at or before this is among the first ``done``; None if unknown."""
        if not self.ordered or done <= 0 or done > len(self._seconds):
            return None
        if done < len(self._seconds):  # the next item was read: everything before it is in
            return datetime.fromtimestamp(self._seconds[done] - 1, UTC)
        if self.exhausted:
            return datetime.fromtimestamp(self._seconds[done - 1], UTC)
        return datetime.fromtimestamp(self._seconds[done - 1] - 1, UTC)  # more may share it


async def load_history(
    fixtures: Path,
    db: Path,
    start: datetime,
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    high_water: HighWater | None = None,
) -> int:
    """Write every fixture event stamped before ``start`` into the store at ``db``.

    Through the writer's bulk path, in time order, parsed in a worker thread while the
    writer commits.  Setting ``stop`` ends the load within a batch (the store is then
    incomplete).  ``high_water`` watches the items, so that a ``progress`` callback can
    ask it up to which moment the committed ones reach.
    """
    from feeds.replay import ReplayFeed
    from feeds.runtime.ingest import write_stream
    from feeds.runtime.routing import router_hook
    from store.clock import ReplayClock
    from store.writer import StoreWriter

    feed = ReplayFeed([fixtures], ReplayClock(start), name=HISTORY_FEED, until=start)
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        items = feed.backfill()
        await write_stream(
            writer,
            items if high_water is None else high_water.watch(items),
            progress=progress,
            stop=stop,
        )
    return feed.health.events


def checkpoint(db: Path) -> None:
    """Fold the store's write-ahead log into its file, so the file alone holds it all.

    The writer's own close does that only when it is the last connection; a console that
    reads the store while it loads may still have it open.  Waits while a reader is in
    the middle of a read.
    """
    conn = sqlite3.connect(db, timeout=30)
    try:
        while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
            time.sleep(0.02)  # busy: a reader's transaction holds an older snapshot
    finally:
        conn.close()


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
        store: The temporary store being written (once this process builds).
        first_at: The history's first moment (once the first event was read).
        committed_until: Every history event stamped at or before this is committed
            (None until known, or if the events were not in time order).
        show_after: How much history must be committed before :attr:`partial_ready`.
        on_commit: Called (on the build's thread) after each committed chunk was noted.
    """

    loaded: int = 0
    total: int | None = None
    started: float = field(default_factory=time.monotonic)
    waiting: bool = False
    building: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    store: Path | None = None
    first_at: datetime | None = None
    committed_until: datetime | None = None
    show_after: timedelta = timedelta(days=1)
    on_commit: Callable[[BuildProgress], None] | None = None

    @property
    def partial_ready(self) -> bool:
        """Whether enough history is committed to show figures as of :attr:`committed_until`.

        One full day: before it, "today" and the trailing rates would be over the first
        hours of the fixture's history alone, true as of their moment but meaningless.
        """
        if self.store is None or self.first_at is None or self.committed_until is None:
            return False
        return self.committed_until - self.first_at >= self.show_after

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

    def update(self, loaded: int, high_water: HighWater | None = None) -> None:
        """Record ``loaded`` events; raise :class:`BuildCancelled` when cancelled.

        With ``high_water`` (the load's), also the moment they are complete up to.
        """
        self.loaded = loaded
        if self.total is not None and loaded > self.total:
            self.total = loaded
        if high_water is not None:
            self.first_at = high_water.first
            self.committed_until = high_water.moment(loaded)
        if self.on_commit is not None:
            self.on_commit(self)
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
        high_water = HighWater()
        if say is not None:
            say("omniops demo: loading four weeks of fixture history (first run only) ...")
        try:
            state.store = building
            events = asyncio.run(
                load_history(
                    fixtures,
                    building,
                    start,
                    progress=lambda done: state.update(done, high_water),
                    stop=state.cancel,
                    high_water=high_water,
                )
            )
            if state.cancel.is_set():
                raise BuildCancelled("history build cancelled")
            checkpoint(building)  # a console reading it meanwhile kept the log from folding
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
