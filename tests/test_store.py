"""The store's single writer on a real SQLite file: idempotence, order, quarantine."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from store.asof import stock_as_of
from store.metrics import open_reader
from store.model import Quarantined
from store.schema import SCHEMA_VERSION
from tests.builders import T0, adjust, at, order, snapshot, step
from tests.conftest import write


def q(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    conn = open_reader(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def test_store_is_wal_and_migrated(db_path: Path) -> None:
    await write(db_path, [snapshot("A", "S1", 5, T0)])
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_duplicate_event_is_counted_not_applied(db_path: Path) -> None:
    first = adjust("A", "S1", -2, at(1))
    outcomes = await write(db_path, [snapshot("A", "S1", 10, T0), first, first])
    assert outcomes == ["applied", "applied", "duplicate"]
    # and again in a later batch, through a new writer (a restart)
    assert await write(db_path, [first]) == ["duplicate"]
    assert q(db_path, "SELECT on_hand FROM stock") == [(8,)]
    assert q(db_path, "SELECT events, duplicates FROM feed_state WHERE feed='inventory'") == [
        (2, 2)
    ]
    assert q(db_path, "SELECT COUNT(*) FROM event_log") == [(2,)]


async def test_quarantine_keeps_raw_payload_and_reason(db_path: Path) -> None:
    bad = Quarantined(source="pos", raw='{"id": 1, "garbage": true}', error="pos.jsonl:7: id: bad")
    assert await write(db_path, [bad]) == ["quarantined"]
    assert q(db_path, "SELECT source, raw, error FROM quarantine") == [
        ("pos", '{"id": 1, "garbage": true}', "pos.jsonl:7: id: bad")
    ]
    assert q(db_path, "SELECT quarantined FROM feed_state WHERE feed='pos'") == [(1,)]


async def test_older_stock_snapshot_never_overwrites_newer(db_path: Path) -> None:
    await write(db_path, [snapshot("A", "S1", 50, at(2))])
    await write(db_path, [snapshot("A", "S1", 99, at(1))])  # late arrival, older count
    assert q(db_path, "SELECT on_hand, as_of_ts FROM stock") == [(50, int(at(2).timestamp()))]


async def test_of_two_counts_within_one_second_the_later_stands_in_any_arrival_order(
    tmp_path: Path,
) -> None:
    """A WMS counting twice in a second (10:00:00.2 then .8): .8 stands, live and as of."""
    early = snapshot("A", "S1", 7, at(1) + timedelta(milliseconds=200))
    late = snapshot("A", "S1", 3, at(1) + timedelta(milliseconds=800))
    second = int(at(1).timestamp())
    for n, batches in enumerate(
        [[[early], [late]], [[late], [early]], [[late, early]], [[early, late]]]
    ):
        db = tmp_path / f"s{n}.db"
        for batch in batches:
            await write(db, batch)
        assert q(db, "SELECT on_hand, as_of_ts, as_of_us FROM stock") == [(3, second, 800_000)]
        assert q(db, "SELECT on_hand, ts, us FROM stock_counts") == [(3, second, 800_000)]
        conn = open_reader(db)
        try:
            assert stock_as_of(conn, second) == {("A", "S1"): (3, 0)}
        finally:
            conn.close()


async def test_adjustments_give_same_stock_in_any_arrival_order(tmp_path: Path) -> None:
    events = [
        snapshot("A", "S1", 20, at(1)),
        adjust("A", "S1", -3, at(0.5)),  # before the count: already in it
        adjust("A", "S1", -4, at(2)),  # after the count: applies
        adjust("A", "S1", 5, at(3)),
    ]
    results = set()
    for n, order_ in enumerate(
        [events, events[::-1], [events[2], events[0], events[3], events[1]]]
    ):
        db = tmp_path / f"s{n}.db"
        for e in order_:  # one batch each: the worst case for ordering
            await write(db, [e])
        results.add(q(db, "SELECT on_hand FROM stock")[0][0])
    assert results == {21}


async def test_shipment_before_its_order_is_kept(db_path: Path) -> None:
    await write(db_path, [step("o1", "shipped", at(3), carrier="UPS", tracking="1Z")])
    assert q(db_path, "SELECT has_order, shipped_ts, carrier FROM orders") == [
        (0, int(at(3).timestamp()), "UPS")
    ]
    await write(db_path, [order("o1", at(1), [("A", 2)])])
    assert q(db_path, "SELECT has_order, units, shipped_ts, carrier, fulfilled_ts FROM orders") == [
        (1, 2, int(at(3).timestamp()), "UPS", int(at(3).timestamp()))
    ]


async def test_cancellation_reverses_sales_once_whatever_the_order(tmp_path: Path) -> None:
    from tests.builders import ev

    placed = order("o1", at(0), [("A", 3)])
    cancel = ev("order.cancelled", at(1), {"order_id": "o1"})
    cancel_again = ev("order.cancelled", at(2), {"order_id": "o1"})
    for n, seq in enumerate([[placed, cancel, cancel_again], [cancel, placed, cancel_again]]):
        db = tmp_path / f"c{n}.db"
        for e in seq:
            await write(db, [e])
        assert q(db, "SELECT COALESCE(SUM(units), 0) FROM sales_hourly") == [(0,)]
        assert q(db, "SELECT done_ts FROM orders") == [(int(at(1).timestamp()),)]


async def test_sales_rollup_by_hour_location_channel(db_path: Path) -> None:
    await write(
        db_path,
        [
            order("o1", at(0, 5), [("A", 2), ("B", 1)], price="10.00", discount="1.00"),
            order("o2", at(0, 50), [("A", 1)], loc="S1", channel="pos", method="bopis"),
        ],
    )
    rows = q(
        db_path,
        "SELECT sku, location_id, channel, units, net_cents FROM sales_hourly "
        "ORDER BY sku, location_id",
    )
    assert rows == [
        ("A", "S1", "pos", 1, 1000),
        ("A", "WH1", "webshop", 2, 1900),
        ("B", "WH1", "webshop", 1, 900),
    ]


async def test_same_order_placed_twice_under_new_id_counts_once(db_path: Path) -> None:
    await write(
        db_path,
        [order("o1", at(0), [("A", 2)], id_="x1"), order("o1", at(0), [("A", 2)], id_="x2")],
    )
    assert q(db_path, "SELECT SUM(units) FROM sales_hourly") == [(2,)]


async def test_writer_batches_and_resolves_each_future(db_path: Path) -> None:
    events = [adjust("A", "S1", -1, T0 + timedelta(seconds=i)) for i in range(2500)]
    outcomes = await write(db_path, events, batch_size=1000)
    assert outcomes.count("applied") == 2500
    assert q(db_path, "SELECT on_hand FROM stock") == [(-2500,)]


async def test_writer_routes_orders_without_a_node_and_moves_their_sales(db_path: Path) -> None:
    from rules.routing.config import FulfillmentRouting
    from tests.builders import location, sku

    await write(
        db_path,
        [
            sku("A"),
            location("WH1", kind="warehouse"),
            snapshot("A", "WH1", 10, at(-1)),
            order("web-1", at(0), [("A", 2)], loc=None),
        ],
        routing=FulfillmentRouting,
    )
    assert q(db_path, "SELECT status, location_id FROM routing_decisions") == [("routed", "WH1")]
    assert q(db_path, "SELECT fulfil_location_id FROM orders") == [("WH1",)]
    assert q(db_path, "SELECT reserved FROM stock") == [(2,)]
    # the sale counts at the node it was routed to, not in the unassigned bucket
    assert q(db_path, "SELECT location_id, SUM(units) FROM sales_hourly GROUP BY 1") == [
        ("-", 0),
        ("WH1", 2),
    ]


async def test_cancelling_a_routed_order_reverses_sales_where_they_were_counted(
    db_path: Path,
) -> None:
    from rules.routing.config import FulfillmentRouting
    from tests.builders import ev, location, sku

    await write(
        db_path,
        [
            sku("A"),
            location("WH1", kind="warehouse"),
            snapshot("A", "WH1", 10, at(-1)),
            order("o1", at(0), [("A", 5)], loc=None),
        ],
        routing=FulfillmentRouting,
    )
    await write(db_path, [ev("order.cancelled", at(1), {"order_id": "o1"})])
    assert q(db_path, "SELECT location_id, SUM(units) FROM sales_hourly GROUP BY 1") == [
        ("-", 0),
        ("WH1", 0),
    ]


async def test_cancellation_nets_to_zero_in_the_category_counted_at_sale(db_path: Path) -> None:
    from tests.builders import ev, sku

    await write(db_path, [sku("B", category="toys"), order("o1", at(0), [("B", 3)])])
    await write(
        db_path,
        [sku("B", category="games", ts=at(0.5)), ev("order.cancelled", at(1), {"order_id": "o1"})],
    )
    assert q(db_path, "SELECT category, SUM(units) FROM category_hourly GROUP BY 1") == [
        ("toys", 0)
    ]


_BODIES: dict[str, dict[str, object]] = {
    "sku.upserted": {
        "sku": "A",
        "name": "n",
        "category": "c",
        "product_type": "p",
        "unit_cost": "1.00",
        "price": "2.00",
    },
    "location.upserted": {
        "location_id": "L",
        "name": "n",
        "kind": "store",
        "region": "r",
        "lat": 1,
        "lon": 2,
        "timezone": "UTC",
        "hours": {"opens": "08:00", "closes": "20:00", "cutoff": "15:00"},
    },
    "channel.upserted": {"channel_id": "c", "name": "n", "kind": "web"},
    "order.placed": {
        "order_id": "o",
        "channel": "c",
        "method": "ship",
        "destination_region": "r",
        "location_id": "L",
        "lines": [{"sku": "A", "quantity": 1, "unit_price": "1.00", "location_id": "L"}],
    },
    "order.cancelled": {"order_id": "o", "reason": "x"},
    "fulfillment.updated": {
        "order_id": "o",
        "status": "shipped",
        "location_id": "L",
        "carrier": "U",
        "tracking": "t",
        "detail": "d",
    },
    "stock.snapshot": {"sku": "A", "location_id": "L", "on_hand": 1, "source_system": "s"},
    "stock.adjusted": {"sku": "A", "location_id": "L", "delta": 1, "reason": "r"},
    "listing.updated": {"channel": "c", "sku": "A", "location_id": "L", "advertised": 1},
    "return.received": {
        "return_id": "r",
        "order_id": "o",
        "sku": "A",
        "location_id": "L",
        "channel": "c",
        "quantity": 1,
        "reason": "x",
    },
}


def _text_paths(value: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _text_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _text_paths(v, (*path, n))]
    return [path] if isinstance(value, str) else []


def test_every_text_field_refuses_a_lone_surrogate() -> None:
    """Whichever refuses it (pydantic-core or the model's own check), every text field does."""
    import copy
    import json

    import pytest
    from pydantic import ValidationError

    from store.model import parse_event

    checked = 0
    for type_, body in _BODIES.items():
        event = {"id": "X", "ts": "2026-11-18T10:00:00Z", "source": "s", "type": type_}
        event["body"] = body
        parse_event(event)  # valid as it is
        for path in _text_paths(event):
            bad = copy.deepcopy(event)
            target: Any = bad
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = "a\ud800b"
            with pytest.raises(ValidationError):
                parse_event(bad)
            with pytest.raises(ValidationError):
                parse_event(json.dumps(bad))
            checked += 1
    assert checked > 50


def test_time_window_near_its_bounds_reads_the_clock() -> None:
    """Times a few seconds either side of every bound get the clock's own answer."""
    import pytest

    from store.model import TimeWindow

    window = TimeWindow()
    now = datetime.now(UTC)
    window.check(now)  # a sample of the clock is in force
    for promise, back, ahead in (
        (False, window.past, window.future),
        (True, max(window.past, window.promise), window.promise),
    ):
        for _ in range(2):
            now = datetime.now(UTC)
            margin = timedelta(seconds=5)
            assert window.check(now - back + margin, promise=promise)
            assert window.check(now + ahead - margin, promise=promise)
            with pytest.raises(ValueError, match="before now"):
                window.check(now - back - margin, promise=promise)
            with pytest.raises(ValueError, match="after now"):
                window.check(now + ahead + margin, promise=promise)
