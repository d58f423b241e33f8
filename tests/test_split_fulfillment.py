"""An order whose lines are at several nodes is fulfilled when every node has reported.

Hand-computed cases of the README's definition (Metrics, "Fulfilled"): a split order
(lines at WH1 and WH2) that WH1 ships early and WH2 ships late is open, and late, until
WH2 ships, and then counts as fulfilled late; a report naming no node (or a node none of
the lines is at) covers the whole order; the answer is the same whatever order the
reports and the placement arrive in; and a store from before the change gets its split
orders' times recomputed by the migration.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from store.model import Event
from store.schema import migrate
from store.snapshots import FulfillmentRow, Snapshots
from tests.builders import T0, at, location, order, sku, snapshot, step
from tests.conftest import write
from tests.test_metrics import snap


def row(s: Snapshots, key: str) -> FulfillmentRow:
    return next(r for r in s.fulfillment.rows if r.key == key)


def split_order(order_id: str, ts: datetime, promised: datetime) -> Event:
    """Two lines, one at WH1 and one at WH2, and no node of the order's own."""
    return order(
        order_id,
        ts,
        [("A", 1), ("B", 2)],
        loc=None,
        promised=promised,
        line_locations=["WH1", "WH2"],
    )


def day(order_id: str = "S") -> list[Event]:
    """Placed at −6 h, promised by −1 h; WH1 ships at −5 h, WH2 at −0.5 h (late)."""
    return [
        sku("A"),
        sku("B"),
        split_order(order_id, at(-6), at(-1)),
        step(order_id, "shipped", at(-5), location_id="WH1", carrier="UPS"),
        step(order_id, "shipped", at(-0.5), location_id="WH2", carrier="UPS"),
    ]


async def test_a_split_order_is_open_and_late_until_its_last_node_ships(db_path: Path) -> None:
    await write(db_path, day())
    # At −2 h: WH1 has shipped, WH2 has not; promised at −1 h, so not late yet.
    before = snap(db_path, at(-2))
    assert before.fulfillment.total_open == 1  # was 0: shipped with its first parcel
    assert row(before, "WH2").open_orders == 1
    # At −0.75 h: past the promise, WH2 still to ship: late (at each of its nodes).
    late = snap(db_path, at(-0.75))
    assert late.fulfillment.total_open == 1
    assert late.fulfillment.total_late == 1
    assert row(late, "WH2").late == 1
    assert row(late, "webshop").late == 1
    # Now: WH2 shipped at −0.5 h, after the promise: fulfilled late (was on time at −5 h).
    now = snap(db_path, T0)
    assert now.fulfillment.total_open == 0
    assert row(now, "webshop").completed_24h == 1
    assert row(now, "webshop").on_time_rate == 0.0
    db = sqlite3.connect(db_path)
    fulfilled, done, shipped = db.execute(
        "SELECT fulfilled_ts, done_ts, shipped_ts FROM orders WHERE order_id = 'S'"
    ).fetchone()
    db.close()
    assert fulfilled == done == int(at(-0.5).timestamp())
    assert shipped == int(at(-5).timestamp())  # the step itself: its first report


async def test_a_report_naming_no_node_covers_the_whole_order(db_path: Path) -> None:
    await write(
        db_path,
        [
            sku("A"),
            sku("B"),
            split_order("S", at(-6), at(-1)),
            step("S", "shipped", at(-5), location_id="WH1"),
            step("S", "delivered", at(-0.75)),  # no node: every line of the order
            # A node none of its lines is at: also the whole order (a later time changes nothing).
            step("S", "shipped", at(-0.6), location_id="ST-NYC"),
        ],
    )
    db = sqlite3.connect(db_path)
    (fulfilled,) = db.execute("SELECT fulfilled_ts FROM orders WHERE order_id = 'S'").fetchone()
    db.close()
    assert fulfilled == int(at(-0.75).timestamp())
    assert row(snap(db_path, T0), "webshop").on_time_rate == 0.0  # −0.75 h is past −1 h
    assert snap(db_path, at(-1)).fulfillment.total_open == 1  # only WH1 had shipped


async def test_reports_before_the_placement_give_the_same_store(tmp_path: Path) -> None:
    in_order = tmp_path / "in_order.db"
    await write(in_order, day())
    reversed_ = tmp_path / "reversed.db"
    events = day()
    catalogue, rest = events[:2], events[2:]
    await write(reversed_, catalogue)
    for event in reversed(rest):  # WH2's report, then WH1's, then the placement: one each
        await write(reversed_, [event])
    columns = "order_id, shipped_ts, fulfilled_ts, done_ts, line_nodes"
    queries = (
        f"SELECT {columns} FROM orders",
        "SELECT * FROM node_fulfilled ORDER BY 1, 2, 3",
    )
    got = []
    for path in (in_order, reversed_):
        db = sqlite3.connect(path)
        got.append([db.execute(q).fetchall() for q in queries])
        db.close()
    assert got[0] == got[1]
    assert got[0][0][0][3] == int(at(-0.5).timestamp())


async def test_the_migration_recomputes_split_orders_from_the_event_log(db_path: Path) -> None:
    events = day() + tracker_day()[2:]  # "S" twice: a duplicate placement, more reports
    events.append(split_order("open", at(-4), at(2)))
    events.append(step("open", "shipped", at(-3), location_id="WH2"))
    await write(db_path, events)
    db = sqlite3.connect(db_path)
    kept = db.execute("SELECT * FROM node_fulfilled ORDER BY 1, 2, 3").fetchall()
    parcels = db.execute("SELECT * FROM order_tracking ORDER BY 1, 2").fetchall()
    assert ("1Z1", "S", "WH1") in parcels
    # A store from before migration 22: no node_fulfilled, split orders fulfilled with
    # their first parcel.
    db.executescript(
        "DROP TABLE node_fulfilled; ALTER TABLE order_tracking DROP COLUMN location_id;"
        " UPDATE orders SET fulfilled_ts = shipped_ts, done_ts = shipped_ts;"
        " PRAGMA user_version = 21;"
    )
    assert migrate(db) == 21
    assert db.execute("SELECT * FROM node_fulfilled ORDER BY 1, 2, 3").fetchall() == kept
    assert db.execute("SELECT * FROM order_tracking ORDER BY 1, 2").fetchall() == parcels
    times = dict(db.execute("SELECT order_id, fulfilled_ts FROM orders").fetchall())
    db.close()
    assert times == {"S": int(at(-0.5).timestamp()), "open": None}
    assert snap(db_path, T0).fulfillment.total_open == 1  # "open": WH1 has not shipped


async def test_one_node_orders_are_fulfilled_with_their_first_report(db_path: Path) -> None:
    await write(
        db_path,
        [
            sku("A"),
            order("one", at(-6), [("A", 1)], promised=at(-1)),
            step("one", "shipped", at(-5), location_id="WH1"),
            step("one", "delivered", at(-0.5) + timedelta(minutes=1), location_id="WH1"),
        ],
    )
    s = snap(db_path, T0)
    assert s.fulfillment.total_open == 0
    assert row(s, "webshop").on_time_rate == 1.0  # shipped at −5 h, before −1 h


async def test_a_router_split_is_fulfilled_when_both_nodes_have_shipped(tmp_path: Path) -> None:
    from rules.routing.config import FulfillmentRouting

    placed = [
        sku("A"),
        sku("B"),
        location("WH1", kind="warehouse"),
        location("WH2", kind="warehouse"),
        snapshot("A", "WH1", 5, at(-4)),  # A only at WH1, B only at WH2: a split
        snapshot("B", "WH2", 5, at(-4)),
        order("r", at(-3), [("A", 1), ("B", 1)], loc=None, promised=at(-1)),
    ]
    reports = [
        step("r", "shipped", at(-2.5), location_id="WH1"),
        step("r", "shipped", at(-0.5), location_id="WH2"),
    ]
    # The reports after the routing, one at a time and together.
    for name, batches in (
        ("apart", [placed, reports[:1], reports[1:]]),
        ("one", [placed, reports]),
    ):
        path = tmp_path / f"{name}.db"
        for batch in batches:
            await write(path, batch, routing=FulfillmentRouting)
        db = sqlite3.connect(path)
        nodes, fulfilled = db.execute(
            "SELECT line_nodes, fulfilled_ts FROM orders WHERE order_id = 'r'"
        ).fetchone()
        db.close()
        assert nodes == '["WH1", "WH2"]', name
        assert fulfilled == int(at(-0.5).timestamp()), name
        assert snap(path, at(-1)).fulfillment.total_late == 0, name  # due at −1 h exactly
        assert snap(path, at(-0.75)).fulfillment.total_late == 1, name


def tracker_day() -> list[Event]:
    """WH1 labels parcel 1Z1 at −5.5 h; a carrier's tracker (no node) ships it at −5 h;
    WH2 ships its part at −0.5 h."""
    return [
        sku("A"),
        sku("B"),
        split_order("S", at(-6), at(-1)),
        step("S", "packed", at(-5.5), location_id="WH1", tracking="1Z1"),
        step("S", "shipped", at(-5), tracking="1Z1", carrier="UPS"),
        step("S", "shipped", at(-0.5), location_id="WH2", tracking="1Z2"),
    ]


async def test_a_trackers_report_covers_its_parcels_node_only(tmp_path: Path) -> None:
    events = tracker_day()
    stores = []
    # In order, and with the tracker's report before the report that names its node.
    for name, arrival in (("in_order", events), ("tracker_first", [*events[:3], *events[:2:-1]])):
        path = tmp_path / f"{name}.db"
        for event in arrival:
            await write(path, [event])
        stores.append(path)
        assert snap(path, at(-2)).fulfillment.total_open == 1, name  # WH2 has not shipped
        db = sqlite3.connect(path)
        (fulfilled,) = db.execute("SELECT fulfilled_ts FROM orders").fetchone()
        db.close()
        assert fulfilled == int(at(-0.5).timestamp()), name
    # A tracker whose parcel no report placed at a node covers the whole order.
    other = tmp_path / "unknown.db"
    await write(other, [*events[:3], step("S", "shipped", at(-5), tracking="1Z9")])
    assert snap(other, at(-2)).fulfillment.total_open == 0
