"""The metric registry: one declaration per metric a rule, a panel or the README names.

Each :class:`Metric` says what the number is (its id, the labels of its scopes, its unit
and display format, its definition in words), where it is shown (the console panel and
column) and its default thresholds: ``warning`` is the level a panel highlights when no
alert rule of the operator's says otherwise, ``alert`` the threshold of the shipped
default rule (``rules/defaults.toml``).  Both are compared with ``op``: the value is bad
when ``value op level``.

The alert catalogue (what ``metric =`` in a rule may say), ``omniops rules metrics``, the
panel highlights (:mod:`rules.highlights`) and the README's metric table
(:func:`markdown_table`, checked by a test) all read :data:`METRICS`.  Pure data: this
module imports nothing of the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal[">", ">=", "<", "<="]
"""A comparison: the value is bad when ``value op level``."""

Panel = Literal["fulfillment", "stockout", "returns", "overview"]
"""The console tab showing a metric's rows."""

Format = Literal["int", "minutes", "hours", "rate", "ratio", "number", "money", "flag", "z"]
"""How a value is shown: ``rate`` 0-1 as a percentage, ``ratio`` as a share of the rolling
value (0.8 = 20 % below), ``flag`` 1 or 0."""


@dataclass(frozen=True)
class Metric:
    """One metric: what it means, where it is shown, and its default thresholds."""

    id: str
    """The name a rule's ``metric =`` uses, e.g. ``fulfillment.late``."""
    labels: tuple[str, ...]
    """The labels of its scopes (what a rule's matchers may test)."""
    unit: str
    """The unit of the value, in words (``orders``, ``minutes``, ``share`` …)."""
    format: Format
    definition: str
    """What the number is, in one line (the README defines each in full)."""
    panel: Panel
    column: str | None = None
    """The column of ``panel`` that shows it (None: not a column of its own)."""
    op: Op | None = None
    """The direction in which the value is bad (None: no default threshold)."""
    warning: float | None = None
    """The default level a panel highlights (when no rule of the operator's applies)."""
    alert: float | None = None
    """The threshold of the shipped default alert rule on this metric, if any."""
    header: str | None = None
    """The header of its panel column (short: ``Late``); the console reads it from here."""

    @property
    def default_level(self) -> float | None:
        """The level highlighted by default: the warning level, else the alert threshold."""
        return self.warning if self.warning is not None else self.alert


_FUL = ("scope", "location", "channel", "carrier")
_FUL_REGION = (*_FUL, "region")
_STOCK = ("sku", "location", "category")
_RET = ("sku", "category")
_FEED = ("feed", "channel")

_DECLARED = (
    # -- fulfillment health (per location, channel, carrier) --
    Metric(
        "fulfillment.open_orders",
        _FUL,
        "orders",
        "int",
        "open orders (carriers: in transit)",
        "fulfillment",
        "open",
        header="Open",
    ),
    Metric(
        "fulfillment.late",
        _FUL,
        "orders",
        "int",
        "late open orders (carriers: overdue)",
        "fulfillment",
        "late",
        ">",
        alert=10,
        header="Late",
    ),
    Metric(
        "fulfillment.oldest_open_minutes",
        _FUL,
        "minutes",
        "minutes",
        "age of the oldest open order",
        "fulfillment",
        "oldest",
        header="Oldest",
    ),
    Metric(
        "fulfillment.on_time_rate",
        _FUL,
        "share",
        "rate",
        "on-time share, last 24 h (0-1)",
        "fulfillment",
        "on_time",
        "<",
        warning=0.9,
        alert=0.9,
        header="OnTime",
    ),
    Metric(
        "fulfillment.delivered_late",
        _FUL_REGION,
        "orders",
        "int",
        "delivered late against the customer's promise, last 24 h",
        "fulfillment",
        None,
    ),
    Metric(
        "fulfillment.delivered_late_rate",
        _FUL_REGION,
        "share",
        "rate",
        "share delivered late against the customer's promise, last 24 h (0-1)",
        "fulfillment",
        "delivered_late",
        ">",
        warning=0.1,
        header="DlvLate",
    ),
    Metric(
        "fulfillment.at_risk",
        _FUL,
        "orders",
        "int",
        "open orders due soon, not packed",
        "fulfillment",
        "at_risk",
        header="Risk",
    ),
    Metric(
        "fulfillment.exceptions",
        _FUL,
        "orders",
        "int",
        "open orders with an exception",
        "fulfillment",
        "exceptions",
        header="Exc",
    ),
    Metric(
        "fulfillment.pick_p50_minutes",
        _FUL,
        "minutes",
        "minutes",
        "median pick time",
        "fulfillment",
        "pick",
    ),
    Metric(
        "fulfillment.pick_p90_minutes",
        _FUL,
        "minutes",
        "minutes",
        "p90 pick time",
        "fulfillment",
        "pick",
        ">",
        alert=45,
        header="Pick50/90",
    ),
    Metric(
        "fulfillment.bopis_ready_rate",
        _FUL,
        "share",
        "rate",
        "BOPIS ready within promise (0-1)",
        "fulfillment",
    ),
    Metric(
        "fulfillment.completed_24h",
        _FUL,
        "orders",
        "int",
        "orders shipped or made ready in the last 24 h",
        "fulfillment",
    ),
    Metric(
        "carrier.delay_hours",
        ("scope", "carrier"),
        "hours",
        "hours",
        "mean delay vs estimate",
        "fulfillment",
        "carrier_delay",
        ">",
        alert=4,
        header="Delay",
    ),
    # -- stockout risk (per SKU x location) --
    Metric(
        "stock.available",
        _STOCK,
        "units",
        "int",
        "on hand - reserved - buffer",
        "stockout",
        "available",
        header="Avail",
    ),
    Metric(
        "stock.days_of_cover",
        _STOCK,
        "days",
        "number",
        "days of cover (no data: no sales)",
        "stockout",
        "cover",
        "<",
        alert=3,
        header="Cover",
    ),
    Metric(
        "stock.velocity_per_day",
        _STOCK,
        "units/day",
        "number",
        "units sold per day",
        "stockout",
        "velocity",
        header="Vel/d",
    ),
    Metric(
        "stock.inbound_qty",
        _STOCK,
        "units",
        "int",
        "open inbound quantity",
        "stockout",
        "inbound",
        header="Inbound",
    ),
    Metric("stock.status_out", _STOCK, "flag", "flag", "1 when OUT", "stockout", "status"),
    Metric(
        "stock.at_risk",
        _STOCK,
        "flag",
        "flag",
        "1 when OUT, OVERSELL or AT RISK",
        "stockout",
        "status",
    ),
    Metric(
        "stock.oversell",
        _STOCK,
        "flag",
        "flag",
        "1 when a channel's excess is material or sells out before its sync",
        "stockout",
        "oversell",
        header="Oversell",
    ),
    # -- return spike (per SKU) --
    Metric(
        "returns.rate",
        _RET,
        "share",
        "rate",
        "return rate in the window",
        "returns",
        "rate",
        header="Rate",
    ),
    Metric(
        "returns.z_score", _RET, "z", "z", "rate test z vs baseline", "returns", "z", header="z"
    ),
    Metric(
        "returns.p_value",
        _RET,
        "probability",
        "number",
        "exact one-sided p-value of the rate test",
        "returns",
    ),
    Metric(
        "returns.q_value",
        _RET,
        "probability",
        "number",
        "BH q-value across the SKUs tested (spike: q <= return_fdr_q)",
        "returns",
    ),
    Metric(
        "returns.spike",
        _RET,
        "flag",
        "flag",
        "1 when a return spike",
        "returns",
        "spike",
        ">=",
        alert=1,
        header="Spike",
    ),
    Metric(
        "returns.returned",
        _RET,
        "units",
        "int",
        "units returned in the window",
        "returns",
        "ret_sold",
        header="Ret/Sold",
    ),
    # -- headline --
    Metric("headline.net_sales", (), "money", "money", "net sales today", "overview", "sales"),
    Metric(
        "headline.net_sales_vs_rolling",
        (),
        "ratio",
        "ratio",
        "net sales / rolling average",
        "overview",
        "sales",
        "<",
        warning=0.8,
        alert=0.8,
    ),
    Metric(
        "headline.orders_per_hour",
        (),
        "orders/h",
        "number",
        "orders in the last hour",
        "overview",
        "orders_per_hour",
    ),
    Metric(
        "headline.orders_per_hour_vs_rolling",
        (),
        "ratio",
        "ratio",
        "orders/h / rolling",
        "overview",
        "orders_per_hour",
    ),
    Metric(
        "headline.aov",
        ("channel",),
        "money",
        "money",
        "average order value today",
        "overview",
        "aov",
    ),
    Metric(
        "headline.aov_vs_rolling",
        ("channel",),
        "ratio",
        "ratio",
        "AOV / rolling AOV",
        "overview",
        "aov",
        "<",
        alert=0.8,
    ),
    Metric(
        "headline.channel_orders",
        ("channel",),
        "orders",
        "int",
        "orders placed today on the channel, not cancelled",
        "overview",
    ),
    # -- feeds --
    Metric(
        "feed.stale_minutes",
        _FEED,
        "minutes",
        "minutes",
        "minutes since the feed's last event",
        "overview",
        "feeds",
    ),
    Metric(
        "feed.stale",
        _FEED,
        "flag",
        "flag",
        "1 when the feed is flagged stale",
        "overview",
        "feeds",
        ">=",
        alert=1,
    ),
    Metric(
        "feed.quarantined",
        _FEED,
        "payloads",
        "int",
        "payloads quarantined from the feed",
        "overview",
        "feeds",
    ),
)

METRICS: dict[str, Metric] = {m.id: m for m in _DECLARED}
"""Every metric, by id, in declaration order."""


def markdown_table() -> str:
    """The README's metric table (``| metric | labels | unit | … |``), one row per metric."""
    rows = [
        "| metric | labels | unit | definition | panel (column) | default warning / alert |",
        "|---|---|---|---|---|---|",
    ]
    for m in METRICS.values():
        labels = ", ".join(m.labels) or "—"
        where = f"{m.panel} ({m.column})" if m.column else m.panel
        levels = "—"
        if m.op is not None:
            warning = "—" if m.warning is None else f"{m.op} {m.warning:g}"
            alert = "—" if m.alert is None else f"{m.op} {m.alert:g}"
            levels = f"{warning} / {alert}"
        rows.append(f"| `{m.id}` | {labels} | {m.unit} | {m.definition} | {where} | {levels} |")
    return "\n".join(rows) + "\n"
