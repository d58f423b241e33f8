"""Frozen panel snapshots: what a metric computation returns and a panel renders.

Every number here follows its definition in the README's "Metrics" section.  Nothing in
this module queries anything; :mod:`store.metrics` builds these and ``console`` renders
them.  ``None`` means "no data" (shown as ``—``), never zero.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

FulfillmentStatusWord = Literal["LATE", "AT RISK", "OK"]
StockStatusWord = Literal["OUT", "AT RISK", "OVERSELL", "OK", "NO SALES"]


@dataclass(frozen=True)
class FulfillmentRow:
    """Fulfillment health of one location, channel or carrier."""

    scope: Literal["location", "channel", "carrier", "region"]
    """``region`` rows (destination region) carry only the delivered-late figures."""
    key: str
    open_orders: int
    oldest_open_minutes: float | None
    late: int
    at_risk: int
    on_time_rate: float | None
    """Shipped or made ready by promised-by ÷ all shipped or made ready, last 24 h."""
    completed_24h: int
    pick_p50_minutes: float | None
    pick_p90_minutes: float | None
    bopis_ready_rate: float | None
    carrier_delay_hours: float | None
    """Mean of (delivered − carrier estimate) over deliveries in the last 24 h."""
    exceptions: int
    status: FulfillmentStatusWord
    promised_delivered_24h: int = 0
    """Deliveries in the last 24 h of orders with a delivery date promised to the customer."""
    delivered_late_24h: int = 0
    """Of those, delivered after the customer's promise."""
    delivered_late_rate_24h: float | None = None
    """delivered_late_24h ÷ promised_delivered_24h."""
    promised_delivered_window: int = 0
    """The same over the last ``delivery_window_days`` (FulfillmentSnapshot)."""
    delivered_late_window: int = 0
    delivered_late_rate_window: float | None = None


@dataclass(frozen=True)
class FulfillmentSnapshot:
    """All fulfillment rows, the ones that matter first (late, at risk, healthy)."""

    rows: tuple[FulfillmentRow, ...]
    total_open: int
    total_late: int
    total_at_risk: int
    unroutable: int = 0
    """Open orders the router could place nowhere (held for a person, or unfulfillable)."""
    delivered_late_24h: int = 0
    """Deliveries in the last 24 h after the customer's promise (every location)."""
    delivered_late_window: int = 0
    """The same over the last ``delivery_window_days``."""
    delivery_window_days: float = 7.0
    """The chosen window of the ``*_window`` delivered-late figures."""


@dataclass(frozen=True)
class StockoutRow:
    """Stockout risk of one SKU at one location."""

    sku: str
    location_id: str
    category: str
    on_hand: int
    reserved: int
    safety_buffer: int
    available: int
    """on hand − reserved − safety buffer (may be negative)."""
    velocity_per_day: float
    days_of_cover: float | None
    """available ÷ velocity; None when nothing sold in the window."""
    projected_stockout: datetime | None
    inbound_qty: int
    inbound_eta: datetime | None
    lead_time_days: float
    reorder_point: int
    advertised_max: int | None
    """Largest quantity any channel advertises for this SKU × location."""
    oversell_channel: str | None
    status: StockStatusWord


@dataclass(frozen=True)
class StockoutSnapshot:
    """SKU × location rows, shortest cover first, capped to the top N."""

    rows: tuple[StockoutRow, ...]
    total_at_risk: int
    total_out: int
    total_oversell: int
    total_pairs: int


@dataclass(frozen=True)
class ReturnSpikeRow:
    """Return rate of one SKU in the trailing window against its own baseline."""

    sku: str
    category: str
    returned: int
    sold: int
    rate: float | None
    baseline_returned: int
    baseline_sold: int
    baseline_rate: float | None
    z_score: float | None
    """Rate test z statistic (normal approximation), current window vs baseline window."""
    spike: bool
    top_reasons: tuple[tuple[str, int], ...]
    p_value: float | None = None
    """Exact one-sided conditional-binomial p-value of the rate test (README: Return spike)."""
    q_value: float | None = None
    """Benjamini–Hochberg adjusted p-value across the SKU series of this evaluation."""


@dataclass(frozen=True)
class ReturnRollupRow:
    """Return rate of a whole category or channel, against its own baseline."""

    scope: Literal["category", "channel"]
    key: str
    returned: int
    sold: int
    rate: float | None
    baseline_returned: int
    baseline_sold: int
    baseline_rate: float | None
    z_score: float | None
    spike: bool
    p_value: float | None = None
    """Exact one-sided conditional-binomial p-value of the rate test."""
    q_value: float | None = None
    """Benjamini–Hochberg adjusted p-value across the roll-up series of this evaluation."""
    dispersion: float = 1.0
    """The baseline days' extra-binomial dispersion φ the p-value allows for (≥ 1)."""


@dataclass(frozen=True)
class ReturnSpikeSnapshot:
    """SKUs with returns in the window, strongest spike first; category and channel roll-ups."""

    rows: tuple[ReturnSpikeRow, ...]
    spikes: int
    rollups: tuple[ReturnRollupRow, ...] = ()
    """Every category and channel with returns or sales in either window, spikes first."""
    tested: int = 0
    """SKU series in the multiple-testing family (README: Return spike); 0: no candidate."""


@dataclass(frozen=True)
class FeedFreshness:
    """When a feed last delivered, and whether that is too long ago."""

    feed: str
    last_event_at: datetime | None
    events: int
    quarantined: int
    stale: bool


@dataclass(frozen=True)
class FeedHealthRow:
    """Live state of one feed adapter of ``serve`` (a webhook, stream, poll, drop folder)."""

    feed: str
    kind: str
    state: str
    """connected, retrying, stale, failed, done, or starting."""
    detail: str
    events_per_minute: float
    errors: int
    quarantined: int
    last_event_at: datetime | None
    updated_at: datetime
    """When ``serve`` last reported it; old means ``serve`` is not running."""
    silent: bool = False
    """``serve`` has not reported for over two minutes (the state shown may be old)."""


@dataclass(frozen=True)
class ChannelHeadline:
    """Today's figures for one channel."""

    channel: str
    orders: int
    net_sales: float
    aov: float | None
    aov_rolling: float | None


@dataclass(frozen=True)
class Headline:
    """The headline strip: today's trading against rolling averages, and feed freshness."""

    day_start: datetime
    net_sales: float
    gross_sales: float
    returns_value: float
    discounts: float
    net_sales_rolling: float | None
    """Mean net sales of the previous days up to the same local time of day."""
    orders_per_hour: float
    orders_per_hour_rolling: float | None
    channels: tuple[ChannelHeadline, ...]
    hourly_net_sales: tuple[float, ...]
    """Net sales per local hour of today so far, for the sparkline."""
    feeds: tuple[FeedFreshness, ...]
    adapters: tuple[FeedHealthRow, ...] = ()
    """The feed adapters ``serve`` runs, as it last reported them."""
    orders_unavailable: int = 0
    """Orders placed today with no lines (never available): placed and cancelled at once."""
    shipping_charged: float = 0.0
    """Shipping charged to customers on today's orders (not cancelled): not in net sales."""
    shipping_cost: float = 0.0
    """What today's shipments cost to send (each at its latest report)."""


@dataclass(frozen=True)
class Snapshots:
    """One consistent refresh: every panel computed from one read transaction."""

    as_of: datetime
    """The "now" the metrics were evaluated at (UTC)."""
    computed_in_ms: float
    headline: Headline
    fulfillment: FulfillmentSnapshot
    stockout: StockoutSnapshot
    returns: ReturnSpikeSnapshot
    counts: dict[str, int] = field(default_factory=dict)
    """Store counters: events, duplicates, quarantined."""


def to_jsonable(value: Any) -> Any:
    """Turn a snapshot (nested frozen dataclasses) into JSON-ready data (non-finite → None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, float):
        # JSON has no NaN or Infinity: a non-finite figure (e.g. days of cover with no
        # sales) is reported as null, so ``report --json`` is always valid JSON.
        return round(value, 4) if math.isfinite(value) else None
    return value


@dataclass(frozen=True)
class StockHistory:
    """Daily sales and end-of-day stock of one SKU × location, for its detail chart."""

    sku: str
    location_id: str
    day_starts: tuple[datetime, ...]
    """Start of each local day, oldest first; the last one is today (so far)."""
    sold: tuple[int, ...]
    """Units sold at the location that day, every channel."""
    on_hand_end: tuple[int, ...]
    """On hand at the end of the day (now, for today), from the current count backwards."""


@dataclass(frozen=True)
class LateOrder:
    """One open order past its promised-by time, for a location's detail."""

    order_id: str
    channel: str
    method: str
    placed_at: datetime
    promised_by: datetime
    minutes_late: float
    last_step: str
    """The furthest fulfillment step reached (``placed`` if none)."""


@dataclass(frozen=True)
class LateOrders:
    """A location's late orders, most late first."""

    location_id: str
    orders: tuple[LateOrder, ...]
    total: int


@dataclass(frozen=True)
class HeldSummary:
    """What the feeds view shows: unmapped ids per adapter, quarantine per reason."""

    unmapped_by_adapter: dict[str, int] = field(default_factory=dict)
    """Distinct external ids without a mapping, per adapter."""
    unmapped_events: dict[str, int] = field(default_factory=dict)
    """Deliveries that carried them, per adapter."""
    held: int = 0
    """Deliveries waiting for a replay."""
    quarantine_by_reason: tuple[tuple[str, int], ...] = ()
    """Quarantine rows per reason, most first (at most :data:`store.held.TOP_REASONS`)."""
    quarantined: int = 0
    """Every quarantine row."""
