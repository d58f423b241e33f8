"""Detail queries behind a panel row: one SKU × location's history, one node's late orders.

Run off the UI thread like the panels (the console asks through an injected callable).
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from store.apply import epoch
from store.asof import changed_after
from store.metrics import local_midnight, nodes_as_of
from store.snapshots import LateOrder, LateOrders, StockHistory

STEPS = (
    ("picked_up_ts", "picked up"),
    ("delivered_ts", "delivered"),
    ("ready_ts", "ready for pickup"),
    ("shipped_ts", "shipped"),
    ("packed_ts", "packed"),
    ("picked_ts", "picked"),
    ("released_ts", "released"),
)


def stock_history(
    db: sqlite3.Connection, sku: str, location_id: str, now: datetime, tz: str, days: int = 14
) -> StockHistory:
    """Units sold per local day and on hand at each day's end, for the last ``days`` days.

    On hand at a past moment is the current on hand minus every adjustment stamped after
    it (the adjustment log), so it is exact back to the latest count and an estimate
    before it if that count corrected the book.
    """
    zone = ZoneInfo(tz)
    t = epoch(now)
    today = now.astimezone(zone).date()
    starts = [
        epoch(local_midnight(today - timedelta(days=n), zone)) for n in range(days - 1, -1, -1)
    ]
    ends = [*starts[1:], t]
    row = db.execute(
        "SELECT on_hand FROM stock WHERE sku = ? AND location_id = ?", (sku, location_id)
    ).fetchone()
    on_hand_now = int(row[0]) if row else 0
    sold = []
    on_hand = []
    for start, end in zip(starts, ends, strict=True):
        units = db.execute(
            """SELECT COALESCE(SUM(units), 0) FROM sales_hourly
               WHERE sku = ? AND location_id = ? AND hour >= ? AND hour < ?""",
            (sku, location_id, start // 3600, -(-end // 3600)),
        ).fetchone()[0]
        later = db.execute(
            """SELECT COALESCE(SUM(delta), 0) FROM stock_adjustments
               WHERE sku = ? AND location_id = ? AND ts > ?""",
            (sku, location_id, end),
        ).fetchone()[0]
        sold.append(int(units))
        on_hand.append(on_hand_now - int(later))
    return StockHistory(
        sku=sku,
        location_id=location_id,
        day_starts=tuple(datetime.fromtimestamp(s, UTC) for s in starts),
        sold=tuple(sold),
        on_hand_end=tuple(on_hand),
    )


def late_orders(
    db: sqlite3.Connection, location_id: str, now: datetime, limit: int = 100
) -> LateOrders:
    """Open orders of a location past their promised-by as of ``now``, most late first."""
    t = epoch(now)
    columns = ", ".join(column for column, _ in STEPS)
    # As of a past moment, an order routed (or whose node a feed reported) only later is
    # at no node yet, as in the fulfillment panel.
    node = nodes_as_of(db, t, changed_after(db, t)[1])
    select = node(f"""SELECT order_id, channel, method, placed_ts, promised_ts, {columns}
                 FROM orders
                 WHERE COALESCE(location_id, fulfil_location_id, '-') = ? AND has_order = 1
                   AND +placed_ts <= ? AND promised_ts < ?""")
    # Open as of t, through the done_ts index: still open, or done only after t.
    rows = db.execute(
        f"""{select} AND done_ts IS NULL
            UNION ALL
            {select} AND done_ts > ?
            ORDER BY 5, 1""",
        (location_id, t, t, location_id, t, t, t),
    ).fetchall()
    orders = []
    for order_id, channel, method, placed, promised, *steps in rows[:limit]:
        reached = [name for (_, name), ts in zip(STEPS, steps, strict=True) if ts and ts <= t]
        orders.append(
            LateOrder(
                order_id=order_id,
                channel=channel or "-",
                method=method or "-",
                placed_at=datetime.fromtimestamp(placed, UTC),
                promised_by=datetime.fromtimestamp(promised, UTC),
                minutes_late=(t - promised) / 60,
                last_step=reached[0] if reached else "placed",
            )
        )
    return LateOrders(location_id=location_id, orders=tuple(orders), total=len(rows))
