"""Sales and returns *as of* a moment, on top of the hourly roll-ups.

The roll-ups (``sales_hourly``, ``sku_hourly``, ``category_hourly``,
``category_returns_hourly``) hold, per hour bucket, every event the store has, whenever
it is stamped: a bucket of the current hour holds sales placed later in that hour, and a
cancellation reverses its order's sales in the order's placement hour whenever the
cancellation itself happened.  Read at a past moment ``t`` they would count the future.

So a window as of ``t`` is read in two parts:

* the roll-ups for the whole hours before ``t``'s hour (:func:`closed_last_hour`), plus
* :func:`sales_lines` from the base tables: the lines of orders placed in ``t``'s own hour
  up to ``t`` and not cancelled by ``t``, and the lines of orders placed in earlier hours
  of the window whose cancellation is stamped after ``t`` (the roll-up already took them
  out; as of ``t`` they still count).  :func:`return_lines` does the same for returns
  (received in ``t``'s hour up to ``t``; returns are never reversed).

Both reads follow an index: the placed-time index over one hour, and the index of
cancelled orders over the cancellations stamped after ``t`` (none, live).

Stock, listings and inbound as of ``t`` come from their history tables; so do the
catalogue (each SKU's category, reorder point and lead time, each node's safety buffer)
and routing (an order placed without a node has one only from the moment it was routed
for), read only when something in them is after ``t`` (:func:`changed_after`).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

HOUR = 3600
UNASSIGNED = "-"
"""The location of sales of an order that named none (as in store/apply.py)."""


class SalesLine(NamedTuple):
    """One order line's contribution to the roll-ups, as of a moment."""

    sku: str
    location_id: str
    category: str
    channel: str
    hour: int
    units: int
    net_cents: int


class ReturnLine(NamedTuple):
    """One return's contribution to the returns roll-up, as of a moment."""

    sku: str
    category: str
    channel: str
    hour: int
    units: int


def closed_last_hour(t: int, last: int) -> int:
    """The last roll-up hour to read as of ``t`` in a window ending at hour ``last``."""
    return min(last, t // HOUR - 1)


_LINE_COLUMNS = """
    l.sku, COALESCE(l.sales_location, o.location_id, ?), COALESCE(l.sales_category,
           (SELECT h.category FROM sku_history h WHERE h.sku = l.sku AND h.ts <= o.placed_ts
            ORDER BY h.ts DESC LIMIT 1),
           (SELECT h.category FROM sku_history h WHERE h.sku = l.sku ORDER BY h.ts LIMIT 1),
           '-'), o.channel,
           o.placed_ts / 3600, l.quantity, l.quantity * l.unit_price_cents - l.discount_cents
"""
"""A line as the roll-ups count it (:class:`SalesLine`'s fields); ``?`` is unassigned."""

_LINES = (
    "SELECT"
    + _LINE_COLUMNS
    + "    FROM orders o INDEXED BY {index} CROSS JOIN order_lines l ON l.order_id = o.order_id\n"
)


def sales_lines(db: sqlite3.Connection, t: int, first_hour: int) -> list[SalesLine]:
    """Lines to add to the closed roll-up hours ``[first_hour, t's hour)`` to get ``t``.

    The current hour's orders placed by ``t`` and not cancelled by ``t``, and the orders
    placed in ``[first_hour, t's hour)`` cancelled after ``t``.  A line never counted (its
    cancellation arrived first) is in the category its SKU had at placement, or, with no
    record by then, its first record's (where the writer would have moved it).
    """
    hour_start = t // HOUR * HOUR
    rows = db.execute(
        f"""{_LINES.format(index="orders_placed_cover")}
            WHERE o.has_order = 1 AND o.placed_ts >= ? AND o.placed_ts <= ?
              AND (o.cancelled_ts IS NULL OR o.cancelled_ts > ?)
            UNION ALL
            {_LINES.format(index="orders_cancelled")}
            WHERE o.cancelled_ts > ? AND o.has_order = 1
              AND o.placed_ts >= ? AND o.placed_ts < ?""",
        (
            UNASSIGNED,
            max(hour_start, first_hour * HOUR),
            t,
            t,
            UNASSIGNED,
            t,
            first_hour * HOUR,
            hour_start,
        ),
    ).fetchall()
    out = [SalesLine(*row) for row in rows]
    edited = edited_after(db, t)
    if edited:
        out += _edit_corrections(db, t, first_hour, edited)
    return out


def return_lines(db: sqlite3.Connection, t: int) -> list[ReturnLine]:
    """Returns received in ``t``'s hour up to ``t`` (the closed hours are in the roll-up)."""
    rows = db.execute(
        """SELECT sku, category, channel, received_ts / 3600, quantity FROM returns
           WHERE received_ts >= ? AND received_ts <= ?""",
        (t // HOUR * HOUR, t),
    ).fetchall()
    return [ReturnLine(*row) for row in rows]


Pair = tuple[str, str]


def stock_as_of(db: sqlite3.Connection, t: int) -> dict[Pair, tuple[int, int]]:
    """(on hand, reserved) of every pair known by ``t``.

    Its latest count at or before ``t`` plus the adjustments after that count up to
    ``t``; without a count, the sum of its adjustments up to ``t`` (reserved 0): the rule
    the writer applies, replayed to ``t``; reserved adds the router's reservations after
    the count up to ``t`` (:func:`_with_reservations`).
    """
    counts: dict[Pair, tuple[int, int, int]] = {
        (sku, loc): (on_hand, reserved, ts)
        for sku, loc, on_hand, reserved, ts in db.execute(
            """SELECT sku, location_id, on_hand, reserved, MAX(ts) FROM stock_counts
               WHERE ts <= ? GROUP BY sku, location_id""",
            (t,),
        )
    }
    out = {pair: (on_hand, reserved) for pair, (on_hand, reserved, _) in counts.items()}
    for sku, loc, ts, delta in db.execute(
        "SELECT sku, location_id, ts, delta FROM stock_adjustments WHERE ts <= ?", (t,)
    ):
        pair = (sku, loc)
        count = counts.get(pair)
        if count is not None and ts <= count[2]:
            continue
        on_hand, reserved = out.get(pair, (0, 0))
        out[pair] = (on_hand + delta, reserved)
    _with_reservations(db, t, out, {pair: count[2] for pair, count in counts.items()})
    return out


def listings_as_of(db: sqlite3.Connection, t: int) -> dict[Pair, list[tuple[str, int]]]:
    """Per pair, each channel's advertised quantity as last updated at or before ``t``."""
    out: dict[Pair, list[tuple[str, int]]] = {}
    for sku, loc, channel, advertised, _ in db.execute(
        """SELECT sku, location_id, channel, advertised, MAX(ts) FROM listing_history
           WHERE ts <= ? GROUP BY sku, location_id, channel""",
        (t,),
    ):
        out.setdefault((sku, loc), []).append((channel, advertised))
    return out


def inbound_as_of(db: sqlite3.Connection, t: int) -> dict[Pair, list[tuple[int, int]]]:
    """Per pair, the open inbound lines as last updated at or before ``t``: (qty, ETA)."""
    out: dict[Pair, list[tuple[int, int]]] = {}
    for sku, loc, qty, eta, status, _ in db.execute(
        """SELECT sku, location_id, quantity, eta_ts, status, MAX(ts) FROM inbound_history
           WHERE ts <= ? GROUP BY po_id, sku, location_id""",
        (t,),
    ):
        if status == "open":
            out.setdefault((sku, loc), []).append((qty, eta))
    for lines in out.values():
        lines.sort(key=lambda qe: qe[1])
    return out


# --- the catalogue and routing as of a moment -----------------------------------------------
#
# The writer keeps every SKU and node record (``sku_history``, ``location_history``, by
# record time) and every routing decision (``routing_history``, by the moment routed for).
# Live, nothing in them is after ``t`` and one index probe says so (:func:`changed_after`);
# only a past moment reads them.


class SkuAsOf(NamedTuple):
    """The catalogue fields the panels read, as last recorded at or before a moment."""

    category: str
    reorder_point: int
    lead_time_days: float


def changed_after(db: sqlite3.Connection, t: int) -> tuple[bool, bool]:
    """(catalogue, routing): whether a SKU or node record, or a routing decision, is after ``t``.

    Routing includes a node first reported by a fulfillment feed after ``t`` for an order
    placed without one.  Each is one probe of a time index, so the live path pays nothing
    more.
    """
    catalogue, routing = db.execute(
        """SELECT EXISTS (SELECT 1 FROM sku_history WHERE ts > ?1)
                  OR EXISTS (SELECT 1 FROM location_history WHERE ts > ?1),
                  EXISTS (SELECT 1 FROM routing_history WHERE routed_for > ?1)
                  OR EXISTS (SELECT 1 FROM orders INDEXED BY orders_fulfil_location_ts
                             WHERE fulfil_location_ts > ?1)""",
        (t,),
    ).fetchone()
    return bool(catalogue), bool(routing)


def skus_as_of(db: sqlite3.Connection, t: int) -> dict[str, SkuAsOf]:
    """Every SKU with a record at or before ``t``, as its latest such record says."""
    return {
        sku: SkuAsOf(category, reorder, lead)
        for sku, category, reorder, lead, _ in db.execute(
            """SELECT sku, category, reorder_point, lead_time_days, MAX(ts) FROM sku_history
               WHERE ts <= ? GROUP BY sku""",
            (t,),
        )
    }


def buffers_as_of(db: sqlite3.Connection, t: int) -> dict[str, int]:
    """Each node's safety buffer as last recorded at or before ``t``."""
    return {
        loc: buffer
        for loc, buffer, _ in db.execute(
            """SELECT location_id, safety_buffer, MAX(ts) FROM location_history
               WHERE ts <= ? GROUP BY location_id""",
            (t,),
        )
    }


def uncatalogued_at(db: sqlite3.Connection, t: int) -> set[str]:
    """SKUs whose first record is after ``t``: as of ``t`` their units count under ``-``.

    The writer moves a SKU's units counted under ``-`` to its category when its first
    record arrives (store/apply.py); before that record's time they are still ``-``.
    """
    return {
        sku
        for (sku,) in db.execute(
            """SELECT DISTINCT h.sku FROM sku_history h INDEXED BY sku_history_ts
               WHERE h.ts > ?1 AND NOT EXISTS (
                 SELECT 1 FROM sku_history e WHERE e.sku = h.sku AND e.ts <= ?1)""",
            (t,),
        )
    }


def unrouted_at(db: sqlite3.Connection, t: int) -> set[str]:
    """Orders first routed after ``t``: as of ``t`` they have no node (``-``) yet.

    Only the first routed decision gives an order its node and moves its sales
    (:func:`store.apply.assign_node`); a re-route later changes neither.
    """
    return {
        order_id
        for (order_id,) in db.execute(
            """SELECT DISTINCT h.order_id FROM routing_history h INDEXED BY routing_history_for
               WHERE h.routed_for > ?1 AND h.status = 'routed' AND NOT EXISTS (
                 SELECT 1 FROM routing_history e
                 WHERE e.order_id = h.order_id AND e.routed_for <= ?1 AND e.status = 'routed')""",
            (t,),
        )
    }


def node_reported_after(db: sqlite3.Connection, t: int) -> set[str]:
    """Orders placed without a node whose node a fulfillment feed first reported after ``t``.

    As of ``t`` they are at no node (``-``), as orders routed after ``t`` are
    (:func:`unrouted_at`).  A feed's node never moves sales (only the router's does), so
    velocity and risk need nothing of this.
    """
    return {
        order_id
        for (order_id,) in db.execute(
            """SELECT order_id FROM orders INDEXED BY orders_fulfil_location_ts
               WHERE fulfil_location_ts > ? AND location_id IS NULL""",
            (t,),
        )
    }


def unroutable_at(db: sqlite3.Connection, t: int) -> int:
    """Orders open at ``t`` whose decision in force at ``t`` is held or unfulfillable.

    The decision in force is the latest one routed for a moment at or before ``t`` (of two
    for the same moment, the later written).
    """
    (n,) = db.execute(
        """SELECT COUNT(*) FROM routing_history h JOIN orders o USING (order_id)
           WHERE h.routed_for <= ?1 AND h.status IN ('held', 'unfulfillable')
             AND o.placed_ts <= ?1 AND (o.done_ts IS NULL OR o.done_ts > ?1)
             AND NOT EXISTS (
               SELECT 1 FROM routing_history e
               WHERE e.order_id = h.order_id AND e.routed_for <= ?1
                 AND (e.routed_for > h.routed_for
                      OR (e.routed_for = h.routed_for AND e.seq > h.seq)))""",
        (t,),
    ).fetchone()
    return int(n)


def unrouted_sales(
    db: sqlite3.Connection, t: int, orders: set[str], first_hour: int
) -> dict[Pair, int]:
    """Units of ``orders`` counted at their routed node from ``first_hour`` up to ``t``.

    Routed after ``t``, they are not at that node as of ``t``: the caller takes them off.
    A line counts as of ``t`` when its order was placed by ``t`` and not cancelled by ``t``
    (the roll-up and :func:`sales_lines` together count exactly those).
    """
    out: dict[Pair, int] = {}
    if not orders:
        return out
    for sku, loc, units in db.execute(
        """SELECT l.sku, l.sales_location, SUM(l.quantity)
           FROM orders o CROSS JOIN order_lines l ON l.order_id = o.order_id
           WHERE o.order_id IN (SELECT value FROM json_each(?)) AND o.has_order = 1
             AND o.location_id IS NULL AND o.placed_ts >= ? AND o.placed_ts <= ?
             AND (o.cancelled_ts IS NULL OR o.cancelled_ts > ?)
             AND l.sales_location IS NOT NULL AND l.sales_location != ?
           GROUP BY 1, 2""",
        (json.dumps(sorted(orders)), first_hour * HOUR, t, t, UNASSIGNED),
    ):
        out[(sku, loc)] = int(units)
    return out


def _with_reservations(
    db: sqlite3.Connection, t: int, stock: dict[Pair, tuple[int, int]], counted: dict[Pair, int]
) -> None:
    """Add to ``stock``'s reserved the router's reservations after each pair's count, to ``t``.

    A count sets reserved (``counted``: its time per pair); the router adds each line's
    units when it routes and takes them off when the order is done, never below zero
    (feeds/runtime/routing.py), in that order of time.  Reservations are by the time
    the router wrote them, from ``reservation_history`` (a re-route's replaced ones too).
    """
    steps: dict[Pair, list[tuple[int, int]]] = {}
    for sku, loc, qty, at, released in db.execute(
        """SELECT sku, location_id, quantity, reserved_at, released_at
           FROM reservation_history WHERE reserved_at <= ?""",
        (t,),
    ):
        pair = (sku, loc)
        if pair not in stock:
            continue
        start = counted.get(pair, -1)
        if at > start:
            steps.setdefault(pair, []).append((at, qty))
        if released is not None and start < released <= t:
            steps.setdefault(pair, []).append((released, -qty))
    for pair, moves in steps.items():
        on_hand, reserved = stock[pair]
        for _, qty in sorted(moves):
            reserved = max(0, reserved + qty)
        stock[pair] = (on_hand, reserved)


# --- order edits as of a moment -----------------------------------------------------------
#
# The writer gives an edited order the lines of its latest edit (by edit time) and moves
# the roll-ups by the difference, in the placement hour; every edit is kept
# (``order_edits``, by edit time) and so are the placement's lines of an edited order
# (``order_placed_lines``).  As of ``t``, an order edited after ``t`` has the lines of its
# latest edit stamped by ``t``, else its placement's.  Live, no edit is after ``t`` and one
# index probe says so.

EditLine = tuple[str, int, int, int, str | None]
"""An edit's line as kept: SKU, quantity, unit price and line discount (cents), own node."""


def resolve_node(
    sku: str, own: str | None, order_node: str | None, lines: list[tuple[Any, ...]]
) -> str:
    """The node an edited line's sales count at (store/apply.py, and as of a moment).

    Its own node; else the order's; else that of the order's line with the same SKU
    (``lines``: SKU first, its sales location fifth), else of its first line (the router's
    node for an order routed after placement); else unassigned.
    """
    if own is not None:
        return own
    if order_node is not None:
        return order_node
    for line in lines:
        if line[0] == sku and line[4] is not None:
            return str(line[4])
    if lines and lines[0][4] is not None:
        return str(lines[0][4])
    return UNASSIGNED


def edited_after(db: sqlite3.Connection, t: int) -> set[str]:
    """Orders with an edit stamped after ``t`` (one index probe live: none)."""
    return {
        order_id
        for (order_id,) in db.execute(
            "SELECT DISTINCT order_id FROM order_edits INDEXED BY order_edits_ts WHERE ts > ?",
            (t,),
        )
    }


class OrderAsOf(NamedTuple):
    """An edited order's value as of a moment (cents), and its lines then."""

    gross_cents: int
    discount_cents: int
    units: int
    lines: list[EditLine]


def orders_as_of(db: sqlite3.Connection, orders: set[str], t: int) -> dict[str, OrderAsOf]:
    """Each of ``orders`` as of ``t``: its latest edit stamped by ``t``, else its placement.

    Only orders that have been edited have a placement copy; an order in ``orders`` with
    neither by ``t`` is left out.
    """
    out: dict[str, OrderAsOf] = {}
    if not orders:
        return out
    ids = json.dumps(sorted(orders))
    for order_id, lines, gross, discount, units in db.execute(
        """SELECT order_id, lines, gross_cents, discount_cents, units FROM order_placed_lines
           WHERE order_id IN (SELECT value FROM json_each(?))""",
        (ids,),
    ):
        out[order_id] = OrderAsOf(
            gross, discount, units, [(s, q, p, d, loc) for s, q, p, d, loc, _ in json.loads(lines)]
        )
    for order_id, lines, gross, discount, units, _ in db.execute(
        """SELECT order_id, lines, gross_cents, discount_cents, units, MAX(ts) FROM order_edits
           WHERE order_id IN (SELECT value FROM json_each(?)) AND ts <= ?
           GROUP BY order_id""",
        (ids, t),
    ):
        out[order_id] = OrderAsOf(gross, discount, units, [tuple(x) for x in json.loads(lines)])
    return out


def _edit_corrections(
    db: sqlite3.Connection, t: int, first_hour: int, edited: set[str]
) -> list[SalesLine]:
    """What turns the edited orders' lines counted now into their lines as of ``t``.

    For each order of ``edited`` that counts as of ``t`` (placed in ``[first_hour, t]``,
    not cancelled by ``t``): minus its lines as the roll-ups and :func:`sales_lines` count
    them, plus its lines as of ``t`` (:func:`orders_as_of`), at the same node and category
    rules the writer applies (:func:`resolve_node`; a SKU's category as its current line's,
    else its catalogue record's).
    """
    current: dict[str, list[tuple[Any, ...]]] = {}
    order_of: dict[str, tuple[str | None, str, int]] = {}
    for order_id, order_node, raw_location, price, off, *line in db.execute(
        f"""SELECT o.order_id, o.location_id, l.sales_location, l.unit_price_cents,
                   l.discount_cents, {_LINE_COLUMNS}
            FROM orders o CROSS JOIN order_lines l ON l.order_id = o.order_id
            WHERE o.order_id IN (SELECT value FROM json_each(?)) AND o.has_order = 1
              AND o.placed_ts >= ? AND o.placed_ts <= ?
              AND (o.cancelled_ts IS NULL OR o.cancelled_ts > ?)""",
        (UNASSIGNED, json.dumps(sorted(edited)), first_hour * HOUR, t, t),
    ):
        sku, location, category, channel, hour, qty, _ = line
        current.setdefault(order_id, []).append((sku, qty, price, off, raw_location, line))
        order_of[order_id] = (order_node, channel, hour)
    then = orders_as_of(db, set(current), t)
    catalogue = dict(
        db.execute(
            "SELECT sku, category FROM skus WHERE sku IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted({line[0] for o in then.values() for line in o.lines})),),
        ).fetchall()
    )
    out: list[SalesLine] = []
    for order_id, lines in current.items():
        at_t = then.get(order_id)
        if at_t is None:
            continue  # never changed by an edit: its lines now are its lines then
        order_node, channel, hour = order_of[order_id]
        category_of = {line[0]: line[5][2] for line in lines}
        for *_, counted in lines:
            sku, location, category, _, _, qty, net = counted
            out.append(SalesLine(sku, location, category, channel, hour, -qty, -net))
        for sku, qty, price, off, own in at_t.lines:
            out.append(
                SalesLine(
                    sku,
                    resolve_node(sku, own, order_node, list(lines)),
                    category_of.get(sku) or catalogue.get(sku, "-"),
                    channel,
                    hour,
                    qty,
                    qty * price - off,
                )
            )
    return out


def edit_deltas(
    db: sqlite3.Connection, t: int, start: int, end: int
) -> list[tuple[str, int, int, int]]:
    """(channel, placed time, gross, discount) to add for orders edited after ``t``.

    Of the orders placed in ``[start, end]`` not cancelled by ``t`` (what the headline
    counts as of ``t``), those with an edit stamped after ``t``: their value as of ``t``
    (:func:`orders_as_of`) minus their value now, in cents.  Empty live.
    """
    edited = edited_after(db, t)
    if not edited:
        return []
    rows = db.execute(
        """SELECT order_id, channel, placed_ts, gross_cents, discount_cents FROM orders
           WHERE order_id IN (SELECT value FROM json_each(?)) AND has_order = 1
             AND placed_ts >= ? AND placed_ts <= ?
             AND (cancelled_ts IS NULL OR cancelled_ts > ?)""",
        (json.dumps(sorted(edited)), start, end, t),
    ).fetchall()
    then = orders_as_of(db, {row[0] for row in rows}, t)
    out = []
    for order_id, channel, placed, gross, discount in rows:
        at_t = then.get(order_id)
        if at_t is not None:
            out.append((channel, placed, at_t.gross_cents - gross, at_t.discount_cents - discount))
    return out


def edited_series(db: sqlite3.Connection, t: int) -> set[tuple[str, str]]:
    """The return series of the lines that orders edited after ``t`` hold now.

    ``("category", c)`` and ``("channel", ch)``; empty live (one index probe).  Such a
    line (one an edit after ``t`` added) may be the only reason a series has a roll-up
    row; as of ``t`` it is taken back out, and a series left with nothing in either
    window is one that did not exist at ``t`` (see ``return_rollups``).
    """
    edited = edited_after(db, t)
    if not edited:
        return set()
    out: set[tuple[str, str]] = set()
    for category, channel in db.execute(
        """SELECT DISTINCT l.sales_category, o.channel
           FROM orders o CROSS JOIN order_lines l ON l.order_id = o.order_id
           WHERE o.order_id IN (SELECT value FROM json_each(?))""",
        (json.dumps(sorted(edited)),),
    ):
        if category is not None:
            out.add(("category", str(category)))
        if channel is not None:
            out.add(("channel", str(channel)))
    return out
