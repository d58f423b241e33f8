"""Metric queries: one read transaction in, frozen panel snapshots out.

Every function here follows the definition of its metric in the README's "Metrics"
section; change both together.  Everything is evaluated *as of* ``now``: events stamped
after ``now`` are ignored, so ``omniops report --at`` on a full store gives the numbers
the console showed at that moment.

These functions are blocking (plain :mod:`sqlite3` on a read connection) and are run off
the event loop: in a Textual thread worker by the console, in ``asyncio.to_thread`` or
directly by the command line.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import sqlite3
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from store.asof import (
    changed_after,
    closed_last_hour,
    edit_deltas,
    edited_series,
    node_reported_after,
    return_lines,
    sales_lines,
    skus_as_of,
    uncatalogued_at,
    unroutable_at,
    unrouted_at,
)
from store.risk import (
    AT_RISK,
    MetricParams,
    PairInputs,
    Scope,
    flagged_summary,
    pair_inputs,
    risk_flags_time,
    window_hours,
)
from store.snapshots import (
    ChannelHeadline,
    FeedFreshness,
    FeedHealthRow,
    FulfillmentRow,
    FulfillmentSnapshot,
    Headline,
    ReturnRollupRow,
    ReturnSpikeRow,
    ReturnSpikeSnapshot,
    Snapshots,
    StockoutSnapshot,
)


def epoch(moment: datetime) -> int:
    """Seconds since the Unix epoch (UTC) for an aware datetime (as :func:`store.apply.epoch`).

    Defined here so that reading the panels does not import the writer's models.
    """
    return int(moment.timestamp())


HOUR = 3600
DAY = 86400


def open_reader(path: Path) -> sqlite3.Connection:
    """A read connection to a store; never writes (``query_only``), usable from any thread."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such store (run `omniops ingest` or `serve` first)")
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    db.execute("PRAGMA query_only = 1")
    return db


def compute_snapshots(db: sqlite3.Connection, now: datetime, params: MetricParams) -> Snapshots:
    """Every panel and the headline as of ``now``, from one read transaction."""
    started = time.perf_counter()
    t = epoch(now)
    db.execute("BEGIN")
    try:
        headline = compute_headline(db, t, params)
        fulfillment = compute_fulfillment(db, t, params)
        stockout = compute_stockout(db, t, params)
        returns = compute_returns(db, t, params)
        counts = store_counts(db, t)
    finally:
        db.execute("COMMIT")
    return Snapshots(
        as_of=datetime.fromtimestamp(t, UTC),
        computed_in_ms=(time.perf_counter() - started) * 1000,
        headline=headline,
        fulfillment=fulfillment,
        stockout=stockout,
        returns=returns,
        counts=counts,
    )


def store_counts(db: sqlite3.Connection, t: int | None = None) -> dict[str, int]:
    """Totals over all feeds: events applied, duplicates dropped, payloads quarantined.

    With ``t``, events are those stamped at or before ``t``; duplicates and quarantined
    payloads are the store's totals (they carry no event time).
    """
    row = db.execute(
        "SELECT COALESCE(SUM(events), 0), COALESCE(SUM(duplicates), 0) FROM feed_state"
    ).fetchone()
    quarantined = db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    events = int(row[0]) if t is None else sum(events_as_of(db, t).values())
    return {"events": events, "duplicates": int(row[1]), "quarantined": int(quarantined)}


def events_as_of(db: sqlite3.Connection, t: int) -> dict[str, int]:
    """Events applied per feed that are stamped at or before ``t``.

    A feed whose newest event is not after ``t`` has its counter; otherwise its events up to
    ``t`` are counted in the event log's (source, ts) index.
    """
    out = {}
    for feed, events, last in db.execute(
        "SELECT feed, events, last_event_ts FROM feed_state"
    ).fetchall():
        if last is None or last <= t:
            out[feed] = int(events)
        else:
            out[feed] = int(
                db.execute(
                    "SELECT COUNT(*) FROM event_log WHERE source = ? AND ts <= ?", (feed, t)
                ).fetchone()[0]
            )
    return out


# --- helpers ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of values ≤ it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The instant a local day starts (DST-aware), in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


# --- fulfillment --------------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    """One fulfillment row's running figures while the orders are read."""

    open: int = 0
    oldest: int | None = None
    late: int = 0
    at_risk: int = 0
    exceptions: int = 0
    completed: int = 0
    promised: int = 0
    on_time: int = 0
    bopis: int = 0
    bopis_on_time: int = 0
    picks: list[float] | None = None


def compute_fulfillment(
    db: sqlite3.Connection, t: int, params: MetricParams
) -> FulfillmentSnapshot:
    """Fulfillment health per location, channel and carrier (README: Fulfillment health)."""
    horizon = t + int(params.at_risk_horizon_hours * HOUR)
    # As of a past t, an order routed only after t, or whose node a fulfillment feed first
    # reported after t, has no node yet (store/asof.py).
    routed_later = changed_after(db, t)[1]
    node = nodes_as_of(db, t, routed_later)
    # Open as of t: placed, not yet shipped / ready / handed over / cancelled by t.
    open_rows = db.execute(
        node("""SELECT COALESCE(location_id, fulfil_location_id, '-'), channel, placed_ts,
                  promised_ts, packed_ts, exception_ts, line_nodes
           FROM orders
           WHERE done_ts IS NULL AND has_order = 1 AND +placed_ts <= ?
           UNION ALL
           SELECT COALESCE(location_id, fulfil_location_id, '-'), channel, placed_ts,
                  promised_ts, packed_ts, exception_ts, line_nodes
           FROM orders
           WHERE done_ts > ? AND has_order = 1 AND +placed_ts <= ?"""),
        (t, t, t),
    ).fetchall()
    day_ago = t - DAY
    completed = db.execute(
        node("""SELECT COALESCE(location_id, fulfil_location_id, '-'), channel, method,
                  fulfilled_ts, promised_ts, ready_ts, line_nodes
           FROM orders
           WHERE has_order = 1 AND fulfilled_ts > ? AND fulfilled_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > fulfilled_ts)"""),
        (day_ago, t),
    ).fetchall()
    pick_from = t - int(params.pick_window_hours * HOUR)
    picks = db.execute(
        node("""SELECT COALESCE(location_id, fulfil_location_id, '-'), channel,
                  picked_ts - released_ts, line_nodes
           FROM orders
           WHERE has_order = 1 AND picked_ts > ? AND picked_ts <= ? AND released_ts IS NOT NULL
             AND released_ts <= picked_ts"""),
        (pick_from, t),
    ).fetchall()

    accs: dict[tuple[str, str], _Acc] = defaultdict(_Acc)
    # The rows an order counts in depend only on its node, channel and line nodes: resolved
    # once per distinct combination, not once per order (tens of thousands a day).
    resolved: dict[tuple[str, str | None, str | None], list[_Acc]] = {}

    def resolve(loc: str, channel: str | None, nodes: str | None) -> list[_Acc]:
        found = resolved[(loc, channel, nodes)] = [
            accs[key] for key in _order_keys(loc, channel, nodes)
        ]
        return found  # never empty: the channel's row is always one

    total_open = total_late = total_at_risk = 0
    for loc, channel, placed, promised, packed, exc, nodes in open_rows:
        late = promised is not None and promised < t
        at_risk = (
            not late
            and promised is not None
            and promised <= horizon
            and (packed is None or packed > t)
        )
        total_open += 1
        total_late += late
        total_at_risk += at_risk
        for a in resolved.get((loc, channel, nodes)) or resolve(loc, channel, nodes):
            a.open += 1
            a.oldest = placed if a.oldest is None else min(a.oldest, placed)
            if late:
                a.late += 1
            elif at_risk:
                a.at_risk += 1
            if exc is not None and exc <= t:
                a.exceptions += 1
    for loc, channel, method, fulfilled, promised, ready, nodes in completed:
        for a in resolved.get((loc, channel, nodes)) or resolve(loc, channel, nodes):
            a.completed += 1
            if promised is not None:  # no promise: neither on time nor late
                a.promised += 1
                a.on_time += fulfilled <= promised
            # No promise: neither ready in time nor late (left out of both sides).
            if method == "bopis" and ready is not None and ready <= t and promised is not None:
                a.bopis += 1
                a.bopis_on_time += ready <= promised
    for loc, channel, seconds, nodes in picks:
        for a in resolved.get((loc, channel, nodes)) or resolve(loc, channel, nodes):
            if a.picks is None:
                a.picks = []
            a.picks.append(seconds / 60)

    rows: list[FulfillmentRow] = []
    for (scope, name), a in accs.items():
        status = "LATE" if a.late else "AT RISK" if a.at_risk else "OK"
        rows.append(
            FulfillmentRow(
                scope=scope,  # type: ignore[arg-type]
                key=name,
                open_orders=a.open,
                oldest_open_minutes=None if a.oldest is None else (t - a.oldest) / 60,
                late=a.late,
                at_risk=a.at_risk,
                on_time_rate=_ratio(a.on_time, a.promised),
                completed_24h=a.completed,
                pick_p50_minutes=statistics.median(a.picks) if a.picks else None,
                pick_p90_minutes=percentile(a.picks or [], 0.9),
                bopis_ready_rate=_ratio(a.bopis_on_time, a.bopis),
                carrier_delay_hours=None,
                exceptions=a.exceptions,
                status=status,  # type: ignore[arg-type]
            )
        )
    rows.extend(_carrier_rows(db, t))
    window = int(params.delivery_window_days * DAY)
    promises = _delivery_promises(db, t, window)
    rows = _with_delivery_promises(rows, promises)
    rank = {"LATE": 0, "AT RISK": 1, "OK": 2}
    rows.sort(key=lambda r: (rank[r.status], -r.late, -r.at_risk, -r.open_orders, r.scope, r.key))
    unroutable = (
        unroutable_at(db, t)
        if routed_later
        else db.execute(
            """SELECT COUNT(*) FROM routing_decisions d JOIN orders o USING (order_id)
               WHERE d.status IN ('held', 'unfulfillable') AND o.placed_ts <= ?
                 AND (o.done_ts IS NULL OR o.done_ts > ?)""",
            (t, t),
        ).fetchone()[0]
    )
    return FulfillmentSnapshot(
        rows=tuple(rows[: params.top_n]),
        total_open=total_open,
        total_late=total_late,
        total_at_risk=total_at_risk,
        unroutable=int(unroutable),
        delivered_late_24h=sum(v[1] for (scope, _), v in promises.items() if scope == "channel"),
        delivered_late_window=sum(v[3] for (scope, _), v in promises.items() if scope == "channel"),
        delivery_window_days=params.delivery_window_days,
    )


_NODE = "COALESCE(location_id, fulfil_location_id, '-')"


def nodes_as_of(db: sqlite3.Connection, t: int, routed_later: bool) -> Callable[[str], str]:
    """Rewrites an order query so each order reads at the node it had as of ``t``.

    ``routed_later`` is :func:`store.asof.changed_after`'s routing flag: without a routing
    decision or a feed's first report of a node after ``t``, the query is left as it is.
    """
    return _node_as_of(unrouted_at(db, t) | node_reported_after(db, t) if routed_later else set())


def _node_as_of(unrouted: set[str]) -> Callable[[str], str]:
    """Rewrites an order query so ``unrouted`` orders read as placed: no node, no split.

    Live (none), the query is left as it is.  The ids are few (orders placed by a past
    moment and routed after it) and written into the SQL as quoted literals.
    """
    if not unrouted:
        return lambda sql: sql
    ids = ", ".join("'" + order_id.replace("'", "''") + "'" for order_id in sorted(unrouted))
    later = f"(location_id IS NULL AND order_id IN ({ids}))"

    def rewrite(sql: str) -> str:
        return sql.replace(_NODE, f"CASE WHEN {later} THEN '-' ELSE {_NODE} END").replace(
            "line_nodes\n", f"CASE WHEN {later} THEN NULL ELSE line_nodes END\n"
        )

    return rewrite


def _order_keys(loc: str, channel: str | None, nodes: str | None) -> list[tuple[str, str]]:
    """The rows an order counts in: each node its lines are at (once each), its channel."""
    keys = [("location", node) for node in json.loads(nodes)] if nodes else [("location", loc)]
    keys.append(("channel", channel or "-"))
    return keys


def _delivery_promises(
    db: sqlite3.Connection, t: int, window: int
) -> dict[tuple[str, str], list[int]]:
    """Deliveries against the customer's promise per scope and key (README: Fulfillment).

    Values: [with a promise in the last 24 h, of them late, in the window, of them late].
    An order counts when delivered in the period, with a delivery date promised to the
    customer, and not cancelled first; late = delivered after that date.  Read through the
    index of orders with a promise (migration 15): orders without one cost nothing here.
    """
    start = t - max(DAY, window)
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for loc, channel, carrier, region, delivered, promised, nodes in db.execute(
        """SELECT COALESCE(location_id, fulfil_location_id, '-'), channel, carrier,
                  destination_region, delivered_ts, delivery_promised_ts, line_nodes
           FROM orders INDEXED BY orders_delivery_promised
           WHERE has_order = 1 AND delivered_ts > ? AND delivered_ts <= ?
             AND delivery_promised_ts IS NOT NULL
             AND (cancelled_ts IS NULL OR cancelled_ts > delivered_ts)""",
        (start, t),
    ):
        late = int(delivered > promised)
        keys = [*_order_keys(loc, channel, nodes), ("region", region or "-")]
        if carrier is not None:
            keys.append(("carrier", carrier))
        for key in keys:
            counts = out[key]
            if delivered > t - DAY:
                counts[0] += 1
                counts[1] += late
            if delivered > t - window:
                counts[2] += 1
                counts[3] += late
    return out


def _with_delivery_promises(
    rows: list[FulfillmentRow], promises: dict[tuple[str, str], list[int]]
) -> list[FulfillmentRow]:
    """``rows`` with their delivered-late figures, plus a row for each other key that has some.

    Destination regions have only these figures; so does a location, channel or carrier
    whose deliveries in the window are its only activity.
    """
    out = []
    seen = set()
    for row in rows:
        counts = promises.get((row.scope, row.key))
        if counts is not None:
            seen.add((row.scope, row.key))
            row = _promise_fields(row, counts)
        out.append(row)
    for (scope, key), counts in sorted(promises.items()):
        if (scope, key) in seen:
            continue
        bare = FulfillmentRow(
            scope=scope,  # type: ignore[arg-type]
            key=key,
            open_orders=0,
            oldest_open_minutes=None,
            late=0,
            at_risk=0,
            on_time_rate=None,
            completed_24h=0,
            pick_p50_minutes=None,
            pick_p90_minutes=None,
            bopis_ready_rate=None,
            carrier_delay_hours=None,
            exceptions=0,
            status="OK",
        )
        out.append(_promise_fields(bare, counts))
    return out


def _promise_fields(row: FulfillmentRow, counts: list[int]) -> FulfillmentRow:
    p24, l24, pw, lw = counts
    return dataclasses.replace(
        row,
        promised_delivered_24h=p24,
        delivered_late_24h=l24,
        delivered_late_rate_24h=_ratio(l24, p24),
        promised_delivered_window=pw,
        delivered_late_window=lw,
        delivered_late_rate_window=_ratio(lw, pw),
    )


_CARRIER_AS_OF = """(SELECT r.carrier FROM carrier_reports r
      WHERE r.order_id = orders.order_id AND r.ts <= ?1 AND r.carrier IS NOT NULL
      ORDER BY r.ts DESC LIMIT 1)"""
_ESTIMATE_AS_OF = """(SELECT r.estimate_ts FROM carrier_reports r
      WHERE r.order_id = orders.order_id AND r.ts <= ?1 AND r.estimate_ts IS NOT NULL
      ORDER BY r.ts DESC LIMIT 1)"""


def _carrier_sql(carrier: str, estimate: str) -> tuple[str, str]:
    """The in-transit and delivered queries, reading carrier and estimate as given.

    Parameters: ``?1`` now, ``?2`` a day before it.  In transit as of now: not delivered
    yet (the index of undelivered shipments) or delivered only after now (the delivered
    index; empty unless now is in the past).
    """
    in_transit = f"""
        SELECT carrier, COUNT(*), MIN(shipped_ts),
               SUM(CASE WHEN estimated < ?1 THEN 1 ELSE 0 END)
        FROM (SELECT {carrier} AS carrier, shipped_ts, {estimate} AS estimated
              FROM orders INDEXED BY orders_in_transit
              WHERE carrier IS NOT NULL AND delivered_ts IS NULL
                AND shipped_ts <= ?1 AND shipped_ts > ?1 - 30 * 86400
              UNION ALL
              SELECT {carrier}, shipped_ts, {estimate}
              FROM orders INDEXED BY orders_delivered
              WHERE carrier IS NOT NULL AND delivered_ts > ?1
                AND shipped_ts <= ?1 AND shipped_ts > ?1 - 30 * 86400)
        WHERE carrier IS NOT NULL
        GROUP BY carrier"""
    delivered = f"""
        SELECT carrier, delivered_ts - estimated
        FROM (SELECT {carrier} AS carrier, delivered_ts, {estimate} AS estimated
              FROM orders INDEXED BY orders_delivered_carrier
              WHERE carrier IS NOT NULL AND delivered_ts > ?2 AND delivered_ts <= ?1
                AND estimated_delivery_ts IS NOT NULL)
        WHERE carrier IS NOT NULL AND estimated IS NOT NULL"""
    return in_transit, delivered


_CARRIER_NOW = _carrier_sql("carrier", "estimated_delivery_ts")
_CARRIER_THEN = _carrier_sql(_CARRIER_AS_OF, _ESTIMATE_AS_OF)


def _carrier_rows(db: sqlite3.Connection, t: int) -> list[FulfillmentRow]:
    """Per carrier: shipments in transit, overdue against the carrier's estimate, delay.

    The carrier and the estimate are an order's latest; as of a moment before a later
    report of either, those in force then (``carrier_reports``), so ``report --at`` on a
    full store says what a store fed only the events up to then says.
    """
    (later,) = db.execute(
        "SELECT EXISTS (SELECT 1 FROM carrier_reports WHERE ts > ?)", (t,)
    ).fetchone()
    in_transit_sql, delivered_sql = _CARRIER_THEN if later else _CARRIER_NOW
    in_transit = db.execute(in_transit_sql, (t,)).fetchall()
    delivered = db.execute(delivered_sql, (t, t - DAY)).fetchall()
    delays: dict[str, list[int]] = defaultdict(list)
    for carrier, delay in delivered:
        delays[carrier].append(delay)
    transit = {c: (n, oldest, overdue) for c, n, oldest, overdue in in_transit}
    rows = []
    for carrier in sorted(set(transit) | set(delays)):
        n, oldest, overdue = transit.get(carrier, (0, None, 0))
        ds = delays.get(carrier, [])
        rows.append(
            FulfillmentRow(
                scope="carrier",
                key=carrier,
                open_orders=n,
                oldest_open_minutes=None if oldest is None else (t - oldest) / 60,
                late=int(overdue or 0),
                at_risk=0,
                on_time_rate=_ratio(sum(1 for d in ds if d <= 0), len(ds)),
                completed_24h=len(ds),
                pick_p50_minutes=None,
                pick_p90_minutes=None,
                bopis_ready_rate=None,
                carrier_delay_hours=(sum(ds) / len(ds) / HOUR) if ds else None,
                exceptions=0,
                status="LATE" if overdue else "OK",
            )
        )
    return rows


# --- stockout risk --------------------------------------------------------------------


def compute_stockout(db: sqlite3.Connection, t: int, params: MetricParams) -> StockoutSnapshot:
    """Stockout risk per SKU × location (README: Stockout risk).

    Only pairs the writer flagged as at risk are evaluated (at risk can only stop being
    true as time passes without writes, see :mod:`store.risk`), so the cost grows with
    the pairs at risk, not with the catalogue or the history.  Asked about a moment before
    the flags were last computed (``report --at`` in the past), every pair is evaluated.
    """
    flagged_at = risk_flags_time(db)
    past = flagged_at is None or t < flagged_at or any(changed_after(db, t))
    scope: Scope = "all" if past else "flagged"
    window = params.velocity_window_days
    rank = {"OUT": 0, "OVERSELL": 1, "AT RISK": 2}
    counts = dict.fromkeys(AT_RISK, 0)
    # Tens of thousands of pairs at retailer scale: count them all, but order only what
    # is shown (a heap of top_n), and build the sort key once per pair.  Flagged pairs
    # with nothing but their own columns to go on are counted and ordered in SQL
    # (:func:`store.risk.flagged_summary`); only the rest are assessed here.
    keyed: list[tuple[int, float, float, str, str, PairInputs | None]] = []
    if scope == "flagged":
        summary = flagged_summary(db, t, params, params.top_n)
        counts.update(summary.counts)
        keyed.extend((*key, None) for key in summary.leading)
        evaluated = summary.others
    else:
        evaluated = pair_inputs(db, scope, t, params, past=True)
    for inputs in evaluated:
        status, cover, velocity = inputs.assess(window, t, params)
        if status in rank:
            counts[status] += 1
            keyed.append(
                (
                    rank[status],
                    math.inf if cover is None else cover,
                    -velocity,
                    inputs.sku,
                    inputs.location_id,
                    inputs,
                )
            )
    top = heapq.nsmallest(params.top_n, keyed, key=lambda k: k[:5])  # (sku, location) unique
    # The leading pairs SQL ordered are read in full only now, the few that are shown.
    wanted = [(k[3], k[4]) for k in top if k[5] is None]
    read = {(p.sku, p.location_id): p for p in pair_inputs(db, wanted, t, params)}
    rows = [(k[5] or read[(k[3], k[4])]).row(window, t, params) for k in top]
    # The pairs known by t: all evaluated when t is in the past, else the stock table's,
    # as its triggers count them (migration 15: a count of the table reads all of it).
    total = (
        len(evaluated)
        if scope == "all"
        else db.execute("SELECT n FROM row_counts WHERE name = 'stock'").fetchone()[0]
    )
    return StockoutSnapshot(
        rows=tuple(rows[: params.top_n]),
        total_at_risk=counts["AT RISK"],
        total_out=counts["OUT"],
        total_oversell=counts["OVERSELL"],
        total_pairs=int(total),
    )


# --- return spike ----------------------------------------------------------------------


def rate_z_score(returned: int, sold: int, base_returned: int, base_sold: int) -> float | None:
    """Exposure-adjusted test of two return rates (conditional binomial, normal approx.).

    Given n = returned + base_returned returns, if both windows had the same rate per unit
    sold, the current window's share of them would be Binomial(n, π) with
    π = sold / (sold + base_sold).  z = (returned − nπ) / √(nπ(1 − π)).  Shown beside the
    exact p-value (:func:`rate_p_value`), which is what decides a spike.
    """
    n = returned + base_returned
    exposure = sold + base_sold
    if n == 0 or sold <= 0 or base_sold <= 0:
        return None
    pi = sold / exposure
    return (returned - n * pi) / math.sqrt(n * pi * (1 - pi))


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), exact (terms summed in log space from the tail in).

    Summed on the side of the mode that holds the smaller mass, so a tiny tail keeps its
    relative precision and a large one is 1 minus a small sum; the terms fall off
    geometrically away from the mode, so the loop stops after a few √n terms.
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    lg_n1 = math.lgamma(n + 1)

    def log_pmf(i: int) -> float:
        return lg_n1 - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q

    def tail_sum(first: int, step: int, stop: int) -> float:
        """Σ pmf(i) for i = first, first+step, ... up to stop, relative to pmf(first)."""
        top = log_pmf(first)
        total, i = 0.0, first
        while (i <= stop) if step > 0 else (i >= stop):
            term = math.exp(log_pmf(i) - top)
            total += term
            if term < 1e-17 * total:
                break
            i += step
        return total * math.exp(top)

    mode = int((n + 1) * p)
    if k > mode:  # the upper tail is the small side: sum it upwards from k
        return min(1.0, tail_sum(k, 1, n))
    # the lower tail P(X ≤ k − 1) is the small side: 1 minus it, summed downwards
    return max(0.0, 1.0 - tail_sum(k - 1, -1, 0))


def rate_p_value(returned: int, sold: int, base_returned: int, base_sold: int) -> float | None:
    """Exact one-sided p-value of the rate test: P(X ≥ returned), X ~ Binomial(n, π).

    The same conditional binomial as :func:`rate_z_score` (n = both windows' returns,
    π = sold / (sold + base_sold)), summed exactly instead of approximated by a normal,
    whose tail is far too thin for the few returns of a single SKU.  None when the test
    does not apply (no returns, or no sales in either window).
    """
    n = returned + base_returned
    if n == 0 or sold <= 0 or base_sold <= 0:
        return None
    return binomial_upper_tail(returned, n, sold / (sold + base_sold))


def bh_q_values(p_values: list[float | None], family: int) -> list[float | None]:
    """Benjamini–Hochberg adjusted p-values (q-values) of ``p_values`` in a family of ``family``.

    q_(i) = min over j ≥ i of (family × p_(j) / j), capped at 1, with the p-values in
    increasing order; rejecting every series with q ≤ α is the BH step-up procedure at
    level α.  ``family`` may exceed the number of p-values given: the series left out
    (those that cannot spike) count as p = 1, which only makes the test stricter.  A
    None p-value (no test) has no q-value.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = max(family, len(tested))
    out: list[float | None] = [None] * len(p_values)
    running = 1.0
    ranked = sorted(tested)
    for rank in range(len(ranked), 0, -1):
        p, i = ranked[rank - 1]
        running = min(running, m * p / rank)
        out[i] = running
    return out


def _sku_series(
    db: sqlite3.Connection, t: int, first_hour: int, last_hour: int, returned: list[str]
) -> int:
    """The SKU family size: every catalogue SKU, and every SKU returned in the window.

    Each of them could be tested; one that did not sell or was not returned counts as
    p = 1, which only makes the test stricter.  The catalogue is counted, not scanned
    (a refresh must not cost a seek per SKU of a large catalogue).  A store without a
    catalogue (an imported order history) counts the SKUs with units sold in
    ``[first_hour, last_hour]`` as of ``t`` instead: a loose index scan of
    ``sku_hourly``, plus the SKUs that sold only in ``t``'s hour so far.
    """
    if changed_after(db, t)[0]:  # a past moment: the catalogue as of t
        known = skus_as_of(db, t)
        if known:
            return len(known) + sum(sku not in known for sku in returned)
    catalogue = int(db.execute("SELECT COUNT(*) FROM skus").fetchone()[0])
    if catalogue:
        (outside,) = db.execute(
            "SELECT COUNT(*) FROM json_each(?) WHERE value NOT IN (SELECT sku FROM skus)",
            (json.dumps(returned),),
        ).fetchone()
        return catalogue + int(outside)
    sold = {
        sku
        for (sku,) in db.execute(
            """WITH RECURSIVE s(sku) AS (
                 SELECT (SELECT MIN(sku) FROM sku_hourly)
                 UNION ALL
                 SELECT (SELECT MIN(sku) FROM sku_hourly WHERE sku > s.sku)
                 FROM s WHERE s.sku IS NOT NULL)
               SELECT sku FROM s WHERE sku IS NOT NULL AND EXISTS (
                 SELECT 1 FROM sku_hourly h
                 WHERE h.sku = s.sku AND h.hour BETWEEN ? AND ? AND h.units > 0)""",
            (first_hour, closed_last_hour(t, last_hour)),
        )
    }
    sold.update(
        line.sku
        for line in sales_lines(db, t, first_hour)
        if line.units > 0 and first_hour <= line.hour <= last_hour
    )
    return len(sold | set(returned))


def compute_returns(db: sqlite3.Connection, t: int, params: MetricParams) -> ReturnSpikeSnapshot:
    """Return rate per SKU against its own baseline (README: Return spike).

    Only SKUs with at least ``return_min_count`` units returned in the window can spike,
    so only they are listed and only their sales are read: the cost follows the returns
    of the last week, not the catalogue or the history.  Returns are counted over the
    same span as the units sold they are set against: the window's hour buckets up to
    ``t``, and the baseline's.
    """
    first, last = window_hours(t, params.return_window_days)
    b_first = first - int(params.return_baseline_days * 24)
    w_start, b_start = first * HOUR, b_first * HOUR
    current: dict[str, int] = defaultdict(int)
    reasons: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for sku, qty, reason in db.execute(
        "SELECT sku, quantity, reason FROM returns WHERE received_ts >= ? AND received_ts <= ?",
        (w_start, t),
    ):
        current[sku] += qty
        reasons[sku][reason] += qty
    candidates = sorted(sku for sku, n in current.items() if n >= params.return_min_count)
    packed = json.dumps(candidates)
    # As of t (store/asof.py): closed roll-up hours, plus t's hour so far and the sales
    # cancelled only after t, per SKU and window.
    late_sold: dict[str, int] = defaultdict(int)
    late_base: dict[str, int] = defaultdict(int)
    wanted = set(candidates)
    for line in sales_lines(db, t, b_first) if candidates else ():
        if line.sku in wanted:
            if first <= line.hour <= last:
                late_sold[line.sku] += line.units
            elif b_first <= line.hour < first:
                late_base[line.sku] += line.units
    per_sku = db.execute(
        """WITH c(sku) AS (SELECT value FROM json_each(?))
           SELECT c.sku, COALESCE(k.category, '-'),
               (SELECT COALESCE(SUM(units), 0) FROM sku_hourly h
                 WHERE h.sku = c.sku AND h.hour BETWEEN ? AND ?),
               (SELECT COALESCE(SUM(units), 0) FROM sku_hourly h
                 WHERE h.sku = c.sku AND h.hour BETWEEN ? AND ?),
               (SELECT COALESCE(SUM(quantity), 0) FROM returns r
                 WHERE r.sku = c.sku AND r.received_ts >= ? AND r.received_ts < ?)
           FROM c LEFT JOIN skus k ON k.sku = c.sku""",
        (
            packed,
            first,
            closed_last_hour(t, last),
            b_first,
            closed_last_hour(t, first - 1),
            b_start,
            w_start,
        ),
    ).fetchall()
    # As of a past t, each SKU's category as its record by t says (store/asof.py).
    then = skus_as_of(db, t) if changed_after(db, t)[0] else None
    counted = []
    for sku, category, s_closed, bs_closed, br in per_sku:
        if then is not None:
            category = then[sku].category if sku in then else "-"
        s, bs = s_closed + late_sold[sku], bs_closed + late_base[sku]
        counted.append((sku, category, current[sku], s, br, bs))
    p_values = [rate_p_value(ret, s, br, bs) for _, _, ret, s, br, bs in counted]
    # The family: every SKU that could have been tested; those below the minimum count
    # are not listed and count as p = 1 (README: Return spike).
    tested = _sku_series(db, t, b_first, last, sorted(current))
    q_values = bh_q_values(p_values, tested)
    rows = []
    for (sku, category, returned, s, br, bs), p, q in zip(counted, p_values, q_values, strict=True):
        z = rate_z_score(returned, s, br, bs)
        spike = _is_spike(returned, z, q, params)
        top = sorted(reasons[sku].items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        rows.append(
            ReturnSpikeRow(
                sku=sku,
                category=category,
                returned=returned,
                sold=s,
                rate=_ratio(returned, s),
                baseline_returned=br,
                baseline_sold=bs,
                baseline_rate=_ratio(br, bs),
                z_score=z,
                spike=spike,
                top_reasons=tuple(top),
                p_value=p,
                q_value=q,
            )
        )
    rows.sort(key=lambda r: (not r.spike, -(r.z_score or -math.inf), -r.returned, r.sku))
    return ReturnSpikeSnapshot(
        rows=tuple(rows[: params.top_n]),
        spikes=sum(r.spike for r in rows),
        rollups=return_rollups(db, t, params),
        tested=max(tested, sum(p is not None for p in p_values)),
    )


def _is_spike(returned: int, z: float | None, q: float | None, params: MetricParams) -> bool:
    """The spike rule: the minimum count, a BH discovery at ``return_fdr_q``, and the z floor."""
    return (
        returned >= params.return_min_count
        and q is not None
        and q <= params.return_fdr_q
        and z is not None
        and z >= params.return_z_threshold
    )


def baseline_dispersion(days: list[list[int]] | list[tuple[int, int]]) -> float:
    """Extra-binomial dispersion φ ≥ 1 of a series' baseline days (quasi-binomial).

    ``days`` holds (returned, sold) per baseline day.  With the baseline's pooled rate r,
    φ = Σ (returnedᵢ − soldᵢ·r)² / (soldᵢ·r·(1 − r)) ÷ (D − 1) over the D days with sales:
    the Pearson statistic per degree of freedom, 1 when the days vary as binomial counts
    would.  A roll-up pools many SKUs and channels whose mix and return lag change from
    day to day, so its days vary more than that, and a test that ignored it would call
    that ordinary variation a spike.  Fewer than two days with sales, or φ < 1: 1.
    """
    active = [(r, s) for r, s in days if s > 0]
    # r is the baseline rate itself: returns received on a day without sales count in it.
    total_r, total_s = sum(r for r, _ in days), sum(s for _, s in days)
    if len(active) < 2 or total_r <= 0 or total_r >= total_s:
        return 1.0
    rate = total_r / total_s
    chi2 = sum((r - s * rate) ** 2 / (s * rate * (1 - rate)) for r, s in active)
    return max(1.0, chi2 / (len(active) - 1))


def _windows_by_key(table: str) -> str:
    """Units of the current window and of each baseline day per (category, channel) of a rollup.

    The rollup's key is (category, channel, hour) and it has no index on the hour, so a
    plain ``WHERE hour BETWEEN`` reads every hour the store ever had.  Instead the
    (category, channel) keys are walked one index seek each (a recursive "loose index
    scan": the next key is the smallest one above the last), and each key reads only its
    hours in the windows, so the cost follows the keys and the windows, not the history.
    Rows are per key and day: -1 for the current window, else the baseline day
    (``(hour − baseline's first hour) // 24``, 24-hour blocks ending where the window starts),
    in (category, channel, day) order, a key's day only if it has hours.  Each (key, day) is
    one range sum of the primary key, so nothing is sorted to group the hours.
    Parameters: current window's first hour, baseline's first hour (twice), last hour.
    """
    return f"""
        WITH RECURSIVE
          cats(category) AS (
            SELECT (SELECT MIN(category) FROM {table})
            UNION ALL
            SELECT (SELECT MIN(category) FROM {table} WHERE category > cats.category)
            FROM cats WHERE cats.category IS NOT NULL),
          keys(category, channel) AS (
            SELECT category, (SELECT MIN(channel) FROM {table} r WHERE r.category = cats.category)
            FROM cats WHERE category IS NOT NULL
            UNION ALL
            SELECT category, (SELECT MIN(channel) FROM {table} r
                              WHERE r.category = keys.category AND r.channel > keys.channel)
            FROM keys WHERE channel IS NOT NULL),
          days(day, lo, hi) AS (
            SELECT -1, ?1, ?4
            UNION ALL
            SELECT 0, ?2, MIN(?2 + 23, ?1 - 1, ?4)
            UNION ALL
            SELECT day + 1, lo + 24, MIN(lo + 47, ?1 - 1, ?4) FROM days
            WHERE day >= 0 AND lo + 24 < ?1)
        SELECT k.category, k.channel, d.day,
               (SELECT SUM(h.units) FROM {table} h
                WHERE h.category = k.category AND h.channel = k.channel
                  AND h.hour BETWEEN d.lo AND d.hi) AS units
        FROM keys k CROSS JOIN days d
        WHERE k.channel IS NOT NULL AND units IS NOT NULL"""


def return_rollups(
    db: sqlite3.Connection, t: int, params: MetricParams
) -> tuple[ReturnRollupRow, ...]:
    """Return rate per category and per channel, same windows and test as per SKU.

    Units sold and returned come from the category × channel hourly rollups the writer
    keeps (a unit counts in the category its SKU had then), so both windows are whole
    hour buckets, like units sold per SKU.  The p-value allows for the series' own
    day-to-day variation in the baseline (:func:`baseline_dispersion`: both windows'
    returns divided by φ), and BH runs across the category and channel series together.
    """
    first, last = window_hours(t, params.return_window_days)
    b_first = first - int(params.return_baseline_days * 24)
    # Per series: day -1 is the current window, 0.. the baseline days; [returned, sold].
    days: dict[tuple[str, str], dict[int, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )

    def add(category: str, channel: str, day: int, slot: int, n: int) -> None:
        for series in (("category", category), ("channel", channel)):
            days[series][day][slot] += int(n)

    for table, slot in (("category_hourly", 1), ("category_returns_hourly", 0)):
        for category, channel, day, units in db.execute(
            _windows_by_key(table), (first, b_first, b_first, closed_last_hour(t, last))
        ):
            add(category, channel, day, slot, units)
    # As of t (store/asof.py): t's hour so far, and sales cancelled only after t.
    late: list[tuple[str, str, str, int, int, int]] = [
        (line.sku, line.category, line.channel, line.hour, line.units, 1)
        for line in sales_lines(db, t, b_first)
    ]
    late.extend((r.sku, r.category, r.channel, r.hour, r.units, 0) for r in return_lines(db, t))
    # As of a past t, a SKU whose first record came after t still counts under "-".
    uncatalogued = uncatalogued_at(db, t) if changed_after(db, t)[0] else set()
    for category, channel, hour, units, slot in _uncatalogued_closed(
        db, uncatalogued, b_first, closed_last_hour(t, last)
    ):
        day = -1 if hour >= first else (hour - b_first) // 24
        add(category, channel, day, slot, -units)
        add("-", channel, day, slot, units)
    for sku, category, channel, hour, units, slot in late:
        if sku in uncatalogued:
            category = "-"
        if b_first <= hour <= last:
            add(category, channel, -1 if hour >= first else (hour - b_first) // 24, slot, units)
    counts: dict[tuple[str, str], tuple[int, int, int, int]] = {}
    dispersion: dict[tuple[str, str], float] = {}
    # A series only an edit after t gave a row (its lines taken back out as of t, nothing
    # else in either window) did not exist at t (store/asof.py).
    future = edited_series(db, t)
    for series, by_day in days.items():
        returned, sold = by_day.get(-1, (0, 0))
        baseline = [v for d, v in by_day.items() if d >= 0]
        if series in future and not (returned or sold or any(r or s for r, s in baseline)):
            continue
        counts[series] = (
            returned,
            sold,
            sum(r for r, _ in baseline),
            sum(s for _, s in baseline),
        )
        dispersion[series] = baseline_dispersion(baseline)
    rollups = []
    keyed = sorted(counts.items())
    # One family: every category and channel series of this evaluation.
    p_values = [
        rate_p_value(round(r / dispersion[k]), s, round(br / dispersion[k]), bs)
        for k, (r, s, br, bs) in keyed
    ]
    q_values = bh_q_values(p_values, len(keyed))
    for ((scope, key), (returned, sold, base_returned, base_sold)), p, q in zip(
        keyed, p_values, q_values, strict=True
    ):
        z = rate_z_score(returned, sold, base_returned, base_sold)
        rollups.append(
            ReturnRollupRow(
                scope=scope,  # type: ignore[arg-type]
                key=key,
                returned=returned,
                sold=sold,
                rate=_ratio(returned, sold),
                baseline_returned=base_returned,
                baseline_sold=base_sold,
                baseline_rate=_ratio(base_returned, base_sold),
                z_score=z,
                spike=_is_spike(returned, z, q, params),
                p_value=p,
                q_value=q,
                dispersion=dispersion[(scope, key)],
            )
        )
    rollups.sort(key=lambda r: (not r.spike, -(r.z_score or -math.inf), r.scope, r.key))
    return tuple(rollups)


def _uncatalogued_closed(
    db: sqlite3.Connection, skus: set[str], first_hour: int, last_hour: int
) -> list[tuple[str, str, int, int, int]]:
    """``skus``' units in the category roll-ups' hours ``[first_hour, last_hour]``.

    (category, channel, hour, units, slot): slot 1 sold (lines counted and not reversed,
    as the roll-up holds them), 0 returned.
    """
    if not skus:
        return []
    packed = json.dumps(sorted(skus))
    rows = db.execute(
        """SELECT l.sales_category, o.channel, o.placed_ts / 3600, SUM(l.quantity), 1
           FROM order_lines l JOIN orders o ON o.order_id = l.order_id
           WHERE l.sku IN (SELECT value FROM json_each(?1)) AND l.sales_category IS NOT NULL
             AND o.has_order = 1 AND o.sales_reversed = 0
             AND o.placed_ts >= ?2 * 3600 AND o.placed_ts < (?3 + 1) * 3600
           GROUP BY 1, 2, 3
           UNION ALL
           SELECT category, channel, received_ts / 3600, SUM(quantity), 0 FROM returns
           WHERE sku IN (SELECT value FROM json_each(?1))
             AND received_ts >= ?2 * 3600 AND received_ts < (?3 + 1) * 3600
           GROUP BY 1, 2, 3""",
        (packed, first_hour, last_hour),
    ).fetchall()
    return [(c, ch, int(h), int(u), int(slot)) for c, ch, h, u, slot in rows]


# --- headline ----------------------------------------------------------------------------


def _sales_between(db: sqlite3.Connection, start: int, end: int) -> tuple[int, int, int, int]:
    """(gross, discounts, orders, returns refunded) in cents for [start, end], as of end."""
    gross, disc, orders = db.execute(
        """SELECT COALESCE(SUM(gross_cents), 0), COALESCE(SUM(discount_cents), 0), COUNT(*)
           FROM orders
           WHERE has_order = 1 AND placed_ts >= ? AND placed_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > ?)""",
        (start, end, end),
    ).fetchone()
    # Orders edited after ``end`` count as they stood then (store/asof.py).
    for _, _, d_gross, d_disc in edit_deltas(db, end, start, end):
        gross += d_gross
        disc += d_disc
    refunds = db.execute(
        "SELECT COALESCE(SUM(refund_cents), 0) FROM returns"
        " WHERE received_ts >= ? AND received_ts <= ?",
        (start, end),
    ).fetchone()[0]
    return int(gross), int(disc), int(orders), int(refunds)


def compute_headline(db: sqlite3.Connection, t: int, params: MetricParams) -> Headline:
    """Net sales today, orders per hour and AOV by channel against rolling means; feeds."""
    tz = ZoneInfo(params.timezone)
    now = datetime.fromtimestamp(t, UTC)
    local_now = now.astimezone(tz)
    today = local_now.date()
    day_start = epoch(local_midnight(today, tz))
    gross, disc, _, refunds = _sales_between(db, day_start, t)
    net = gross - disc - refunds

    prior_nets: list[int] = []
    prior_hour_orders: list[int] = []
    first = db.execute("SELECT MIN(placed_ts) FROM orders WHERE has_order = 1").fetchone()[0]
    for back in range(1, params.rolling_days + 1):
        d = today - timedelta(days=back)
        d_start = epoch(local_midnight(d, tz))
        d_end = epoch(local_midnight(d + timedelta(days=1), tz))
        if first is None or first >= d_end:
            continue  # a day before the store had data does not drag the average down
        same_time = epoch(datetime.combine(d, local_now.time(), tz).astimezone(UTC))
        g, di, _, r = _sales_between(db, d_start, same_time)
        prior_nets.append(g - di - r)
        prior_hour_orders.append(_orders_between(db, same_time - HOUR, same_time))

    channels = []
    roll_start = epoch(local_midnight(today - timedelta(days=params.rolling_days), tz))
    today_rows = db.execute(
        """SELECT channel, COUNT(*), SUM(gross_cents - discount_cents) FROM orders
           WHERE has_order = 1 AND placed_ts >= ? AND placed_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > ?)
           GROUP BY channel ORDER BY channel""",
        (day_start, t, t),
    ).fetchall()
    # Orders edited after t count as they stood at t (store/asof.py); a moment live has none.
    today_deltas = edit_deltas(db, t, day_start, t)
    if today_deltas:
        moved: dict[str, int] = defaultdict(int)
        for channel, _, d_gross, d_disc in today_deltas:
            moved[channel] += d_gross - d_disc
        today_rows = [(ch, n, value + moved.get(ch, 0)) for ch, n, value in today_rows]
    # The rolling days of today's channels in one pass over the placed-time index, a pair
    # of sums per channel (no pass per channel, no sort of a week of orders to group it).
    # A NULL channel never matches a comparison, as it never matched before.
    # A catalogue channel with no orders today keeps its row (0 orders, AOV —) with its
    # rolling AOV, dropped only if it had no orders in the rolling days either.
    ordered = {channel for channel, _, _ in today_rows}
    today_rows += [
        (channel, 0, 0)
        for (channel,) in db.execute("SELECT channel_id FROM channels ORDER BY channel_id")
        if channel not in ordered
    ]
    today_rows.sort(key=lambda r: str(r[0]))
    names = [channel for channel, _, _ in today_rows]
    sums = ", ".join(
        "SUM(channel = ?), TOTAL(CASE WHEN channel = ? THEN gross_cents - discount_cents END)"
        for _ in names
    )
    rolled = (
        db.execute(
            f"""SELECT {sums} FROM orders
                WHERE has_order = 1 AND placed_ts >= ? AND placed_ts < ?
                  AND (cancelled_ts IS NULL OR cancelled_ts > ?)""",
            (*(name for name in names for _ in range(2)), roll_start, day_start, t),
        ).fetchone()
        if names
        else ()
    )
    rolled_moved: dict[str, int] = defaultdict(int)
    for channel, _, d_gross, d_disc in edit_deltas(db, t, roll_start, day_start - 1):
        rolled_moved[channel] += d_gross - d_disc
    for i, (channel, orders, value) in enumerate(today_rows):
        r_orders = int(rolled[2 * i] or 0)
        r_value = int(rolled[2 * i + 1]) + rolled_moved.get(channel, 0)
        if not orders and not r_orders:
            continue
        channels.append(
            ChannelHeadline(
                channel=channel,
                orders=orders,
                net_sales=value / 100,
                aov=value / orders / 100 if orders else None,
                aov_rolling=r_value / r_orders / 100 if r_orders else None,
            )
        )

    # Net sales per hour since local midnight: one grouped query each for orders and refunds.
    hourly_cents = [0] * ((t - day_start) // HOUR + 1)
    for k, net_cents in db.execute(
        """SELECT (placed_ts - ?) / 3600, SUM(gross_cents - discount_cents) FROM orders
           WHERE has_order = 1 AND placed_ts >= ? AND placed_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > ?)
           GROUP BY 1""",
        (day_start, day_start, t, t),
    ):
        hourly_cents[k] += net_cents
    for _, placed, d_gross, d_disc in today_deltas:
        hourly_cents[(placed - day_start) // HOUR] += d_gross - d_disc
    for k, refund_cents in db.execute(
        """SELECT (received_ts - ?) / 3600, SUM(refund_cents) FROM returns
           WHERE received_ts >= ? AND received_ts <= ? GROUP BY 1""",
        (day_start, day_start, t),
    ):
        hourly_cents[k] -= refund_cents
    hourly = [cents / 100 for cents in hourly_cents]
    shipping_charged, shipping_cost = _shipping_today(db, day_start, t)
    # An order placed with no lines was never available: counted here, and nowhere else
    # (it is cancelled the instant it is placed).
    unavailable = db.execute(
        "SELECT COUNT(*) FROM orders WHERE has_order = 1 AND units = 0"
        " AND placed_ts >= ? AND placed_ts <= ?",
        (day_start, t),
    ).fetchone()[0]

    return Headline(
        day_start=datetime.fromtimestamp(day_start, UTC),
        net_sales=net / 100,
        gross_sales=gross / 100,
        returns_value=refunds / 100,
        discounts=disc / 100,
        net_sales_rolling=(sum(prior_nets) / len(prior_nets) / 100) if prior_nets else None,
        orders_per_hour=float(_orders_between(db, t - HOUR, t)),
        orders_per_hour_rolling=(
            sum(prior_hour_orders) / len(prior_hour_orders) if prior_hour_orders else None
        ),
        channels=tuple(channels),
        hourly_net_sales=tuple(hourly),
        feeds=feed_freshness(db, t, params),
        adapters=feed_adapters(db, t),
        orders_unavailable=int(unavailable),
        shipping_charged=shipping_charged / 100,
        shipping_cost=shipping_cost / 100,
    )


def _shipping_today(db: sqlite3.Connection, day_start: int, t: int) -> tuple[int, int]:
    """(shipping charged, shipping cost) in cents today, as of ``t`` (README: Headline).

    Charged: of the orders net sales counts (placed today, not cancelled by ``t``).  Cost:
    of the shipments first reported today, each at its latest report by ``t``.
    """
    charged = db.execute(
        """SELECT COALESCE(SUM(shipping_charged_cents), 0) FROM orders
           WHERE has_order = 1 AND placed_ts >= ? AND placed_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > ?)""",
        (day_start, t, t),
    ).fetchone()[0]
    cost = db.execute(
        """WITH k AS (SELECT DISTINCT order_id, shipment FROM shipment_costs
                      WHERE ts >= ? AND ts <= ?)
           SELECT COALESCE(SUM((SELECT c.cost_cents FROM shipment_costs c
                                WHERE c.order_id = k.order_id AND c.shipment = k.shipment
                                  AND c.ts <= ? ORDER BY c.ts DESC LIMIT 1)), 0)
           FROM k
           WHERE NOT EXISTS (SELECT 1 FROM shipment_costs e
                             WHERE e.order_id = k.order_id AND e.shipment = k.shipment
                               AND e.ts < ?)""",
        (day_start, t, t, day_start),
    ).fetchone()[0]
    return int(charged), int(cost)


def feed_adapters(db: sqlite3.Connection, t: int) -> tuple[FeedHealthRow, ...]:
    """What ``serve`` last reported about each feed adapter (newest first per feed)."""
    rows = []
    for feed, kind, state, detail, epm, errors, quarantined, last, updated in db.execute(
        "SELECT feed, kind, state, detail, events_per_minute, errors, quarantined,"
        " last_event_at, updated_at FROM feed_health ORDER BY feed"
    ):
        rows.append(
            FeedHealthRow(
                feed=feed,
                kind=kind,
                state=state,
                detail=detail,
                events_per_minute=float(epm),
                errors=int(errors),
                quarantined=int(quarantined),
                last_event_at=None if last is None else datetime.fromtimestamp(last, UTC),
                updated_at=datetime.fromtimestamp(updated, UTC),
                silent=t - updated > 120,
            )
        )
    return tuple(rows)


def _orders_between(db: sqlite3.Connection, start: int, end: int) -> int:
    """Orders placed in (start, end], not cancelled by ``end``."""
    return int(
        db.execute(
            """SELECT COUNT(*) FROM orders WHERE has_order = 1 AND placed_ts > ? AND placed_ts <= ?
               AND (cancelled_ts IS NULL OR cancelled_ts > ?)""",
            (start, end, end),
        ).fetchone()[0]
    )


def expected_feed_events(
    db: sqlite3.Connection, feed: str, last: int, t: int, days: int
) -> float | None:
    """How much ``feed`` usually delivers in the silence ``(last, t]``: active minutes.

    The mean, over the previous ``days`` days that the feed's history covers, of the
    distinct minutes in which it delivered at least one event within the same window
    shifted back by whole days (``(last − d·24 h, t − d·24 h]``, d = 1 … ``days``).
    Minutes, not events: a feed delivers in bursts (a till sale and its hand-over a second
    apart, a listing sync of hundreds of rows at once), and a burst is one delivery.  A day
    counts when the feed had delivered before that day's window began.  None when no day
    counts (no history to judge the silence by).
    """
    if days <= 0:
        return None
    first = db.execute("SELECT MIN(ts) FROM event_log WHERE source = ?", (feed,)).fetchone()[0]
    if first is None:
        return None
    counts = [
        int(
            db.execute(
                "SELECT COUNT(DISTINCT ts / 60) FROM event_log"
                " WHERE source = ? AND ts > ? AND ts <= ?",
                (feed, last - d * 86400, t - d * 86400),
            ).fetchone()[0]
        )
        for d in range(1, days + 1)
        if last - d * 86400 >= first
    ]
    return sum(counts) / len(counts) if counts else None


REFERENCE_TYPES = ("sku.upserted", "location.upserted", "channel.upserted")
"""Event types of reference data: a feed that has delivered only these is never stale."""


def _reference_only(db: sqlite3.Connection, feed: str, t: int) -> bool:
    """True when every event ``feed`` delivered by ``t`` is reference data (a catalogue).

    Read only for a feed found stale (one index range, stopping at its first stream event).
    """
    marks = ", ".join("?" * len(REFERENCE_TYPES))
    (stream,) = db.execute(
        f"SELECT EXISTS (SELECT 1 FROM event_log WHERE source = ? AND ts <= ?"
        f" AND type NOT IN ({marks}))",
        (feed, t, *REFERENCE_TYPES),
    ).fetchone()
    return not stream


def feed_freshness(
    db: sqlite3.Connection, t: int, params: MetricParams
) -> tuple[FeedFreshness, ...]:
    """Last event per feed as of ``t``, and whether its silence is stale (README: Feeds).

    Stale when the feed never delivered, or when nothing arrived for longer than
    ``stale_feed_minutes`` (or its ``stale_overrides`` entry) *and* the feed's own history
    expects at least ``stale_min_expected`` active minutes in that silence
    (:func:`expected_feed_events`); a feed with no history to judge by is stale on the
    limit alone.  A feed that has delivered only reference data (:data:`REFERENCE_TYPES`:
    a catalogue of SKUs, locations, channels, loaded once and changed when it changes) is
    never stale by its silence.
    """
    as_of = events_as_of(db, t)
    known = {
        feed: (as_of.get(feed, 0), quarantined)
        for feed, quarantined in db.execute("SELECT feed, quarantined FROM feed_state")
        if as_of.get(feed, 0) > 0 or quarantined > 0
    }
    out = []
    for feed in sorted(set(known) | set(params.expected_feeds)):
        last = db.execute(
            "SELECT MAX(ts) FROM event_log WHERE source = ? AND ts <= ?", (feed, t)
        ).fetchone()[0]
        events, quarantined = known.get(feed, (0, 0))
        limit = params.stale_overrides.get(feed, params.stale_feed_minutes)
        stale = last is None or t - last > limit * 60
        if stale and last is not None:
            expected = expected_feed_events(db, feed, last, t, params.stale_history_days)
            stale = expected is None or expected >= params.stale_min_expected
        if stale and last is not None and _reference_only(db, feed, t):
            stale = False  # a catalogue is loaded, then changes when it changes
        out.append(
            FeedFreshness(
                feed=feed,
                last_event_at=None if last is None else datetime.fromtimestamp(last, UTC),
                events=int(events),
                quarantined=int(quarantined),
                stale=stale,
            )
        )
    return tuple(out)
