"""Samples: every metric value of one refresh, read from the panel snapshots.

Every rule reads the same frozen :class:`~store.snapshots.Snapshots` the panels show,
through one pure function, :func:`samples`; ``None`` in the snapshot is "no data".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from store.snapshots import Snapshots


@dataclass(frozen=True)
class Sample:
    """One value of one metric for one scope, read from a snapshot."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    """Sorted (name, value) pairs: the scope."""
    value: float | None
    """None: no data."""

    @property
    def label_map(self) -> dict[str, str]:
        """The scope labels as a dict."""
        return dict(self.labels)


def _sample(metric: str, labels: Mapping[str, str], value: float | None) -> Sample:
    return Sample(metric, tuple(sorted(labels.items())), value)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def samples(snapshots: Snapshots) -> list[Sample]:
    """Every metric value of one refresh, as rules see it (see the module docstring).

    Pure: the panels and the rules read the same snapshot, so an alert always agrees with
    the row it points at.
    """
    out: list[Sample] = []
    add = out.append
    for row in snapshots.fulfillment.rows:
        labels = {"scope": row.scope, row.scope: row.key}
        add(_sample("fulfillment.open_orders", labels, row.open_orders))
        add(_sample("fulfillment.late", labels, row.late))
        add(_sample("fulfillment.oldest_open_minutes", labels, row.oldest_open_minutes))
        add(_sample("fulfillment.on_time_rate", labels, row.on_time_rate))
        add(_sample("fulfillment.delivered_late", labels, row.delivered_late_24h))
        add(_sample("fulfillment.delivered_late_rate", labels, row.delivered_late_rate_24h))
        if row.scope == "carrier":
            add(_sample("carrier.delay_hours", labels, row.carrier_delay_hours))
            continue
        add(_sample("fulfillment.at_risk", labels, row.at_risk))
        add(_sample("fulfillment.exceptions", labels, row.exceptions))
        add(_sample("fulfillment.pick_p50_minutes", labels, row.pick_p50_minutes))
        add(_sample("fulfillment.pick_p90_minutes", labels, row.pick_p90_minutes))
        add(_sample("fulfillment.bopis_ready_rate", labels, row.bopis_ready_rate))
        add(_sample("fulfillment.completed_24h", labels, row.completed_24h))
    for s in snapshots.stockout.rows:
        labels = {"sku": s.sku, "location": s.location_id, "category": s.category}
        add(_sample("stock.available", labels, s.available))
        add(_sample("stock.days_of_cover", labels, s.days_of_cover))
        add(_sample("stock.velocity_per_day", labels, s.velocity_per_day))
        add(_sample("stock.inbound_qty", labels, s.inbound_qty))
        add(_sample("stock.status_out", labels, 1.0 if s.status == "OUT" else 0.0))
        at_risk = s.status in ("OUT", "OVERSELL", "AT RISK")
        add(_sample("stock.at_risk", labels, 1.0 if at_risk else 0.0))
        add(_sample("stock.oversell", labels, 1.0 if s.status == "OVERSELL" else 0.0))
    for r in snapshots.returns.rows:
        labels = {"sku": r.sku, "category": r.category}
        add(_sample("returns.rate", labels, r.rate))
        add(_sample("returns.z_score", labels, r.z_score))
        add(_sample("returns.p_value", labels, r.p_value))
        add(_sample("returns.q_value", labels, r.q_value))
        add(_sample("returns.spike", labels, 1.0 if r.spike else 0.0))
        add(_sample("returns.returned", labels, r.returned))
    h = snapshots.headline
    add(_sample("headline.net_sales", {}, h.net_sales))
    add(_sample("headline.net_sales_vs_rolling", {}, _ratio(h.net_sales, h.net_sales_rolling)))
    add(_sample("headline.orders_per_hour", {}, h.orders_per_hour))
    add(
        _sample(
            "headline.orders_per_hour_vs_rolling",
            {},
            _ratio(h.orders_per_hour, h.orders_per_hour_rolling),
        )
    )
    for c in h.channels:
        labels = {"channel": c.channel}
        add(_sample("headline.aov", labels, c.aov))
        add(_sample("headline.aov_vs_rolling", labels, _ratio(c.aov, c.aov_rolling)))
        add(_sample("headline.channel_orders", labels, c.orders))
    for f in h.feeds:
        labels = {"feed": f.feed, "channel": f.feed}
        minutes = (
            None
            if f.last_event_at is None
            else max(0.0, (snapshots.as_of - f.last_event_at).total_seconds() / 60)
        )
        add(_sample("feed.stale_minutes", labels, minutes))
        add(_sample("feed.stale", labels, 1.0 if f.stale else 0.0))
        add(_sample("feed.quarantined", labels, f.quarantined))
    return out


def index_samples(all_samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by metric."""
    by_metric: dict[str, list[Sample]] = defaultdict(list)
    for s in all_samples:
        by_metric[s.metric].append(s)
    return by_metric


def guard_lookup(
    by_metric: Mapping[str, list[Sample]], metric: str
) -> dict[tuple[tuple[str, str], ...], float | None]:
    """The values of ``metric`` by their label tuples (a guard rule's lookup)."""
    return {s.labels: s.value for s in by_metric.get(metric, [])}
