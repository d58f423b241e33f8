"""The routing function: rules in order, splits, fallbacks, carriers (see :mod:`rules.routing`).

:func:`route` decides one order; :func:`route_sequence` routes many, each seeing the
reservations of those before it (ingest and the what-if both go through it).  Pure: no
I/O, no clock; ``now`` is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Literal

from rules.geo import zone
from rules.routing.candidates import (
    NO_SLOT,
    WINDOW_REASONS,
    Network,
    NodeCandidate,
    RouteContext,
    describe_loss,
    effective_buffer,
    evaluate_entry,
    fmt_km,
    label_holds,
    network,
    rank_key,
    why_not_matched,
)
from rules.routing.config import DEFAULT_RULES, CarrierRule, FulfillmentRouting, RoutingRule
from rules.routing.orders import (
    Alternative,
    Candidate,
    Decision,
    FallbackUsed,
    Inventory,
    LineRoute,
    Reason,
    RouteOrder,
    RuleTrace,
    Shipment,
    Status,
    StockLevel,
    maker,
)
from store.model import LocationBody, Method, SkuBody

_NEW_CANDIDATE = maker(Candidate)
_NEW_RULE_TRACE = maker(RuleTrace)
_NEW_SHIPMENT = maker(Shipment)
_NEW_LINE_ROUTE = maker(LineRoute)
_NEW_DECISION = maker(Decision)
_NEW_ALTERNATIVE = maker(Alternative)

_EXCLUDED = ("wrong_kind", "disabled")
"""Reasons a node is no candidate at all under a rule (whatever the order)."""


@dataclass
class _Plan:
    picks: list[tuple[NodeCandidate, frozenset[int]]]
    trace: RuleTrace
    eligible: list[NodeCandidate]


def _try_rule(
    ctx: RouteContext, rule: RoutingRule, method: Method, relaxed: bool
) -> tuple[_Plan | None, RuleTrace]:
    """Filter, rank and allocate under one rule; the plan (or None) and its trace."""
    pickup = method == "bopis"
    origin = ctx.origin
    if pickup and ctx.order.location_id is not None:
        chosen_store = ctx.by_id.get(ctx.order.location_id)
        if chosen_store is not None:
            origin = (chosen_store.lat, chosen_store.lon)
    # Evaluation does not depend on ``relaxed``: the relaxed pass only filters differently.
    net = ctx.network or network(ctx.rules, ctx.nodes)
    entries = net.entries(rule, method, origin)
    key = (id(rule), method, origin)
    evaluated = ctx.evaluated.get(key)
    if evaluated is None:
        evaluated = [e.excluded or evaluate_entry(ctx, rule, e, method) for e in entries]
        ctx.evaluated[key] = evaluated
    all_lines = frozenset(range(len(ctx.order.lines)))
    max_nodes = 1 if pickup else rule.max_splits + 1

    def blocking(c: NodeCandidate) -> list[tuple[Reason, str]]:
        if relaxed:
            return [r for r in c.reasons if r[0] not in WINDOW_REASONS]
        return c.reasons

    if relaxed:
        pool = [c for c in evaluated if not blocking(c)]
    else:
        pool = [c for c in evaluated if not c.reasons]
    picks: list[tuple[NodeCandidate, frozenset[int]]] = []
    picked: set[int] = set()
    remaining = all_lines
    losses: dict[str, str] = {}
    failure: tuple[Reason, str] | None = None
    rank_by = rule.rank_by
    while remaining:
        options = [c for c in pool if c.fills & remaining and id(c) not in picked]
        if len(picks) + 1 >= max_nodes:
            whole = [c for c in options if remaining <= c.fills]
            if not whole:
                if options:
                    failure = (
                        "split_limit",
                        f"no node fills the remaining line(s) and max_splits is {max_nodes - 1}",
                    )
                break
            options = whole
        if not options:
            break
        if len(options) == 1:
            best = options[0]
        else:
            keyed = sorted(((rank_key(c, rank_by, remaining), c) for c in options), key=_first)
            best_key, best = keyed[0]
            for other_key, other in keyed[1:]:
                node_id = other.node.location_id
                if node_id not in losses:
                    losses[node_id] = describe_loss(
                        other, best, rank_by, remaining, keys=(other_key, best_key)
                    )
        taken = best.fills & remaining
        picks.append((best, taken))
        picked.add(id(best))
        remaining = remaining - taken
    ok = not remaining
    chosen = {id(p): t for p, t in picks} if ok else {}

    candidates: list[Candidate] = []
    for e, c in zip(entries, evaluated, strict=True):
        if c is e.excluded:
            # Wrong kind or disabled: the same entry for every order (from this origin).
            assert e.entry is not None
            candidates.append(e.entry)
            continue
        node_id = c.node.location_id
        block = blocking(c) if relaxed else c.reasons
        taken_here = chosen.get(id(c))
        if taken_here is not None:
            lines = sorted(taken_here)
            detail = f"chosen for line(s) {', '.join(str(n) for n in lines)}; {c.slot.detail}"
            candidates.append(_candidate(c, "chosen", None, detail))
        elif block:
            detail = "; ".join(text for _, text in block)
            candidates.append(_candidate(c, "rejected", block[0][0], detail))
        elif max_nodes == 1 and c.fills != all_lines:
            candidates.append(
                _candidate(c, "rejected", "no_stock", f"cannot fill everything: {c.stock_detail}")
            )
        else:
            detail = losses.get(node_id, "eligible, not needed")
            if c.reasons:  # only window reasons, relaxed away
                detail += f"; {c.slot.detail}"
            candidates.append(_candidate(c, "eligible", None, detail))

    if ok:
        names = ", ".join(p.node.location_id for p, _ in picks)
        trace = _NEW_RULE_TRACE(
            rule_id=rule.id,
            outcome="chosen",
            detail=f"routed to {names}" + (" (next window)" if relaxed else ""),
            relaxed=relaxed,
            method=method,
            candidates=candidates,
        )
        return _Plan(picks, trace, [c for c in pool if c.fills == all_lines]), trace
    if failure is not None:
        why = failure[1]
    elif not pool:
        why = "no eligible node"
    else:
        why = "the eligible nodes together cannot fill every line"
    trace = _NEW_RULE_TRACE(
        rule_id=rule.id,
        outcome="no_plan",
        detail=f"no plan: {why}",
        relaxed=relaxed,
        method=method,
        candidates=candidates,
    )
    return None, trace


def _first(pair: tuple[tuple[object, ...], NodeCandidate]) -> tuple[object, ...]:
    return pair[0]


def _candidate(
    c: NodeCandidate,
    outcome: Literal["chosen", "eligible", "rejected"],
    reason: Reason | None,
    detail: str,
) -> Candidate:
    return _NEW_CANDIDATE(
        location_id=c.node.location_id,
        kind=c.node.kind,
        outcome=outcome,
        reason=reason,
        detail=detail,
        distance_km=None if c.distance is None else round(c.distance, 2),
        at=None if c.slot is NO_SLOT else c.slot.at,
    )


def _carrier(
    ctx: RouteContext, node: LocationBody, line_nos: Iterable[int], method: Method
) -> tuple[str, CarrierRule | None, list[str]]:
    """The carrier for one shipment, the entry that chose it, and notes."""
    lines = [ctx.order.lines[n] for n in line_nos]
    skus = [ctx.stock.skus[line.sku] for line in lines]
    labels = ctx.labels(method) | {
        "node": node.location_id,
        "node_kind": node.kind,
        "node_region": node.region,
    }
    # Every line of the order in order (the usual single shipment): the order's own labels.
    whole = len(lines) == len(ctx.order.lines) and all(
        a is b for a, b in zip(lines, ctx.order.lines, strict=True)
    )
    line_labels = ctx.line_labels if whole else _line_labels(skus)
    hazmat = any(s.hazmat for s in skus)
    notes: list[str] = []
    net = ctx.network
    for entry in ctx.rules.carriers:
        matchers = entry.matchers if net is None else net.matchers(entry)
        if not all(label_holds(m, labels, line_labels) for m in matchers):
            continue
        if entry.air and hazmat and not ctx.rules.allow_air_for_hazmat:
            notes.append(f"{entry.carrier} skipped for {node.location_id}: no air for hazmat")
            continue
        return entry.carrier, entry, notes
    return ctx.rules.default_carrier, None, notes


def _line_labels(skus: Sequence[SkuBody]) -> dict[str, list[str]]:
    return {
        "category": [s.category for s in skus],
        "product_type": [s.product_type for s in skus],
        "sku": [s.sku for s in skus],
        "hazmat": ["true" if s.hazmat else "false" for s in skus],
    }


def _fmt_local(moment: datetime, node: LocationBody) -> str:
    return _local_stamp(moment, node.timezone)


@lru_cache(maxsize=4096)
def _local_stamp(moment: datetime, timezone: str) -> str:
    return moment.astimezone(zone(timezone)).strftime("%a %H:%M %Z")


def _decide(
    ctx: RouteContext,
    rule: RoutingRule,
    plan: _Plan,
    method: Method,
    fallback: FallbackUsed | None,
    traces: list[RuleTrace],
    notes: list[str],
    requested: Method,
) -> Decision:
    order = ctx.order
    shipments: list[Shipment] = []
    line_routes: dict[int, str] = {}
    for cand, taken in plan.picks:
        node = cand.node
        carrier: str | None = None
        deliver_by: datetime | None = None
        if method != "bopis":
            carrier, entry, carrier_notes = _carrier(ctx, node, sorted(taken), method)
            notes.extend(carrier_notes)
            if entry is not None and entry.transit_days is not None:
                deliver_by = cand.slot.at + timedelta(days=entry.transit_days)
        for n in taken:
            line_routes[n] = node.location_id
        shipments.append(
            _NEW_SHIPMENT(
                location_id=node.location_id,
                kind=node.kind,
                line_nos=sorted(taken),
                carrier=carrier,
                distance_km=None if cand.distance is None else round(cand.distance, 2),
                at=cand.slot.at,
                until=cand.slot.until,
                deliver_by=deliver_by,
            )
        )
    promised = max(s.at for s in shipments)
    late = order.promised_by is not None and promised > order.promised_by
    pickup_window: tuple[datetime, datetime] | None = None
    alternatives: list[Alternative] = []
    first = plan.picks[0][0]
    if method == "bopis":
        pickup_window = (first.slot.at, first.slot.until)
        others = [c for c in plan.eligible if c is not first]
        others.sort(key=lambda c: rank_key(c, rule.rank_by, frozenset(range(len(order.lines)))))
        alternatives = [
            _NEW_ALTERNATIVE(
                location_id=c.node.location_id,
                distance_km=None if c.distance is None else round(c.distance, 2),
                ready_at=c.slot.at,
                until=c.slot.until,
                same_day=c.slot.same_day,
            )
            for c in others[: ctx.rules.bopis_alternatives]
        ]
        summary = (
            f"pickup at {first.node.location_id} ({fmt_km(first.distance)}), "
            f"ready {_fmt_local(first.slot.at, first.node)} until "
            f"{_fmt_local(first.slot.until, first.node)}"
        )
    else:
        parts = [
            f"{s.location_id} ({fmt_km(s.distance_km)}, {s.carrier}, ships "
            f"{_fmt_local(s.at, ctx.by_id[s.location_id])})"
            for s in shipments
        ]
        summary = ("split: " if len(shipments) > 1 else "") + " + ".join(parts)
    prefix = {
        None: "",
        "next_pickup_window": "next window: ",
        "ship_to_home": "no pickup store; ship to home: ",
        "hold": "",
    }[fallback]
    summary = f"{prefix}{summary} [rule {rule.id}]" + (" LATE vs promise" if late else "")
    return _NEW_DECISION(
        order_id=order.order_id,
        status="routed",
        requested_method=requested,
        method=method,
        rule_id=rule.id,
        decided_for=ctx.now,
        lines=[
            _NEW_LINE_ROUTE(
                line_no=n,
                sku=line.sku,
                quantity=line.quantity,
                location_id=line_routes[n],
            )
            for n, line in enumerate(order.lines)
        ],
        shipments=shipments,
        carrier=shipments[0].carrier,
        promised_by=promised,
        late=late,
        fallback=fallback,
        pickup_window=pickup_window,
        alternatives=alternatives,
        summary=summary,
        notes=notes,
        trace=traces,
    )


def _run_rules(
    ctx: RouteContext, method: Method, traces: list[RuleTrace]
) -> tuple[RoutingRule, _Plan, FallbackUsed | None] | RoutingRule | None:
    """Try the rules in order for ``method``: a plan, the rule that held, or None."""
    rule_list = ctx.rules.rules or DEFAULT_RULES
    for rule in rule_list:
        if not rule.enabled:
            traces.append(
                _NEW_RULE_TRACE(
                    rule_id=rule.id, outcome="skipped", detail="disabled", method=method
                )
            )
            continue
        why = why_not_matched(rule, ctx, method)
        if why is not None:
            traces.append(
                _NEW_RULE_TRACE(rule_id=rule.id, outcome="not_matched", detail=why, method=method)
            )
            continue
        plan, trace = _try_rule(ctx, rule, method, relaxed=False)
        traces.append(trace)
        if plan is not None:
            return rule, plan, None
        if rule.fallback == "next_pickup_window" and rule.window != "any":
            plan, trace = _try_rule(ctx, rule, method, relaxed=True)
            traces.append(trace)
            if plan is not None:
                return rule, plan, "next_pickup_window"
        if rule.fallback == "hold":
            traces.append(
                _NEW_RULE_TRACE(
                    rule_id=rule.id,
                    outcome="held",
                    detail="fallback: hold",
                    method=method,
                )
            )
            return rule
    return None


def _context(
    order: RouteOrder,
    stock: Inventory,
    nodes: Sequence[LocationBody],
    rules: FulfillmentRouting,
    now: datetime,
    net: Network,
) -> RouteContext:
    origin, market = net.region(order.destination_region)
    skus = [stock.skus[line.sku] for line in order.lines]
    value = 0.0
    weight = 0.0
    for line, sku in zip(order.lines, skus, strict=True):
        price = line.unit_price if line.unit_price is not None else sku.price
        value += float(price) * line.quantity - float(line.discount)
        weight += sku.weight_kg * line.quantity
    return RouteContext(
        order=order,
        stock=stock,
        nodes=nodes,
        rules=rules,
        now=now,
        by_id=net.by_id,
        origin=origin,
        market=market,
        value=value,
        weight=weight,
        line_labels=_line_labels(skus),
        network=net,
    )


def _short_lines(
    order: RouteOrder, stock: Inventory, nodes: Sequence[LocationBody], rules: FulfillmentRouting
) -> list[str]:
    """Lines no single node can fill after buffers, whatever the rules (a line never splits)."""
    short: list[str] = []
    for line in order.lines:
        best = 0
        for node in nodes:
            level = stock.levels.get((line.sku, node.location_id))
            if level is not None:
                free = level.on_hand - level.reserved - effective_buffer(node, rules, None)
                best = max(best, free)
        if best < line.quantity:
            short.append(f"{line.sku}: no node has {line.quantity} after buffers (most: {best})")
    return short


def route(
    order: RouteOrder,
    stock: Inventory,
    nodes: Sequence[LocationBody],
    rules: FulfillmentRouting,
    now: datetime,
) -> Decision:
    """Decide where ``order`` is fulfilled from at ``now``; pure and deterministic.

    Args:
        order: The order (or cart) to route.
        stock: Catalogue, stock per SKU × node and today's load per node; not changed.
        nodes: Every fulfillment node; their order does not matter (ties break on id).
        rules: The ``[fulfillment]`` section in force.
        now: The moment to route for, timezone-aware (when replaying: when it was placed).

    Returns:
        The decision: node(s) per line, carrier, promised-by, and a trace of every rule
        and candidate node considered.
    """
    unknown = [line.sku for line in order.lines if line.sku not in stock.skus]
    if unknown:
        detail = f"unknown SKU(s): {', '.join(dict.fromkeys(unknown))}"
        return _unrouted(order, now, "unfulfillable", None, detail, [], [detail])
    net = network(rules, nodes)
    nodes = net.nodes
    ctx = _context(order, stock, nodes, rules, now, net)
    traces: list[RuleTrace] = []
    notes: list[str] = []
    outcome = _run_rules(ctx, order.method, traces)
    if isinstance(outcome, tuple):
        rule, plan, used = outcome
        return _decide(ctx, rule, plan, order.method, used, traces, notes, order.method)
    held_by = outcome.id if isinstance(outcome, RoutingRule) else None
    if outcome is None and order.method == "bopis" and rules.bopis_ship_to_home:
        notes.append("no store can take the pickup: offering ship to home")
        # Shipping has its own promise; the pickup's ready-by does not apply to it.
        home_order = order.model_copy(update={"promised_by": None, "location_id": None})
        home_ctx = replace(ctx, order=home_order, slots={}, evaluated={})
        home = _run_rules(home_ctx, "ship", traces)
        if isinstance(home, tuple):
            rule, plan, _ = home
            return _decide(home_ctx, rule, plan, "ship", "ship_to_home", traces, notes, "bopis")
        if isinstance(home, RoutingRule):
            held_by = home.id
    short = _short_lines(order, stock, nodes, rules)
    if short:
        return _unrouted(order, now, "unfulfillable", held_by, "; ".join(short), traces, notes)
    if held_by is not None:
        detail = f"held by rule {held_by} for a person to decide"
    elif not any(t.outcome not in ("skipped", "not_matched") for t in traces):
        detail = "held: no rule matched"
    else:
        detail = "held: stock exists but no rule could place the order"
    return _unrouted(order, now, "held", held_by, detail, traces, notes)


def _unrouted(
    order: RouteOrder,
    now: datetime,
    status: Status,
    rule_id: str | None,
    summary: str,
    traces: list[RuleTrace],
    notes: list[str],
) -> Decision:
    return _NEW_DECISION(
        order_id=order.order_id,
        status=status,
        requested_method=order.method,
        method=order.method,
        rule_id=rule_id,
        decided_for=now,
        lines=[
            _NEW_LINE_ROUTE(line_no=n, sku=line.sku, quantity=line.quantity, location_id=None)
            for n, line in enumerate(order.lines)
        ],
        shipments=[],
        carrier=None,
        promised_by=None,
        late=False,
        fallback="hold" if status == "held" else None,
        summary=summary,
        notes=notes,
        trace=traces,
    )


def reserve(
    levels: MutableMapping[tuple[str, str], StockLevel],
    load: MutableMapping[str, int],
    decision: Decision,
) -> None:
    """Apply a decision's reservations to working copies of stock levels and load."""
    if decision.status != "routed":
        return
    for line in decision.lines:
        if line.location_id is None:
            continue
        key = (line.sku, line.location_id)
        level = levels.get(key, StockLevel(0, 0))
        levels[key] = StockLevel(level.on_hand, level.reserved + line.quantity)
    for node in decision.nodes:
        load[node] = load.get(node, 0) + 1


def route_sequence(
    orders: Iterable[tuple[RouteOrder, datetime]],
    stock: Inventory,
    nodes: Sequence[LocationBody],
    rules: FulfillmentRouting,
    on_decision: Callable[[Decision], None] | None = None,
) -> list[Decision]:
    """Route orders one after another, each seeing the reservations of those before it.

    This is how ingest routes a batch and how the what-if replays a day: both call
    :func:`route` through here, so they cannot disagree.  ``stock`` is not changed (the
    function works on copies).
    """
    levels = dict(stock.levels)
    load = dict(stock.load)
    work = Inventory(skus=stock.skus, levels=levels, load=load)
    ordered_nodes = sorted(nodes, key=lambda n: n.location_id)
    decisions: list[Decision] = []
    for order, at in orders:
        decision = route(order, work, ordered_nodes, rules, at)
        reserve(levels, load, decision)
        decisions.append(decision)
        if on_decision is not None:
            on_decision(decision)
    return decisions
