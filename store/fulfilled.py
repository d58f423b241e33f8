"""When an order is fulfilled and done, as SQL over one ``orders`` row (see the README).

An order is *fulfilled* at its earliest finishing step: shipped, ready for pickup,
picked up or delivered.  An order whose lines are at several nodes (``line_nodes``, a
JSON array: a split, or lines of several sellers) is fulfilled once **every** node its
lines are at has reported a finishing step, at the latest of those nodes' earliest
reports, or earlier at a report that covers the whole order (one whose node is unknown,
or a node none of its lines is at).

``node_fulfilled`` keeps each order's earliest finishing report per reporting node, or,
for a report naming no node, per tracking number (``''`` when it has neither).  A report
naming no node is at the node of its parcel when one is known: the node the first report
of the same order with that tracking number named (``order_tracking.location_id``), so a
carrier's tracker of one parcel (EasyPost's carry no node) covers that parcel's node only,
whichever of the two reports came first.  *Done* is fulfilled or cancelled, whichever came
first.

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

REPORT_NODE = """(CASE WHEN r.location_id <> '' THEN r.location_id
        WHEN r.tracking <> '' THEN COALESCE((SELECT t.location_id FROM order_tracking t
                                             WHERE t.tracking = r.tracking
                                               AND t.order_id = r.order_id), '')
        ELSE '' END)"""
"""The node a ``node_fulfilled`` row ``r`` is at: its own, its parcel's, or ``''``."""

SPLIT_FULFILLED = f"""NULLIF(MIN(
        COALESCE((SELECT MIN(r.ts) FROM node_fulfilled r
                  WHERE r.order_id = orders.order_id
                    AND {REPORT_NODE} NOT IN (SELECT value FROM json_each(orders.line_nodes))),
                 {NEVER}),
        COALESCE((SELECT CASE WHEN COUNT(first) = COUNT(*) THEN MAX(first) END
                  FROM (SELECT (SELECT MIN(r.ts) FROM node_fulfilled r
                                WHERE r.order_id = orders.order_id
                                  AND {REPORT_NODE} = j.value) AS first
                        FROM json_each(orders.line_nodes) j)),
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
