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
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

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


_LINES = """
    SELECT l.sku, COALESCE(l.sales_location, o.location_id, ?), COALESCE(l.sales_category,
           (SELECT k.category FROM skus k WHERE k.sku = l.sku), '-'), o.channel,
           o.placed_ts / 3600, l.quantity, l.quantity * l.unit_price_cents - l.discount_cents
    FROM orders o INDEXED BY {index} CROSS JOIN order_lines l ON l.order_id = o.order_id
"""


def sales_lines(db: sqlite3.Connection, t: int, first_hour: int) -> list[SalesLine]:
    """Lines to add to the closed roll-up hours ``[first_hour, t's hour)`` to get ``t``.

    The current hour's orders placed by ``t`` and not cancelled by ``t``, and the orders
    placed in ``[first_hour, t's hour)`` cancelled after ``t``.
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
    return [SalesLine(*row) for row in rows]


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
    the writer applies, replayed to ``t``.
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
