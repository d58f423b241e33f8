"""Every metric against small scenarios computed by hand (README: Metrics)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store.metrics import (
    MetricParams,
    compute_snapshots,
    open_reader,
    percentile,
    rate_z_score,
)
from store.model import Event
from store.risk import is_oversell, stockout_row
from store.snapshots import Snapshots
from tests.builders import (
    T0,
    adjust,
    at,
    ev,
    inbound,
    listing,
    location,
    order,
    ret,
    sku,
    snapshot,
    step,
)
from tests.conftest import write

DAY = 86400
P = MetricParams(timezone="America/New_York")


def snap(db: Path, now: datetime, params: MetricParams = P) -> Snapshots:
    conn = open_reader(db)
    try:
        return compute_snapshots(conn, now, params)
    finally:
        conn.close()


# --- fulfillment -------------------------------------------------------------------------


async def test_fulfillment_late_at_risk_on_time_and_pick_times(db_path: Path) -> None:
    # now = T0 = 10:00.  Horizon 2 h.
    await write(
        db_path,
        [
            order("late", at(-2), [("A", 1)], promised=at(-1)),  # open, past promise
            step("late", "released", at(-1.8333)),
            step("late", "picked", at(-1.3333)),  # 30 min
            order("risk", at(-0.5), [("A", 1)], promised=at(1)),  # due in 1 h, not packed
            order("later", at(-1), [("A", 1)], promised=at(2.5)),  # due in 2.5 h: healthy
            order("packed", at(-1), [("A", 1)], promised=at(1)),  # due in 1 h but packed
            step("packed", "packed", at(-0.1)),
            order("ontime", at(-1), [("A", 1)], promised=at(0.5)),
            step("ontime", "released", at(-1)),
            step("ontime", "picked", at(-1) + timedelta(minutes=20)),
            step("ontime", "shipped", at(-0.1666), carrier="UPS"),
            order("tardy", at(-2), [("A", 1)], promised=at(-1)),
            step("tardy", "released", at(-2)),
            step("tardy", "picked", at(-1)),  # 60 min
            step("tardy", "shipped", at(-0.3333), carrier="UPS"),
            order("future", at(1), [("A", 1)], promised=at(2)),  # placed after now: ignored
        ],
    )
    s = snap(db_path, T0)
    wh = next(r for r in s.fulfillment.rows if r.scope == "location" and r.key == "WH1")
    assert (wh.open_orders, wh.late, wh.at_risk) == (4, 1, 1)
    assert wh.status == "LATE"
    assert wh.oldest_open_minutes == pytest.approx(120)
    assert wh.on_time_rate == pytest.approx(0.5)  # ontime by promise, tardy after
    assert wh.completed_24h == 2
    assert wh.pick_p50_minutes == pytest.approx(30, abs=0.1)  # picks 30, 20, 60
    assert wh.pick_p90_minutes == pytest.approx(60, abs=0.1)  # nearest rank ceil(0.9*3)=3
    assert s.fulfillment.total_late == 1
    assert s.fulfillment.rows[0].status == "LATE"  # late rows first


async def test_bopis_ready_rate_and_open_exceptions(db_path: Path) -> None:
    await write(
        db_path,
        [
            order("b1", at(-3), [("A", 1)], method="bopis", loc="S1", promised=at(-1)),
            step("b1", "ready_for_pickup", at(-1.5)),
            order("b2", at(-3), [("A", 1)], method="bopis", loc="S1", promised=at(-2)),
            step("b2", "ready_for_pickup", at(-1)),
            order("x", at(-3), [("A", 1)], loc="S1", promised=at(5)),
            step("x", "exception", at(-1), detail="damaged"),
        ],
    )
    s = snap(db_path, T0)
    s1 = next(r for r in s.fulfillment.rows if r.key == "S1")
    assert s1.bopis_ready_rate == pytest.approx(0.5)
    assert s1.exceptions == 1
    assert s1.open_orders == 1


def unpromised(placed: Event) -> Event:
    """``placed`` without a promised-by (the builder gives every order one)."""
    body = placed.body.model_copy(update={"promised_by": None})
    return placed.model_copy(update={"body": body})


async def test_a_pickup_without_a_promise_is_neither_ready_in_time_nor_late(
    db_path: Path,
) -> None:
    await write(
        db_path,
        [
            order("b1", at(-3), [("A", 1)], method="bopis", loc="S1", promised=at(-1)),
            step("b1", "ready_for_pickup", at(-1.5)),  # in time
            order("b2", at(-3), [("A", 1)], method="bopis", loc="S1", promised=at(-2)),
            step("b2", "ready_for_pickup", at(-1)),  # late
            order("b3", at(-3), [("A", 1)], method="bopis", loc="S1", promised=at(-1)),
            step("b3", "ready_for_pickup", at(-1)),  # exactly at the promise: in time
            unpromised(order("b4", at(-3), [("A", 1)], method="bopis", loc="S1")),
            step("b4", "ready_for_pickup", at(-0.5)),  # no promise: left out
            unpromised(order("n1", at(-3), [("A", 1)], method="bopis", loc="S2")),
            step("n1", "ready_for_pickup", at(-0.5)),
        ],
    )
    rows = {r.key: r for r in snap(db_path, T0).fulfillment.rows}
    assert rows["S1"].bopis_ready_rate == pytest.approx(2 / 3)  # not 2/4
    assert rows["S2"].bopis_ready_rate is None  # no promise at all: no data, not 0 %


async def test_carrier_delay_is_mean_of_delivered_minus_estimate(db_path: Path) -> None:
    await write(
        db_path,
        [
            step("c1", "shipped", at(-48), carrier="FedEx", estimated_delivery=at(-2)),
            step("c1", "delivered", at(-1.5)),  # +0.5 h
            step("c2", "shipped", at(-48), carrier="FedEx", estimated_delivery=at(-2)),
            step("c2", "delivered", at(-3)),  # -1 h
            step("c3", "shipped", at(-30), carrier="FedEx", estimated_delivery=at(-1)),  # overdue
        ],
    )
    s = snap(db_path, T0)
    fx = next(r for r in s.fulfillment.rows if r.scope == "carrier")
    assert fx.carrier_delay_hours == pytest.approx(-0.25)
    assert fx.on_time_rate == pytest.approx(0.5)
    assert (fx.open_orders, fx.late, fx.status) == (1, 1, "LATE")


# --- stockout risk ------------------------------------------------------------------------


def row(**kw: object):  # type: ignore[no-untyped-def]
    base: dict[str, object] = dict(
        sku="A",
        location_id="S1",
        category="c",
        on_hand=10,
        reserved=0,
        safety_buffer=0,
        units_sold=14,
        window_days=7,
        inbound=[],
        lead_time_days=7,
        reorder_point=0,
        listing=None,
        t=int(T0.timestamp()),
    )
    base.update(kw)
    return stockout_row(**base)  # type: ignore[arg-type]


def test_cover_is_available_over_velocity() -> None:
    r = row()  # 10 available, 2/day
    assert r.velocity_per_day == 2
    assert r.days_of_cover == 5
    assert r.projected_stockout == T0 + timedelta(days=5)
    assert r.status == "AT RISK"  # 5 days < 7 days lead time


def test_no_sales_is_not_at_risk_and_never_divides() -> None:
    r = row(units_sold=0)
    assert (r.days_of_cover, r.projected_stockout, r.status) == (None, None, "NO SALES")


def test_zero_and_negative_available_are_out() -> None:
    assert row(on_hand=0).status == "OUT"
    r = row(on_hand=3, reserved=2, safety_buffer=2)
    assert r.available == -1
    assert r.days_of_cover == 0
    assert r.status == "OUT"


def test_inbound_landing_before_stockout_extends_cover() -> None:
    t = int(T0.timestamp())
    early = row(inbound=[(20, t + 3 * DAY)])
    assert early.days_of_cover == 15  # (10 + 20) / 2
    assert early.status == "OK"
    late = row(inbound=[(20, t + 6 * DAY)])  # lands a day after the stockout
    assert late.days_of_cover == 5
    assert late.status == "AT RISK"
    assert (late.inbound_qty, late.inbound_eta) == (20, T0 + timedelta(days=6))


def test_reorder_point_and_oversell() -> None:
    assert row(lead_time_days=1, reorder_point=11).status == "AT RISK"
    r = row(lead_time_days=1, listing=(15, "marketplace"))
    assert (r.status, r.oversell_channel, r.advertised_max) == ("OVERSELL", "marketplace", 15)
    assert row(lead_time_days=1, listing=(10, "marketplace")).status == "OK"


async def test_stockout_from_store_uses_window_buffer_and_sorts(db_path: Path) -> None:
    await write(
        db_path,
        [
            sku("A", lead=12),
            sku("B", lead=3),
            sku("C", lead=60),
            location("S1", buffer=2),
            snapshot("A", "S1", 12, at(-1)),
            snapshot("B", "S1", 100, at(-1)),
            snapshot("C", "S1", 100, at(-1)),
            # 7 units of A inside the 7-day window, 50 outside it
            order("o1", at(-24 * 3), [("A", 7)], loc="S1", channel="pos", method="bopis"),
            order("o0", at(-24 * 9), [("A", 50)], loc="S1", channel="pos", method="bopis"),
            order(
                "o2", at(-24 * 2), [("B", 14), ("C", 14)], loc="S1", channel="pos", method="bopis"
            ),
        ],
    )
    s = snap(db_path, T0)
    a = next(r for r in s.stockout.rows if r.sku == "A")
    assert a.available == 10  # 12 on hand − 2 buffer
    assert a.velocity_per_day == pytest.approx(1.0)
    assert a.days_of_cover == pytest.approx(10)
    assert a.status == "AT RISK"  # 10 days < 12 days lead time
    c = next(r for r in s.stockout.rows if r.sku == "C")
    assert c.days_of_cover == pytest.approx(98 / 2)  # 49 days < 60
    # B (49 days of cover, 3 days lead) is healthy and not listed; shortest cover first
    assert [r.sku for r in s.stockout.rows] == ["A", "C"]
    assert (s.stockout.total_at_risk, s.stockout.total_pairs) == (2, 3)


async def test_risk_flags_follow_writes_and_past_moments(db_path: Path) -> None:
    await write(
        db_path,
        [
            sku("A", lead=5),
            snapshot("A", "S1", 4, at(-1)),
            order("o", at(-2), [("A", 7)], loc="S1"),
        ],
    )
    assert [r.status for r in snap(db_path, T0).stockout.rows] == ["AT RISK"]  # 4 days < 5
    await write(db_path, [adjust("A", "S1", 100, at(0.5))])  # a receipt: healthy again
    assert snap(db_path, at(1)).stockout.rows == ()
    # asked about a moment before the flags were computed, every pair is evaluated (on
    # the latest stock levels, which are not kept as of past moments)
    assert snap(db_path, at(-0.5)).stockout.total_pairs == 1
    # with no new events, risk only falls as time passes: 8 days on, no sales in window
    later = snap(db_path, at(24 * 8))
    assert later.stockout.rows == ()


# --- return spike -------------------------------------------------------------------------


def test_rate_z_score_by_hand() -> None:
    # 15 returns on 60 sold now, 20 on 400 in the baseline: n=35, π=60/460.
    pi = 60 / 460
    expected = (15 - 35 * pi) / math.sqrt(35 * pi * (1 - pi))
    assert rate_z_score(15, 60, 20, 400) == pytest.approx(expected)
    assert expected == pytest.approx(5.237, abs=0.01)
    assert rate_z_score(0, 10, 0, 10) is None
    assert rate_z_score(3, 0, 1, 100) is None


async def test_return_spike_needs_count_and_significance(db_path: Path) -> None:
    events = [sku("HOT"), sku("TINY"), sku("STEADY")]
    # baseline window (8-35 days ago): HOT 400 sold, 20 returned; STEADY same
    for code in ("HOT", "STEADY"):
        events.append(order(f"b-{code}", at(-24 * 20), [(code, 400)]))
        events.append(ret(code, 20, at(-24 * 20)))
    events.append(order("b-TINY", at(-24 * 20), [("TINY", 100)]))
    events.append(ret("TINY", 1, at(-24 * 20)))
    # current window: HOT 60 sold, 15 returned; STEADY 60 sold 4 (+1) returned; TINY 3 and 3
    events += [
        order("c-HOT", at(-24), [("HOT", 60)]),
        ret("HOT", 10, at(-2), reason="defective"),
        ret("HOT", 5, at(-1), reason="not as described"),
    ]
    events += [order("c-STEADY", at(-24), [("STEADY", 60)]), ret("STEADY", 4, at(-1))]
    events += [order("c-TINY", at(-24), [("TINY", 3)]), ret("TINY", 3, at(-1))]
    # a return of an order sold long before the window still counts in the window
    events += [ret("STEADY", 1, at(-0.5))]
    await write(db_path, events)
    s = snap(db_path, T0)
    by = {r.sku: r for r in s.returns.rows}
    assert by["HOT"].spike and by["HOT"].rate == pytest.approx(0.25)
    assert by["HOT"].baseline_rate == pytest.approx(0.05)
    assert by["HOT"].top_reasons == (("defective", 10), ("not as described", 5))
    assert "TINY" not in by  # 100 % on three units is not a spike: below the minimum count
    assert not by["STEADY"].spike and by["STEADY"].returned == 5  # 8 % vs 5 %: z ≈ 1.0
    assert s.returns.rows[0].sku == "HOT" and s.returns.spikes == 1
    # roll-ups: every SKU here is apparel, sold and returned on the webshop channel
    rollups = {(r.scope, r.key): r for r in s.returns.rollups}
    apparel = rollups[("category", "apparel")]
    assert (apparel.returned, apparel.sold) == (15 + 5 + 3, 60 + 60 + 3)
    assert (apparel.baseline_returned, apparel.baseline_sold) == (20 + 20 + 1, 400 + 400 + 100)
    assert apparel.z_score == pytest.approx(rate_z_score(23, 123, 41, 900))
    assert apparel.spike and rollups[("channel", "webshop")].returned == 23


# --- headline -----------------------------------------------------------------------------


async def test_net_sales_today_across_a_dst_change(db_path: Path) -> None:
    # 2026-11-01: New York falls back from EDT to EST; the local day starts 04:00Z.
    day_start = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    now = datetime(2026, 11, 2, 4, 30, tzinfo=UTC)  # 23:30 EST, still Nov 1
    await write(
        db_path,
        [
            order("yesterday", day_start - timedelta(minutes=1), [("A", 1)], price="99.00"),
            order(
                "t1", day_start + timedelta(minutes=30), [("A", 2)], price="10.00", discount="1.00"
            ),
            order("t2", now - timedelta(minutes=10), [("A", 1)], price="5.00"),
            ret("A", 1, now - timedelta(hours=3), refund="4.00"),
            ev("order.cancelled", now - timedelta(minutes=5), {"order_id": "t2"}),
        ],
    )
    s = snap(db_path, now)
    h = s.headline
    assert h.day_start == day_start
    assert (h.gross_sales, h.discounts, h.returns_value) == (20.0, 1.0, 4.0)
    assert h.net_sales == 15.0
    assert len(h.hourly_net_sales) == 25  # the long day has 25 local hours
    assert sum(h.hourly_net_sales) == pytest.approx(15.0)


async def test_rolling_average_and_aov(db_path: Path) -> None:
    events = []
    for back in (1, 2):  # the two previous days, both before 10:00 local
        events.append(order(f"p{back}", at(-24 * back - 1), [("A", 1)], price="30.00"))
    events.append(order("late-p1", at(-24 + 3), [("A", 1)], price="500.00"))  # after 10:00 then
    events.append(order("now1", at(-0.5), [("A", 2)], price="10.00"))
    await write(db_path, events)
    h = snap(db_path, T0).headline
    assert h.net_sales == 20.0
    assert h.net_sales_rolling == pytest.approx(30.0)  # same time of day only
    assert h.orders_per_hour == 1
    web = h.channels[0]
    assert (web.channel, web.orders, web.aov) == ("webshop", 1, 20.0)
    assert web.aov_rolling == pytest.approx((30 + 30 + 500) / 3)


async def test_feed_freshness_and_a_feed_that_never_delivered(db_path: Path) -> None:
    await write(
        db_path, [adjust("A", "S1", -1, at(-0.5)), listing("marketplace", "A", "S1", 1, at(-1))]
    )
    params = MetricParams(
        timezone="America/New_York", stale_feed_minutes=45, expected_feeds=("carrier",)
    )
    feeds = {f.feed: f for f in snap(db_path, T0, params).headline.feeds}
    assert not feeds["inventory"].stale
    assert feeds["marketplace"].stale  # 60 min > 45
    assert feeds["carrier"].stale and feeds["carrier"].last_event_at is None


def test_percentile_nearest_rank() -> None:
    assert percentile([], 0.9) is None
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([float(x) for x in range(1, 11)], 0.9) == 9.0


async def test_inbound_from_store(db_path: Path) -> None:
    await write(
        db_path,
        [
            sku("A", lead=20),
            snapshot("A", "S1", 10, at(-1)),
            order("o", at(-24), [("A", 14)], loc="S1"),
            inbound("PO1", "A", "S1", 20, at(24 * 3), at(-2)),
        ],
    )
    a = snap(db_path, T0).stockout.rows[0]
    assert a.days_of_cover == pytest.approx(15)  # (10 + 20 landing on day 3) / 2 per day
    assert a.status == "AT RISK"  # 15 days < 20 days lead time


async def test_stock_history_rebuilds_day_end_stock_from_adjustments(db_path: Path) -> None:
    from store.details import stock_history

    await write(
        db_path,
        [
            snapshot("A", "S1", 50, at(-24 * 3)),
            adjust("A", "S1", -5, at(-24 * 2)),  # two days ago
            adjust("A", "S1", -10, at(-1)),  # today, 09:00 local
            order("o", at(-24 * 2), [("A", 5)], loc="S1"),
        ],
    )
    conn = open_reader(db_path)
    try:
        h = stock_history(conn, "A", "S1", T0, "America/New_York", days=4)
    finally:
        conn.close()
    assert [d.astimezone().isoformat()[:10] for d in h.day_starts] == [
        "2026-11-15",
        "2026-11-16",
        "2026-11-17",
        "2026-11-18",
    ]
    assert h.on_hand_end == (50, 45, 45, 35)
    assert h.sold == (0, 5, 0, 0)


async def test_orders_no_node_could_take_are_counted_unroutable(db_path: Path) -> None:
    from rules.routing.config import FulfillmentRouting

    await write(
        db_path,
        [
            sku("A"),
            location("WH1", kind="warehouse"),
            snapshot("A", "WH1", 1, at(-1)),
            order("big", at(-0.5), [("A", 5)], loc=None),
        ],  # 5 wanted, 1 in stock anywhere
        routing=FulfillmentRouting,
    )
    f = snap(db_path, T0).fulfillment
    assert f.unroutable == 1
    assert snap(db_path, at(-1)).fulfillment.unroutable == 0  # not yet placed then


async def test_an_old_event_never_clears_a_risk_flag_that_holds_now(db_path: Path) -> None:
    # 10 on hand, 70 sold in the last day: cover 1 day < 5 days lead time
    await write(
        db_path,
        [sku("A", lead=5), snapshot("A", "WH1", 10, at(-2)), order("o", at(-20), [("A", 70)])],
    )
    assert [r.status for r in snap(db_path, T0).stockout.rows] == ["AT RISK"]
    # a catalogue re-sync stamped 90 days ago touches the pair
    await write(db_path, [sku("A", lead=5, ts=T0 - timedelta(days=90))])
    assert [r.status for r in snap(db_path, T0).stockout.rows] == ["AT RISK"]


async def test_sparkline_hours_add_up_to_net_sales_after_a_cancellation(db_path: Path) -> None:
    await write(
        db_path,
        [
            order("c", at(0.2), [("A", 1)], price="50.00"),
            order("k", at(0.5), [("A", 1)], price="20.00"),
            ev("order.cancelled", at(1.5), {"order_id": "c"}),
        ],
    )
    h = snap(db_path, at(2)).headline
    assert h.net_sales == 20.0
    assert sum(h.hourly_net_sales) == pytest.approx(20.0)


async def test_a_quiet_morning_counts_as_zero_in_the_rolling_average(db_path: Path) -> None:
    # every previous day sold at 10:00 local; now is 00:30, so nothing yet on any of them
    await write(db_path, [order(f"d{n}", at(-24 * n), [("A", 1)]) for n in range(1, 8)])
    h = snap(db_path, T0 - timedelta(hours=9, minutes=30)).headline
    assert h.net_sales_rolling == 0.0
    assert h.orders_per_hour_rolling == 0.0


async def test_the_newest_carrier_estimate_wins_whatever_the_arrival_order(db_path: Path) -> None:
    await write(
        db_path,
        [
            step("p", "shipped", at(-20), carrier="FedEx"),
            step("p", "packed", at(-10), carrier="FedEx", estimated_delivery=at(20)),
        ],
    )
    await write(db_path, [step("p", "released", at(-21), estimated_delivery=at(-2))])
    fx = next(r for r in snap(db_path, T0).fulfillment.rows if r.key == "FedEx")
    assert (fx.late, fx.status) == (0, "OK")


def test_oversell_one_unit_lag_with_weeks_of_cover_is_not_flagged() -> None:
    # available 10, velocity 0.5/day (cover 20 d), advertises 11: excess 1 ≤ 2 units, and
    # 20 days of cover do not run out before a 15-minute sync.
    limits = MetricParams().oversell_limits("marketplace")
    assert not is_oversell(11, 10, 20.0, limits)
    r = row(lead_time_days=1, listing=(11, "marketplace"), limits=limits)
    assert r.status == "OK" and r.oversell_channel is None


def test_oversell_material_excess_is_flagged() -> None:
    # available 10, advertises 15: excess 5 > max(2 units, 5 % of 10 = 0.5).
    limits = MetricParams().oversell_limits("marketplace")
    assert is_oversell(15, 10, 20.0, limits)
    r = row(lead_time_days=1, listing=(15, "marketplace"), limits=limits)
    assert (r.status, r.oversell_channel) == ("OVERSELL", "marketplace")
    # a per-channel tolerance of 10 units tolerates it
    wide = MetricParams(oversell_channel_tolerance={"marketplace": (10, 0.0)})
    assert not is_oversell(15, 10, 20.0, wide.oversell_limits("marketplace"))
    assert is_oversell(15, 10, 20.0, wide.oversell_limits("webshop"))


def test_oversell_small_excess_selling_out_before_next_sync_is_flagged() -> None:
    # available 2, advertises 3 (excess 1, tolerated), but velocity 288/day sells 2 units in
    # 10 minutes: cover 2/288 d = 10 min < the 15-minute sync, so the channel oversells.
    params = MetricParams()
    limits = params.oversell_limits("webshop")
    assert is_oversell(3, 2, 2 / 288, limits)
    slow = MetricParams(listing_sync_overrides={"webshop": 5.0}).oversell_limits("webshop")
    assert not is_oversell(3, 2, 2 / 288, slow)  # synced every 5 minutes: in time
