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
* fulfilment steps set their own timestamp column (the earliest report wins), and a step
  for an order not seen yet creates a placeholder that the order fills in later;
* a cancellation reverses the order's sales rollup exactly once, whichever arrives first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

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
"""Which ``orders`` column records each fulfilment step."""

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


def apply_batch(
    db: sqlite3.Connection,
    items: Sequence[Event | Quarantined],
    received_at: int,
    params: MetricParams | None = None,
    *,
    sweep: bool = True,
) -> list[Outcome]:
    """Apply ``items`` in one ``BEGIN IMMEDIATE`` transaction; return one outcome each.

    On any database error the whole batch is rolled back and the error re-raised, so a
    batch is either entirely durable or not at all.  ``params`` sets the velocity window
    the stock-risk flags are computed with.
    """
    params = params or MetricParams()
    touched = Touched()
    outcomes: list[Outcome] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        ids = [item.id for item in items if not isinstance(item, Quarantined)]
        known = _known_ids(db, ids)
        feeds: dict[str, list[int]] = {}
        for item in items:
            if isinstance(item, Quarantined):
                db.execute(
                    "INSERT INTO quarantine (received_at, source, error, raw) VALUES (?, ?, ?, ?)",
                    (received_at, item.source, item.error, item.raw),
                )
                _bump(feeds, item.source, 2)
                outcomes.append("quarantined")
                continue
            if item.id in known:
                _bump(feeds, item.source, 1)
                outcomes.append("duplicate")
                continue
            known.add(item.id)
            ts = epoch(item.ts)
            db.execute(
                "INSERT INTO event_log (event_id, type, ts, source, received_at, body)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (item.id, item.type, ts, item.source, received_at, item.body.model_dump_json()),
            )
            _apply(db, item, ts, touched)
            counters = _bump(feeds, item.source, 0)
            counters[3] = max(counters[3], ts)
            outcomes.append("applied")
        for feed, (applied, duplicates, quarantined, last_ts) in feeds.items():
            db.execute(
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
                (feed, last_ts, received_at, applied, duplicates, quarantined),
            )
        _update_risk(db, touched, params, sweep=sweep)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return outcomes


def _update_risk(
    db: sqlite3.Connection, touched: Touched, params: MetricParams, *, sweep: bool = True
) -> None:
    pairs = set(touched.pairs)
    for sku in touched.skus:
        pairs.update(db.execute("SELECT sku, location_id FROM stock WHERE sku = ?", (sku,)))
    for loc in touched.locations:
        pairs.update(db.execute("SELECT sku, location_id FROM stock WHERE location_id = ?", (loc,)))
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
    counters = feeds.setdefault(feed, [0, 0, 0, 0])
    if slot < 3:
        counters[slot] += 1
    return counters


def _known_ids(db: sqlite3.Connection, ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(f"SELECT event_id FROM event_log WHERE event_id IN ({marks})", chunk)
        known.update(row[0] for row in rows)
    return known


def _apply(db: sqlite3.Connection, event: Event, ts: int, touched: Touched) -> None:
    if isinstance(event, OrderPlaced):
        _order_placed(db, event, ts)
        for line in event.body.lines:
            touched.pair(line.sku, event.body.location_id, ts)
    elif isinstance(event, FulfillmentUpdated):
        _fulfillment(db, event, ts)
    elif isinstance(event, StockAdjusted):
        _stock_adjusted(db, event, ts)
        touched.pair(event.body.sku, event.body.location_id, ts)
    elif isinstance(event, StockSnapshot):
        _stock_snapshot(db, event, ts)
        touched.pair(event.body.sku, event.body.location_id, ts)
    elif isinstance(event, ReturnReceived):
        b = event.body
        inserted = db.execute(
            "INSERT OR IGNORE INTO returns (return_id, order_id, sku, location_id, channel,"
            " quantity, reason, refund_cents, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            ),
        )
        if inserted.rowcount:
            category = db.execute("SELECT category FROM skus WHERE sku = ?", (b.sku,)).fetchone()
            category = category[0] if category else "-"
            db.execute(
                "UPDATE returns SET category = ? WHERE return_id = ?", (category, b.return_id)
            )
            _add_category_returns(db, category, b.channel, ts // 3600, b.quantity)
    elif isinstance(event, OrderCancelled):
        _order_cancelled(db, event, ts)
        for sku_, loc in db.execute(
            "SELECT l.sku, o.location_id FROM order_lines l JOIN orders o USING (order_id)"
            " WHERE order_id = ?",
            (event.body.order_id,),
        ).fetchall():
            touched.pair(sku_, loc, ts)
    elif isinstance(event, ListingUpdated):
        lb = event.body
        db.execute(
            """INSERT INTO listings (channel, sku, location_id, advertised, updated_ts)
               VALUES (?, ?, ?, ?, ?)
               ON CONFLICT DO UPDATE SET advertised = excluded.advertised,
                   updated_ts = excluded.updated_ts
               WHERE excluded.updated_ts >= listings.updated_ts""",
            (lb.channel, lb.sku, lb.location_id, lb.advertised, ts),
        )
        touched.pair(lb.sku, lb.location_id, ts)
    elif isinstance(event, InboundUpdated):
        ib = event.body
        db.execute(
            """INSERT INTO inbound (po_id, sku, location_id, quantity, eta_ts, status, updated_ts)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT DO UPDATE SET quantity = excluded.quantity, eta_ts = excluded.eta_ts,
                   status = excluded.status, updated_ts = excluded.updated_ts
               WHERE excluded.updated_ts >= inbound.updated_ts""",
            (ib.po_id, ib.sku, ib.location_id, ib.quantity, epoch(ib.eta), ib.status, ts),
        )
        touched.pair(ib.sku, ib.location_id, ts)
    elif isinstance(event, SkuUpserted):
        s = event.body
        db.execute(
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
            ),
        )
        _categorise_late(db, s.sku)
        touched.skus.add(s.sku)
        touched.latest = max(touched.latest, ts)
    elif isinstance(event, LocationUpserted):
        loc = event.body
        db.execute(
            """INSERT INTO locations (location_id, name, kind, region, lat, lon, timezone, opens,
                   closes, cutoff, safety_buffer, updated_ts)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (location_id) DO UPDATE SET name = excluded.name,
                   kind = excluded.kind, region = excluded.region, lat = excluded.lat,
                   lon = excluded.lon, timezone = excluded.timezone, opens = excluded.opens,
                   closes = excluded.closes, cutoff = excluded.cutoff,
                   safety_buffer = excluded.safety_buffer, updated_ts = excluded.updated_ts
               WHERE excluded.updated_ts >= locations.updated_ts""",
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
            ),
        )
        touched.locations.add(loc.location_id)
        touched.latest = max(touched.latest, ts)
    elif isinstance(event, ChannelUpserted):
        c = event.body
        db.execute(
            """INSERT INTO channels (channel_id, name, kind, updated_ts) VALUES (?, ?, ?, ?)
               ON CONFLICT (channel_id) DO UPDATE SET name = excluded.name,
                   kind = excluded.kind, updated_ts = excluded.updated_ts
               WHERE excluded.updated_ts >= channels.updated_ts""",
            (c.channel_id, c.name, c.kind, ts),
        )
    else:  # pragma: no cover - the union is exhaustive
        raise TypeError(f"no handler for event type {event.type!r}")


def _order_placed(db: sqlite3.Connection, event: OrderPlaced, ts: int) -> None:
    b = event.body
    row = db.execute(
        "SELECT has_order, cancelled_ts FROM orders WHERE order_id = ?", (b.order_id,)
    ).fetchone()
    if row is not None and row[0]:
        # The same order placed again under another event id (a re-sent export): the first
        # placement stands; the event stays in the log.
        return
    gross = sum(cents(line.unit_price) * line.quantity for line in b.lines)
    discount = sum(cents(line.discount) for line in b.lines)
    units = sum(line.quantity for line in b.lines)
    db.execute(
        """INSERT INTO orders (order_id, has_order, channel, method, destination_region,
               location_id, placed_ts, promised_ts, gross_cents, discount_cents, units)
           VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (order_id) DO UPDATE SET has_order = 1, channel = excluded.channel,
               method = excluded.method, destination_region = excluded.destination_region,
               location_id = excluded.location_id, placed_ts = excluded.placed_ts,
               promised_ts = excluded.promised_ts, gross_cents = excluded.gross_cents,
               discount_cents = excluded.discount_cents, units = excluded.units""",
        (
            b.order_id,
            b.channel,
            b.method,
            b.destination_region,
            b.location_id,
            ts,
            epoch(b.promised_by),
            gross,
            discount,
            units,
        ),
    )
    db.executemany(
        "INSERT OR REPLACE INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents,"
        " discount_cents) VALUES (?, ?, ?, ?, ?, ?)",
        [
            (b.order_id, n, line.sku, line.quantity, cents(line.unit_price), cents(line.discount))
            for n, line in enumerate(b.lines)
        ],
    )
    cancelled = row is not None and row[1] is not None
    if cancelled:
        # Cancelled before it arrived: never counted as sales, so nothing to reverse later.
        db.execute("UPDATE orders SET sales_reversed = 1 WHERE order_id = ?", (b.order_id,))
    else:
        _add_sales(db, b.order_id, sign=1)


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


def _add_sales(db: sqlite3.Connection, order_id: str, sign: int) -> None:
    """Add (+1) or reverse (-1) an order's lines in the sales rollups.

    Adding records on each line where it was counted (node, category); reversing takes the
    lines back out of exactly those buckets, even if the order was routed to a node or its
    SKU moved category in between.
    """
    if sign > 0:
        db.execute(
            """UPDATE order_lines SET
                   sales_location = COALESCE(
                       (SELECT location_id FROM orders WHERE order_id = order_lines.order_id), ?),
                   sales_category = COALESCE(
                       (SELECT category FROM skus WHERE sku = order_lines.sku), '-')
               WHERE order_id = ?""",
            (UNASSIGNED, order_id),
        )
    db.execute(
        """INSERT INTO sales_hourly (sku, location_id, channel, hour, units, net_cents)
           SELECT l.sku, l.sales_location, o.channel, o.placed_ts / 3600,
                  ? * SUM(l.quantity), ? * SUM(l.quantity * l.unit_price_cents - l.discount_cents)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE o.order_id = ? AND l.sales_location IS NOT NULL
           GROUP BY l.sku, l.sales_location
           ON CONFLICT DO UPDATE SET units = units + excluded.units,
               net_cents = net_cents + excluded.net_cents""",
        (sign, sign, order_id),
    )
    db.execute(
        """INSERT INTO category_hourly (category, channel, hour, units)
           SELECT l.sales_category, o.channel, o.placed_ts / 3600, ? * SUM(l.quantity)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE o.order_id = ? AND l.sales_category IS NOT NULL
           GROUP BY 1, 2
           ON CONFLICT DO UPDATE SET units = units + excluded.units""",
        (sign, order_id),
    )
    db.execute(
        """INSERT INTO sku_hourly (sku, hour, units)
           SELECT l.sku, o.placed_ts / 3600, ? * SUM(l.quantity)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE o.order_id = ?
           GROUP BY l.sku
           ON CONFLICT DO UPDATE SET units = units + excluded.units""",
        (sign, order_id),
    )


def _order_cancelled(db: sqlite3.Connection, event: OrderCancelled, ts: int) -> None:
    order_id = event.body.order_id
    db.execute(
        """INSERT INTO orders (order_id, cancelled_ts) VALUES (?, ?)
           ON CONFLICT (order_id) DO UPDATE SET
               cancelled_ts = MIN(COALESCE(cancelled_ts, excluded.cancelled_ts),
                                  excluded.cancelled_ts)""",
        (order_id, ts),
    )
    db.execute(_DONE_SQL, (order_id,))
    row = db.execute(
        "SELECT has_order, sales_reversed FROM orders WHERE order_id = ?", (order_id,)
    ).fetchone()
    if row[0] and not row[1]:
        _add_sales(db, order_id, sign=-1)
        db.execute("UPDATE orders SET sales_reversed = 1 WHERE order_id = ?", (order_id,))


def _fulfillment(db: sqlite3.Connection, event: FulfillmentUpdated, ts: int) -> None:
    b = event.body
    column = STEP_COLUMN[b.status]
    estimate = epoch(b.estimated_delivery) if b.estimated_delivery else None
    db.execute("INSERT OR IGNORE INTO orders (order_id) VALUES (?)", (b.order_id,))
    detail_sql = ", exception_detail = ?" if b.status == "exception" else ""
    params: list[object] = [ts, ts, b.carrier, b.tracking, b.location_id]
    if b.status == "exception":
        params.append(b.detail)
    params.append(b.order_id)
    db.execute(
        f"""UPDATE orders SET {column} = MIN(COALESCE({column}, ?), ?),
               carrier = COALESCE(?, carrier), tracking = COALESCE(?, tracking),
               fulfil_location_id = COALESCE(fulfil_location_id, ?){detail_sql}
           WHERE order_id = ?""",
        params,
    )
    if estimate is not None:
        # The carrier's newest estimate wins, whatever order its updates arrive in.
        db.execute(
            """UPDATE orders SET estimated_delivery_ts = ?, estimate_ts = ?
               WHERE order_id = ? AND (estimate_ts IS NULL OR estimate_ts <= ?)""",
            (estimate, ts, b.order_id, ts),
        )
    db.execute(_DONE_SQL, (b.order_id,))


_NEVER = 9_000_000_000_000_000_000

_DONE_SQL = f"""UPDATE orders SET
    fulfilled_ts = NULLIF(MIN(COALESCE(shipped_ts, {_NEVER}), COALESCE(ready_ts, {_NEVER}),
                              COALESCE(picked_up_ts, {_NEVER}), COALESCE(delivered_ts, {_NEVER})),
                          {_NEVER}),
    done_ts = NULLIF(MIN(COALESCE(shipped_ts, {_NEVER}), COALESCE(ready_ts, {_NEVER}),
                         COALESCE(picked_up_ts, {_NEVER}), COALESCE(delivered_ts, {_NEVER}),
                         COALESCE(cancelled_ts, {_NEVER})), {_NEVER})
    WHERE order_id = ?"""
"""Keeps ``fulfilled_ts`` (shipped, ready or handed over) and ``done_ts`` (that or cancelled)."""


def _stock_snapshot(db: sqlite3.Connection, event: StockSnapshot, ts: int) -> None:
    b = event.body
    current = db.execute(
        "SELECT as_of_ts FROM stock WHERE sku = ? AND location_id = ?", (b.sku, b.location_id)
    ).fetchone()
    if current is not None and current[0] > ts:
        return  # an older count never overwrites a newer one
    later = db.execute(
        "SELECT COALESCE(SUM(delta), 0) FROM stock_adjustments"
        " WHERE sku = ? AND location_id = ? AND ts > ?",
        (b.sku, b.location_id, ts),
    ).fetchone()[0]
    db.execute(
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT DO UPDATE SET on_hand = excluded.on_hand, reserved = excluded.reserved,
               as_of_ts = excluded.as_of_ts, source_system = excluded.source_system""",
        (b.sku, b.location_id, b.on_hand + later, b.reserved, ts, b.source_system),
    )


def _stock_adjusted(db: sqlite3.Connection, event: StockAdjusted, ts: int) -> None:
    b = event.body
    db.execute(
        "INSERT INTO stock_adjustments (sku, location_id, ts, delta, reason)"
        " VALUES (?, ?, ?, ?, ?)",
        (b.sku, b.location_id, ts, b.delta, b.reason),
    )
    # Without a count yet, the pair starts at the sum of its adjustments (as_of 0), and the
    # first snapshot replaces that with count + later adjustments.
    db.execute(
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system)
           VALUES (?, ?, ?, 0, 0, ?)
           ON CONFLICT DO UPDATE SET on_hand = on_hand + excluded.on_hand
           WHERE stock.as_of_ts < ?""",
        (b.sku, b.location_id, b.delta, b.source_system, ts),
    )


def assign_node(
    db: sqlite3.Connection, order_id: str, lines: Sequence[tuple[int, str]], params: MetricParams
) -> None:
    """An order that arrived without a node was routed: fulfil it at ``lines``' nodes.

    ``lines`` are (line number, node) per routed line.  The order's fulfilment location
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
    _update_risk(db, touched, params, sweep=False)


def count_outcomes(outcomes: Iterable[Outcome]) -> dict[Outcome, int]:
    """Tally outcomes into ``{"applied": n, "duplicate": n, "quarantined": n}``."""
    tally: dict[Outcome, int] = {"applied": 0, "duplicate": 0, "quarantined": 0}
    for outcome in outcomes:
        tally[outcome] += 1
    return tally
