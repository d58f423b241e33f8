"""Demo mode: the fixture day's history, loaded once through the real pipeline and cached.

The fixture folder holds four weeks of history before the replayed day.  Loading it
through the writer takes tens of seconds, so the first demo builds a store of that
history in the user's cache folder (keyed by the fixture files and the schema) and every
demo after copies it and replays only the day itself on the replay clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from feeds.jsonl import feed_files
from feeds.replay import ReplayFeed
from feeds.runtime.ingest import Progress, write_stream
from feeds.runtime.routing import router_hook
from store.clock import ReplayClock
from store.schema import MIGRATIONS
from store.writer import StoreWriter

HISTORY_FEED = "replay-history"


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
    fixtures: Path, db: Path, start: datetime, *, progress: Progress | None = None
) -> int:
    """Write every fixture event stamped before ``start`` into the store at ``db``.

    Through the writer's bulk path, in time order, parsed in a worker thread while the
    writer commits.
    """
    feed = ReplayFeed([fixtures], ReplayClock(start), name=HISTORY_FEED, until=start)
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        await write_stream(writer, feed.backfill(), progress=progress)
    return feed.health.events


def prepare_demo_store(
    fixtures: Path,
    start: datetime,
    target: Path,
    *,
    cache: Path | None = None,
    say: Callable[[str], None] = print,
) -> Path:
    """Put a store holding the history before ``start`` at ``target``; build it if needed."""
    folder = cache or cache_dir()
    cached = folder / f"demo-{history_key(fixtures, start)}.db"
    if not cached.exists():
        folder.mkdir(parents=True, exist_ok=True)
        building = cached.with_suffix(f".{os.getpid()}.tmp")
        say("omniops demo: loading four weeks of fixture history (first run only) ...")
        began = time.monotonic()
        events = asyncio.run(load_history(fixtures, building, start))
        os.replace(building, cached)
        say(f"omniops demo: {events:,} events in {time.monotonic() - began:.0f} s, cached")
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in (target, *(target.with_name(target.name + s) for s in ("-wal", "-shm"))):
        leftover.unlink(missing_ok=True)  # an old run's WAL would be replayed over the copy
    shutil.copyfile(cached, target)
    return target
