"""Feed staleness judged by the feed's own traffic at that hour (README: Feed freshness).

Hand-made histories in a real store file: a silence past the limit is stale only when the
previous days' active minutes in the same time-of-day window average ``stale_min_expected``
or more.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

from store.metrics import compute_snapshots, expected_feed_events, open_reader
from store.model import Event
from store.risk import MetricParams
from tests.builders import T0, at, ev, sku
from tests.conftest import write

P = MetricParams(timezone="America/New_York", stale_feed_minutes=15)


def tick(source: str, ts: datetime) -> Event:
    """One event of feed ``source`` at ``ts``."""
    body = {"sku": "A", "location_id": "S1", "delta": -1, "reason": "sale"}
    return ev("stock.adjusted", ts, body, source=source)


def day(d: int, *minutes: float) -> list[datetime]:
    """Moments ``d`` days before T0, each ``minutes`` before that day's T0."""
    return [T0 - timedelta(days=d, minutes=m) for m in minutes]


def stale(db: Path, params: MetricParams = P) -> dict[str, bool]:
    conn = open_reader(db)
    try:
        return {f.feed: f.stale for f in compute_snapshots(conn, T0, params).headline.feeds}
    finally:
        conn.close()


async def test_a_silence_is_stale_only_where_the_feed_usually_delivers(db_path: Path) -> None:
    events = []
    for d in range(1, 8):
        # busy: 6 events a day in the window (T0 - 60 min, T0] of each of 7 days: 6 expected
        events += [tick("busy", t) for t in day(d, 50, 40, 30, 20, 10, 5)]
        # quiet: its traffic is two hours earlier; 1 event a day in the window: 1 expected
        events += [tick("quiet", t) for t in day(d, 150, 130, 120, 30)]
        # uneven: 8, 2, 5, 5, 5, 5, 5 in the window: a mean of exactly 5
        n = {1: 8, 2: 2}.get(d, 5)
        events += [tick("uneven", t) for t in day(d, *[5 + 5 * i for i in range(n)])]
    # today every feed last delivered an hour ago (the limit is 15 minutes) ...
    events += [tick(feed, at(minutes=-60)) for feed in ("busy", "quiet", "uneven", "fresh")]
    # ... and a feed first seen two days ago, silent in the window on both days
    # bursty: 20 events a day in the window, but all in one second: one active minute
    for d in range(1, 8):
        events += [tick("bursty", t) for t in day(d, 30) * 20]
    events.append(tick("bursty", at(minutes=-60)))
    events += [tick("young", t) for t in day(2, 90) + day(1, 90)] + [tick("young", at(-1))]
    await write(db_path, events)

    conn = open_reader(db_path)
    try:
        last, t = int(at(minutes=-60).timestamp()), int(T0.timestamp())
        assert expected_feed_events(conn, "busy", last, t, 7) == 6
        assert expected_feed_events(conn, "quiet", last, t, 7) == 1
        assert expected_feed_events(conn, "uneven", last, t, 7) == 5
        assert expected_feed_events(conn, "young", last, t, 7) == 0  # 2 days of history count
        assert expected_feed_events(conn, "fresh", last, t, 7) is None  # no history at all
        assert expected_feed_events(conn, "busy", last, t, 0) is None
        assert expected_feed_events(conn, "bursty", last, t, 7) == 1  # minutes, not events
    finally:
        conn.close()

    flags = stale(db_path)
    assert flags["busy"]  # 6 expected, none came
    assert not flags["quiet"]  # normally quiet at this hour
    assert flags["uneven"]  # the mean (5) reaches stale_min_expected (5)
    assert not flags["young"]
    assert not flags["bursty"]  # 20 events a day there, but one delivery
    assert flags["fresh"]  # nothing to judge by: the limit alone
    stricter = dataclasses.replace(P, stale_min_expected=5.5)
    assert not stale(db_path, stricter)["uneven"]
    limit_only = dataclasses.replace(P, stale_history_days=0)
    assert all(stale(db_path, limit_only)[f] for f in ("busy", "quiet", "uneven", "young"))


async def test_within_the_limit_a_feed_is_never_stale(db_path: Path) -> None:
    events = [tick("busy", t) for d in range(1, 8) for t in day(d, 12, 8, 6, 4, 2, 1)]
    events.append(tick("busy", at(minutes=-14)))
    await write(db_path, events)
    assert not stale(db_path)["busy"]  # 14 min < 15, however busy it usually is


async def test_a_catalogue_loaded_once_is_never_stale_a_stream_is(db_path: Path) -> None:
    """A PIM that loaded the SKUs three weeks ago in one burst (no history to judge by)."""
    loaded = at(-21 * 24)
    events = [sku(f"SKU-{n}", ts=loaded) for n in range(50)]
    events = [e.model_copy(update={"source": "pim"}) for e in events]
    # The same burst under another feed that also sent one stock count: a stream, judged
    # on the limit alone as before.
    mixed = [e.model_copy(update={"id": f"m-{e.id}", "source": "erp"}) for e in events]
    await write(db_path, [*events, *mixed, tick("erp", loaded)])
    flags = stale(db_path)
    assert flags == {"pim": False, "erp": True}
    # Expected and never delivered is still stale, whatever the name.
    expected = dataclasses.replace(P, expected_feeds=("pim", "pos"))
    assert stale(db_path, expected) == {"pim": False, "erp": True, "pos": True}
