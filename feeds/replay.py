"""Fixture replay: plays recorded feed files through the live pipeline, on a replay clock.

Events are merged across files in timestamp order.  Everything stamped before the
clock's start is history and is delivered at once (the backfill); the rest is delivered
when the :class:`~store.clock.ReplayClock` reaches its timestamp, so the demo day
unfolds at ``speed`` × real time.  Lines that fail validation are quarantined, as on any
live feed.  The cursor is the number of items delivered, so a restarted replay resumes.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from feeds.base import Feed, FeedState
from feeds.jsonl import feed_files, parse_line, read_lines, source_of
from store.clock import ReplayClock
from store.model import Event, Quarantined

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def load_manifest(folder: Path) -> dict[str, object]:
    """The fixture folder's ``manifest.json`` (seed, time zone, replay start), or ``{}``."""
    path = folder / "manifest.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


_TS = re.compile(r'"ts"\s*:\s*"([^"\\]{1,64})"')
"""The event's ``ts`` string, read without decoding the line (validation decodes it once)."""


def line_time(text: str) -> datetime:
    """The ``ts`` of one JSON line, or :data:`EPOCH` when it has none that reads as a time.

    A regular expression finds it without decoding the JSON; only a line where that
    finds nothing (an escaped or odd ``ts``) is decoded.  Canonical bodies have no ``ts``
    field (they forbid unknown fields), so the first match is the event's.
    """
    match = _TS.search(text)
    try:
        if match is not None:
            raw = match.group(1)
        else:
            data = json.loads(text)
            raw = str(data["ts"])
        ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if ts.tzinfo is None:
            raise ValueError("naive")
    except (ValueError, KeyError, TypeError):
        return EPOCH
    return ts


def _timed_lines(path: Path) -> Iterator[tuple[datetime, int, str, str, str]]:
    """``(ts, line number, text, file name, feed)`` per line; cheap: no JSON decoding.

    A line whose time cannot be read sorts first, so validation quarantines it at once.
    """
    latest = EPOCH
    name, source = path.name, source_of(path)
    for number, text in read_lines(path):
        ts = line_time(text)
        if ts is not EPOCH:
            if ts < latest:
                # Merging assumes each file is in time order; say so rather than drop events.
                raise ValueError(
                    f"{name}:{number}: not in time order ({ts.isoformat()} after "
                    f"{latest.isoformat()}); replay needs files sorted by ts "
                    "(`omniops ingest` takes them in any order)"
                )
            latest = ts
        yield ts, number, text, name, source


def merged_lines(files: list[Path]) -> Iterator[tuple[datetime, int, str, str, str]]:
    """Every line of ``files`` in timestamp order (ties in file, then line order)."""
    streams = [_timed_lines(p) for p in files]
    return heapq.merge(*streams, key=lambda t: (t[0], t[3], t[1]))


class ReplayFeed(Feed):
    """Replays a folder (or list) of canonical JSON Lines files on a replay clock.

    ``since`` skips events stamped before it (history already in the store); ``until``
    delivers only events stamped before it, at once, and stops (building that history).
    """

    def __init__(
        self,
        paths: list[Path],
        clock: ReplayClock,
        *,
        name: str = "replay",
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        super().__init__(name)
        self.files = [f for p in paths for f in feed_files(p)]
        self.clock = clock
        self.since = since
        self.until = until

    async def items(self) -> AsyncIterator[Event | Quarantined]:
        """Deliver history at once, then each event when the replay clock reaches it."""
        skip = int(self.cursor or 0)
        delivered = 0
        self.health.state = FeedState.CONNECTED
        for ts, number, text, name, source in merged_lines(self.files):
            if self.until is not None and ts >= self.until:
                break
            if self.since is not None and ts < self.since:
                continue  # history (and unreadable times) went in with the history pass
            delivered += 1
            if delivered <= skip:
                continue
            item = parse_line(text, source=source, where=f"{name}:{number}")
            if not isinstance(item, Quarantined):
                wait = self.clock.wall_seconds_until(item.ts) if self.until is None else 0.0
                if wait > 0:
                    await asyncio.sleep(wait)
            self._count(item)
            self.cursor = str(delivered)
            yield item
            if delivered % 2000 == 0:
                await asyncio.sleep(0)  # let the writer commit during a long backfill
        self.health.state = FeedState.DONE

    def backfill(self) -> Iterator[Event | Quarantined]:
        """Every item stamped before ``until``, at once (building a history store).

        Synchronous, so a worker thread can parse while the writer commits the chunks
        before (see :func:`feeds.runtime.ingest.write_stream`).
        """
        self.health.state = FeedState.CONNECTED
        for ts, number, text, name, source in merged_lines(self.files):
            if self.until is not None and ts >= self.until:
                break
            item = parse_line(text, source=source, where=f"{name}:{number}")
            self._count(item)
            yield item
        self.health.state = FeedState.DONE

    def _count(self, item: Event | Quarantined) -> None:
        if isinstance(item, Quarantined):
            self.health.quarantined += 1
        else:
            self.health.last_event_at = item.ts
            self.health.events += 1
