"""When an order is fulfilled and done, as SQL over one ``orders`` row (see the README).

An order is *fulfilled* at its earliest finishing step: shipped, ready for pickup,
picked up or delivered.  An order whose lines are at several nodes (``line_nodes``, a
JSON array: a split, or lines of several sellers) is fulfilled once **every** node its
lines are at has reported a finishing step, at the latest of those nodes' earliest
reports, or earlier at a report that covers the whole order (one naming no node, or a
node none of its lines is at).  Each node's earliest finishing report is kept in
``node_fulfilled`` (``''`` for a report naming no node).  *Done* is fulfilled or
cancelled, whichever came first.

The expressions read the row's columns unqualified and ``orders.order_id`` /
``orders.line_nodes`` in their sub-queries: they fit ``UPDATE orders SET ...`` and an
upsert's ``DO UPDATE SET`` (where the columns are the row's values before the update).
Schema migration 22 uses them as they are written here.
"""

from __future__ import annotations

NEVER = 9_000_000_000_000_000_000
"""A time later than any: ``MIN`` over it and the real times ignores the missing ones."""

FINISHING_STATUSES = ("shipped", "ready_for_pickup", "picked_up", "delivered")
"""The fulfillment statuses that fulfil an order (at the node that reports them)."""

ONE_NODE_FULFILLED = f"""NULLIF(MIN(COALESCE(shipped_ts, {NEVER}), COALESCE(ready_ts, {NEVER}),
        COALESCE(picked_up_ts, {NEVER}), COALESCE(delivered_ts, {NEVER})), {NEVER})"""
"""Fulfilled time of an order at one node: its earliest finishing step."""

SPLIT_FULFILLED = f"""NULLIF(MIN(
        COALESCE((SELECT MIN(r.ts) FROM node_fulfilled r
                  WHERE r.order_id = orders.order_id
                    AND r.location_id NOT IN (SELECT value FROM json_each(orders.line_nodes))),
                 {NEVER}),
        COALESCE((SELECT CASE WHEN COUNT(r.ts) = COUNT(*) THEN MAX(r.ts) END
                  FROM json_each(orders.line_nodes) j
                  LEFT JOIN node_fulfilled r
                    ON r.order_id = orders.order_id AND r.location_id = j.value),
                 {NEVER})), {NEVER})"""
"""Fulfilled time of an order whose lines are at several nodes (see the module docstring)."""

FULFILLED_SQL = f"""(CASE WHEN line_nodes IS NULL
        OR NOT EXISTS (SELECT 1 FROM node_fulfilled n WHERE n.order_id = orders.order_id)
    THEN {ONE_NODE_FULFILLED} ELSE {SPLIT_FULFILLED} END)"""
"""``fulfilled_ts`` of the row.  A split order with no report kept (none yet, or a store
whose event log lost them) falls back to its step columns."""

DONE_SQL_EXPR = f"""NULLIF(MIN(COALESCE({FULFILLED_SQL}, {NEVER}),
        COALESCE(cancelled_ts, {NEVER})), {NEVER})"""
"""``done_ts`` of the row: fulfilled or cancelled, whichever came first."""
