"""Stockout risk of SKU × location pairs, and the at-risk flags the writer keeps.

:func:`stockout_row` is the definition (README: Stockout risk) as a pure function.
:func:`pair_inputs` reads its inputs from the store for some pairs, the flagged ones, or all.

Why flags: with no new events, a pair's risk can only fall as time passes (its sales
window loses old sales, so velocity drops and cover grows; more inbound lands before the
projected stockout; available, reorder point and listings do not move).  So a pair that
is at risk at time t was already at risk when it was last written.  The writer therefore
re-evaluates every pair an event touches and stores ``stock.risk`` (1 = at risk then);
a refresh evaluates only flagged pairs, at its own time, and costs what the pairs at risk
cost, not what the catalogue or the history costs.  ``meta.risk_ts`` records the latest
time flags were computed for; a refresh for an earlier moment evaluates everything.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from store.asof import (
    buffers_as_of,
    closed_last_hour,
    inbound_as_of,
    listings_as_of,
    sales_lines,
    skus_as_of,
    stock_as_of,
    unrouted_at,
    unrouted_sales,
)
from store.snapshots import StockoutRow

HOUR = 3600
DAY = 86400
AT_RISK = ("OUT", "OVERSELL", "AT RISK")
"""Statuses the stockout panel lists."""

Pair = tuple[str, str]


def _a_rate(value: float) -> None:
    """``return_fdr_q`` is a false discovery rate: above 0, at most 1."""
    if not 0.0 < value <= 1.0:
        raise ValueError("return_fdr_q is a false discovery rate: above 0, at most 1")


_YEARS_100 = {"hours": 876_000.0, "days": 36_500.0, "minutes": 52_560_000.0}
"""A hundred years in each unit: "now" minus any window stays a date (no overflow)."""


def _number(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def _in_range(
    name: str, low: float, high: float, *, above: bool = False, what: str = ""
) -> Callable[[Any], None]:
    """A check that a number lies in ``[low, high]`` (``(low, high]`` with ``above``)."""
    lower = f"above {_number(low)}" if above else f"at least {_number(low)}"
    text = f"{name} must be {lower} and at most {_number(high)}{what}"

    def check(value: Any) -> None:
        number = float(value)
        ok = (low < number if above else low <= number) and number <= high
        if not ok:  # NaN fails both comparisons
            raise ValueError(f"{text}, not {value!r}")

    return check


def _window(name: str, unit: str, *, zero: bool = False) -> Callable[[Any], None]:
    return _in_range(name, 0, _YEARS_100[unit], above=not zero, what=f" {unit} (100 years)")


def _each_value(name: str, check: Callable[[Any], None]) -> Callable[[Any], None]:
    """``check`` applied to every value of a per-feed or per-channel table."""

    def run(table: Any) -> None:
        for key, value in dict(table).items():
            try:
                check(value)
            except ValueError as exc:
                raise ValueError(f"{name}[{key!r}]: {exc}") from None

    return run


def _tolerance_pair(value: Any) -> None:
    units, pct = value
    _in_range("units", 0, 1e12)(units)
    _in_range("percent", 0, 1e6)(pct)


METRIC_CHECKS: dict[str, Callable[[Any], None]] = {
    "return_fdr_q": _a_rate,
    "at_risk_horizon_hours": _window("at_risk_horizon_hours", "hours", zero=True),
    "pick_window_hours": _window("pick_window_hours", "hours"),
    "delivery_window_days": _window("delivery_window_days", "days"),
    "velocity_window_days": _in_range("velocity_window_days", 1, _YEARS_100["days"]),
    "return_window_days": _window("return_window_days", "days"),
    "return_baseline_days": _in_range("return_baseline_days", 1, _YEARS_100["days"]),
    "return_min_count": _in_range("return_min_count", 0, 1e12),
    "return_z_threshold": _in_range("return_z_threshold", -1e6, 1e6),
    "rolling_days": _in_range("rolling_days", 1, _YEARS_100["days"]),
    "stale_feed_minutes": _window("stale_feed_minutes", "minutes"),
    "stale_overrides": _each_value("stale_overrides", _window("minutes", "minutes")),
    "stale_history_days": _in_range("stale_history_days", 0, _YEARS_100["days"]),
    "stale_min_expected": _in_range("stale_min_expected", 0, 1e12),
    "top_n": _in_range("top_n", 1, 1e7),
    "oversell_tolerance_units": _in_range("oversell_tolerance_units", 0, 1e12),
    "oversell_tolerance_pct": _in_range("oversell_tolerance_pct", 0, 1e6),
    "oversell_channel_tolerance": _each_value("oversell_channel_tolerance", _tolerance_pair),
    "listing_sync_minutes": _window("listing_sync_minutes", "minutes"),
    "listing_sync_overrides": _each_value("listing_sync_overrides", _window("minutes", "minutes")),
}
"""The checks of :class:`MetricParams`' fields beyond their types, by field: each raises
``ValueError`` saying what the value must be.  ``__post_init__`` runs them; the settings'
``[metrics]`` model (``feeds.settings``) runs them as field validators, so a bad value in
the config file is reported under its key (``metrics.return_fdr_q``).  Every window,
horizon and interval is positive (or, where 0 means "off", not negative) and at most a
hundred years, so that no value can overflow the day arithmetic or divide by zero; NaN
and infinity are refused everywhere."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricParams:
    """The knobs of the metric definitions (windows, horizons, thresholds).

    A frozen dataclass, not a pydantic model: the console's first paint computes its first
    snapshots with these before pydantic has been imported (issue 15).  Values are taken as
    given (the code that builds them passes the types annotated); the config file and the
    environment are validated and converted by the settings' ``[metrics]`` model, generated
    from this class.  A copy with changes: ``dataclasses.replace(params, top_n=50)``.
    """

    timezone: str = "America/New_York"
    """The store's local time zone: "today" and every day boundary are local."""
    at_risk_horizon_hours: float = 2.0
    """An open order due within this many hours and not yet packed is at risk."""
    pick_window_hours: float = 24.0
    """Pick times are taken over picks completed in this many trailing hours."""
    delivery_window_days: float = 7.0
    """Delivered late against the customer's promise is also counted over this many days."""
    velocity_window_days: int = 7
    """Sales velocity is units sold over this many trailing days, per day."""
    return_window_days: float = 1.0
    """The current window for return rates: short, so an afternoon's spike shows the same day."""
    return_baseline_days: int = 28
    """The baseline window, immediately before the current one (never overlapping it)."""
    return_min_count: int = 5
    """A spike needs at least this many units returned in the current window."""
    return_z_threshold: float = 3.0
    """A spike also needs the rate test's z at or above this (a floor; the FDR test decides)."""
    return_fdr_q: float = 0.01
    """False discovery rate of the spike test: Benjamini–Hochberg level per evaluation."""
    rolling_days: int = 7
    """Headline figures are compared with the mean of this many previous local days."""
    stale_feed_minutes: float = 15.0
    """A feed with no event for this long is flagged stale."""
    stale_overrides: dict[str, float] = field(default_factory=dict)
    """Per-feed staleness in minutes, for feeds that deliver rarely (a catalogue, POs)."""
    expected_feeds: tuple[str, ...] = ()
    """Feeds that should deliver; one that never did is listed as stale with no time."""
    stale_history_days: int = 7
    """Staleness is judged against the feed's own traffic at that time of day over this many
    previous days (0: the limit alone decides)."""
    stale_min_expected: float = 5.0
    """A silence past the limit is stale only when the feed's history expects at least this
    many active minutes (minutes with an event) in it: a feed normally quiet then is not."""
    top_n: int = 200
    """Rows kept per panel (the ones that matter most)."""
    oversell_tolerance_units: int = 2
    """An excess of advertised over available up to this many units is a sync lag, not a risk."""
    oversell_tolerance_pct: float = 5.0
    """... or up to this percentage of what is available (the larger of the two tolerates)."""
    oversell_channel_tolerance: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per-channel (units, percent) tolerance, replacing the two above for that channel."""
    listing_sync_minutes: float = 15.0
    """How often a channel's listings are synced when its cadence is not known."""
    listing_sync_overrides: dict[str, float] = field(default_factory=dict)
    """Per-channel listing sync interval in minutes."""

    def __post_init__(self) -> None:
        """Run the fields' checks (:data:`METRIC_CHECKS`): ``ValueError`` names the field."""
        for name, check in METRIC_CHECKS.items():
            check(getattr(self, name))

    def oversell_limits(self, channel: str) -> OversellLimits:
        """The oversell tolerance and sync interval that apply to ``channel``."""
        units, pct = self.oversell_channel_tolerance.get(
            channel, (self.oversell_tolerance_units, self.oversell_tolerance_pct)
        )
        minutes = self.listing_sync_overrides.get(channel, self.listing_sync_minutes)
        return OversellLimits(units, pct, minutes / (24 * 60))


class OversellLimits(NamedTuple):
    """When a listing's excess over available stock is an oversell risk (README)."""

    tolerance_units: int = 0
    """An excess up to this many units is tolerated..."""
    tolerance_pct: float = 0.0
    """... or up to this percentage of max(available, 0)."""
    sync_days: float = 0.0
    """The channel's sync interval in days: a pair that sells out sooner is at risk anyway."""


NO_TOLERANCE = OversellLimits()
"""No tolerance and no sync interval: any excess is an oversell (the pure default)."""


def is_oversell(
    advertised: int, available: int, cover: float | None, limits: OversellLimits
) -> bool:
    """Whether a listing advertising ``advertised`` is an oversell risk (the definition).

    The channel must advertise more than max(available, 0), and the excess must be either
    material (above both tolerances) or come on a pair whose cover runs out before the
    channel's next sync, so that the channel will sell units that are not there.
    """
    stock = max(available, 0)
    excess = advertised - stock
    if excess <= 0:
        return False
    tolerated = max(limits.tolerance_units, limits.tolerance_pct / 100.0 * stock)
    if excess > tolerated:
        return True
    return cover is not None and cover < limits.sync_days


def assess(
    available: int,
    velocity: float,
    pending: Sequence[tuple[int, int]],
    lead_time_days: float,
    reorder_point: int,
    listing: tuple[int, str] | None,
    t: int,
    limits: OversellLimits = NO_TOLERANCE,
) -> tuple[str, float | None, int | None]:
    """Status, days of cover and projected stockout (epoch s) of one pair: the definition.

    ``pending`` is the open inbound as (quantity, ETA) sorted by ETA; ``limits`` are the
    oversell tolerance and sync interval of the listing's channel (none by default).
    """
    cover: float | None = None
    stockout_at: int | None = None
    if velocity > 0:
        # Cover from what is available now, extended by each open inbound that lands before
        # the projected stockout (an overdue inbound counts as landing now).
        stock = max(available, 0)
        cover = stock / velocity
        for qty, eta in pending:
            if eta <= t + cover * DAY:
                stock += qty
                cover = stock / velocity
        stockout_at = t + int(cover * DAY)
    if available <= 0:
        status = "OUT"
    elif listing is not None and is_oversell(listing[0], available, cover, limits):
        status = "OVERSELL"
    elif available < reorder_point or (cover is not None and cover < lead_time_days):
        status = "AT RISK"
    elif cover is None:
        status = "NO SALES"
    else:
        status = "OK"
    return status, cover, stockout_at


def stockout_row(
    *,
    sku: str,
    location_id: str,
    category: str,
    on_hand: int,
    reserved: int,
    safety_buffer: int,
    units_sold: int,
    window_days: float,
    inbound: Iterable[tuple[int, int]],
    lead_time_days: float,
    reorder_point: int,
    listing: tuple[int, str] | None,
    t: int,
    limits: OversellLimits = NO_TOLERANCE,
) -> StockoutRow:
    """One SKU × location, following the definition exactly (pure: tested by hand)."""
    available = on_hand - reserved - safety_buffer
    velocity = units_sold / window_days if window_days else 0.0
    pending = sorted(inbound, key=lambda qe: qe[1])
    status, cover, stockout_at = assess(
        available, velocity, pending, lead_time_days, reorder_point, listing, t, limits
    )
    inbound_eta = min((e for _, e in pending), default=None)
    oversell = status == "OVERSELL" or (
        listing is not None and is_oversell(listing[0], available, cover, limits)
    )
    return StockoutRow(
        sku=sku,
        location_id=location_id,
        category=category,
        on_hand=on_hand,
        reserved=reserved,
        safety_buffer=safety_buffer,
        available=available,
        velocity_per_day=velocity,
        days_of_cover=cover,
        projected_stockout=None
        if stockout_at is None
        else datetime.fromtimestamp(stockout_at, UTC),
        inbound_qty=sum(q for q, _ in pending),
        inbound_eta=None if inbound_eta is None else datetime.fromtimestamp(inbound_eta, UTC),
        lead_time_days=lead_time_days,
        reorder_point=reorder_point,
        advertised_max=listing[0] if listing else None,
        oversell_channel=listing[1] if oversell and listing else None,
        status=status,  # type: ignore[arg-type]
    )


def window_hours(t: int, days: float) -> tuple[int, int]:
    """Hour buckets [first, last] whose start lies in [t − days, t]."""
    first = -(-(t - int(days * DAY)) // HOUR)  # ceil
    return first, t // HOUR


Scope = Literal["all", "flagged"] | Sequence[Pair]
"""Which pairs to evaluate: every stocked pair, the flagged ones, or a list."""


class PairInputs(NamedTuple):
    """What the definition needs about one pair, read from the store.

    A named tuple, not a frozen dataclass: a refresh builds one per flagged pair (tens of
    thousands at retailer scale) and a tuple is several times cheaper to build.
    """

    sku: str
    location_id: str
    category: str
    on_hand: int
    reserved: int
    safety_buffer: int
    units_sold: int
    inbound: tuple[tuple[int, int], ...]
    lead_time_days: float
    reorder_point: int
    listing: tuple[int, str] | None

    def limits(self, params: MetricParams | None) -> OversellLimits:
        """The oversell limits of this pair's listing channel."""
        if params is None or self.listing is None:
            return OversellLimits()
        return params.oversell_limits(self.listing[1])

    def row(self, window_days: float, t: int, params: MetricParams | None = None) -> StockoutRow:
        """The full stockout row of this pair."""
        return stockout_row(
            sku=self.sku,
            location_id=self.location_id,
            category=self.category,
            on_hand=self.on_hand,
            reserved=self.reserved,
            safety_buffer=self.safety_buffer,
            units_sold=self.units_sold,
            window_days=window_days,
            inbound=self.inbound,
            lead_time_days=self.lead_time_days,
            reorder_point=self.reorder_point,
            listing=self.listing,
            t=t,
            limits=self.limits(params),
        )

    def assess(
        self, window_days: float, t: int, params: MetricParams | None = None
    ) -> tuple[str, float | None, float]:
        """(status, days of cover, velocity) without building the row."""
        velocity = self.units_sold / window_days if window_days else 0.0
        status, cover, _ = assess(
            self.on_hand - self.reserved - self.safety_buffer,
            velocity,
            self.inbound,
            self.lead_time_days,
            self.reorder_point,
            self.listing,
            t,
            self.limits(params),
        )
        return status, cover, velocity


def _scope_cte(scope: Scope) -> tuple[str, tuple[object, ...]]:
    if isinstance(scope, str):
        where = " INDEXED BY stock_flagged WHERE risk = 1" if scope == "flagged" else ""
        return f"WITH scope(sku, location_id) AS (SELECT sku, location_id FROM stock{where})", ()
    packed = json.dumps([list(p) for p in scope])
    return (
        """WITH scope(sku, location_id) AS (
            SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?))""",
        (packed,),
    )


def pair_inputs(
    db: sqlite3.Connection, scope: Scope, t: int, params: MetricParams, *, past: bool = False
) -> list[PairInputs]:
    """Read the definition's inputs for the pairs in ``scope``, as of ``t`` for sales.

    With ``past``, every pair known by ``t`` is read with its stock, listings and inbound
    as of ``t`` (from the counts, adjustment log and update history); without it, stock,
    listings and inbound are the current ones, right for any ``t`` at or after the latest
    stock event (the writer's flags and a live refresh).

    The plans are pinned, not left to ANALYZE statistics (``tests/test_query_plans.py``
    checks them): the pairs drive every join (``CROSS JOIN`` keeps them the outer loop),
    so each roll-up is reached by its key.  Left free, SQLite walks ``sales_hourly`` over
    the whole window on a young store, where the window is most of the table, and the
    refresh of a store in its first weeks becomes the slowest one.
    """
    if not isinstance(scope, str) and not scope:
        return []
    first, last = window_hours(t, params.velocity_window_days)
    # As of t: the roll-ups' whole hours before t's hour, plus the lines that make them t's
    # (store/asof.py: t's own hour so far, and cancellations stamped after t).
    late: dict[Pair, int] = defaultdict(int)
    for line in sales_lines(db, t, first):
        if first <= line.hour <= last:
            late[(line.sku, line.location_id)] += line.units
    last = closed_last_hour(t, last)
    if past:  # stock, listings and inbound as of t, from their history (every pair)
        return _all_pairs_as_of(db, t, first, last, late)
    cte, keys = _scope_cte(scope)
    sold: dict[Pair, int] = {}
    sold_keys: tuple[int, ...] = ()
    if scope == "all":  # every pair: one pass over the window through the hour index
        sold_rows = db.execute(
            """SELECT sku, location_id, SUM(units) FROM sales_hourly INDEXED BY sales_hourly_hour
               WHERE hour BETWEEN ? AND ? GROUP BY sku, location_id""",
            (first, last),
        )
        sold = {(sku, loc): units for sku, loc, units in sold_rows}
        units_sold = "0"
    else:  # per pair, through the primary key (sku, location, hour)
        units_sold = """(SELECT COALESCE(SUM(h.units), 0) FROM sales_hourly h
                 WHERE h.sku = s.sku AND h.location_id = s.location_id
                   AND h.hour BETWEEN ? AND ?)"""
        sold_keys = (first, last)
    inbound: dict[Pair, list[tuple[int, int]]] = defaultdict(list)
    for sku, loc, qty, eta in db.execute(
        f"""{cte}
        SELECT i.sku, i.location_id, i.quantity, i.eta_ts FROM scope
        CROSS JOIN inbound i ON i.sku = scope.sku AND i.location_id = scope.location_id
        WHERE i.status = 'open' AND i.updated_ts <= ? ORDER BY i.eta_ts""",
        (*keys, t),
    ):
        inbound[(sku, loc)].append((qty, eta))
    listings: dict[Pair, tuple[int, str]] = {}
    for sku, loc, channel, advertised in db.execute(
        f"""{cte}
        SELECT g.sku, g.location_id, g.channel, g.advertised FROM scope
        CROSS JOIN listings g ON g.sku = scope.sku AND g.location_id = scope.location_id
        WHERE g.updated_ts <= ?""",
        (*keys, t),
    ):
        best = listings.get((sku, loc))
        if best is None or advertised > best[0] or (advertised == best[0] and channel < best[1]):
            listings[(sku, loc)] = (advertised, channel)
    buffers: dict[str, int] = dict(
        db.execute("SELECT location_id, safety_buffer FROM locations").fetchall()
    )
    # The pairs themselves: the flagged ones straight from their own index (it holds on hand
    # and reserved), every pair from the table, a list by key.
    where = ""
    if scope == "flagged":
        cte, keys, pairs, where = "", (), "stock s INDEXED BY stock_flagged", "WHERE s.risk = 1"
    elif scope == "all":
        cte, keys, pairs = "", (), "stock s"
    else:
        pairs = (
            "scope CROSS JOIN stock s ON s.sku = scope.sku AND s.location_id = scope.location_id"
        )
    rows = db.execute(
        f"""{cte}
        SELECT s.sku, s.location_id, s.on_hand, s.reserved, COALESCE(k.category, '-'),
               COALESCE(k.reorder_point, 0), COALESCE(k.lead_time_days, 0), {units_sold}
        FROM {pairs} LEFT JOIN skus k ON k.sku = s.sku {where}""",
        (*keys, *sold_keys),
    )
    # One comprehension, dictionaries looked up once: this runs once per flagged pair.
    pending = {pair: tuple(lines) for pair, lines in inbound.items()}
    if scope == "all":
        return [
            PairInputs(
                sku, loc, category, on_hand, reserved, buffers.get(loc, 0),
                sold.get((sku, loc), 0) + late.get((sku, loc), 0), pending.get((sku, loc), ()),
                lead, reorder,
                listings.get((sku, loc)),
            )
            for sku, loc, on_hand, reserved, category, reorder, lead, _ in rows
        ]  # fmt: skip
    return [
        PairInputs(
            sku, loc, category, on_hand, reserved, buffers.get(loc, 0),
            units + late.get((sku, loc), 0), pending.get((sku, loc), ()), lead, reorder,
            listings.get((sku, loc)),
        )
        for sku, loc, on_hand, reserved, category, reorder, lead, units in rows
    ]  # fmt: skip


class FlaggedSummary(NamedTuple):
    """The flagged pairs as the stockout panel needs them: counts and the leading pairs."""

    counts: dict[str, int]
    """Pairs per listed status (:data:`AT_RISK`)."""
    leading: list[tuple[int, float, float, str, str]]
    """At most ``top_n`` (rank, cover or inf, −velocity, sku, location) of listed pairs,
    in that order, among those SQL classified (see :func:`flagged_summary`)."""
    others: list[PairInputs]
    """The flagged pairs SQL did not classify, to be assessed in Python."""


_FLAGGED_SUMMARY = """
    WITH late(sku, location_id) AS (
        SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)),
    buffers(location_id, safety_buffer) AS MATERIALIZED (
        SELECT location_id, safety_buffer FROM locations),
    p AS MATERIALIZED (
        SELECT s.sku, s.location_id,
               s.on_hand - s.reserved - COALESCE(
                   (SELECT b.safety_buffer FROM buffers b
                    WHERE b.location_id = s.location_id), 0) AS available,
               COALESCE(k.reorder_point, 0) AS reorder, COALESCE(k.lead_time_days, 0) AS lead,
               COALESCE(CAST((SELECT COALESCE(SUM(h.units), 0) FROM sales_hourly h
                              WHERE h.sku = s.sku AND h.location_id = s.location_id
                                AND h.hour BETWEEN ? AND ?) AS REAL) / ?, 0.0) AS velocity,
               EXISTS (SELECT 1 FROM inbound i
                       WHERE i.sku = s.sku AND i.location_id = s.location_id)
               OR EXISTS (SELECT 1 FROM listings g
                          WHERE g.sku = s.sku AND g.location_id = s.location_id)
               OR (s.sku, s.location_id) IN (SELECT sku, location_id FROM late) AS other
        FROM stock s INDEXED BY stock_flagged LEFT JOIN skus k ON k.sku = s.sku
        WHERE s.risk = 1),
    c AS NOT MATERIALIZED (
        SELECT sku, location_id, velocity,
               CASE WHEN velocity > 0 THEN MAX(available, 0) / velocity ELSE 9e999 END AS cover,
               CASE WHEN available <= 0 THEN 0
                    WHEN available < reorder
                         OR (velocity > 0 AND MAX(available, 0) / velocity < lead) THEN 2
               END AS rank
        FROM p WHERE NOT other)
    SELECT 0, NULL, COALESCE(SUM(rank = 0), 0), COALESCE(SUM(rank = 2), 0), NULL, NULL FROM c
    UNION ALL
    SELECT * FROM (
        SELECT 1, rank, cover, velocity, sku, location_id FROM c WHERE rank IS NOT NULL
        ORDER BY rank, cover, velocity DESC, sku, location_id LIMIT ?)
    UNION ALL
    SELECT 2, NULL, NULL, NULL, sku, location_id FROM p WHERE other"""


def flagged_summary(
    db: sqlite3.Connection, t: int, params: MetricParams, top_n: int
) -> FlaggedSummary:
    """Count the flagged pairs per status and find the leading ones, mostly in SQL.

    A flagged pair with no inbound, no listing and no sale after the roll-ups' last closed
    hour has a status that is a plain expression of its columns (:func:`assess` with no
    pending inbound and no listing): SQL classifies those, counts them and sorts out the
    ``top_n`` first, so Python never builds an object for the thousands of pairs that are
    counted but not shown.  The same arithmetic in the same order (IEEE doubles in both),
    so the status and the sort key are the definition's.  The others (inbound may extend
    their cover, a listing may oversell, sales of ``t``'s hour add to their velocity) are
    read with :func:`pair_inputs` and left to :meth:`PairInputs.assess`.  The nodes' safety
    buffers are read once into a small table SQLite indexes for the pairs' lookups (a
    seek per pair into ``locations`` itself costs its primary key and then its row).
    """
    first, last = window_hours(t, params.velocity_window_days)
    late = {
        (line.sku, line.location_id)
        for line in sales_lines(db, t, first)
        if first <= line.hour <= last
    }
    last = closed_last_hour(t, last)
    window = params.velocity_window_days
    counts = dict.fromkeys(AT_RISK, 0)
    leading: list[tuple[int, float, float, str, str]] = []
    others: list[Pair] = []
    # Rows: (0, -, OUT, AT RISK, -, -) once; (1, rank, cover, velocity, sku, location) per
    # leading pair; (2, -, -, -, sku, location) per pair left to Python.
    for kind, rank, x, y, sku, loc in db.execute(
        _FLAGGED_SUMMARY,
        (json.dumps(sorted(late)), first, last, window, top_n),
    ):
        if kind == 0:
            counts["OUT"] += x
            counts["AT RISK"] += y
        elif kind == 1:
            leading.append((rank, x, -y, sku, loc))
        else:
            others.append((sku, loc))
    return FlaggedSummary(counts, leading, pair_inputs(db, others, t, params))


def _all_pairs_as_of(
    db: sqlite3.Connection, t: int, first: int, last: int, late: dict[Pair, int]
) -> list[PairInputs]:
    """Every pair known by ``t``, with its stock, listings, inbound and catalogue as of ``t``.

    ``last`` is the last closed roll-up hour; ``late`` the sales after it up to ``t``.
    """
    stock = stock_as_of(db, t)
    listings = listings_as_of(db, t)
    inbound = inbound_as_of(db, t)
    sold = {
        (sku, loc): units
        for sku, loc, units in db.execute(
            """SELECT sku, location_id, SUM(units) FROM sales_hourly INDEXED BY sales_hourly_hour
               WHERE hour BETWEEN ? AND ? GROUP BY sku, location_id""",
            (first, last),
        )
    }
    # The catalogue and nodes as of t; sales of orders routed only after t are not at
    # their node yet (store/asof.py).
    buffers = buffers_as_of(db, t)
    skus = skus_as_of(db, t)
    for pair, units in unrouted_sales(db, t, unrouted_at(db, t), first).items():
        sold[pair] = sold.get(pair, 0) - units
    out = []
    for (sku, loc), (on_hand, reserved) in sorted(stock.items()):
        category, reorder, lead = skus.get(sku, ("-", 0, 0.0))
        best: tuple[int, str] | None = None
        for channel, advertised in listings.get((sku, loc), ()):
            if best is None or (advertised, best[1]) > (best[0], channel):
                best = (advertised, channel)
        out.append(
            PairInputs(
                sku, loc, category, on_hand, reserved, buffers.get(loc, 0),
                sold.get((sku, loc), 0) + late.get((sku, loc), 0),
                tuple(inbound.get((sku, loc), ())), lead, reorder, best,
            )
        )  # fmt: skip
    return out


def risk_flags_time(db: sqlite3.Connection) -> int | None:
    """The latest moment flags were computed for, or None if never."""
    row = db.execute("SELECT value FROM meta WHERE key = 'risk_ts'").fetchone()
    return None if row is None else int(row[0])


def refresh_risk_flags(db: sqlite3.Connection, scope: Scope, t: int, params: MetricParams) -> int:
    """Re-evaluate the pairs in ``scope`` as of ``t`` and store their flags.

    Runs inside the writer's transaction.  Returns how many pairs are flagged at risk.
    """
    window = params.velocity_window_days
    flags = [
        (1 if p.assess(window, t, params)[0] in AT_RISK else 0, p.sku, p.location_id)
        for p in pair_inputs(db, scope, t, params)
    ]
    db.executemany(
        "UPDATE stock SET risk = ? WHERE sku = ? AND location_id = ? AND risk != ?",
        [(flag, sku, loc, flag) for flag, sku, loc in flags],
    )
    db.execute(
        """INSERT INTO meta (key, value) VALUES ('risk_ts', ?)
           ON CONFLICT (key) DO UPDATE SET
               value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))""",
        (t,),
    )
    return sum(flag for flag, _, _ in flags)


def rebuild_risk_flags(db: sqlite3.Connection, t: int, params: MetricParams) -> int:
    """Recompute every pair's flag in one transaction (after a bulk load or a migration)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        flagged = refresh_risk_flags(db, "all", t, params)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return flagged
