"""Applying a batch of canonical events to the store, in one transaction.

This is the only code that changes current state.  Every rule here is independent of
arrival order, because feeds do not deliver in order:

* idempotent on event id: an id already in ``event_log`` (or twice in one batch) is a
  duplicate, counted and never applied again;
* catalogue rows (SKU, location, channel, listing, inbound) are last-write-wins on the
  event's ``ts``;
* a stock snapshot only replaces an older one, and the count is the snapshot plus every
  adjustment stamped after it, so an adjustment that arrives before or after the snapshot
  it follows gives the same on-hand;
* fulfillment steps set their own timestamp column (the earliest report wins), and a step
  for an order not seen yet creates a placeholder that the order fills in later;
* a cancellation reverses the order's sales rollup exactly once, whichever arrives first;
* an edit's lines replace the order's when it is the order's latest edit by time, whenever
  it arrives (before the placement too), and the roll-ups move by the difference.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, cast

from store.asof import resolve_node
from store.fulfilled import DONE_SQL_EXPR, FINISHING_STATUSES, FULFILLED_SQL, NEVER
from store.model import (
    ChannelUpserted,
    Event,
    FulfillmentUpdated,
    InboundUpdated,
    ListingUpdated,
    LocationUpserted,
    OrderCancelled,
    OrderEdited,
    OrderPlaced,
    Quarantined,
    ReturnReceived,
    SkuUpserted,
    StockAdjusted,
    StockSnapshot,
)
from store.risk import MetricParams, refresh_risk_flags, risk_flags_time

Outcome = Literal["applied", "duplicate", "quarantined"]

STEP_COLUMN: dict[str, str] = {
    "released": "released_ts",
    "picked": "picked_ts",
    "packed": "packed_ts",
    "shipped": "shipped_ts",
    "ready_for_pickup": "ready_ts",
    "picked_up": "picked_up_ts",
    "delivered": "delivered_ts",
    "exception": "exception_ts",
}
"""Which ``orders`` column records each fulfillment step."""

UNASSIGNED = "-"
"""Location key for sales of an order no node has been assigned to yet."""


def epoch(moment: datetime) -> int:
    """Seconds since the Unix epoch (UTC) for an aware datetime."""
    return int(moment.timestamp())


def cents(amount: Decimal) -> int:
    """Integer cents of a decimal amount."""
    return int((amount * 100).to_integral_value())


_CACHE_LIMIT = 1 << 16
"""Entries kept by each conversion cache before it starts afresh."""

_CENTS: dict[Decimal, int] = {}
""":func:`cents` of amounts seen (prices repeat: a dict hit is many times cheaper)."""

_EPOCHS: dict[datetime, int] = {}
""":func:`epoch` of moments seen (promises and estimates repeat across events)."""


def _cache_cents(amount: Decimal) -> int:
    value = cents(amount)
    if len(_CENTS) >= _CACHE_LIMIT:
        _CENTS.clear()
    _CENTS[amount] = value
    return value


def _cache_epoch(moment: datetime) -> int:
    value = epoch(moment)
    if len(_EPOCHS) >= _CACHE_LIMIT:
        _EPOCHS.clear()
    _EPOCHS[moment] = value
    return value


@dataclass
class Touched:
    """What a batch changed that stock risk depends on (see :mod:`store.risk`)."""

    pairs: set[tuple[str, str]] = field(default_factory=set)
    skus: set[str] = field(default_factory=set)
    locations: set[str] = field(default_factory=set)
    latest: int = 0
    orders: set[str] = field(default_factory=set)
    """Orders whose fulfillment or cancellation changed (their done times are recomputed)."""

    def pair(self, sku: str, location_id: str | None, ts: int) -> None:
        """Record a SKU × location touched by an event stamped ``ts``."""
        if location_id is not None:
            self.pairs.add((sku, location_id))
            self.latest = max(self.latest, ts)


def _touch(touched: Touched, rows: list[tuple[Any, ...]]) -> None:
    """Record the pairs of ``rows`` (``sku, location, ts, ...``, location never null)."""
    touched.pairs.update([(row[0], row[1]) for row in rows])
    touched.latest = max(touched.latest, max(row[2] for row in rows))


RISK_SWEEP_SECONDS = 900
"""How often (in event time) the writer re-checks every flagged pair, so flags stay tight.

The writer also spaces sweeps in wall time (``sweep=False`` in between): a bulk load moves
event time by days per second, and re-checking every flagged pair each batch would make
it quadratic.  Sweeps only drop flags that no longer hold; correctness never needs one."""


Applier = Callable[[sqlite3.Connection, list[tuple[Any, int]], Touched], None]
"""Applies every fresh event of one type in a segment, set-wise (see :data:`APPLIERS`)."""

_EARLY_CANCEL = "order.cancelled:before-placement"
"""Cancellations that arrived before their order's placement in the same segment."""


def apply_batch(
    db: sqlite3.Connection,
    items: Sequence[Event | Quarantined],
    received_at: int,
    params: MetricParams | None = None,
    *,
    sweep: bool = True,
    prepare: Callable[[sqlite3.Connection, Touched], None] | None = None,
) -> list[Outcome]:
    """Apply ``items`` in one ``BEGIN IMMEDIATE`` transaction; return one outcome each.

    The batch is applied set-wise (grouped by type, one ``executemany`` per table, roll-ups
    and risk flags once per batch) and gives the store the same rows as applying the items
    one at a time in arrival order: catalogue (SKU) records split the batch into segments
    applied in order, and within a segment the appliers run in :data:`APPLY_ORDER`, which
    commutes for every rule the module docstring lists.

    On any database error the whole batch is rolled back and the error re-raised, so a
    batch is either entirely durable or not at all.  ``params`` sets the velocity window
    the stock-risk flags are computed with.  ``prepare`` runs first, in the same
    transaction (a replay's replacement of a node-less placement, see
    :func:`store.held.unplace`).
    """
    params = params or MetricParams()
    touched = Touched()
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        if prepare is not None:
            prepare(db, touched)
        known = _known_ids(db, [item.id for item in items if not isinstance(item, Quarantined)])
        plan = _plan(items, known, received_at, outcomes)
        if plan.quarantine:
            db.executemany(
                "INSERT INTO quarantine (received_at, source, error, raw) VALUES (?, ?, ?, ?)",
                plan.quarantine,
            )
        if plan.log:
            db.executemany(
                "INSERT INTO event_log (event_id, type, ts, source, received_at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                plan.log,
            )
        for groups in plan.segments:
            for key in APPLY_ORDER:
                group = groups.get(key)
                if group:
                    APPLIERS[key](db, group, touched)
            done = touched.orders
            if done:
                db.execute(_DONE_SQL, (json.dumps(sorted(done)),))
                done.clear()
        feeds = plan.feeds
        db.executemany(
            """
            INSERT INTO feed_state (feed, last_event_ts, last_received_at, events, duplicates,
                                    quarantined)
            VALUES (?, NULLIF(?, 0), ?, ?, ?, ?)
            ON CONFLICT (feed) DO UPDATE SET
                last_event_ts = MAX(COALESCE(last_event_ts, 0),
                                    COALESCE(excluded.last_event_ts, 0)),
                last_received_at = excluded.last_received_at,
                events = events + excluded.events,
                duplicates = duplicates + excluded.duplicates,
                quarantined = quarantined + excluded.quarantined
            """,
            [
                (feed, last_ts, received_at, applied, duplicates, quarantined)
                for feed, (applied, duplicates, quarantined, last_ts) in feeds.items()
            ],
        )
        _update_risk(db, touched, params, sweep=sweep)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return outcomes


@dataclass(slots=True)
class _Plan:
    """One pass over a batch: what to log, quarantine and count, and what to apply."""

    quarantine: list[tuple[int, str, str, str]] = field(default_factory=list)
    log: list[tuple[str, str, int, str, int, str]] = field(default_factory=list)
    """``event_log`` rows of the fresh events, in arrival order."""
    feeds: dict[str, list[int]] = field(default_factory=dict)
    """Per feed: applied, duplicates, quarantined, latest event time."""
    segments: list[dict[str, list[tuple[Any, int]]]] = field(default_factory=list)
    """The fresh events by applier key, per segment (see :func:`_plan`)."""


def _plan(
    items: Sequence[Event | Quarantined],
    known: set[str],
    received_at: int,
    outcomes: list[Outcome],
) -> _Plan:
    """Sort a batch in one pass: outcomes (appended to ``outcomes``), rows, segments.

    A fresh event's id joins ``known`` (a second copy in the batch is a duplicate).
    Segments are runs of SKU records and runs of everything else, in arrival order: a SKU
    record changes the category later sales and returns are counted under, so the events
    on either side of it are applied in separate steps, as they arrived.  Within a segment
    events are grouped by type (arrival order kept); a cancellation that arrived before
    its order's first placement in the segment is grouped apart (:data:`_EARLY_CANCEL`).
    """
    plan = _Plan()
    feeds = plan.feeds
    log_append = plan.log.append
    outcome = outcomes.append
    known_add = known.add
    serializers: dict[type, Callable[[Any], bytes]] = {}
    groups: dict[str, list[tuple[Any, int]]] | None = None
    run_is_sku = False
    placed_at: dict[str, int] = {}
    cancels: list[tuple[int, OrderCancelled, int]] = []
    # Feeds deliver runs of one source and one type: the counters of the last source and
    # the group of the last type are kept at hand (looked up again when either changes).
    last_source: str | None = None
    counters: list[int] = []
    last_type: str | None = None
    group: list[tuple[Any, int]] = []
    for position, item in enumerate(items):
        if isinstance(item, Quarantined):
            plan.quarantine.append((received_at, item.source, item.error, item.raw))
            _bump(feeds, item.source, 2)
            last_source = None  # its counters may be new: look them up again
            outcome("quarantined")
            continue
        event_id = item.id
        source = item.source
        if source != last_source:
            found = feeds.get(source)
            if found is None:
                found = feeds[source] = [0, 0, 0, 0]
            counters, last_source = found, source
        if event_id in known:
            counters[1] += 1
            outcome("duplicate")
            continue
        known_add(event_id)
        ts = int(item.ts.timestamp())
        counters[0] += 1
        if ts > counters[3]:
            counters[3] = ts
        outcome("applied")
        body = item.body
        kind = body.__class__
        to_json = serializers.get(kind)
        if to_json is None:
            # The body's own serializer: what model_dump_json() calls, less the wrapper.
            to_json = serializers[kind] = kind.__pydantic_serializer__.to_json
        type_ = item.type
        log_append((event_id, type_, ts, source, received_at, to_json(body).decode()))
        if type_ != last_type or groups is None:
            is_sku = type_ == "sku.upserted"
            if groups is None or is_sku != run_is_sku:
                if groups is not None:
                    _close_segment(groups, placed_at, cancels)
                    plan.segments.append(groups)
                groups = defaultdict(list)
                run_is_sku = is_sku
            group = groups[type_] if type_ != "order.cancelled" else []
            last_type = type_
        if type_ == "order.cancelled":
            cancels.append((position, cast(OrderCancelled, item), ts))
            continue
        if type_ == "order.placed":
            placed_at.setdefault(cast(OrderPlaced, item).body.order_id, position)
        group.append((item, ts))
    if groups is not None:
        _close_segment(groups, placed_at, cancels)
        plan.segments.append(groups)
    return plan


def _close_segment(
    groups: dict[str, list[tuple[Any, int]]],
    placed_at: dict[str, int],
    cancels: list[tuple[int, OrderCancelled, int]],
) -> None:
    """Group a segment's cancellations (early ones apart); reset the per-segment state."""
    for position, cancel, ts in cancels:
        placed = placed_at.get(cancel.body.order_id)
        early = placed is not None and position < placed
        groups[_EARLY_CANCEL if early else "order.cancelled"].append((cancel, ts))
    placed_at.clear()
    cancels.clear()


def _ids_json(ids: Iterable[str]) -> str:
    return json.dumps(list(ids))


def _categories(db: sqlite3.Connection, skus: Iterable[str]) -> dict[str, str]:
    """Catalogue category of each of ``skus`` that has a record."""
    rows = db.execute(
        "SELECT sku, category FROM skus WHERE sku IN (SELECT value FROM json_each(?))",
        (_ids_json(set(skus)),),
    )
    return dict(rows.fetchall())


def _add_rollups(
    db: sqlite3.Connection,
    lines: Iterable[tuple[str, str | None, str | None, str, int, int, int]],
) -> None:
    """Add sales lines ``(sku, location, category, channel, hour, units, net)`` to roll-ups.

    Signed: a reversal passes negative units and net.  A line without a location (or
    category) is left out of that roll-up, as it was never counted there.
    """
    sales: dict[tuple[str, str, str, int], list[int]] = {}
    category: dict[tuple[str, str, int], int] = {}
    sku: dict[tuple[str, int], int] = {}
    for sku_, location, cat, channel, hour, units, net in lines:
        if location is not None:
            key = (sku_, location, channel, hour)
            acc = sales.get(key)
            if acc is None:
                sales[key] = [units, net]
            else:
                acc[0] += units
                acc[1] += net
        if cat is not None:
            ckey = (cat, channel, hour)
            category[ckey] = category.get(ckey, 0) + units
        skey = (sku_, hour)
        sku[skey] = sku.get(skey, 0) + units
    _store_rollups(db, sales, category, sku)


def _store_rollups(
    db: sqlite3.Connection,
    sales: dict[tuple[str, str, str, int], list[int]],
    category: dict[tuple[str, str, int], int],
    sku: dict[tuple[str, int], int],
) -> None:
    """Add summed sales to the three roll-ups: per pair and hour, category, SKU."""
    if sales:
        db.executemany(
            """INSERT INTO sales_hourly (sku, location_id, channel, hour, units, net_cents)
               VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT DO UPDATE SET units = units + excluded.units,
                   net_cents = net_cents + excluded.net_cents""",
            [(*key, units, net) for key, (units, net) in sales.items()],
        )
    if category:
        db.executemany(
            """INSERT INTO category_hourly (category, channel, hour, units) VALUES (?, ?, ?, ?)
               ON CONFLICT DO UPDATE SET units = units + excluded.units""",
            [(*key, units) for key, units in category.items()],
        )
    if sku:
        db.executemany(
            """INSERT INTO sku_hourly (sku, hour, units) VALUES (?, ?, ?)
               ON CONFLICT DO UPDATE SET units = units + excluded.units""",
            [(*key, units) for key, units in sku.items()],
        )


def _orders_placed(
    db: sqlite3.Connection, events: list[tuple[OrderPlaced, int]], touched: Touched
) -> None:
    """Placements: the first one of an order stands (a re-sent export changes nothing)."""
    first: dict[str, tuple[OrderPlaced, int]] = {}
    pairs = touched.pairs
    latest = touched.latest
    for event, ts in events:
        b = event.body
        order_node = b.location_id
        for line in b.lines:
            node = line.location_id or order_node
            if node is not None:
                pairs.add((line.sku, node))
                if ts > latest:
                    latest = ts
        if b.order_id not in first:
            first[b.order_id] = (event, ts)
    touched.latest = latest
    existing: dict[str, tuple[int, int | None]] = {
        order_id: (has_order, cancelled)
        for order_id, has_order, cancelled in db.execute(
            "SELECT order_id, has_order, cancelled_ts FROM orders"
            " WHERE order_id IN (SELECT value FROM json_each(?))",
            (_ids_json(first),),
        )
    }
    new = [pair for order_id, pair in first.items() if not existing.get(order_id, (0, None))[0]]
    if not new:
        return
    categories = _categories(db, (line.sku for event, _ in new for line in event.body.lines))
    orders: list[tuple[object, ...]] = []
    lines: list[tuple[object, ...]] = []
    sales: dict[tuple[str, str, str, int], list[int]] = {}
    by_category: dict[tuple[str, str, int], int] = {}
    by_sku: dict[tuple[str, int], int] = {}
    unavailable: list[tuple[int, int, str]] = []
    money = _CENTS
    moments = _EPOCHS
    for event, ts in new:
        b = event.body
        order_id = b.order_id
        channel = b.channel
        order_lines = b.lines
        found = existing.get(order_id)
        cancelled = found is not None and found[1] is not None
        # Every line at a node of its own and none for the order: the order is placed (at
        # its first line's node), not left for the router.
        node_of_order = b.location_id
        split = False  # some line names a node of its own
        for line in order_lines:
            if line.location_id is not None:
                split = True
                break
        if (
            node_of_order is None
            and order_lines
            and split
            and all(line.location_id for line in order_lines)
        ):
            node_of_order = order_lines[0].location_id
        location = node_of_order or UNASSIGNED
        hour = ts // 3600
        gross = discount = units = 0
        for n, line in enumerate(order_lines):
            amount = line.unit_price
            price = money.get(amount)
            if price is None:
                price = _cache_cents(amount)
            amount = line.discount
            off = money.get(amount)
            if off is None:
                off = _cache_cents(amount)
            qty = line.quantity
            gross += price * qty
            discount += off
            units += qty
            sku = line.sku
            if cancelled:
                # Cancelled before it arrived: never counted as sales, nothing to reverse.
                lines.append((order_id, n, sku, qty, price, off, None, None))
                continue
            category = categories.get(sku, "-")
            node = line.location_id or location
            lines.append((order_id, n, sku, qty, price, off, node, category))
            net = qty * price - off
            key = (sku, node, channel, hour)
            acc = sales.get(key)
            if acc is None:
                sales[key] = [qty, net]
            else:
                acc[0] += qty
                acc[1] += net
            ckey = (category, channel, hour)
            by_category[ckey] = by_category.get(ckey, 0) + qty
            skey = (sku, hour)
            by_sku[skey] = by_sku.get(skey, 0) + qty
        promised: int | None = None
        if b.promised_by is not None:
            promised = moments.get(b.promised_by)
            if promised is None:
                promised = _cache_epoch(b.promised_by)
        delivery: int | None = None
        if b.delivery_promised_by is not None:
            delivery = moments.get(b.delivery_promised_by)
            if delivery is None:
                delivery = _cache_epoch(b.delivery_promised_by)
        shipping = b.shipping_charged
        # Without a line node of its own, every line is at the order's node.
        nodes = (
            line_nodes(node_of_order, [line.location_id for line in order_lines]) if split else None
        )
        if nodes is not None and found is not None:
            # Reports came before the placement: fulfilled once every node has reported.
            touched.orders.add(order_id)
        orders.append(
            (
                order_id,
                channel,
                b.method,
                b.destination_region,
                node_of_order,
                ts,
                promised,
                delivery,
                None if shipping is None else cents(shipping),
                nodes,
                gross,
                discount,
                units,
                int(cancelled),
            )
        )
        if not order_lines:
            unavailable.append((ts, ts, order_id))
    db.executemany(
        """INSERT INTO orders (order_id, has_order, channel, method, destination_region,
               location_id, placed_ts, promised_ts, delivery_promised_ts,
               shipping_charged_cents, line_nodes, gross_cents, discount_cents, units,
               sales_reversed)
           VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (order_id) DO UPDATE SET has_order = 1, channel = excluded.channel,
               method = excluded.method, destination_region = excluded.destination_region,
               location_id = excluded.location_id, placed_ts = excluded.placed_ts,
               promised_ts = excluded.promised_ts,
               delivery_promised_ts = excluded.delivery_promised_ts,
               shipping_charged_cents = excluded.shipping_charged_cents,
               line_nodes = excluded.line_nodes,
               gross_cents = excluded.gross_cents,
               discount_cents = excluded.discount_cents, units = excluded.units,
               sales_reversed = MAX(sales_reversed, excluded.sales_reversed)""",
        orders,
    )
    db.executemany(
        "INSERT OR REPLACE INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents,"
        " discount_cents, sales_location, sales_category) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        lines,
    )
    _store_rollups(db, sales, by_category, by_sku)
    if unavailable:
        # No lines: never available.  Placed and cancelled at the same instant (an earlier
        # cancellation stands), so it counts as a cancelled order everywhere.
        db.executemany(
            """UPDATE orders SET cancelled_ts = MIN(COALESCE(cancelled_ts, ?), ?),
                   sales_reversed = 1
               WHERE order_id = ?""",
            unavailable,
        )
        touched.orders.update(order_id for _, _, order_id in unavailable)


def line_nodes(order_node: str | None, nodes: Sequence[str | None]) -> str | None:
    """The JSON array of an order's distinct line nodes, if its lines have more than one.

    A line without its own node is at the order's (``order_node``, or unassigned ``-``).
    ``None`` when every line is at one node: the order's location says it all.
    """
    distinct = sorted({node or order_node or UNASSIGNED for node in nodes})
    if len(distinct) < 2 and (not distinct or distinct[0] == (order_node or UNASSIGNED)):
        return None
    return json.dumps(distinct)


def _orders_cancelled(
    db: sqlite3.Connection, events: list[tuple[OrderCancelled, int]], touched: Touched
) -> None:
    """Cancellations: the earliest time stands; counted sales are reversed exactly once."""
    earliest: dict[str, int] = {}
    for event, ts in events:
        order_id = event.body.order_id
        earliest[order_id] = min(ts, earliest.get(order_id, ts))
    db.executemany(
        """INSERT INTO orders (order_id, cancelled_ts) VALUES (?, ?)
           ON CONFLICT (order_id) DO UPDATE SET
               cancelled_ts = MIN(COALESCE(cancelled_ts, excluded.cancelled_ts),
                                  excluded.cancelled_ts)""",
        list(earliest.items()),
    )
    touched.orders.update(earliest)
    ids = _ids_json(earliest)
    orders = {
        row[0]: row[1:]
        for row in db.execute(
            "SELECT order_id, has_order, sales_reversed, location_id, channel, placed_ts"
            " FROM orders WHERE order_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )
    }
    lines: dict[str, list[tuple[str, int, int, str | None, str | None]]] = defaultdict(list)
    for order_id, sku, qty, net, location, category in db.execute(
        "SELECT order_id, sku, quantity, quantity * unit_price_cents - discount_cents,"
        " sales_location, sales_category FROM order_lines"
        " WHERE order_id IN (SELECT value FROM json_each(?))",
        (ids,),
    ):
        lines[order_id].append((sku, qty, net, location, category))
    pairs = touched.pairs
    latest = touched.latest
    for event, ts in events:
        order_id = event.body.order_id
        node = orders[order_id][2]
        for line in lines.get(order_id, ()):
            at = line[3] if line[3] not in (None, UNASSIGNED) else node
            if at is not None:
                pairs.add((line[0], at))
                if ts > latest:
                    latest = ts
    touched.latest = latest
    reversals: list[tuple[str, str | None, str | None, str, int, int, int]] = []
    reversed_ids: list[tuple[str]] = []
    for order_id, (has_order, sales_reversed, _, channel, placed) in orders.items():
        if has_order and not sales_reversed:
            reversed_ids.append((order_id,))
            hour = placed // 3600
            for sku, qty, net, location, category in lines.get(order_id, ()):
                reversals.append((sku, location, category, channel, hour, -qty, -net))
    _add_rollups(db, reversals)
    db.executemany("UPDATE orders SET sales_reversed = 1 WHERE order_id = ?", reversed_ids)


_STEP_COLUMNS = tuple(STEP_COLUMN.values())

_DONE_STEPS = frozenset(STEP_COLUMN[status] for status in FINISHING_STATUSES)
"""Step columns ``fulfilled_ts`` and ``done_ts`` are computed from."""


@functools.cache
def _fulfillment_sql(columns: tuple[str, ...], exception: bool, estimate: bool) -> str:
    """One upsert per order setting only the step columns a batch reported for it.

    An order not seen yet is created with them (a placeholder its placement fills in);
    a known one has only those columns assigned, which keeps SQLite from rewriting the
    other steps' indexes.  With ``estimate``, the carrier's estimate is kept when it is
    at least as new as the stored one.
    """
    names = [*columns, "carrier", "tracking", "fulfil_location_id", "fulfil_location_ts"]
    sets = [
        f"{col} = COALESCE(MIN({col}, excluded.{col}), {col}, excluded.{col})" for col in columns
    ]
    sets += [
        "carrier = COALESCE(excluded.carrier, carrier)",
        "tracking = COALESCE(excluded.tracking, tracking)",
        "fulfil_location_id = COALESCE(fulfil_location_id, excluded.fulfil_location_id)",
        # The earliest report of the node kept; NULL stays NULL where the router gave it
        # (min() of a NULL is NULL), and a different node reported later changes nothing.
        "fulfil_location_ts = CASE WHEN fulfil_location_id IS NULL"
        " THEN excluded.fulfil_location_ts"
        " WHEN fulfil_location_id = excluded.fulfil_location_id"
        " THEN MIN(fulfil_location_ts, excluded.fulfil_location_ts)"
        " ELSE fulfil_location_ts END",
    ]
    if exception:
        names.append("exception_detail")
        sets.append("exception_detail = excluded.exception_detail")
    if estimate:
        names += ["estimated_delivery_ts", "estimate_ts"]
        newer = "estimate_ts IS NULL OR estimate_ts <= excluded.estimate_ts"
        sets += [
            f"estimated_delivery_ts = CASE WHEN {newer} THEN excluded.estimated_delivery_ts"
            " ELSE estimated_delivery_ts END",
            f"estimate_ts = CASE WHEN {newer} THEN excluded.estimate_ts ELSE estimate_ts END",
        ]
    if not _DONE_STEPS.isdisjoint(columns):
        # A step that finishes the order: its done times in the same write (the row is
        # written once, not again by a pass over the batch's orders).  A new row has no
        # cancellation: both are the earliest finishing step, computed by the caller.
        # A split order (``line_nodes``) is fulfilled from ``node_fulfilled``, which holds
        # this batch's reports already (store/fulfilled.py).
        names += ["fulfilled_ts", "done_ts"]
        sets += [
            f"fulfilled_ts = CASE WHEN line_nodes IS NULL THEN {_done_expr(columns)}"
            f" ELSE {FULFILLED_SQL} END",
            f"done_ts = CASE WHEN line_nodes IS NULL THEN {_done_expr(columns, True)}"
            f" ELSE {DONE_SQL_EXPR} END",
        ]
    marks = ", ".join("?" * (len(names) + 1))
    return (
        f"INSERT INTO orders (order_id, {', '.join(names)}) VALUES ({marks})"
        f" ON CONFLICT (order_id) DO UPDATE SET {', '.join(sets)}"
    )


def _done_expr(columns: tuple[str, ...], cancelled: bool = False) -> str:
    """``fulfilled_ts`` (or with ``cancelled``, ``done_ts``) as an upsert assigning ``columns``.

    In ``DO UPDATE SET`` a column names the row's old value, so each step column the
    upsert assigns is written as its new value; the result is what
    :data:`~store.fulfilled.FULFILLED_SQL` and :data:`~store.fulfilled.DONE_SQL_EXPR` give
    on the row once written.
    """
    terms = [
        f"COALESCE(COALESCE(MIN({col}, excluded.{col}), {col}, excluded.{col}), {NEVER})"
        if col in columns
        else f"COALESCE({col}, {NEVER})"
        for col in sorted(_DONE_STEPS)
    ]
    if cancelled:
        terms.append(f"COALESCE(cancelled_ts, {NEVER})")
    return f"NULLIF(MIN({', '.join(terms)}), {NEVER})"


def _fulfillment(
    db: sqlite3.Connection, events: list[tuple[FulfillmentUpdated, int]], touched: Touched
) -> None:
    """Fulfillment steps, folded per order in arrival order, then one update each.

    The earliest report of a step wins; the latest carrier and tracking given win; the
    first node reported stays, known from the earliest step that reported it; the latest
    exception's detail stays; the carrier's newest estimate (by event time) wins.
    """
    steps: dict[str, dict[str, int]] = {}
    extra: dict[str, list[Any]] = {}  # carrier, tracking, node, exception detail, node's ts
    estimates: dict[str, tuple[int, int]] = {}
    # Every report of a shipment's cost, in arrival order (of two stamped alike, the later
    # arrival stands, as one at a time).
    costs: list[tuple[str, str, int, int]] = []
    # Every (tracking number, order) given, with the node the first report of it named.
    tracked: dict[tuple[str, str], str | None] = {}
    # Every report of a carrier or an estimate by its time, for the carrier rows as of a
    # past moment (the order's row keeps only the latest).
    reports: list[tuple[str, int, str | None, int | None]] = []
    # The earliest finishing report per (order, node, ''), or (order, '', tracking number
    # or '') for a report naming no node: what a split order is fulfilled from
    # (store/fulfilled.py).
    finished_at: dict[tuple[str, str, str], int] = {}
    moments = _EPOCHS
    for event, ts in events:
        b = event.body
        order_id = b.order_id
        order_steps = steps.get(order_id)
        if order_steps is None:
            order_steps = steps[order_id] = {}
            acc = extra[order_id] = [None, None, None, None, None]
        else:
            acc = extra[order_id]
        status = b.status
        column = STEP_COLUMN[status]
        if ts < order_steps.get(column, ts + 1):
            order_steps[column] = ts
        if column in _DONE_STEPS:
            node = b.location_id
            # A report naming no node is kept by its parcel (store/fulfilled.py).
            at_node = (order_id, node, "") if node else (order_id, "", b.tracking or "")
            if ts < finished_at.get(at_node, ts + 1):
                finished_at[at_node] = ts
        if b.carrier is not None:
            acc[0] = b.carrier
        if b.tracking is not None:
            acc[1] = b.tracking
            parcel = (b.tracking, order_id)
            if tracked.get(parcel) is None:
                tracked[parcel] = b.location_id
        node = b.location_id
        if node is not None:
            if acc[2] is None:
                acc[2], acc[4] = node, ts
            elif node == acc[2] and ts < acc[4]:
                acc[4] = ts
        if status == "exception":
            acc[3] = b.detail
        estimate = b.estimated_delivery
        if estimate is not None:
            moment = moments.get(estimate)
            estimated = _cache_epoch(estimate) if moment is None else moment
            best = estimates.get(order_id)
            if best is None or ts >= best[1]:
                estimates[order_id] = (estimated, ts)
            reports.append((order_id, ts, b.carrier, estimated))
        elif b.carrier is not None:
            reports.append((order_id, ts, b.carrier, None))
        if b.shipping_cost is not None:
            costs.append((order_id, b.tracking or "-", ts, cents(b.shipping_cost)))
    shapes: dict[tuple[tuple[str, ...], bool, bool], list[list[Any]]] = defaultdict(list)
    for order_id, order_steps in steps.items():
        columns = tuple(sorted(order_steps)) if len(order_steps) > 1 else tuple(order_steps)
        carrier, tracking, node, detail, node_ts = extra[order_id]
        row: list[Any] = [order_id]
        row += [order_steps[col] for col in columns]
        row += (carrier, tracking, node, node_ts)
        if detail is not None:
            row.append(detail)
        newest = estimates.get(order_id)
        if newest is not None:
            row += newest
        finished = [order_steps[col] for col in columns if col in _DONE_STEPS]
        if finished:  # fulfilled and done times of a new row (see _fulfillment_sql)
            row += (min(finished), min(finished))
        shapes[(columns, detail is not None, newest is not None)].append(row)
    # Both before the orders: a split order's upsert reads them.
    if tracked:
        db.executemany(
            "INSERT INTO order_tracking (tracking, order_id, location_id) VALUES (?, ?, ?)"
            " ON CONFLICT (tracking, order_id) DO UPDATE SET location_id = excluded.location_id"
            " WHERE location_id IS NULL AND excluded.location_id IS NOT NULL",
            [(tracking, order_id, node) for (tracking, order_id), node in sorted(tracked.items())],
        )
        # A parcel's node may now be known: its order's fulfilled time may move.
        touched.orders.update(order_id for (_, order_id), node in tracked.items() if node)
    if finished_at:
        db.executemany(
            "INSERT INTO node_fulfilled (order_id, location_id, tracking, ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (order_id, location_id, tracking)"
            " DO UPDATE SET ts = MIN(ts, excluded.ts)",
            [(*key, ts) for key, ts in finished_at.items()],
        )
    for (columns, exception, estimated), rows in shapes.items():
        db.executemany(_fulfillment_sql(columns, exception, estimated), rows)
    if costs:
        db.executemany(
            "INSERT OR REPLACE INTO shipment_costs (order_id, shipment, ts, cost_cents)"
            " VALUES (?, ?, ?, ?)",
            costs,
        )
    if reports:
        db.executemany(
            "INSERT INTO carrier_reports (order_id, ts, carrier, estimate_ts) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (order_id, ts) DO UPDATE SET"
            " carrier = COALESCE(excluded.carrier, carrier),"
            " estimate_ts = COALESCE(excluded.estimate_ts, estimate_ts)",
            reports,
        )


def _stock_adjusted(
    db: sqlite3.Connection, events: list[tuple[StockAdjusted, int]], touched: Touched
) -> None:
    """Adjustments: logged, and added to the pair's count when stamped after it."""
    logged = []
    for event, ts in events:
        b = event.body
        logged.append((b.sku, b.location_id, ts, b.delta, b.reason))
    _touch(touched, logged)
    db.executemany(
        "INSERT INTO stock_adjustments (sku, location_id, ts, delta, reason)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
        logged,
    )
    # Summed per pair, one write each: an adjustment counts when stamped after the pair's
    # count (counts change only in the segment's snapshot step, after this one).  Without
    # a count yet, the pair starts at the first adjustment (as_of 0, its source system) and
    # the later ones add to it, as one at a time; the first snapshot replaces that with
    # count + later adjustments.
    as_of: dict[tuple[str, str], int] = {
        (sku, location): at
        for sku, location, at in db.execute(
            "SELECT sku, location_id, as_of_ts FROM stock"
            " WHERE sku IN (SELECT value FROM json_each(?))",
            (_ids_json({row[0] for row in logged}),),
        )
    }
    added: dict[tuple[str, str], int] = {}
    new: dict[tuple[str, str], list[Any]] = {}
    for event, ts in events:
        b = event.body
        key = (b.sku, b.location_id)
        at = as_of.get(key)
        if at is None:
            new[key] = [b.delta, b.source_system]
            as_of[key] = 0
        elif at < ts:
            fresh = new.get(key)
            if fresh is None:
                added[key] = added.get(key, 0) + b.delta
            else:
                fresh[0] += b.delta
    if new:
        db.executemany(
            "INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system)"
            " VALUES (?, ?, ?, 0, 0, ?)",
            [(*key, on_hand, system) for key, (on_hand, system) in new.items()],
        )
    if added:
        db.executemany(
            "UPDATE stock SET on_hand = on_hand + ? WHERE sku = ? AND location_id = ?",
            [(delta, *key) for key, delta in added.items() if delta],
        )


def _stock_snapshot(
    db: sqlite3.Connection, events: list[tuple[StockSnapshot, int]], touched: Touched
) -> None:
    """Counts: the newest per pair replaces an older one, plus every adjustment after it.

    Runs after the segment's adjustments are logged, so their order does not matter.
    """
    newest: dict[tuple[str, str], tuple[StockSnapshot, int]] = {}
    for event, ts in events:
        b = event.body
        key = (b.sku, b.location_id)
        best = newest.get(key)
        # Of two counts stamped within one second the later time stands (microseconds);
        # of two stamped alike, the later arrival.
        if best is None or (ts, event.ts.microsecond) >= (best[1], best[0].ts.microsecond):
            newest[key] = (event, ts)
    touched.pairs.update(newest)
    touched.latest = max(touched.latest, max(ts for _, ts in events))
    db.executemany(
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system,
                              as_of_us)
           VALUES (?1, ?2, ?3 + (SELECT COALESCE(SUM(delta), 0) FROM stock_adjustments
                                 WHERE sku = ?1 AND location_id = ?2 AND ts > ?5), ?4, ?5, ?6,
                   ?7)
           ON CONFLICT DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,
               as_of_ts = excluded.as_of_ts, source_system = excluded.source_system,
               as_of_us = excluded.as_of_us
           WHERE (stock.as_of_ts, stock.as_of_us) <= (excluded.as_of_ts, excluded.as_of_us)""",
        [
            (b.sku, b.location_id, b.on_hand, b.reserved, ts, b.source_system, e.ts.microsecond)
            for e, b, ts in ((event, event.body, ts) for event, ts in newest.values())
        ],
    )
    # Every count, for stock as of a past moment (store/asof.py): of two counts stamped
    # within one second the later time is kept, of two stamped alike the later arrival.
    db.executemany(
        "INSERT INTO stock_counts (sku, location_id, ts, on_hand, reserved, us)"
        " VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sku, location_id, ts) DO UPDATE SET on_hand = excluded.on_hand,"
        " reserved = excluded.reserved, us = excluded.us WHERE excluded.us >= stock_counts.us",
        [
            (e.body.sku, e.body.location_id, ts, e.body.on_hand, e.body.reserved, e.ts.microsecond)
            for e, ts in events
        ],
    )


def _returns(
    db: sqlite3.Connection, events: list[tuple[ReturnReceived, int]], touched: Touched
) -> None:
    """Returns: the first report of a return id stands; counted under its SKU's category."""
    first: dict[str, tuple[ReturnReceived, int]] = {}
    for event, ts in events:
        first.setdefault(event.body.return_id, (event, ts))
    for (return_id,) in db.execute(
        "SELECT return_id FROM returns WHERE return_id IN (SELECT value FROM json_each(?))",
        (_ids_json(first),),
    ).fetchall():
        del first[return_id]
    if not first:
        return
    categories = _categories(db, (event.body.sku for event, _ in first.values()))
    rows = []
    rollup: dict[tuple[str, str, int], int] = {}
    for event, ts in first.values():
        b = event.body
        category = categories.get(b.sku, "-")
        rows.append(
            (
                b.return_id,
                b.order_id,
                b.sku,
                b.location_id,
                b.channel,
                b.quantity,
                b.reason,
                cents(b.refund),
                ts,
                category,
            )
        )
        key = (category, b.channel, ts // 3600)
        rollup[key] = rollup.get(key, 0) + b.quantity
    db.executemany(
        "INSERT INTO returns (return_id, order_id, sku, location_id, channel, quantity, reason,"
        " refund_cents, received_ts, category) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        """INSERT INTO category_returns_hourly (category, channel, hour, units)
           VALUES (?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET units = units + excluded.units""",
        [(*key, units) for key, units in rollup.items()],
    )


def _listings(
    db: sqlite3.Connection, events: list[tuple[ListingUpdated, int]], touched: Touched
) -> None:
    """Advertised quantities: last write wins on the event's time."""
    rows = []
    for event, ts in events:
        b = event.body
        rows.append((b.channel, b.sku, b.location_id, b.advertised, ts))
    touched.pairs.update([(row[1], row[2]) for row in rows])
    touched.latest = max(touched.latest, max(row[4] for row in rows))
    db.executemany(
        """INSERT INTO listings (channel, sku, location_id, advertised, updated_ts)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET advertised = excluded.advertised,
               updated_ts = excluded.updated_ts
           WHERE excluded.updated_ts >= listings.updated_ts""",
        rows,
    )
    db.executemany(
        "INSERT OR REPLACE INTO listing_history (channel, sku, location_id, advertised, ts)"
        " VALUES (?, ?, ?, ?, ?)",
        rows,
    )


def _inbound(
    db: sqlite3.Connection, events: list[tuple[InboundUpdated, int]], touched: Touched
) -> None:
    """Inbound purchase-order lines: last write wins on the event's time."""
    rows = []
    for event, ts in events:
        b = event.body
        rows.append((b.po_id, b.sku, b.location_id, b.quantity, epoch(b.eta), b.status, ts))
    touched.pairs.update([(row[1], row[2]) for row in rows])
    touched.latest = max(touched.latest, max(row[6] for row in rows))
    db.executemany(
        """INSERT INTO inbound (po_id, sku, location_id, quantity, eta_ts, status, updated_ts)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET quantity = excluded.quantity, eta_ts = excluded.eta_ts,
               status = excluded.status, updated_ts = excluded.updated_ts
           WHERE excluded.updated_ts >= inbound.updated_ts""",
        rows,
    )
    db.executemany(
        "INSERT OR REPLACE INTO inbound_history (po_id, sku, location_id, quantity, eta_ts,"
        " status, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _skus(db: sqlite3.Connection, events: list[tuple[SkuUpserted, int]], touched: Touched) -> None:
    """SKU records: last write wins; sales and returns counted before move to the category."""
    rows = []
    for event, ts in events:
        s = event.body
        touched.skus.add(s.sku)
        touched.latest = max(touched.latest, ts)
        rows.append(
            (
                s.sku,
                s.name,
                s.category,
                s.product_type,
                cents(s.unit_cost),
                cents(s.price),
                s.reorder_point,
                s.lead_time_days,
                int(s.hazmat),
                s.weight_kg,
                ts,
            )
        )
    db.executemany(
        """INSERT INTO skus (sku, name, category, product_type, unit_cost_cents, price_cents,
               reorder_point, lead_time_days, hazmat, weight_kg, updated_ts)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (sku) DO UPDATE SET name = excluded.name,
               category = excluded.category, product_type = excluded.product_type,
               unit_cost_cents = excluded.unit_cost_cents, price_cents = excluded.price_cents,
               reorder_point = excluded.reorder_point,
               lead_time_days = excluded.lead_time_days, hazmat = excluded.hazmat,
               weight_kg = excluded.weight_kg, updated_ts = excluded.updated_ts
           WHERE excluded.updated_ts >= skus.updated_ts""",
        rows,
    )
    # Every record, for the catalogue as of a past moment (store/asof.py).
    db.executemany(
        "INSERT OR REPLACE INTO sku_history (sku, ts, category, product_type, unit_cost_cents,"
        " price_cents, reorder_point, lead_time_days) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(r[0], r[10], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows],
    )
    for sku in dict.fromkeys(row[0] for row in rows):
        _categorise_late(db, sku)


def _locations(
    db: sqlite3.Connection, events: list[tuple[LocationUpserted, int]], touched: Touched
) -> None:
    """Node records: last write wins on the event's time."""
    rows = []
    for event, ts in events:
        loc = event.body
        touched.locations.add(loc.location_id)
        touched.latest = max(touched.latest, ts)
        rows.append(
            (
                loc.location_id,
                loc.name,
                loc.kind,
                loc.region,
                loc.lat,
                loc.lon,
                loc.timezone,
                loc.hours.opens,
                loc.hours.closes,
                loc.hours.cutoff,
                loc.safety_buffer,
                ts,
            )
        )
    db.executemany(
        """INSERT INTO locations (location_id, name, kind, region, lat, lon, timezone, opens,
               closes, cutoff, safety_buffer, updated_ts)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (location_id) DO UPDATE SET name = excluded.name,
               kind = excluded.kind, region = excluded.region, lat = excluded.lat,
               lon = excluded.lon, timezone = excluded.timezone, opens = excluded.opens,
               closes = excluded.closes, cutoff = excluded.cutoff,
               safety_buffer = excluded.safety_buffer, updated_ts = excluded.updated_ts
           WHERE excluded.updated_ts >= locations.updated_ts""",
        rows,
    )
    # Every record, for the nodes as of a past moment (store/asof.py).
    db.executemany(
        "INSERT OR REPLACE INTO location_history (location_id, ts, kind, opens, closes, cutoff,"
        " safety_buffer) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(r[0], r[11], r[2], r[7], r[8], r[9], r[10]) for r in rows],
    )


def _channels(
    db: sqlite3.Connection, events: list[tuple[ChannelUpserted, int]], touched: Touched
) -> None:
    """Channel records: last write wins on the event's time."""
    db.executemany(
        """INSERT INTO channels (channel_id, name, kind, updated_ts) VALUES (?, ?, ?, ?)
           ON CONFLICT (channel_id) DO UPDATE SET name = excluded.name,
               kind = excluded.kind, updated_ts = excluded.updated_ts
           WHERE excluded.updated_ts >= channels.updated_ts""",
        [(e.body.channel_id, e.body.name, e.body.kind, ts) for e, ts in events],
    )


def _orders_edited(
    db: sqlite3.Connection, events: list[tuple[OrderEdited, int]], touched: Touched
) -> None:
    """Edits: every one kept by its time; the order's lines become the latest one's.

    An edit of an order not placed yet is only kept: its placement applies it
    (:func:`_orders_placed_then_edits`).  Of two edits of an order stamped alike, the later
    arrival stands (as one at a time would).
    """
    rows = []
    latest: dict[str, int] = {}
    for event, ts in events:
        b = event.body
        lines: list[list[Any]] = []
        gross = discount = units = 0
        for line in b.lines:
            price, off = cents(line.unit_price), cents(line.discount)
            lines.append([line.sku, line.quantity, price, off, line.location_id])
            gross += line.quantity * price
            discount += off
            units += line.quantity
        rows.append((b.order_id, ts, json.dumps(lines), gross, discount, units))
        latest[b.order_id] = max(ts, latest.get(b.order_id, ts))
    db.executemany(
        "INSERT OR REPLACE INTO order_edits (order_id, ts, lines, gross_cents, discount_cents,"
        " units) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    _settle_edits(db, latest, touched)


def _orders_placed_then_edits(
    db: sqlite3.Connection, events: list[tuple[OrderPlaced, int]], touched: Touched
) -> None:
    """Placements, then any edit that arrived before its order's placement (applied now)."""
    if db.execute("SELECT NOT EXISTS (SELECT 1 FROM order_edits)").fetchone()[0]:
        _orders_placed(db, events, touched)
        return  # no edit ever: the placements stand as placed
    placed: dict[str, int] = {}
    for event, ts in events:
        placed.setdefault(event.body.order_id, ts)
    # An order placed afresh (a replay's replacement of its placement, store/held.py):
    # the placement lines kept for it are no longer its placement's.
    db.execute(
        "DELETE FROM order_placed_lines WHERE order_id IN (SELECT order_id FROM orders"
        " WHERE has_order = 0 AND order_id IN (SELECT value FROM json_each(?)))",
        (_ids_json(placed),),
    )
    _orders_placed(db, events, touched)
    edited = {
        order_id
        for (order_id,) in db.execute(
            "SELECT DISTINCT order_id FROM order_edits"
            " WHERE order_id IN (SELECT value FROM json_each(?))",
            (_ids_json(placed),),
        )
    }
    if edited:
        _settle_edits(db, {order_id: placed[order_id] for order_id in edited}, touched)


def _settle_edits(db: sqlite3.Connection, orders: dict[str, int], touched: Touched) -> None:
    """Give each placed order of ``orders`` the lines of its latest edit (by edit time).

    ``orders`` maps an order to the time its risk is re-checked at.  The placement's lines
    are kept the first time (``order_placed_lines``, for the order as of a moment before
    its edits); sales counted (placed, not cancelled) move by the difference in the
    placement hour, as a cancellation's reversal does; a cancelled order's lines change but
    it stays cancelled, its sales never counted again.
    """
    for order_id, ts in orders.items():
        order = db.execute(
            "SELECT has_order, sales_reversed, location_id, channel, placed_ts, gross_cents,"
            " discount_cents, units FROM orders WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        if order is None or not order[0]:
            continue  # not placed yet: its placement applies the edit
        _, reversed_, order_node, channel, placed, gross, discount, units = order
        target = db.execute(
            "SELECT lines, gross_cents, discount_cents, units FROM order_edits"
            " WHERE order_id = ? ORDER BY ts DESC LIMIT 1",
            (order_id,),
        ).fetchone()
        if target is None:
            continue
        current = db.execute(
            "SELECT sku, quantity, unit_price_cents, discount_cents, sales_location,"
            " sales_category FROM order_lines WHERE order_id = ? ORDER BY line_no",
            (order_id,),
        ).fetchall()
        edit_lines = json.loads(target[0])
        categories = _categories(db, (line[0] for line in edit_lines))
        counted = any(line[4] is not None for line in current) or not reversed_
        new = []
        for sku, qty, price, off, own in edit_lines:
            node = resolve_node(sku, own, order_node, current)
            new.append(
                (
                    sku,
                    qty,
                    price,
                    off,
                    node if counted else None,
                    categories.get(sku, "-") if counted else None,
                )
            )
        if [tuple(line) for line in current] == new:
            continue  # already its lines (a re-sent placement, an older edit)
        db.execute(
            "INSERT OR IGNORE INTO order_placed_lines (order_id, lines, gross_cents,"
            " discount_cents, units) VALUES (?, ?, ?, ?, ?)",
            (order_id, json.dumps([list(line) for line in current]), gross, discount, units),
        )
        if not reversed_ and placed is not None:
            hour = placed // 3600
            moves = [
                (sku, location, category, channel, hour, -qty, -(qty * price - off))
                for sku, qty, price, off, location, category in current
            ]
            moves += [
                (sku, location, category, channel, hour, qty, qty * price - off)
                for sku, qty, price, off, location, category in new
            ]
            _add_rollups(db, moves)
        for sku, _, _, _, location, _ in (*current, *new):
            if location is not None and location != UNASSIGNED:
                touched.pair(sku, location, max(ts, placed or 0))
        db.execute("DELETE FROM order_lines WHERE order_id = ?", (order_id,))
        db.executemany(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents,"
            " discount_cents, sales_location, sales_category) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(order_id, n, *line) for n, line in enumerate(new)],
        )
        split = any(own is not None for *_, own in edit_lines)
        if split:  # the lines' nodes may have changed: so may the order's fulfilled time
            touched.orders.add(order_id)
        db.execute(
            "UPDATE orders SET gross_cents = ?, discount_cents = ?, units = ?,"
            " line_nodes = CASE WHEN ? THEN ? ELSE line_nodes END WHERE order_id = ?",
            (
                target[1],
                target[2],
                target[3],
                int(split),
                line_nodes(order_node, [own for *_, own in edit_lines]) if split else None,
                order_id,
            ),
        )


APPLIERS: dict[str, Applier] = {
    "sku.upserted": _skus,
    "location.upserted": _locations,
    "channel.upserted": _channels,
    "listing.updated": _listings,
    "inbound.updated": _inbound,
    "stock.adjusted": _stock_adjusted,
    "stock.snapshot": _stock_snapshot,
    _EARLY_CANCEL: _orders_cancelled,
    "order.placed": _orders_placed_then_edits,
    "order.edited": _orders_edited,
    "fulfillment.updated": _fulfillment,
    "order.cancelled": _orders_cancelled,
    "return.received": _returns,
}
"""The applier of each event type: one call per segment with all of its events."""

APPLY_ORDER: tuple[str, ...] = tuple(APPLIERS)
"""The order appliers run in within a segment.

Stock counts follow adjustments (a count adds the adjustments logged after it);
cancellations that arrived before their order's placement run before placements (the
order is then never counted), the others after (its sales are reversed), as one at a
time would.  Every other pair of appliers commutes.
"""


def _update_risk(
    db: sqlite3.Connection, touched: Touched, params: MetricParams, *, sweep: bool = True
) -> None:
    pairs = set(touched.pairs)
    if touched.skus:
        pairs.update(
            db.execute(
                "SELECT sku, location_id FROM stock WHERE sku IN (SELECT value FROM json_each(?))",
                (_ids_json(touched.skus),),
            )
        )
    if touched.locations:
        pairs.update(
            db.execute(
                "SELECT sku, location_id FROM stock"
                " WHERE location_id IN (SELECT value FROM json_each(?))",
                (_ids_json(touched.locations),),
            )
        )
    if not pairs:
        return
    # Never score as of a moment before flags were last computed for: an old event (a
    # catalogue re-sync, a late adjustment) must not clear a flag that holds now.
    at = max(touched.latest, risk_flags_time(db) or 0)
    refresh_risk_flags(db, sorted(pairs), at, params)
    row = db.execute("SELECT value FROM meta WHERE key = 'risk_sweep_ts'").fetchone()
    if sweep and (row is None or at - int(row[0]) >= RISK_SWEEP_SECONDS):
        refresh_risk_flags(db, "flagged", at, params)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('risk_sweep_ts', ?)", (at,))


def _bump(feeds: dict[str, list[int]], feed: str, slot: int) -> list[int]:
    counters = feeds.get(feed)
    if counters is None:
        counters = feeds[feed] = [0, 0, 0, 0]
    counters[slot] += 1
    return counters


def _known_ids(db: sqlite3.Connection, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = db.execute(
        "SELECT event_id FROM event_log WHERE event_id IN (SELECT value FROM json_each(?))",
        (_ids_json(ids),),
    )
    return {row[0] for row in rows}


def _add_category_returns(
    db: sqlite3.Connection, category: str, channel: str, hour: int, units: int
) -> None:
    db.execute(
        """INSERT INTO category_returns_hourly (category, channel, hour, units)
           VALUES (?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET units = units + excluded.units""",
        (category, channel, hour, units),
    )


def _categorise_late(db: sqlite3.Connection, sku: str) -> None:
    """Move ``sku``'s sales and returns counted under ``-`` to its catalogue category.

    They were counted before its catalogue record arrived; moving them keeps the roll-ups
    independent of arrival order.
    """
    row = db.execute("SELECT category FROM skus WHERE sku = ?", (sku,)).fetchone()
    if row is None:
        return
    category = row[0]
    for channel, hour, units in db.execute(
        """SELECT o.channel, o.placed_ts / 3600, SUM(l.quantity)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE l.sku = ? AND l.sales_category = '-' GROUP BY 1, 2""",
        (sku,),
    ).fetchall():
        for key, sign in (("-", -1), (category, 1)):
            db.execute(
                """INSERT INTO category_hourly (category, channel, hour, units)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT DO UPDATE SET units = units + excluded.units""",
                (key, channel, hour, sign * units),
            )
    db.execute(
        "UPDATE order_lines SET sales_category = ? WHERE sku = ? AND sales_category = '-'",
        (category, sku),
    )
    for channel, hour, units in db.execute(
        """SELECT channel, received_ts / 3600, SUM(quantity) FROM returns
           WHERE sku = ? AND category = '-' GROUP BY 1, 2""",
        (sku,),
    ).fetchall():
        _add_category_returns(db, "-", channel, hour, -units)
        _add_category_returns(db, category, channel, hour, units)
    db.execute("UPDATE returns SET category = ? WHERE sku = ? AND category = '-'", (category, sku))
    db.execute("DELETE FROM category_hourly WHERE category = '-' AND units = 0")
    db.execute("DELETE FROM category_returns_hourly WHERE category = '-' AND units = 0")


# Only the orders whose times change are written: a later step (delivered after shipped)
# leaves them as they are, and rewriting the row would also rewrite its index entries.
_DONE_SQL = f"""UPDATE orders SET fulfilled_ts = {FULFILLED_SQL}, done_ts = {DONE_SQL_EXPR}
    WHERE order_id IN (SELECT value FROM json_each(?))
      AND (fulfilled_ts IS NOT {FULFILLED_SQL} OR done_ts IS NOT {DONE_SQL_EXPR})"""
"""Keeps ``fulfilled_ts`` (shipped, ready or handed over) and ``done_ts`` (that or cancelled)."""


def assign_node(
    db: sqlite3.Connection, order_id: str, lines: Sequence[tuple[int, str]], params: MetricParams
) -> None:
    """An order that arrived without a node was routed: fulfil it at ``lines``' nodes.

    ``lines`` are (line number, node) per routed line.  The order's fulfillment location
    becomes the first node (if no feed reported one), and its sales move from the
    unassigned bucket to each line's node, so velocity and risk at that node see them.
    Only the first decision moves sales (an order whose node is already set is left alone).
    """
    row = db.execute(
        "SELECT location_id, fulfil_location_id, placed_ts, sales_reversed, channel, has_order"
        " FROM orders WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    if row is None or row[0] is not None or row[1] is not None or not lines:
        return
    _, _, placed, reversed_, channel, has_order = row
    db.execute(
        "UPDATE orders SET fulfil_location_id = ? WHERE order_id = ?", (lines[0][1], order_id)
    )
    if reversed_ or not has_order or placed is None:
        return  # its sales were never counted, or are reversed: nothing to move
    touched = Touched()
    for line_no, node in lines:
        line = db.execute(
            "SELECT sku, quantity, quantity * unit_price_cents - discount_cents, sales_location"
            " FROM order_lines WHERE order_id = ? AND line_no = ?",
            (order_id, line_no),
        ).fetchone()
        if line is None or line[3] is None:
            continue
        sku, qty, net, counted_at = line
        db.execute(
            "UPDATE order_lines SET sales_location = ? WHERE order_id = ? AND line_no = ?",
            (node, order_id, line_no),
        )
        for location, sign in ((counted_at, -1), (node, 1)):
            db.execute(
                """INSERT INTO sales_hourly (sku, location_id, channel, hour, units, net_cents)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO UPDATE SET units = units + excluded.units,
                       net_cents = net_cents + excluded.net_cents""",
                (sku, location, channel, placed // 3600, sign * qty, sign * net),
            )
        touched.pair(sku, node, placed)
    nodes = line_nodes(lines[0][1], [node for _, node in lines])
    if nodes is not None:  # split by the router: every per-location figure counts each node
        db.execute("UPDATE orders SET line_nodes = ? WHERE order_id = ?", (nodes, order_id))
        # Fulfilled once each of its nodes has reported (its reports may have come first).
        db.execute(_DONE_SQL, (json.dumps([order_id]),))
    _update_risk(db, touched, params, sweep=False)


def count_outcomes(outcomes: Iterable[Outcome]) -> dict[Outcome, int]:
    """Tally outcomes into ``{"applied": n, "duplicate": n, "quarantined": n}``."""
    tally: dict[Outcome, int] = {"applied": 0, "duplicate": 0, "quarantined": 0}
    for outcome in outcomes:
        tally[outcome] += 1
    return tally
