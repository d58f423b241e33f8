"""The node a fulfillment feed reports, as of a moment: ``report --at T`` shows an order
placed without a node at no node (``-``) until the first step that named its node.

The router's later decisions already worked that way (``tests/test_asof_catalogue.py``);
this covers the other way an order gets its node: a warehouse or carrier feed reporting
it on a fulfillment step.  A generated day of webshop orders placed without a node,
whose steps name their node hours later (the first step sometimes with no node), is
written to one store in a shuffled arrival order; at random moments its figures must
equal those of a store fed only the events stamped by then.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from store.apply import epoch
from store.details import late_orders
from store.metrics import open_reader
from store.model import Event
from store.schema import MIGRATIONS
from store.snapshots import LateOrders
from store.writer import StoreWriter
from tests.builders import location, order, sku, step
from tests.test_asof import comparable, diff

START = datetime(2026, 11, 2, 13, 0, tzinfo=UTC)
NODES = ("WH-A", "WH-B", "ST-C")
SKUS = ("SKU-1", "SKU-2", "SKU-3")


def generated_day(seed: int) -> list[Event]:
    """Catalogue, then orders (some without a node) and their steps, in time order."""
    rng = random.Random(seed)
    events = [
        location(node, kind="store" if node.startswith("ST") else "warehouse") for node in NODES
    ]
    events += [sku(code, reorder=2, lead=2.0) for code in SKUS]
    steps = ("released", "picked", "packed", "shipped", "delivered")
    for i in range(40):
        placed = START + timedelta(minutes=rng.randrange(0, 8 * 60))
        order_id = f"o-{i}"
        named = rng.random() < 0.25  # a quarter name their node at placement
        node = rng.choice(NODES)
        events.append(
            order(
                order_id,
                placed,
                [(rng.choice(SKUS), rng.randint(1, 3))],
                loc=node if named else None,
                promised=placed + timedelta(hours=rng.choice((3, 6, 30))),
                price="20.00",
                id_=f"{order_id}:placed",
            )
        )
        at = placed
        anonymous = rng.random() < 0.3  # the first step names no node (a carrier's scan)
        for k, status in enumerate(steps[: rng.randint(0, len(steps))]):
            at += timedelta(minutes=rng.randrange(20, 180))
            shipped = status in ("shipped", "delivered")
            events.append(
                step(
                    order_id,
                    status,
                    at,
                    location_id=None if anonymous and k == 0 else node,
                    carrier="UPS" if shipped else None,
                    tracking=f"1Z{i:06d}" if shipped else None,
                )
            )
    events.sort(key=lambda e: e.ts)
    return events


async def _write(db: Path, events: list[Event]) -> None:
    async with StoreWriter(db) as writer:
        await writer.write_many(events)


def late(db: Path, node: str, at: datetime) -> LateOrders:
    """The console's drill-down of ``node``'s late orders as of ``at``."""
    reader = open_reader(db)
    try:
        return late_orders(reader, node, at)
    finally:
        reader.close()


def test_the_node_a_feed_reports_is_as_of_its_first_report(tmp_path: Path) -> None:
    events = generated_day(7)
    unnamed = {
        e.body.order_id  # type: ignore[union-attr]
        for e in events
        if e.type == "order.placed" and e.body.location_id is None  # type: ignore[union-attr]
    }
    reported = {
        e.body.order_id  # type: ignore[union-attr]
        for e in events
        if e.type == "fulfillment.updated" and e.body.location_id is not None  # type: ignore[union-attr]
    }
    assert len(unnamed & reported) >= 10  # the case under test is well represented
    full = tmp_path / "full.db"
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)  # arrival order is not time order
    for start in range(0, len(shuffled), 17):  # in several batches, as a feed delivers
        asyncio.run(_write(full, shuffled[start : start + 17]))

    first, last = epoch(events[0].ts), epoch(events[-1].ts)
    rng = random.Random(5)
    moments = sorted(rng.randint(first, last) for _ in range(12))
    moments.append(epoch(next(e.ts for e in events if e.type == "fulfillment.updated")))
    failures: list[str] = []
    moved = 0
    for t in sorted(moments):
        prefix = tmp_path / f"prefix-{t}.db"
        asyncio.run(_write(prefix, [e for e in events if epoch(e.ts) <= t]))
        at = datetime.fromtimestamp(t, UTC)
        want, got = comparable(prefix, at), comparable(full, at)
        failures += [f"{at:%H:%M:%S} {d}" for d in diff(got, want)]
        moved += sum(r["key"] == "-" for r in want["fulfillment"]["rows"])
        for node in (*NODES, "-"):  # the drill-down of the late orders agrees
            if late(full, node, at) != late(prefix, node, at):
                failures.append(f"{at:%H:%M:%S} late orders at {node}")
    assert moved, "some moment must see orders at no node yet"
    assert not failures, "\n".join(failures[:20])


def test_the_time_is_the_first_step_that_named_the_node(tmp_path: Path) -> None:
    """Of an order placed without a node: its first step naming one, in time, not arrival."""
    db = tmp_path / "s.db"
    events = generated_day(11)
    arrivals = list(events)
    random.Random(2).shuffle(arrivals)
    for start in range(0, len(arrivals), 13):
        asyncio.run(_write(db, arrivals[start : start + 13]))
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT order_id, location_id, fulfil_location_id, fulfil_location_ts FROM orders"
        ).fetchall()
    finally:
        conn.close()
    firsts: dict[str, int] = {}
    for e in events:
        body: Any = e.body
        if e.type == "fulfillment.updated" and body.location_id is not None:
            firsts.setdefault(body.order_id, epoch(e.ts))
    for order_id, named, node, ts in rows:
        if named is not None:
            continue  # placed at its node: the time is never read
        if order_id in firsts:
            assert node is not None and ts == firsts[order_id], order_id
        else:
            assert node is None and ts is None, order_id


def test_the_migration_fills_the_time_from_the_event_log(tmp_path: Path) -> None:
    """A store from before the column gets the same times as the writer gives."""
    db = tmp_path / "s.db"
    asyncio.run(_write(db, generated_day(13)))
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        kept = conn.execute("SELECT order_id, fulfil_location_ts FROM orders").fetchall()
        assert any(ts is not None for _, ts in kept)
        version = next(
            i for i, script in enumerate(MIGRATIONS) if "ADD COLUMN fulfil_location_ts" in script
        )
        # Take the store back to before that migration, and run it again.
        conn.executescript(
            """BEGIN;
            DROP INDEX orders_fulfil_location_ts;
            ALTER TABLE orders DROP COLUMN fulfil_location_ts;
            COMMIT;"""
        )
        conn.executescript(f"BEGIN;\n{MIGRATIONS[version]}\nCOMMIT;")
        again = conn.execute("SELECT order_id, fulfil_location_ts FROM orders").fetchall()
    finally:
        conn.close()
    assert sorted(again) == sorted(kept)
