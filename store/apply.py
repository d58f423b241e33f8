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
* a cancellation reverses the order's sales rollup exactly once, whichever arrives first.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from store.model import (
    ChannelUpserted,
    Event,
    FulfillmentUpdated,
    InboundUpdated,
    ListingUpdated,
    LocationUpserted,
    OrderCancelled,
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
        feeds: dict[str, list[int]] = {}
        quarantine: list[tuple[int, str, str, str]] = []
        fresh: list[tuple[Event, int]] = []
        for item in items:
            if isinstance(item, Quarantined):
                quarantine.append((received_at, item.source, item.error, item.raw))
                _bump(feeds, item.source, 2)
                outcomes.append("quarantined")
            elif item.id in known:
                _bump(feeds, item.source, 1)
                outcomes.append("duplicate")
            else:
                known.add(item.id)
                ts = int(item.ts.timestamp())
                fresh.append((item, ts))
                counters = _bump(feeds, item.source, 0)
                if ts > counters[3]:
                    counters[3] = ts
                outcomes.append("applied")
        if quarantine:
            db.executemany(
                "INSERT INTO quarantine (received_at, source, error, raw) VALUES (?, ?, ?, ?)",
                quarantine,
            )
        if fresh:
            db.executemany(
                "INSERT INTO event_log (event_id, type, ts, source, received_at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    # The body's own serializer: what model_dump_json() calls, less the wrapper.
                    (
                        e.id,
                        e.type,
                        ts,
                        e.source,
                        received_at,
                        e.body.__pydantic_serializer__.to_json(e.body).decode(),
                    )
                    for e, ts in fresh
                ],
            )
        for segment in _segments(fresh):
            groups = _group(segment)
            for key in APPLY_ORDER:
                group = groups.get(key)
                if group:
                    APPLIERS[key](db, group, touched)
            done = touched.orders
            if done:
                db.execute(_DONE_SQL, (json.dumps(sorted(done)),))
                done.clear()
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


def _segments(fresh: list[tuple[Event, int]]) -> Iterator[list[tuple[Event, int]]]:
    """Runs of SKU records and runs of everything else, in arrival order.

    A SKU record changes the category later sales and returns are counted under, so the
    events on either side of it are applied in separate steps, as they arrived.
    """
    run: list[tuple[Event, int]] = []
    run_is_sku = False
    for pair in fresh:
        is_sku = isinstance(pair[0], SkuUpserted)
        if run and is_sku != run_is_sku:
            yield run
            run = []
        run_is_sku = is_sku
        run.append(pair)
    if run:
        yield run


def _group(segment: list[tuple[Event, int]]) -> dict[str, list[tuple[Any, int]]]:
    """A segment's events by type (arrival order kept), early cancellations apart."""
    groups: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    cancels: list[tuple[int, OrderCancelled, int]] = []
    placed_at: dict[str, int] = {}
    for position, pair in enumerate(segment):
        event = pair[0]
        if isinstance(event, OrderCancelled):
            cancels.append((position, event, pair[1]))
            continue
        if isinstance(event, OrderPlaced):
            placed_at.setdefault(event.body.order_id, position)
        groups[event.type].append(pair)
    for position, cancel, ts in cancels:
        placed = placed_at.get(cancel.body.order_id)
        early = placed is not None and position < placed
        groups[_EARLY_CANCEL if early else "order.cancelled"].append((cancel, ts))
    return groups


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
    for event, ts in events:
        b = event.body
        for line in b.lines:
            touched.pair(line.sku, line.location_id or b.location_id, ts)
        first.setdefault(b.order_id, (event, ts))
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
    sales: list[tuple[str, str | None, str | None, str, int, int, int]] = []
    reversed_ids: list[tuple[str]] = []
    unavailable: list[tuple[int, int, str]] = []
    for event, ts in new:
        b = event.body
        cancelled = existing.get(b.order_id, (0, None))[1] is not None
        # Every line at a node of its own and none for the order: the order is placed (at
        # its first line's node), not left for the router.
        node_of_order = b.location_id
        if node_of_order is None and b.lines and all(line.location_id for line in b.lines):
            node_of_order = b.lines[0].location_id
        location = node_of_order or UNASSIGNED
        hour = ts // 3600
        gross = discount = units = 0
        for n, line in enumerate(b.lines):
            price, off, qty = cents(line.unit_price), cents(line.discount), line.quantity
            gross += price * qty
            discount += off
            units += qty
            if cancelled:
                # Cancelled before it arrived: never counted as sales, nothing to reverse.
                lines.append((b.order_id, n, line.sku, qty, price, off, None, None))
            else:
                category = categories.get(line.sku, "-")
                node = line.location_id or location
                lines.append((b.order_id, n, line.sku, qty, price, off, node, category))
                sales.append((line.sku, node, category, b.channel, hour, qty, qty * price - off))
        orders.append(
            (
                b.order_id,
                b.channel,
                b.method,
                b.destination_region,
                node_of_order,
                ts,
                None if b.promised_by is None else epoch(b.promised_by),
                None if b.delivery_promised_by is None else epoch(b.delivery_promised_by),
                None if b.shipping_charged is None else cents(b.shipping_charged),
                line_nodes(node_of_order, [line.location_id for line in b.lines]),
                gross,
                discount,
                units,
                int(cancelled),
            )
        )
        if cancelled:
            reversed_ids.append((b.order_id,))
        if not b.lines:
            unavailable.append((ts, ts, b.order_id))
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
    _add_rollups(db, sales)
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
    for event, ts in events:
        order_id = event.body.order_id
        node = orders[order_id][2]
        for line in lines.get(order_id, ()):
            touched.pair(line[0], line[3] if line[3] not in (None, UNASSIGNED) else node, ts)
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

_DONE_STEPS = frozenset({"shipped_ts", "ready_ts", "picked_up_ts", "delivered_ts"})
"""Step columns ``fulfilled_ts`` and ``done_ts`` are computed from."""


def _fulfillment_sql(columns: tuple[str, ...], exception: bool) -> str:
    """One update per order setting only the step columns a batch reported for it.

    Assigning only those keeps SQLite from rewriting the other steps' indexes.
    """
    sets = [f"{col} = COALESCE(MIN({col}, ?), {col}, ?)" for col in columns]
    sets += [
        "carrier = COALESCE(?, carrier)",
        "tracking = COALESCE(?, tracking)",
        "fulfil_location_id = COALESCE(fulfil_location_id, ?)",
    ]
    if exception:
        sets.append("exception_detail = ?")
    return f"UPDATE orders SET {', '.join(sets)} WHERE order_id = ?"


def _fulfillment(
    db: sqlite3.Connection, events: list[tuple[FulfillmentUpdated, int]], touched: Touched
) -> None:
    """Fulfillment steps, folded per order in arrival order, then one update each.

    The earliest report of a step wins; the latest carrier and tracking given win; the
    first node reported stays; the latest exception's detail stays; the carrier's newest
    estimate (by event time) wins.
    """
    steps: dict[str, dict[str, int]] = {}
    extra: dict[str, list[Any]] = {}  # carrier, tracking, node, exception detail
    estimates: dict[str, tuple[int, int]] = {}
    for event, ts in events:
        b = event.body
        order_steps = steps.get(b.order_id)
        if order_steps is None:
            order_steps = steps[b.order_id] = {}
            acc = extra[b.order_id] = [None, None, None, None]
        else:
            acc = extra[b.order_id]
        column = STEP_COLUMN[b.status]
        if ts < order_steps.get(column, ts + 1):
            order_steps[column] = ts
        if b.carrier is not None:
            acc[0] = b.carrier
        if b.tracking is not None:
            acc[1] = b.tracking
        if acc[2] is None:
            acc[2] = b.location_id
        if b.status == "exception":
            acc[3] = b.detail
        if b.estimated_delivery is not None:
            best = estimates.get(b.order_id)
            if best is None or ts >= best[1]:
                estimates[b.order_id] = (epoch(b.estimated_delivery), ts)
    db.executemany("INSERT OR IGNORE INTO orders (order_id) VALUES (?)", [(o,) for o in steps])
    shapes: dict[tuple[tuple[str, ...], bool], list[list[Any]]] = defaultdict(list)
    for order_id, order_steps in steps.items():
        columns = tuple(sorted(order_steps))
        carrier, tracking, node, detail = extra[order_id]
        row: list[Any] = []
        for col in columns:
            row += (order_steps[col], order_steps[col])
        row += (carrier, tracking, node)
        if detail is not None:
            row.append(detail)
        row.append(order_id)
        shapes[(columns, detail is not None)].append(row)
        if _DONE_STEPS.intersection(columns):
            touched.orders.add(order_id)
    for (columns, exception), rows in shapes.items():
        db.executemany(_fulfillment_sql(columns, exception), rows)
    if estimates:
        db.executemany(
            """UPDATE orders SET estimated_delivery_ts = ?, estimate_ts = ?
               WHERE order_id = ? AND (estimate_ts IS NULL OR estimate_ts <= ?)""",
            [(est, ts, oid, ts) for oid, (est, ts) in estimates.items()],
        )
    # Every report of a shipment's cost, in arrival order (of two stamped alike, the later
    # arrival stands, as one at a time).
    costs = [
        (e.body.order_id, e.body.tracking or "-", ts, cents(e.body.shipping_cost))
        for e, ts in events
        if e.body.shipping_cost is not None
    ]
    if costs:
        db.executemany(
            "INSERT OR REPLACE INTO shipment_costs (order_id, shipment, ts, cost_cents)"
            " VALUES (?, ?, ?, ?)",
            costs,
        )


def _stock_adjusted(
    db: sqlite3.Connection, events: list[tuple[StockAdjusted, int]], touched: Touched
) -> None:
    """Adjustments: logged, and added to the pair's count when stamped after it."""
    rows = []
    for event, ts in events:
        b = event.body
        touched.pair(b.sku, b.location_id, ts)
        rows.append((b.sku, b.location_id, ts, b.delta, b.reason, b.source_system))
    db.executemany(
        "INSERT INTO stock_adjustments (sku, location_id, ts, delta, reason)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
        [row[:5] for row in rows],
    )
    # Without a count yet, the pair starts at the sum of its adjustments (as_of 0), and the
    # first snapshot replaces that with count + later adjustments.
    db.executemany(
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system)
           VALUES (?1, ?2, ?4, 0, 0, ?6)
           ON CONFLICT DO UPDATE SET on_hand = on_hand + excluded.on_hand
           WHERE stock.as_of_ts < ?3""",
        rows,
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
        touched.pair(b.sku, b.location_id, ts)
        best = newest.get(key)
        if best is None or ts >= best[1]:
            newest[key] = (event, ts)
    db.executemany(
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system)
           VALUES (?1, ?2, ?3 + (SELECT COALESCE(SUM(delta), 0) FROM stock_adjustments
                                 WHERE sku = ?1 AND location_id = ?2 AND ts > ?5), ?4, ?5, ?6)
           ON CONFLICT DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,
               as_of_ts = excluded.as_of_ts, source_system = excluded.source_system
           WHERE stock.as_of_ts <= excluded.as_of_ts""",
        [
            (b.sku, b.location_id, b.on_hand, b.reserved, ts, b.source_system)
            for b, ts in ((event.body, ts) for event, ts in newest.values())
        ],
    )
    # Every count, for stock as of a past moment (store/asof.py); the later arrival of two
    # counts stamped alike wins, as above.
    db.executemany(
        "INSERT OR REPLACE INTO stock_counts (sku, location_id, ts, on_hand, reserved)"
        " VALUES (?, ?, ?, ?, ?)",
        [(e.body.sku, e.body.location_id, ts, e.body.on_hand, e.body.reserved) for e, ts in events],
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
        touched.pair(b.sku, b.location_id, ts)
        rows.append((b.channel, b.sku, b.location_id, b.advertised, ts))
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
        touched.pair(b.sku, b.location_id, ts)
        rows.append((b.po_id, b.sku, b.location_id, b.quantity, epoch(b.eta), b.status, ts))
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


APPLIERS: dict[str, Applier] = {
    "sku.upserted": _skus,
    "location.upserted": _locations,
    "channel.upserted": _channels,
    "listing.updated": _listings,
    "inbound.updated": _inbound,
    "stock.adjusted": _stock_adjusted,
    "stock.snapshot": _stock_snapshot,
    _EARLY_CANCEL: _orders_cancelled,
    "order.placed": _orders_placed,
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


_NEVER = 9_000_000_000_000_000_000

_DONE_SQL = f"""UPDATE orders SET
    fulfilled_ts = NULLIF(MIN(COALESCE(shipped_ts, {_NEVER}), COALESCE(ready_ts, {_NEVER}),
                              COALESCE(picked_up_ts, {_NEVER}), COALESCE(delivered_ts, {_NEVER})),
                          {_NEVER}),
    done_ts = NULLIF(MIN(COALESCE(shipped_ts, {_NEVER}), COALESCE(ready_ts, {_NEVER}),
                         COALESCE(picked_up_ts, {_NEVER}), COALESCE(delivered_ts, {_NEVER}),
                         COALESCE(cancelled_ts, {_NEVER})), {_NEVER})
    WHERE order_id IN (SELECT value FROM json_each(?))"""
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
    _update_risk(db, touched, params, sweep=False)


def count_outcomes(outcomes: Iterable[Outcome]) -> dict[Outcome, int]:
    """Tally outcomes into ``{"applied": n, "duplicate": n, "quarantined": n}``."""
    tally: dict[Outcome, int] = {"applied": 0, "duplicate": 0, "quarantined": 0}
    for outcome in outcomes:
        tally[outcome] += 1
    return tally
