"""Hand-made, realistic panel snapshots for console tests and demos of the UI alone.

One trading day of a US retailer seen at 14:30 Chicago time (20:30 UTC) on Monday
2025-11-24: a late warehouse and a late carrier, a stale marketplace feed, a SKU out of
stock, an oversell, a SKU with no sales (``days_of_cover`` None), and a return spike.
:func:`build_updated_snapshots` is the same store one minute later, with one row changed,
one gone and one new, to exercise the row-key diff.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from store.snapshots import (
    ChannelHeadline,
    FeedFreshness,
    FulfillmentRow,
    FulfillmentSnapshot,
    Headline,
    ReturnSpikeRow,
    ReturnSpikeSnapshot,
    Snapshots,
    StockoutRow,
    StockoutSnapshot,
)

AS_OF = datetime(2025, 11, 24, 20, 30, tzinfo=UTC)
"""The fixed "now" of the hand-made snapshots (14:30 in Chicago)."""
TZ = ZoneInfo("America/Chicago")
"""The operator's zone in the tests."""


def _fulfillment_row(
    scope: str,
    key: str,
    status: str,
    *,
    open_orders: int,
    oldest: float | None,
    late: int = 0,
    at_risk: int = 0,
    on_time: float | None = None,
    completed: int = 0,
    pick: tuple[float | None, float | None] = (None, None),
    bopis: float | None = None,
    carrier_delay: float | None = None,
    exceptions: int = 0,
) -> FulfillmentRow:
    return FulfillmentRow(
        scope=scope,  # type: ignore[arg-type]
        key=key,
        open_orders=open_orders,
        oldest_open_minutes=oldest,
        late=late,
        at_risk=at_risk,
        on_time_rate=on_time,
        completed_24h=completed,
        pick_p50_minutes=pick[0],
        pick_p90_minutes=pick[1],
        bopis_ready_rate=bopis,
        carrier_delay_hours=carrier_delay,
        exceptions=exceptions,
        status=status,  # type: ignore[arg-type]
    )


def fulfillment_rows() -> tuple[FulfillmentRow, ...]:
    """Late first, then at risk, then healthy (the store's order)."""
    return (
        _fulfillment_row(
            "location",
            "WH-TX",
            "LATE",
            open_orders=142,
            oldest=385,
            late=9,
            at_risk=14,
            on_time=0.871,
            completed=610,
            pick=(18, 52),
            exceptions=2,
        ),
        _fulfillment_row(
            "carrier",
            "UPS",
            "LATE",
            open_orders=64,
            oldest=1500,
            late=5,
            at_risk=3,
            on_time=0.912,
            completed=402,
            carrier_delay=3.4,
            exceptions=4,
        ),
        _fulfillment_row(
            "location",
            "STORE-AUS-01",
            "AT RISK",
            open_orders=23,
            oldest=95,
            at_risk=6,
            on_time=0.953,
            completed=88,
            pick=(9, 21),
            bopis=0.88,
        ),
        _fulfillment_row(
            "channel",
            "marketplace",
            "AT RISK",
            open_orders=51,
            oldest=240,
            at_risk=4,
            on_time=0.934,
            completed=190,
        ),
        _fulfillment_row(
            "location",
            "WH-NJ",
            "OK",
            open_orders=97,
            oldest=62,
            on_time=0.981,
            completed=744,
            pick=(12, 31),
            exceptions=1,
        ),
        _fulfillment_row(
            "channel",
            "web",
            "OK",
            open_orders=188,
            oldest=385,
            on_time=0.962,
            completed=1102,
        ),
        _fulfillment_row("channel", "pos", "OK", open_orders=0, oldest=None, completed=15),
        _fulfillment_row(
            "carrier",
            "FedEx",
            "OK",
            open_orders=41,
            oldest=300,
            on_time=0.975,
            completed=377,
            carrier_delay=-0.4,
        ),
    )


def _stock_row(
    sku: str,
    location: str,
    category: str,
    status: str,
    *,
    on_hand: int,
    reserved: int,
    buffer: int,
    velocity: float,
    lead_time: float = 5.0,
    reorder_point: int = 20,
    inbound: tuple[int, datetime | None] = (0, None),
    advertised: int | None = None,
    oversell: str | None = None,
) -> StockoutRow:
    available = on_hand - reserved - buffer
    cover: float | None = None
    stockout: datetime | None = None
    if velocity > 0:
        cover = max(0.0, available / velocity)
        stockout = AS_OF + timedelta(days=cover)
    return StockoutRow(
        sku=sku,
        location_id=location,
        category=category,
        on_hand=on_hand,
        reserved=reserved,
        safety_buffer=buffer,
        available=available,
        velocity_per_day=velocity,
        days_of_cover=cover,
        projected_stockout=stockout,
        inbound_qty=inbound[0],
        inbound_eta=inbound[1],
        lead_time_days=lead_time,
        reorder_point=reorder_point,
        advertised_max=advertised,
        oversell_channel=oversell,
        status=status,  # type: ignore[arg-type]
    )


def stockout_rows() -> tuple[StockoutRow, ...]:
    """Shortest cover first; the no-sales row last."""
    return (
        _stock_row(
            "SKU-1042",
            "WH-TX",
            "apparel",
            "OUT",
            on_hand=3,
            reserved=3,
            buffer=2,
            velocity=6.5,
            inbound=(120, AS_OF + timedelta(days=3, hours=2)),
            advertised=0,
        ),
        _stock_row(
            "SKU-2210",
            "STORE-AUS-01",
            "footwear",
            "OVERSELL",
            on_hand=6,
            reserved=1,
            buffer=1,
            velocity=2.0,
            advertised=12,
            oversell="marketplace",
        ),
        _stock_row(
            "SKU-0007",
            "WH-NJ",
            "apparel",
            "AT RISK",
            on_hand=50,
            reserved=7,
            buffer=5,
            velocity=9.5,
            lead_time=6.0,
            reorder_point=60,
        ),
        _stock_row(
            "SKU-3301",
            "WH-TX",
            "home",
            "AT RISK",
            on_hand=20,
            reserved=2,
            buffer=3,
            velocity=1.2,
            lead_time=7.0,
            reorder_point=20,
            inbound=(40, AS_OF + timedelta(days=9)),
        ),
        _stock_row(
            "SKU-5120",
            "WH-NJ",
            "electronics",
            "OK",
            on_hand=430,
            reserved=20,
            buffer=10,
            velocity=12.0,
            reorder_point=150,
            advertised=400,
        ),
        _stock_row(
            "SKU-7777",
            "STORE-AUS-01",
            "apparel",
            "NO SALES",
            on_hand=25,
            reserved=0,
            buffer=0,
            velocity=0.0,
        ),
    )


def returns_rows() -> tuple[ReturnSpikeRow, ...]:
    """Strongest spike first."""
    return (
        ReturnSpikeRow(
            sku="SKU-2210",
            category="footwear",
            returned=18,
            sold=90,
            rate=0.2,
            baseline_returned=40,
            baseline_sold=1000,
            baseline_rate=0.04,
            z_score=6.12,
            spike=True,
            top_reasons=(("too small", 11), ("damaged", 4), ("changed mind", 3)),
        ),
        ReturnSpikeRow(
            sku="SKU-1042",
            category="apparel",
            returned=9,
            sold=150,
            rate=0.06,
            baseline_returned=45,
            baseline_sold=1000,
            baseline_rate=0.045,
            z_score=0.84,
            spike=False,
            top_reasons=(("too large", 5), ("not as pictured", 4)),
        ),
        ReturnSpikeRow(
            sku="SKU-5120",
            category="electronics",
            returned=2,
            sold=30,
            rate=0.0667,
            baseline_returned=0,
            baseline_sold=0,
            baseline_rate=None,
            z_score=None,
            spike=False,
            top_reasons=(("defective", 2),),
        ),
        ReturnSpikeRow(
            sku="SKU-0007",
            category="apparel",
            returned=1,
            sold=0,
            rate=None,
            baseline_returned=12,
            baseline_sold=400,
            baseline_rate=0.03,
            z_score=None,
            spike=False,
            top_reasons=(),
        ),
    )


def headline() -> Headline:
    """Net sales 26 % under the rolling average (LOW), a stale marketplace feed."""
    return Headline(
        day_start=datetime(2025, 11, 24, 6, 0, tzinfo=UTC),
        net_sales=18450.2,
        gross_sales=21300.0,
        returns_value=1950.0,
        discounts=899.8,
        net_sales_rolling=24800.0,
        orders_per_hour=41.5,
        orders_per_hour_rolling=38.2,
        channels=(
            ChannelHeadline("web", 180, 9800.0, 54.44, 56.10),
            ChannelHeadline("pos", 210, 6100.5, 29.05, 28.80),
            ChannelHeadline("marketplace", 52, 2150.2, 41.35, 47.90),
            ChannelHeadline("app", 5, 399.5, 79.90, None),
        ),
        hourly_net_sales=(
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            120.0,
            310.5,
            820.0,
            1440.0,
            2210.0,
            2655.0,
            3010.2,
            3120.0,
            2890.0,
            1874.5,
        ),
        feeds=(
            FeedFreshness("web", AS_OF - timedelta(seconds=20), 18230, 0, False),
            FeedFreshness("pos", AS_OF - timedelta(seconds=45), 9921, 0, False),
            FeedFreshness("marketplace", AS_OF - timedelta(minutes=42), 2210, 0, True),
            FeedFreshness("wms", AS_OF - timedelta(minutes=2), 15502, 0, False),
            FeedFreshness("carriers", AS_OF - timedelta(minutes=4), 2327, 3, False),
        ),
    )


def build_snapshots(as_of: datetime = AS_OF) -> Snapshots:
    """The hand-made snapshots, computed "at" ``as_of``."""
    fulfillment = fulfillment_rows()
    stock = stockout_rows()
    returns = returns_rows()
    return Snapshots(
        as_of=as_of,
        computed_in_ms=84.0,
        headline=headline(),
        fulfillment=FulfillmentSnapshot(
            rows=fulfillment,
            total_open=sum(r.open_orders for r in fulfillment if r.scope == "location"),
            total_late=sum(r.late for r in fulfillment if r.scope == "location"),
            total_at_risk=sum(r.at_risk for r in fulfillment if r.scope == "location"),
        ),
        stockout=StockoutSnapshot(
            rows=stock,
            total_at_risk=sum(1 for r in stock if r.status == "AT RISK"),
            total_out=sum(1 for r in stock if r.status == "OUT"),
            total_oversell=sum(1 for r in stock if r.status == "OVERSELL"),
            total_pairs=212,
        ),
        returns=ReturnSpikeSnapshot(rows=returns, spikes=sum(1 for r in returns if r.spike)),
        counts={"events": 48190, "duplicates": 12, "quarantined": 3},
    )


def build_updated_snapshots() -> Snapshots:
    """One minute later: WH-TX has 11 late, SKU-7777 is gone, SKU-8800 at WH-NJ is new."""
    base = build_snapshots(AS_OF + timedelta(minutes=1))
    rows = list(base.fulfillment.rows)
    rows[0] = replace(rows[0], late=11, open_orders=145)
    stock = [r for r in base.stockout.rows if r.sku != "SKU-7777"]
    stock.insert(
        2,
        _stock_row(
            "SKU-8800",
            "WH-NJ",
            "home",
            "AT RISK",
            on_hand=30,
            reserved=2,
            buffer=2,
            velocity=8.0,
            lead_time=5.0,
            reorder_point=40,
        ),
    )
    return replace(
        base,
        fulfillment=replace(base.fulfillment, rows=tuple(rows), total_late=13),
        stockout=replace(base.stockout, rows=tuple(stock)),
    )
