"""The metric catalogue: every metric name an alert rule may reference."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """What a metric name means and which labels its scopes carry."""

    name: str
    labels: tuple[str, ...]
    description: str
    panel: str
    """The console panel showing its rows: fulfillment, stockout, returns or overview."""


def _m(name: str, labels: tuple[str, ...], description: str, panel: str) -> MetricInfo:
    return MetricInfo(name, labels, description, panel)


_FUL = ("scope", "location", "channel", "carrier")
_STOCK = ("sku", "location", "category")
_RET = ("sku", "category")
_FEED = ("feed", "channel")


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        _m("fulfillment.open_orders", _FUL, "open orders (carriers: in transit)", "fulfillment"),
        _m("fulfillment.late", _FUL, "late open orders (carriers: overdue)", "fulfillment"),
        _m("fulfillment.oldest_open_minutes", _FUL, "age of the oldest open order", "fulfillment"),
        _m("fulfillment.on_time_rate", _FUL, "on-time share, last 24 h (0-1)", "fulfillment"),
        _m("fulfillment.at_risk", _FUL, "open orders due soon, not packed", "fulfillment"),
        _m("fulfillment.exceptions", _FUL, "open orders with an exception", "fulfillment"),
        _m("fulfillment.pick_p50_minutes", _FUL, "median pick time", "fulfillment"),
        _m("fulfillment.pick_p90_minutes", _FUL, "p90 pick time", "fulfillment"),
        _m("fulfillment.bopis_ready_rate", _FUL, "BOPIS ready within promise (0-1)", "fulfillment"),
        _m("carrier.delay_hours", ("scope", "carrier"), "mean delay vs estimate", "fulfillment"),
        _m("stock.available", _STOCK, "on hand - reserved - buffer", "stockout"),
        _m("stock.days_of_cover", _STOCK, "days of cover (no data: no sales)", "stockout"),
        _m("stock.velocity_per_day", _STOCK, "units sold per day", "stockout"),
        _m("stock.inbound_qty", _STOCK, "open inbound quantity", "stockout"),
        _m("stock.status_out", _STOCK, "1 when OUT", "stockout"),
        _m("stock.at_risk", _STOCK, "1 when OUT, OVERSELL or AT RISK", "stockout"),
        _m("stock.oversell", _STOCK, "1 when a channel advertises too much", "stockout"),
        _m("returns.rate", _RET, "return rate in the window", "returns"),
        _m("returns.z_score", _RET, "rate test z vs baseline", "returns"),
        _m("returns.spike", _RET, "1 when a return spike", "returns"),
        _m("returns.returned", _RET, "units returned in the window", "returns"),
        _m("headline.net_sales", (), "net sales today", "overview"),
        _m("headline.net_sales_vs_rolling", (), "net sales / rolling average", "overview"),
        _m("headline.orders_per_hour", (), "orders in the last hour", "overview"),
        _m("headline.orders_per_hour_vs_rolling", (), "orders/h / rolling", "overview"),
        _m("headline.aov", ("channel",), "average order value today", "overview"),
        _m("headline.aov_vs_rolling", ("channel",), "AOV / rolling AOV", "overview"),
        _m("feed.stale_minutes", _FEED, "minutes since the feed's last event", "overview"),
        _m("feed.stale", _FEED, "1 when the feed is flagged stale", "overview"),
        _m("feed.quarantined", _FEED, "payloads quarantined from the feed", "overview"),
    )
}
"""Every metric a rule may reference."""
