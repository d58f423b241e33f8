"""The lines the store holds for an order, for a feed that compares a shop's order with them.

A shop that sends its whole order on every change (Shopify's ``orders/updated``) says what
the order's lines are now, not what changed: ``serve`` reads the lines the store holds for
the order (its placement's, or its latest edit's by time) with :func:`held_lines` and the
shop's adapter decides, without touching the store, whether the delivery is an edit.

Reader only (any connection, e.g. ``serve``'s read connection); it never writes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from store.apply import cents
from store.model import METHODS, Method, OrderLine


@dataclass(frozen=True, order=True, slots=True)
class HeldLine:
    """One order line as the store holds it: what an edit would change."""

    sku: str
    quantity: int
    unit_price_cents: int
    discount_cents: int
    """The line's discount in total (not per unit), in cents."""


def held_line(line: OrderLine) -> HeldLine:
    """``line`` as the store would hold it (amounts in integer cents)."""
    return HeldLine(line.sku, line.quantity, cents(line.unit_price), cents(line.discount))


def held_lines(db: sqlite3.Connection, order_id: str) -> list[HeldLine] | None:
    """The lines the store holds for ``order_id``, in line order; None when it is not placed.

    An order the store knows only from a step, a cancellation or an edit that arrived
    before its placement is not placed (None), so the caller cannot mistake "not known
    yet" for "no lines".  One statement, so the order and its lines are read together.
    """
    rows = db.execute(
        "SELECT l.sku, l.quantity, l.unit_price_cents, l.discount_cents FROM orders o"
        " LEFT JOIN order_lines l ON l.order_id = o.order_id"
        " WHERE o.order_id = ? AND o.has_order = 1 ORDER BY l.line_no",
        (order_id,),
    ).fetchall()
    if not rows:
        return None
    return [
        HeldLine(str(sku), int(qty), int(price), int(off))
        for sku, qty, price, off in rows
        if sku is not None
    ]


ORDER_FOR_TRACKING = """
    SELECT order_id FROM orders
    WHERE order_id IN (SELECT order_id FROM order_tracking WHERE tracking = ?)
    ORDER BY placed_ts DESC LIMIT 1"""
"""The order a tracking number belongs to (any parcel of it; the latest placed of two)."""


ORDER_METHOD = "SELECT method FROM orders WHERE order_id = ? AND has_order = 1"
"""How a placed order is fulfilled (``ship``, ``bopis``, ``ship_from_store``); no row when
it is not placed yet.  A feed whose step names no method (Square's fulfillment updates)
reads its states by it."""


def as_method(value: object) -> Method | None:
    """A stored method column as a :data:`~store.model.Method` (None when it is not one)."""
    for method in METHODS:
        if value == method:
            return method
    return None
