"""Routing against the store: load the router's inputs, persist decisions and reservations.

Every function here is blocking :mod:`sqlite3` (run it on the writer's connection thread,
in ``asyncio.to_thread`` or in a console worker), and the routing itself is
:func:`rules.routing.router.route_sequence`, the one code path ingest, the HTTP check and the
what-if share.

* :func:`route_pending_orders` (writer connection): routes every placed order that has no
  node, no decision and no cancellation, in placement order; stores each decision and
  reserves its units (``stock.reserved`` += quantity at the chosen node) in one short
  ``BEGIN IMMEDIATE`` transaction.  Idempotent: an order is routed once.
* :func:`release_reservations` (writer connection): gives reserved units back when an
  order ships, is picked up or is cancelled.
* an ``order.edited`` that changes a routed order's lines moves its reservations with
  them (:func:`store.reservations.follow_lines`, from :func:`routing_after_batch`).
* :func:`load_inventory`, :func:`load_nodes`: the router's inputs for a set of SKUs.
* :func:`load_decision`, :func:`list_decisions`: stored decisions ("why did it go there?",
  routing exceptions).
* :func:`load_replay`, :func:`what_if_on_store`: the what-if's inputs and report.
* :class:`StoreRoutingSource`: thread-safe read access for the HTTP endpoint and the
  console's routing view (inputs, stored decisions, what-if).

"Today" (for remaining daily capacity) starts at local midnight in the store's zone
(``metrics.timezone``); a node's load is the number of orders routed to it since then.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from rules.geo import zone
from rules.routing.config import FulfillmentRouting
from rules.routing.orders import Decision, Inventory, RouteLine, RouteOrder, StockLevel
from rules.routing.router import route_sequence
from rules.whatif import ReplayInputs, WhatIfReport, what_if
from store.apply import assign_node
from store.model import (
    FulfillmentUpdated,
    LocationBody,
    OpeningHours,
    OrderCancelled,
    OrderEdited,
    OrderPlaced,
    SkuBody,
)
from store.reservations import EditedLines, edited_and_held, edited_lines, follow_lines
from store.risk import MetricParams
from store.routing_schema import NODES_VERSION_KEY
from store.writer import AfterCommit

DEFAULT_TIMEZONE = "America/New_York"

_CHUNK = 500

_monotonic = time.monotonic
"""The clock of the node-load count's age (a module attribute: tests drive it)."""


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def day_start(now: datetime, timezone: str = DEFAULT_TIMEZONE) -> datetime:
    """Local midnight of ``now``'s day in ``timezone``, in UTC (the start of "today")."""
    local = now.astimezone(zone(timezone)).date()
    return datetime(local.year, local.month, local.day, tzinfo=zone(timezone)).astimezone(UTC)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- inputs -------------------------------------------------------------------------------


def load_nodes(db: sqlite3.Connection) -> list[LocationBody]:
    """Every fulfillment node of the store, by id."""
    rows = db.execute(
        "SELECT location_id, name, kind, region, lat, lon, timezone, opens, closes, cutoff,"
        " safety_buffer FROM locations ORDER BY location_id"
    ).fetchall()
    return [
        LocationBody(
            location_id=r[0],
            name=r[1],
            kind=r[2],
            region=r[3],
            lat=r[4],
            lon=r[5],
            timezone=r[6],
            hours=OpeningHours(opens=r[7], closes=r[8], cutoff=r[9]),
            safety_buffer=r[10],
        )
        for r in rows
    ]


def _sku_rows(db: sqlite3.Connection, skus: Collection[str] | None) -> list[Any]:
    sql = (
        "SELECT sku, name, category, product_type, unit_cost_cents, price_cents, reorder_point,"
        " lead_time_days, hazmat, weight_kg FROM skus"
    )
    if skus is None:
        return db.execute(sql).fetchall()
    rows: list[Any] = []
    for chunk in _chunks(sorted(set(skus))):
        marks = ",".join("?" * len(chunk))
        rows.extend(db.execute(f"{sql} WHERE sku IN ({marks})", tuple(chunk)).fetchall())
    return rows


def load_skus(db: sqlite3.Connection, skus: Collection[str] | None = None) -> dict[str, SkuBody]:
    """Catalogue records of ``skus`` (every SKU when None); unknown SKUs are left out."""
    return {str(r[0]): _sku_body(r) for r in _sku_rows(db, skus)}


def _sku_body(r: Sequence[Any]) -> SkuBody:
    """A catalogue record from a ``skus`` row (the columns of :func:`_sku_rows`)."""
    return SkuBody.model_construct(
        sku=r[0],
        name=r[1],
        category=r[2],
        product_type=r[3],
        unit_cost=Decimal(int(r[4])) / 100,
        price=Decimal(int(r[5])) / 100,
        reorder_point=r[6],
        lead_time_days=r[7],
        hazmat=bool(r[8]),
        weight_kg=r[9],
    )


def load_levels(
    db: sqlite3.Connection, skus: Collection[str] | None = None, *, as_of: datetime | None = None
) -> dict[tuple[str, str], StockLevel]:
    """Stock of ``skus`` (every SKU when None) at every node.

    With ``as_of``, on-hand is wound back to that moment: adjustments stamped after it
    (and after the pair's last count) are taken off again.
    """
    base = "SELECT s.sku, s.location_id, s.on_hand, s.reserved"
    if as_of is not None:
        base += (
            ", (SELECT COALESCE(SUM(a.delta), 0) FROM stock_adjustments a"
            " WHERE a.sku = s.sku AND a.location_id = s.location_id"
            " AND a.ts > MAX(?, s.as_of_ts))"
        )
    else:
        base += ", 0"
    base += " FROM stock s"
    params: list[object] = [] if as_of is None else [_epoch(as_of)]
    rows: list[Any] = []
    if skus is None:
        rows = db.execute(base, params).fetchall()
    else:
        for chunk in _chunks(sorted(set(skus))):
            marks = ",".join("?" * len(chunk))
            rows.extend(
                db.execute(f"{base} WHERE s.sku IN ({marks})", [*params, *chunk]).fetchall()
            )
    return {(str(r[0]), str(r[1])): StockLevel(int(r[2]) - int(r[4]), int(r[3])) for r in rows}


def load_node_load(
    db: sqlite3.Connection, since: datetime, until: datetime | None = None
) -> dict[str, int]:
    """Orders routed to each node for moments in ``[since, until)`` (a split counts at each)."""
    # Single-node decisions (nearly all) are counted from the covering index; only split
    # ones need their JSON node list.
    bounds = "d.status = 'routed' AND d.routed_for >= ?"
    params: list[object] = [_epoch(since)]
    if until is not None:
        bounds += " AND d.routed_for < ?"
        params.append(_epoch(until))
    rows = db.execute(
        f"SELECT d.location_id, COUNT(*) FROM routing_decisions d WHERE {bounds}"
        " AND d.splits = 0 GROUP BY d.location_id"
        " UNION ALL"
        f" SELECT j.value, COUNT(*) FROM routing_decisions d, json_each(d.nodes) j WHERE {bounds}"
        " AND d.splits > 0 GROUP BY j.value",
        params + params,
    ).fetchall()
    load: dict[str, int] = {}
    for node, count in rows:
        load[str(node)] = load.get(str(node), 0) + int(count)
    return load


def load_inventory(
    db: sqlite3.Connection,
    skus: Collection[str] | None,
    now: datetime,
    *,
    timezone: str = DEFAULT_TIMEZONE,
) -> Inventory:
    """The router's stock view for ``skus``: catalogue, levels, load since local midnight."""
    return Inventory(
        skus=load_skus(db, skus),
        levels=load_levels(db, skus),
        load=load_node_load(db, day_start(now, timezone)),
    )


# -- pending orders -----------------------------------------------------------------------


Timed = tuple[RouteOrder, datetime]
"""An order and the moment it was placed."""


def _orders(db: sqlite3.Connection, where: str, params: Sequence[object]) -> list[Timed]:
    """Orders (with their lines) selected by ``where`` on ``orders o``, by placement."""
    rows = db.execute(
        "SELECT o.order_id, o.channel, o.method, o.destination_region, o.location_id,"
        f" o.placed_ts, o.promised_ts FROM orders o WHERE {where}"
        " ORDER BY o.placed_ts, o.order_id",
        params,
    ).fetchall()
    if not rows:
        return []
    lines: dict[str, list[RouteLine]] = {}
    ids = [str(r[0]) for r in rows]
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for order_id, sku, qty, price, discount in db.execute(
            "SELECT order_id, sku, quantity, unit_price_cents, discount_cents FROM order_lines"
            f" WHERE order_id IN ({marks}) ORDER BY order_id, line_no",
            tuple(chunk),
        ):
            lines.setdefault(order_id, []).append(
                RouteLine.model_construct(
                    sku=sku,
                    quantity=qty,
                    unit_price=Decimal(price) / 100,
                    discount=Decimal(discount) / 100,
                )
            )
    out: list[Timed] = []
    for order_id, channel, method, region, location, placed, promised in rows:
        if order_id not in lines:
            continue  # an order without lines cannot exist; skip rather than fail
        order = RouteOrder.model_construct(
            order_id=order_id,
            channel=channel,
            method=method,
            destination_region=region,
            location_id=location if method == "bopis" else None,
            promised_by=None if promised is None else _utc(promised),
            lines=lines[order_id],
        )
        out.append((order, _utc(placed)))
    return out


def save_decisions(
    db: sqlite3.Connection, decisions: Iterable[Decision], decided_at: datetime
) -> int:
    """Store decisions and reserve their units; call inside a write transaction.

    A decision replaces an earlier one for the same order (its reservations are
    released first).  Returns the number of units reserved.
    """
    now = _epoch(decided_at)
    units = 0
    for d in decisions:
        release_reservations(db, [d.order_id], decided_at, transaction=False)
        db.execute(
            "INSERT OR REPLACE INTO routing_decisions (order_id, decided_at, routed_for, status,"
            " rule_id, method, location_id, nodes, splits, carrier, promised_ts, late, fallback,"
            " summary, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                d.order_id,
                now,
                _epoch(d.decided_for),
                d.status,
                d.rule_id,
                d.method,
                d.nodes[0] if d.nodes else None,
                json.dumps(d.nodes),
                d.splits,
                d.carrier,
                None if d.promised_by is None else _epoch(d.promised_by),
                int(d.late),
                d.fallback,
                d.summary,
                d.model_dump_json(),
            ),
        )
        if d.status != "routed":
            continue
        for line in d.lines:
            if line.location_id is None:
                continue
            db.execute(
                "INSERT OR REPLACE INTO routing_reservations (order_id, line_no, sku, location_id,"
                " quantity, reserved_at, released_at) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (d.order_id, line.line_no, line.sku, line.location_id, line.quantity, now),
            )
            db.execute(
                "UPDATE stock SET reserved = reserved + ? WHERE sku = ? AND location_id = ?",
                (line.quantity, line.sku, line.location_id),
            )
            units += line.quantity
        # After the reservations: the stock-risk flags it refreshes see the reserved units.
        assign_node(
            db,
            d.order_id,
            [(line.line_no, line.location_id) for line in d.lines if line.location_id],
            MetricParams(),
        )
    return units


def release_reservations(
    db: sqlite3.Connection,
    order_ids: Iterable[str],
    at: datetime,
    *,
    transaction: bool = True,
) -> int:
    """Give back the units reserved for ``order_ids`` (shipped, picked up or cancelled).

    Idempotent: units already released are not released twice.  ``stock.reserved`` never
    goes below zero (a stock count may have replaced it meanwhile).  Returns units released.
    """
    ids = list(order_ids)
    if not ids:
        return 0
    if transaction:
        db.execute("BEGIN IMMEDIATE")
    try:
        released = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                "SELECT order_id, line_no, sku, location_id, quantity FROM routing_reservations"
                f" WHERE released_at IS NULL AND order_id IN ({marks})",
                tuple(chunk),
            ).fetchall()
            for order_id, line_no, sku, location_id, quantity in rows:
                db.execute(
                    "UPDATE stock SET reserved = MAX(0, reserved - ?)"
                    " WHERE sku = ? AND location_id = ?",
                    (quantity, sku, location_id),
                )
                db.execute(
                    "UPDATE routing_reservations SET released_at = ?"
                    " WHERE order_id = ? AND line_no = ?",
                    (_epoch(at), order_id, line_no),
                )
                released += int(quantity)
        if transaction:
            db.execute("COMMIT")
    except BaseException:
        if transaction:
            db.execute("ROLLBACK")
        raise
    return released


def route_pending_orders(
    db: sqlite3.Connection,
    rules: FulfillmentRouting,
    *,
    decided_at: datetime,
    now: datetime | None = None,
    order_ids: Collection[str] | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    transaction: bool = True,
) -> list[Decision]:
    """Route, store and reserve every placed order that has no node and no decision yet.

    Call it on the writer's connection after a batch with ``order.placed`` events
    commits.  Orders are routed in placement order, each for ``max(placed, now)``
    (``now=None``: at its placement, right for ingest and replay; the live ``serve``
    passes its clock so a backlog is not routed into the past).

    Args:
        db: The writer connection (autocommit mode; this opens ``BEGIN IMMEDIATE``
            unless ``transaction`` is False because the caller holds one).
        rules: The ``[fulfillment]`` rules in force.
        decided_at: Wall time written as ``decided_at``.
        now: See above.
        order_ids: Only consider these orders (e.g. the batch's); None = all pending.
        timezone: The store's zone, for "today" in remaining capacity.
        transaction: Open (and commit) a transaction here.

    Returns:
        The decisions stored, in routing order.
    """
    if transaction:
        db.execute("BEGIN IMMEDIATE")
    try:
        where = (
            "o.has_order = 1 AND o.location_id IS NULL AND o.cancelled_ts IS NULL"
            " AND o.done_ts IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM routing_decisions d WHERE d.order_id = o.order_id)"
        )
        orders: list[Timed] = []
        if order_ids is not None:
            for chunk in _chunks(sorted(set(order_ids))):
                marks = ",".join("?" * len(chunk))
                orders.extend(_orders(db, f"{where} AND o.order_id IN ({marks})", list(chunk)))
            orders.sort(key=lambda t: (t[1], t[0].order_id))
        else:
            orders = _orders(db, where, [])
        decisions: list[Decision] = []
        if orders:
            timed = [(o, placed if now is None else max(placed, now)) for o, placed in orders]
            skus = {line.sku for o, _ in orders for line in o.lines}
            inventory = load_inventory(db, skus, timed[0][1], timezone=timezone)
            nodes = load_nodes(db)
            decisions = route_sequence(timed, inventory, nodes, rules)
            save_decisions(db, decisions, decided_at)
        if transaction:
            db.execute("COMMIT")
    except BaseException:
        if transaction:
            db.execute("ROLLBACK")
        raise
    return decisions


RELEASING_STEPS = frozenset({"shipped", "ready_for_pickup", "picked_up", "delivered"})
"""Fulfillment steps after which an order's reserved units are no longer held back."""


def routing_after_batch(
    db: sqlite3.Connection,
    items: Sequence[object],
    rules: FulfillmentRouting,
    *,
    decided_at: datetime,
    now: datetime | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    also_follow: Collection[str] = (),
) -> list[Decision]:
    """The writer's hook after a committed batch: route new orders, follow edits, release.

    * every ``order.placed`` in ``items`` that arrived without a node is routed, stored and
      reserved (:func:`route_pending_orders`, only those order ids);
    * every order an ``order.edited`` of the batch names (and ``also_follow``'s) holds
      what its current lines say at its nodes (:func:`store.reservations.follow_lines`:
      a line removed or reduced gives units back, one added or increased holds them; an
      edit the store did not apply, being older than the order's latest, changes nothing);
    * every order the batch shipped, made ready, handed over or cancelled gives its
      reserved units back (:func:`release_reservations`).

    All are idempotent, so duplicates and re-deliveries are harmless.  Runs in one
    ``BEGIN IMMEDIATE`` transaction on the writer connection.
    """
    placed: list[str] = []
    done: list[str] = []
    edited: set[str] = set(also_follow)
    edited_ts = 0
    for i in items:  # one pass: a bulk batch is thousands of items, most of other types
        if isinstance(i, FulfillmentUpdated):
            if i.body.status in RELEASING_STEPS:
                done.append(i.body.order_id)
        elif isinstance(i, OrderPlaced):
            if i.body.location_id is None:
                placed.append(i.body.order_id)
        elif isinstance(i, OrderCancelled):
            done.append(i.body.order_id)
        elif isinstance(i, OrderEdited):
            edited.add(i.body.order_id)
            edited_ts = max(edited_ts, _epoch(i.ts))
    if not placed and not done and not edited:
        return []
    db.execute("BEGIN IMMEDIATE")
    try:
        decisions: list[Decision] = []
        if placed:
            decisions = route_pending_orders(
                db,
                rules,
                decided_at=decided_at,
                now=now,
                order_ids=placed,
                timezone=timezone,
                transaction=False,
            )
        if edited:
            follow_lines(db, edited, _epoch(decided_at), risk_at=edited_ts or None)
        if done:
            release_reservations(db, done, decided_at, transaction=False)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return decisions


# -- stored decisions ---------------------------------------------------------------------


def load_decision(db: sqlite3.Connection, order_id: str) -> Decision | None:
    """The stored decision (with its trace) for ``order_id``, or None."""
    row = db.execute(
        "SELECT decision FROM routing_decisions WHERE order_id = ?", (order_id,)
    ).fetchone()
    return None if row is None else Decision.model_validate_json(row[0])


DecisionStatus = Literal["routed", "held", "unfulfillable"]


def list_decisions(
    db: sqlite3.Connection,
    *,
    status: Collection[DecisionStatus] | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[tuple[str, str, str | None, str]]:
    """Recent decisions as ``(order_id, status, routed-to node, summary)``, newest first.

    ``status=("held", "unfulfillable")`` lists the routing exceptions.
    """
    sql = "SELECT order_id, status, location_id, summary FROM routing_decisions WHERE 1 = 1"
    params: list[object] = []
    if status is not None:
        wanted = list(status)
        sql += f" AND status IN ({','.join('?' * len(wanted))})"
        params.extend(wanted)
    if since is not None:
        sql += " AND routed_for >= ?"
        params.append(_epoch(since))
    sql += " ORDER BY routed_for DESC, order_id LIMIT ?"
    params.append(limit)
    return [(str(a), str(b), c, str(d)) for a, b, c, d in db.execute(sql, params)]


# -- what-if ------------------------------------------------------------------------------


def load_replay(
    db: sqlite3.Connection,
    *,
    since: datetime,
    until: datetime,
    limit: int | None = None,
    include_assigned: bool = False,
    timezone: str = DEFAULT_TIMEZONE,
) -> ReplayInputs:
    """The orders placed in ``[since, until)`` and the state before the first of them.

    Orders: placed, not from a point-of-sale channel, by placement; the last ``limit``
    when given.  Unless ``include_assigned``, only orders the router decides (those that
    arrived without a node); with it, channel-assigned orders are replayed too (their
    node is decided anew; a BOPIS order keeps its pickup store as the centre).

    Starting state: stock wound back to the first order's placement (adjustments after
    it are taken off; purchase receipts during the window are not replayed), reserved
    units minus those the replayed orders' decisions hold, and the load of orders routed
    earlier that day.
    """
    where = (
        "o.has_order = 1 AND o.placed_ts >= ? AND o.placed_ts < ?"
        " AND COALESCE((SELECT kind FROM channels c WHERE c.channel_id = o.channel), '') != 'pos'"
    )
    if not include_assigned:
        where += " AND o.location_id IS NULL"
    orders = _orders(db, where, [_epoch(since), _epoch(until)])
    if limit is not None:
        orders = orders[-limit:] if limit > 0 else []
    nodes = load_nodes(db)
    start = orders[0][1] if orders else since
    skus = {line.sku for o, _ in orders for line in o.lines}
    levels = load_levels(db, skus, as_of=start)
    held: dict[tuple[str, str], int] = {}
    ids = [o.order_id for o, _ in orders]
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for sku, loc, qty in db.execute(
            "SELECT sku, location_id, SUM(quantity) FROM routing_reservations"
            f" WHERE released_at IS NULL AND order_id IN ({marks}) GROUP BY sku, location_id",
            tuple(chunk),
        ):
            held[(sku, loc)] = int(qty)
    for key, qty in held.items():
        level = levels.get(key)
        if level is not None:
            levels[key] = StockLevel(level.on_hand, max(0, level.reserved - qty))
    inventory = Inventory(
        skus=load_skus(db, skus),
        levels=levels,
        load=load_node_load(db, day_start(start, timezone), start),
    )
    return ReplayInputs(orders=orders, inventory=inventory, nodes=nodes)


def what_if_on_store(
    db: sqlite3.Connection,
    current: FulfillmentRouting,
    draft: FulfillmentRouting,
    *,
    now: datetime,
    since: datetime | None = None,
    limit: int | None = None,
    include_assigned: bool = False,
    timezone: str = DEFAULT_TIMEZONE,
) -> WhatIfReport:
    """Replay the orders since ``since`` (default: local midnight) up to ``now`` both ways.

    When no order of the window was the router's to decide (every one arrived with its
    node: a shop that assigns locations itself, the demo's fixture day), the orders
    assigned by their channels are replayed instead, each routed anew, so the what-if
    still says what the draft would change; the report says so (``assigned_too``).
    """
    window = {"since": since or day_start(now, timezone), "until": now + timedelta(seconds=1)}
    inputs = load_replay(
        db, **window, limit=limit, include_assigned=include_assigned, timezone=timezone
    )
    if not inputs.orders and not include_assigned:
        inputs = load_replay(db, **window, limit=limit, include_assigned=True, timezone=timezone)
        if inputs.orders:
            return replace(what_if(inputs, current, draft), assigned_too=True)
    return what_if(inputs, current, draft)


# -- read access for the HTTP endpoint ----------------------------------------------------


class WouldBlock(Exception):
    """:meth:`StoreRoutingSource.inputs` with ``wait=False`` would have to wait.

    The store is busy (a lock) or today's node load is due for its (longer) recount: ask
    again with ``wait=True`` from a worker thread.
    """


_INPUTS_SQL = (
    "SELECT k.sku, k.name, k.category, k.product_type, k.unit_cost_cents, k.price_cents,"
    " k.reorder_point, k.lead_time_days, k.hazmat, k.weight_kg,"
    " (SELECT json_group_array(json_array(s.location_id, s.on_hand, s.reserved))"
    " FROM stock s WHERE s.sku = k.sku),"
    f" (SELECT value FROM meta WHERE key = '{NODES_VERSION_KEY}')"
    " FROM skus k WHERE k.sku IN ({marks})"
)
"""One statement (so one snapshot) for a cart: its SKUs' records, their stock at every node
(one JSON array per SKU: a row per SKU instead of one per SKU and node, fewer Python objects)
and the locations counter."""


_SKUS_KEPT = 20_000
"""SKUs the source keeps at most (it starts over when full)."""

_Kept = tuple[
    tuple[int, int], SkuBody | None, tuple[tuple[tuple[str, str], StockLevel], ...], Any, Any
]
"""What a source keeps of one SKU: the (connection, ``data_version``) it was read at, its
record (None: not in the catalogue), its stock levels, and the raw row and stock text
they came from (a row read again unchanged reuses them)."""


class StoreRoutingSource:
    """Thread-safe read access to a store file for routing checks (one connection per thread).

    Used by the ``POST /route`` handler; :meth:`close` closes every connection it opened.
    What does not change between requests is kept: the nodes (one list object until
    ``meta.locations_version`` moves), each SKU's catalogue record and stock levels
    (rebuilt only when its row or its stock differ), and today's node load (for
    ``load_ttl`` seconds, recounted in a background thread past half of that).  Per
    request, ``PRAGMA data_version`` (it moves with every commit of another connection,
    e.g. the writer's): while it stands and every SKU of the cart was read at it, nothing
    more is read; otherwise one statement reads the cart's SKUs, their stock at every node
    and the locations counter.
    """

    def __init__(
        self, path: Path, *, timezone: str = DEFAULT_TIMEZONE, load_ttl: float = 1.0
    ) -> None:
        """Read the store at ``path``; "today" is local midnight in ``timezone``.

        ``load_ttl``: seconds a node-load count is reused across requests (it is the one
        query that grows with the day's orders; a check that reserves nothing can be a
        second behind).  0 disables the cache.
        """
        self.path = Path(path)
        self.timezone = timezone
        self.load_ttl = load_ttl
        self._load_cache: tuple[datetime, float, dict[str, int]] | None = None
        self._nodes_cache: tuple[str, list[LocationBody]] | None = None
        self._kept: dict[str, _Kept] = {}
        self._nodes_seen: tuple[tuple[int, int], list[LocationBody]] | None = None
        self._since: datetime | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        self._recounter: ThreadPoolExecutor | None = None
        self._recounting = False

    def _db(self, wait: bool = True) -> sqlite3.Connection:
        local = self._local
        db: sqlite3.Connection | None = getattr(local, "db", None)
        if db is None:
            if not self.path.exists():
                raise FileNotFoundError(f"{self.path}: no such store")
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA query_only = 1")
            local.db = db
            local.wait = None
            with self._lock:
                self._all.append(db)
        if local.wait is not wait:
            # wait=False (the event loop's thread): a lock is answered at once, not waited for.
            db.execute(f"PRAGMA busy_timeout = {5000 if wait else 0}")
            local.wait = wait
        return db

    def _day_start(self, now: datetime) -> datetime:
        """:func:`day_start` of ``now``, kept for the current local day."""
        since = self._since
        # A local day lasts 23 to 25 hours: 22 hours from its start is surely the same day.
        if since is not None and since <= now < since + timedelta(hours=22):
            return since
        since = day_start(now, self.timezone)
        self._since = since
        return since

    def inputs(
        self, skus: Collection[str], now: datetime, *, wait: bool = True
    ) -> tuple[Inventory, list[LocationBody]]:
        """Stock view of ``skus`` and the nodes at ``now``, from one read snapshot.

        With ``wait=False`` (the event loop's own thread) it never waits: it raises
        :class:`WouldBlock` when the store is locked or today's load needs its recount.
        """
        load = self._load(self._day_start(now), wait)
        db = self._db(wait)
        wanted = sorted(set(skus))
        try:
            # Bumped by every commit of another connection: while it stands, what this
            # connection read is still what the file holds (a cache on the store's version).
            tag = (id(db), db.execute("PRAGMA data_version").fetchone()[0])
            kept = self._kept
            hits = [kept.get(sku) for sku in wanted]
            seen = self._nodes_seen
            if (
                seen is not None
                and seen[0] == tag
                and all(h is not None and h[0] == tag for h in hits)
            ):
                nodes = seen[1]
                rows = None
            elif len(wanted) > _CHUNK:  # a huge cart: several statements in one snapshot
                db.execute("BEGIN")
                try:
                    rows = [
                        row
                        for chunk in _chunks(wanted)
                        for row in db.execute(
                            _INPUTS_SQL.format(marks=",".join("?" * len(chunk))), chunk
                        )
                    ]
                    nodes = self._nodes(db, None if not rows else rows[0][11])
                finally:
                    db.execute("COMMIT")
            else:
                rows = db.execute(
                    _INPUTS_SQL.format(marks=",".join("?" * len(wanted))), wanted
                ).fetchall()
                nodes = self._nodes(db, rows[0][11] if rows else None)
        except sqlite3.OperationalError as exc:
            if not wait and "locked" in str(exc):
                raise WouldBlock(str(exc)) from exc
            raise
        bodies: dict[str, SkuBody] = {}
        levels: dict[tuple[str, str], StockLevel] = {}
        if rows is None:
            for hit in hits:
                assert hit is not None
                if hit[1] is not None:
                    bodies[hit[1].sku] = hit[1]
                    levels.update(hit[2])
            return Inventory(skus=bodies, levels=levels, load=load), nodes
        if len(kept) + len(wanted) > _SKUS_KEPT:
            kept.clear()
        for row in rows:
            sku = row[0]
            record = row[:10]
            old = kept.get(sku)
            body = old[1] if old is not None and old[3] == record else None
            if body is None:
                body = _sku_body(record)
            if old is not None and old[4] == row[10]:
                items = old[2]  # the same stock text: the same levels
            else:
                items = tuple(
                    ((sku, location_id), StockLevel(on_hand, reserved))
                    for location_id, on_hand, reserved in json.loads(row[10])
                )
            kept[sku] = (tag, body, items, record, row[10])
            bodies[sku] = body
            levels.update(items)
        for sku in wanted:
            if sku not in bodies:
                kept[sku] = (tag, None, (), None, None)  # unknown (still unknown at this tag)
        self._nodes_seen = (tag, nodes)
        return Inventory(skus=bodies, levels=levels, load=load), nodes

    def _load(self, since: datetime, wait: bool) -> dict[str, int]:
        """Today's node load, counted at most ``load_ttl`` seconds ago (from ``since``).

        Past half its life a count is renewed in the background (:meth:`_recount`), so the
        loop normally never meets a stale one: a request that did would go to the worker
        thread, and while that recount ran every other request would follow it there (a
        stall of the whole loop once a second, the p99 of the endpoint).
        """
        cached = self._load_cache
        clock = _monotonic()
        if cached is not None and cached[0] == since and clock < cached[1]:
            if clock >= cached[1] - self.load_ttl / 2 and not self._recounting:
                self._recount_soon(since)
            return cached[2]
        if not wait:
            raise WouldBlock("node load due")
        started = _monotonic()
        load = load_node_load(self._db(), since)
        self._keep_load(since, started, load)
        return load

    def _keep_load(self, since: datetime, started: float, load: dict[str, int]) -> None:
        """Keep a count begun at ``started`` unless a later one (or a later day's) is kept."""
        with self._lock:
            cached = self._load_cache
            deadline = started + self.load_ttl
            if cached is None or since > cached[0] or (since == cached[0] and cached[1] < deadline):
                self._load_cache = (since, deadline, load)

    def _recount_soon(self, since: datetime) -> None:
        """Start a background recount of today's load (one at a time)."""
        with self._lock:
            if self._recounting:
                return
            self._recounting = True
            if self._recounter is None:
                self._recounter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="route-load")
            self._recounter.submit(self._recount, since)

    def _recount(self, since: datetime) -> None:
        """Count today's load on this (background) thread's connection and keep it.

        A failure (the store locked past the busy timeout, the file gone) is left for the
        next request past the count's deadline: it counts in the worker and answers why.
        """
        try:
            started = _monotonic()
            self._keep_load(since, started, load_node_load(self._db(), since))
        except (sqlite3.Error, OSError):
            pass
        finally:
            self._recounting = False

    def _nodes(self, db: sqlite3.Connection, version: object) -> list[LocationBody]:
        """The nodes, rebuilt only when ``meta.locations_version`` moved (same list object).

        ``version`` is the counter read in the caller's snapshot (None: not read), so the
        nodes and the stock come from one snapshot.  A store without the counter (older
        schema) is read anew.
        """
        if version is None:
            row = db.execute(
                "SELECT value FROM meta WHERE key = ?", (NODES_VERSION_KEY,)
            ).fetchone()
            if row is None:
                return load_nodes(db)
            version = row[0]
        key = str(version)
        cached = self._nodes_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        nodes = load_nodes(db)
        self._nodes_cache = (key, nodes)
        return nodes

    def decision(self, order_id: str) -> Decision | None:
        """The stored decision of ``order_id``."""
        return load_decision(self._db(), order_id)

    def edited_lines(self, order_id: str) -> EditedLines | None:
        """:func:`store.reservations.edited_lines` of ``order_id``, from one read snapshot."""
        db = self._db()
        db.execute("BEGIN")
        try:
            return edited_lines(db, order_id)
        finally:
            db.execute("COMMIT")

    def what_if(
        self,
        current: FulfillmentRouting,
        draft: FulfillmentRouting,
        now: datetime,
        *,
        limit: int | None = None,
    ) -> WhatIfReport:
        """Today's orders (up to ``now``) replayed under both rule sets, from one read."""
        db = self._db()
        db.execute("BEGIN")
        try:
            return what_if_on_store(
                db, current, draft, now=now, limit=limit, timezone=self.timezone
            )
        finally:
            db.execute("COMMIT")

    def close(self) -> None:
        """Close every connection opened (call once no request is running)."""
        with self._lock:
            recounter, self._recounter = self._recounter, None
        if recounter is not None:
            recounter.shutdown(wait=True)
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def router_hook(routing: Callable[[], FulfillmentRouting] = FulfillmentRouting) -> AfterCommit:
    """The writer's after-commit hook: route new orders with the rules ``routing()`` gives.

    ``routing`` is called once per batch, so a hot-reloaded rules file applies from the
    next batch on; the default is the built-in rules.  The hook's first batch also puts
    right the reservations of every edited order that still holds some
    (:func:`store.reservations.edited_and_held`: a store written before reservations
    followed edits; on any other store this changes nothing), so a restarted writer holds
    what the store's lines say.
    """
    started = False

    def hook(
        db: sqlite3.Connection,
        items: Sequence[object],
        *,
        decided_at: datetime,
        timezone: str,
    ) -> list[Decision]:
        nonlocal started
        also = () if started else edited_and_held(db)
        decisions = routing_after_batch(
            db, items, routing(), decided_at=decided_at, timezone=timezone, also_follow=also
        )
        started = True  # only once it went through: a failed batch tries again
        return decisions

    return hook
