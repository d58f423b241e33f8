"""Fixture replay: plays recorded feed files through the live pipeline, on a replay clock.

Events are merged across files in timestamp order.  Everything stamped before the
clock's start is history and is delivered at once (the backfill); the rest is delivered
when the :class:`~feeds.clock.ReplayClock` reaches its timestamp, so the demo day
unfolds at ``speed`` × real time.  Lines that fail validation are quarantined, as on any
live feed.  The cursor is the number of items delivered, so a restarted replay resumes.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

from feeds.base import Feed, FeedState
from feeds.clock import ReplayClock
from feeds.jsonl import feed_files, read_items
from feeds.model import Event, Quarantined


def load_manifest(folder: Path) -> dict[str, object]:
    """The fixture folder's ``manifest.json`` (seed, time zone, replay start), or ``{}``."""
    path = folder / "manifest.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def merged_items(files: list[Path]) -> Iterator[Event | Quarantined]:
    """Every item of ``files`` in timestamp order; quarantined lines first (no valid time)."""
    bad: list[Quarantined] = []

    def good(path: Path) -> Iterator[tuple[datetime, int, Event]]:
        for n, item in enumerate(read_items(path)):
            if isinstance(item, Quarantined):
                bad.append(item)
            else:
                yield item.ts, n, item

    streams = [good(p) for p in files]
    for _, _, event in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
        while bad:
            yield bad.pop(0)
        yield event
    while bad:
        yield bad.pop(0)


class ReplayFeed(Feed):
    """Replays a folder (or list) of canonical JSON Lines files on a replay clock."""

    def __init__(self, paths: list[Path], clock: ReplayClock, *, name: str = "replay") -> None:
        super().__init__(name)
        self.files = [f for p in paths for f in feed_files(p)]
        self.clock = clock
        self.backfill_done = asyncio.Event()

    async def items(self) -> AsyncIterator[Event | Quarantined]:
        """Deliver history at once, then each event when the replay clock reaches it."""
        skip = int(self.cursor or 0)
        delivered = 0
        self.health.state = FeedState.CONNECTED
        for item in merged_items(self.files):
            delivered += 1
            if delivered <= skip:
                continue
            if not isinstance(item, Quarantined):
                wait = self.clock.wall_seconds_until(item.ts)
                if wait > 0:
                    self.backfill_done.set()
                    await asyncio.sleep(wait)
                self.health.last_event_at = item.ts
                self.health.events += 1
            else:
                self.health.quarantined += 1
            self.cursor = str(delivered)
            yield item
            if delivered % 2000 == 0:
                await asyncio.sleep(0)  # let the writer commit during a long backfill
        self.backfill_done.set()
        self.health.state = FeedState.DONE
