"""The router's reservations of an order, as its current lines say (order edits).

The router reserves each routed line's units at its node (``routing_reservations``, and
the same units in ``stock.reserved``; feeds/runtime/routing.py) and gives them back when
the order ships, is ready or picked up, or is cancelled.  An ``order.edited`` that changes
the order's lines (store/apply.py) changes what it holds:

* :func:`held_lines` is what an order holds, derived from the store alone: for an order
  the router routed (decision ``routed``), placed and not done (shipped, ready, picked
  up, delivered or cancelled), each of its current lines' quantity at the line's node.
  The node is the line's sales location (where the edit's rules put it: its own node,
  else that of the order's line with the same SKU, else its first line's, so the
  router's node), else the router's node for the same SKU, else its first node.
* :func:`follow_lines` makes the unreleased reservations of some orders equal that,
  incrementally (only the orders given, only the lines that differ).  A line whose SKU,
  node or quantity changed is released (``released_at``) and reserved again at the edit's
  processing time, as a re-route's are, so ``reservation_history`` and the stock *as of*
  a moment (store/asof.py) agree with ``stock.reserved``.  An order whose reservations were
  released stays released; an edit that changed nothing (an older edit arriving after a
  newer one, a redelivery) changes nothing.

Blocking :mod:`sqlite3`, on the writer's connection inside its transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from store.asof import UNASSIGNED
from store.risk import MetricParams, refresh_risk_flags, risk_flags_time

_CHUNK = 500

Held = dict[tuple[str, int], tuple[str, str, int]]
"""Reservations by (order id, line number): (SKU, node, quantity)."""


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _rows_of(
    db: sqlite3.Connection, sql: str, column: str, order_ids: Collection[str] | None
) -> list[Any]:
    """``sql``'s rows, for the orders ``order_ids`` in ``column`` (None: every order)."""
    if order_ids is None:
        return db.execute(sql).fetchall()
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(order_ids))):
        marks = ",".join("?" * len(chunk))
        rows.extend(db.execute(f"{sql} AND {column} IN ({marks})", tuple(chunk)))
    return rows


def held_lines(db: sqlite3.Connection, order_ids: Collection[str] | None = None) -> Held:
    """What the router should hold for ``order_ids`` (None: every order), from their lines.

    Orders not routed, not placed, or done hold nothing (and are absent).
    """
    sql = (
        "SELECT l.order_id, l.line_no, l.sku, l.quantity, l.sales_location, d.location_id"
        " FROM order_lines l JOIN routing_decisions d ON d.order_id = l.order_id"
        " JOIN orders o ON o.order_id = l.order_id"
        " WHERE d.status = 'routed' AND o.has_order = 1 AND o.done_ts IS NULL"
    )
    rows = _rows_of(db, sql, "l.order_id", order_ids)
    out: Held = {}
    for order_id, line_no, sku, quantity, location, first in rows:
        node = _line_node(db, order_id, sku, location, first)
        if node is not None:
            out[(order_id, line_no)] = (sku, node, quantity)
    return out


def _line_node(
    db: sqlite3.Connection, order_id: str, sku: str, location: str | None, first: str | None
) -> str | None:
    """A routed order's line's node: its sales location, else the router's (``first``)."""
    if location is None or location == UNASSIGNED:
        # Its sales were not moved to the router's node (a feed named the order's node
        # first): the router's own choice for this SKU, else its first node.
        return _decided_node(db, order_id, sku) or first
    return location


EditedLines = tuple[int, list[tuple[int, str, int, str | None]]]
"""The latest edit's time (epoch s) and the order's lines: (line number, SKU, quantity, node)."""


def edited_lines(db: sqlite3.Connection, order_id: str) -> EditedLines | None:
    """An edited order's current lines, each at the node that holds it (None: never edited).

    The node is the one :func:`held_lines` gives a routed order's line (None for an order
    the router did not route and whose line names no node).
    """
    row = db.execute("SELECT MAX(ts) FROM order_edits WHERE order_id = ?", (order_id,)).fetchone()
    if row is None or row[0] is None:
        return None
    decided = db.execute(
        "SELECT location_id FROM routing_decisions WHERE order_id = ? AND status = 'routed'",
        (order_id,),
    ).fetchone()
    lines = []
    for line_no, sku, quantity, location in db.execute(
        "SELECT line_no, sku, quantity, sales_location FROM order_lines WHERE order_id = ?"
        " ORDER BY line_no",
        (order_id,),
    ):
        if decided is not None:
            node = _line_node(db, order_id, sku, location, decided[0])
        else:
            node = None if location == UNASSIGNED else location
        lines.append((line_no, sku, quantity, node))
    return row[0], lines


def _decided_node(db: sqlite3.Connection, order_id: str, sku: str) -> str | None:
    """The node the router's decision gave ``sku`` in ``order_id`` (None: no such line)."""
    row = db.execute(
        "SELECT decision FROM routing_decisions WHERE order_id = ?", (order_id,)
    ).fetchone()
    if row is None:
        return None
    for line in json.loads(row[0]).get("lines", ()):
        if line.get("sku") == sku and line.get("location_id"):
            return str(line["location_id"])
    return None


def open_reservations(db: sqlite3.Connection, order_ids: Collection[str] | None = None) -> Held:
    """The unreleased reservations of ``order_ids`` (None: every order)."""
    sql = (
        "SELECT order_id, line_no, sku, location_id, quantity FROM routing_reservations"
        " WHERE released_at IS NULL"
    )
    rows = _rows_of(db, sql, "order_id", order_ids)
    return {(o, n): (sku, loc, qty) for o, n, sku, loc, qty in rows}


def edited_and_held(db: sqlite3.Connection) -> list[str]:
    """Orders with an edit that still hold reservations.

    What a store written before reservations followed edits may have wrong
    (:func:`follow_lines` puts them right).
    """
    return [
        str(order_id)
        for (order_id,) in db.execute(
            "SELECT DISTINCT r.order_id FROM routing_reservations r WHERE r.released_at IS NULL"
            " AND EXISTS (SELECT 1 FROM order_edits e WHERE e.order_id = r.order_id)"
            " ORDER BY r.order_id"
        )
    ]


def follow_lines(
    db: sqlite3.Connection,
    order_ids: Collection[str],
    at: int,
    *,
    risk_at: int | None = None,
    params: MetricParams | None = None,
) -> int:
    """Make the unreleased reservations of ``order_ids`` follow their current lines.

    Only orders that still hold reservations are looked at (released ones stay released).
    Per SKU × node, units released come off ``stock.reserved`` first (never below zero,
    as a release does) and units reserved are added after, in the order the stock as of
    a moment replays them.  The stock-risk flags of every pair that moved are re-checked
    as of ``risk_at`` (the edits' time; never before the flags' own time).  Call inside a
    write transaction; ``at`` is the epoch second written as released and reserved.
    Returns the number of lines changed (released or reserved).
    """
    current = open_reservations(db, order_ids)
    if not current:
        return 0
    holding = {order_id for order_id, _ in current}
    wanted = held_lines(db, holding)
    released: dict[tuple[str, str], int] = {}
    reserved: dict[tuple[str, str], int] = {}
    gone = [key for key, line in current.items() if wanted.get(key) != line]
    new = [key for key, line in wanted.items() if current.get(key) != line]
    for key in gone:
        sku, node, qty = current[key]
        released[(sku, node)] = released.get((sku, node), 0) + qty
    for key in new:
        sku, node, qty = wanted[key]
        reserved[(sku, node)] = reserved.get((sku, node), 0) + qty
    db.executemany(
        "UPDATE routing_reservations SET released_at = ? WHERE order_id = ? AND line_no = ?",
        [(at, *key) for key in gone],
    )
    # Replaces a released row of the same line (reservation_history keeps both).
    db.executemany(
        "INSERT OR REPLACE INTO routing_reservations (order_id, line_no, sku, location_id,"
        " quantity, reserved_at, released_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
        [(*key, *wanted[key], at) for key in new],
    )
    # A line removed for good: its released row stays, as a shipped order's do.
    pairs = sorted(set(released) | set(reserved))
    db.executemany(
        "UPDATE stock SET reserved = MAX(0, reserved - ?) + ? WHERE sku = ? AND location_id = ?",
        [(released.get(pair, 0), reserved.get(pair, 0), *pair) for pair in pairs],
    )
    if pairs:
        flags_at = risk_flags_time(db)
        t = max(risk_at or 0, flags_at or 0)
        if t:
            refresh_risk_flags(db, pairs, t, params or MetricParams())
    return len(gone) + len(new)
