"""Hand-computed cases of the definition corrections (README: Metrics) and of as-of windows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams
from store.schema import migrate
from store.snapshots import Snapshots
from tests.builders import T0, at, ev, order, sku, step
from tests.conftest import write

P = MetricParams(timezone="America/New_York", return_min_count=1)


def snap(db: Path, now: object, params: MetricParams = P) -> Snapshots:
    conn = open_reader(db)
    try:
        return compute_snapshots(conn, now, params)  # type: ignore[arg-type]
    finally:
        conn.close()


def cancel(order_id: str, ts: object) -> object:
    return ev("order.cancelled", ts, {"order_id": order_id, "reason": "customer"})  # type: ignore[arg-type]


async def test_orders_per_hour_leaves_out_orders_cancelled_by_now(db_path: Path) -> None:
    await write(
        db_path,
        [
            order("kept", at(-0.5), [("A", 1)]),
            order("gone", at(-0.4), [("A", 1)]),
            cancel("gone", at(-0.1)),  # cancelled by now: left out
            order("later", at(-0.3), [("A", 1)]),
            cancel("later", at(0.5)),  # cancelled after now: still counts at now
        ],
    )
    assert snap(db_path, T0).headline.orders_per_hour == 2
    assert snap(db_path, at(1)).headline.orders_per_hour == 0  # (09:00+1h-1h, 11:00]: 0 kept


async def test_a_cancellation_at_the_instant_of_fulfillment_wins(db_path: Path) -> None:
    await write(
        db_path,
        [
            order("both", at(-2), [("A", 1)], promised=at(1)),
            step("both", "shipped", at(-1), carrier="UPS"),
            cancel("both", at(-1)),
            order("shipped", at(-2), [("A", 1)], promised=at(1)),
            step("shipped", "shipped", at(-1), carrier="UPS"),
        ],
    )
    wh = next(r for r in snap(db_path, T0).fulfillment.rows if r.key == "WH1")
    assert wh.open_orders == 0  # done either way
    assert wh.completed_24h == 1  # the cancelled one is not a fulfillment
    assert wh.on_time_rate == 1.0


async def test_a_channel_with_no_orders_today_keeps_its_aov_row(db_path: Path) -> None:
    channel = ev(
        "channel.upserted", at(-24 * 30), {"channel_id": "pos", "name": "POS", "kind": "pos"}
    )
    web = ev(
        "channel.upserted", at(-24 * 30), {"channel_id": "webshop", "name": "Web", "kind": "web"}
    )
    await write(
        db_path,
        [
            channel,
            web,
            order("y1", at(-24), [("A", 1)], channel="pos", price="30.00"),
            order("y2", at(-23), [("A", 1)], channel="pos", price="10.00"),
            order("t1", at(-0.5), [("A", 2)], price="10.00"),
        ],
    )
    rows = {c.channel: c for c in snap(db_path, T0).headline.channels}
    assert set(rows) == {"pos", "webshop"}
    pos = rows["pos"]
    assert (pos.orders, pos.net_sales, pos.aov, pos.aov_rolling) == (0, 0.0, None, 20.0)
    assert rows["webshop"].aov == 20.0 and rows["webshop"].aov_rolling is None


async def test_return_rollup_sales_are_as_of_now(db_path: Path) -> None:
    """The current hour counts only up to now; a cancellation after now reverses nothing yet."""
    await write(
        db_path,
        [
            sku("A", ts=at(-24 * 40)),
            order("b1", at(-24 * 3), [("A", 10)]),  # baseline sales
            order("b2", at(-24 * 2), [("A", 10)]),
            order("w1", at(-2), [("A", 3)]),
            cancel("w1", at(0.25)),  # cancelled after now
            order("w2", at(0.05), [("A", 2)]),  # now's hour, before now
            order("w3", at(0.3), [("A", 5)]),  # now's hour, after now
        ],
    )
    now = at(0.2)
    rollups = {(r.scope, r.key): r for r in snap(db_path, now).returns.rollups}
    assert rollups[("category", "apparel")].sold == 5  # w1 3 + w2 2
    assert rollups[("category", "apparel")].baseline_sold == 20
    later = {(r.scope, r.key): r for r in snap(db_path, at(0.5)).returns.rollups}
    assert later[("category", "apparel")].sold == 7  # w1 cancelled; w2 2 + w3 5


def _carriers(db: Path, now: object) -> dict[str, tuple[object, ...]]:
    return {
        r.key: (r.open_orders, r.late, r.carrier_delay_hours, r.on_time_rate, r.completed_24h)
        for r in snap(db, now).fulfillment.rows
        if r.scope == "carrier"
    }


async def test_carrier_rows_as_of_a_moment_before_later_reports(tmp_path: Path) -> None:
    """The carrier and estimate in force then, not the latest: the full store as of T
    equals a store fed only the events up to T (README: every number is as of now)."""
    now = at(4)  # 14:00 in New York
    later = at(5)
    events = [
        # z1: in transit with FedEx, due at 13:00 (overdue at now); a later report moves
        # the estimate to tomorrow.
        step("z1", "shipped", at(-5), carrier="FedEx", estimated_delivery=at(3)),
        step("z1", "exception", later, carrier="FedEx", estimated_delivery=at(24)),
        # z3: delivered at 12:00 against an 11:00 estimate (1 h late); a later report of
        # the delivery carries a 12:00 estimate.
        step("z3", "shipped", at(-5), carrier="FedEx", estimated_delivery=at(1)),
        step("z3", "delivered", at(2), carrier="FedEx"),
        step("z3", "delivered", later, carrier="FedEx", estimated_delivery=at(2)),
        # z4: in transit with UPS, due at 11:00; a later report names another carrier.
        step("z4", "shipped", at(-5), carrier="UPS", estimated_delivery=at(1)),
        step("z4", "exception", later, carrier="OnTrac"),
    ]
    for name in ("z1", "z3", "z4"):
        events.insert(0, order(name, at(-6), [("A", 1)], promised=at(30)))
    full, cut = tmp_path / "full.db", tmp_path / "cut.db"
    await write(full, events)
    await write(cut, [e for e in events if e.ts <= now])
    expected = {
        "FedEx": (1, 1, 1.0, 0.0, 1),  # z1 overdue; z3 delivered 1 h late (12:00 - 11:00)
        "UPS": (1, 1, None, None, 0),
    }
    assert _carriers(cut, now) == expected
    assert _carriers(full, now) == expected
    # At the end of the day the latest reports stand: z1 is due tomorrow (FedEx has no
    # late order left), z4 is with OnTrac and still past its 11:00 estimate.
    end = _carriers(full, at(6))
    assert "UPS" not in end
    assert end["OnTrac"][:2] == (1, 1)
    assert end["FedEx"][:2] == (1, 0)
    # A store from before carrier_reports: the migration fills it from the event log with
    # the rows the writer keeps, so the as-of answer stands.
    with sqlite3.connect(full) as db:
        kept = db.execute("SELECT * FROM carrier_reports ORDER BY order_id, ts").fetchall()
        db.executescript(
            "DROP TABLE carrier_reports; DROP TABLE node_fulfilled;"
            " ALTER TABLE order_tracking DROP COLUMN location_id;"
            " ALTER TABLE stock DROP COLUMN as_of_us;"
            " ALTER TABLE stock_counts DROP COLUMN us; PRAGMA user_version = 19;"
        )
        migrate(db)
        assert db.execute("SELECT * FROM carrier_reports ORDER BY order_id, ts").fetchall() == kept
    assert len(kept) == 7
    assert _carriers(full, now) == expected
