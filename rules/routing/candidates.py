"""Eligibility and ranking of one node under one routing rule (steps 2 and 3 of routing).

:func:`evaluate_node` runs every eligibility filter on a node and records every reason it
fails; :func:`rank_key` and :func:`describe_loss` rank the eligible ones and say why one
lost.  Pure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from rules.geo import (
    ALWAYS_OPEN,
    Calendar,
    Slot,
    haversine_km,
    is_live_pickup,
    live_pickup,
    pickup_slot,
    ship_slot,
    slot_span,
)
from rules.matchers import Matcher
from rules.routing.config import (
    DEFAULT_PREP_MINUTES,
    DEFAULT_REGIONS,
    CarrierRule,
    Criterion,
    FulfillmentRouting,
    RoutingRule,
)
from rules.routing.orders import Candidate, Inventory, Reason, RouteOrder, maker
from store.model import LocationBody, Method

_NEW_CANDIDATE = maker(Candidate)


def resolve_region(
    code: str, rules: FulfillmentRouting, nodes: Sequence[LocationBody]
) -> tuple[tuple[float, float] | None, str]:
    """Coordinates and market of a destination region or postal code.

    Looks in ``rules.regions`` (exact, then the longest key that is a prefix of ``code``,
    so ``"100"`` covers ``"10001"``), then :data:`DEFAULT_REGIONS`, then the mean position
    of the nodes in that region.  The market defaults to the code itself.
    """
    info = rules.regions.get(code)
    if info is None:
        prefixes = [k for k in rules.regions if code.startswith(k)]
        if prefixes:
            info = rules.regions[max(prefixes, key=len)]
    if info is None:
        info = DEFAULT_REGIONS.get(code)
    if info is not None:
        return (info.lat, info.lon), info.market or code
    members = [n for n in nodes if n.region == code]
    if members:
        lat = sum(n.lat for n in members) / len(members)
        lon = sum(n.lon for n in members) / len(members)
        return (lat, lon), code
    return None, code


def node_market(node: LocationBody, rules: FulfillmentRouting) -> str:
    """The market of a node: its region's market, or the region itself."""
    info = rules.regions.get(node.region) or DEFAULT_REGIONS.get(node.region)
    return (info.market if info and info.market else None) or node.region


def effective_buffer(
    node: LocationBody, rules: FulfillmentRouting, rule: RoutingRule | None
) -> int:
    """Units held back at ``node``: max(its own buffer, its kind's buffer under the rule)."""
    kind_buffer = rules.buffers.get(node.kind, 0)
    if rule is not None and node.kind in rule.buffers:
        kind_buffer = rule.buffers[node.kind]
    return max(node.safety_buffer, kind_buffer)


def fmt_km(km: float | None) -> str:
    """A distance as shown in traces (``12 km``, ``3.4 km``, ``? km``)."""
    return "? km" if km is None else f"{km:,.0f} km" if km >= 10 else f"{km:.1f} km"


@dataclass(frozen=True)
class NodeRule:
    """What one rule makes of one node for one method, whatever the order (see :class:`Network`)."""

    excluded: tuple[Reason, str] | None
    """Why the node is no candidate at all (wrong kind, disabled), or None."""
    rank: int
    limit: float | None
    """The service distance in km (None: no limit)."""
    capacity: int | None
    prep: int
    """Preparation minutes."""
    buffer: int
    market: str


_T = TypeVar("_T")
_CACHE_LIMIT = 4096
"""Entries a :class:`Network` keeps per table (destination codes come from requests)."""


class Network:
    """What :func:`route` derives from the rules and the nodes alone, computed once for both.

    The nodes sorted by id and by id; per rule, method and node the exclusion (wrong kind,
    disabled), rank, service distance, capacity, preparation, buffer and market; each
    destination's centroid and market; each origin's distance to every node.  Everything
    here is a function of ``rules`` and ``nodes`` (both immutable), so it is never stale:
    :func:`network` gives a new one for other rules (a reloaded rules file) or other nodes
    (an edited location).  Tables that grow with the requests are bounded.
    """

    def __init__(self, rules: FulfillmentRouting, nodes: Sequence[LocationBody]) -> None:
        """Derive the network of ``nodes`` under ``rules`` (lazily, per rule and origin)."""
        self.rules = rules
        self.nodes: tuple[LocationBody, ...] = tuple(sorted(nodes, key=lambda n: n.location_id))
        self.by_id = {n.location_id: n for n in self.nodes}
        self._node_rules: dict[tuple[int, str], dict[str, NodeRule]] = {}
        self._regions: dict[str, tuple[tuple[float, float] | None, str]] = {}
        self._distances: dict[tuple[float, float], dict[str, float]] = {}
        self._memo: dict[Hashable, Any] = {}
        self._matchers: dict[int, list[Matcher]] = {}
        self._entries: dict[tuple[int, str, tuple[float, float] | None], list[NodeEntry]] = {}
        self._slots: dict[tuple[str, bool, int], tuple[datetime, datetime, Slot, bool]] = {}
        self._instant: dict[tuple[str, bool, int], tuple[datetime, Slot]] = {}
        """Slots computed at an instant that no span holds (on a breakpoint), for that instant."""
        self.calendars: dict[str, Calendar] = {
            n.location_id: calendar(n, rules) for n in self.nodes
        }
        """Per node id, its closed days and special hours (:func:`calendar`)."""

    def remember(self, key: Hashable, make: Callable[[], _T]) -> _T:
        """``make()``, kept under ``key`` (for values that depend only on the key's parts)."""
        try:
            found: _T = self._memo[key]
        except KeyError:
            if len(self._memo) >= _CACHE_LIMIT:
                self._memo.clear()
            found = self._memo[key] = make()
        return found

    def node_rules(self, rule: RoutingRule, method: Method) -> dict[str, NodeRule]:
        """Per node id, what ``rule`` makes of it for ``method``."""
        key = (id(rule), method)  # rules are immutable and live as long as self.rules
        cached = self._node_rules.get(key)
        if cached is None:
            cached = {n.location_id: self._node_rule(rule, method, n) for n in self.nodes}
            self._node_rules[key] = cached
        return cached

    def _node_rule(self, rule: RoutingRule, method: Method, node: LocationBody) -> NodeRule:
        rules = self.rules
        allowed = set(rule.kinds)
        if method in ("bopis", "ship_from_store"):
            allowed &= {"store"}
        settings = rules.nodes.get(node.location_id)
        excluded: tuple[Reason, str] | None = None
        if node.kind not in allowed:
            excluded = ("wrong_kind", f"{node.kind} not used by this rule for {method}")
        elif settings is not None and not settings.enabled:
            excluded = ("disabled", "disabled in [fulfillment.nodes]")
        return NodeRule(
            excluded=excluded,
            rank=settings.rank if settings is not None else 100,
            limit=rule.max_distance_km or (rules.bopis_service_km if method == "bopis" else None),
            capacity=_capacity(node, rules),
            prep=_prep(node, rules, rule),
            buffer=effective_buffer(node, rules, rule),
            market=node_market(node, rules),
        )

    def entries(
        self, rule: RoutingRule, method: Method, origin: tuple[float, float] | None
    ) -> list[NodeEntry]:
        """Per node (by id), what ``rule`` makes of it for ``method`` from ``origin``, kept.

        Everything of a node's evaluation that no order changes: its facts, its distance
        from ``origin``, the too-far reason, and for a wrong-kind or disabled node the whole
        evaluation and its trace entry.
        """
        key = (id(rule), method, origin)
        found = self._entries.get(key)
        if found is None:
            if len(self._entries) >= _CACHE_LIMIT:
                self._entries.clear()
            facts = self.node_rules(rule, method)
            distances = None if origin is None else self.distances(origin)
            found = [_entry(node, facts[node.location_id], distances) for node in self.nodes]
            self._entries[key] = found
        return found

    def slot(self, node: LocationBody, pickup: bool, prep: int, now: datetime) -> Slot:
        """:func:`pickup_slot` or :func:`ship_slot` of a node of this network at ``now``.

        Kept per node, kind and preparation for the interval around ``now`` in which the
        answer holds (:func:`rules.geo.slot_span`: up to the next opening, cut-off or
        closing, those minus the preparation, or local midnight), so a lookup is two
        comparisons; a pickup ready ``prep`` after ``now`` keeps its case, the moment
        filled in per call.  A node that never opens raises ``ValueError`` every time.
        """
        key = (node.location_id, pickup, prep)
        found = self._slots.get(key)
        if found is not None and found[0] < now < found[1]:
            if found[3]:
                return live_pickup(found[2], now, _minutes(prep), node.timezone)
            return found[2]
        exact = self._instant.get(key)
        if exact is not None and exact[0] == now:
            return exact[1]  # the same instant on a breakpoint: the same answer
        minutes = _minutes(prep)
        days = self.calendars.get(node.location_id, ALWAYS_OPEN)
        if pickup:
            slot = pickup_slot(node.hours, node.timezone, now, minutes, days)
            live = is_live_pickup(slot, now, minutes)
            keep = slot.same_day or not live
        else:
            slot = ship_slot(node.hours, node.timezone, now, minutes, days)
            live = False
            keep = True
        span = slot_span(node.hours, node.timezone, now, minutes, days) if keep else None
        if span is not None:
            if len(self._slots) >= _CACHE_LIMIT:
                self._slots.clear()
            self._slots[key] = (span[0], span[1], slot, live)
        else:
            # On a breakpoint (or a live pickup not kept): keep the answer for this very
            # instant, which requests sharing a moment (a given ``at``) meet again.
            if len(self._instant) >= _CACHE_LIMIT:
                self._instant.clear()
            self._instant[key] = (now, slot)
        return slot

    def matchers(self, rule: RoutingRule | CarrierRule) -> list[Matcher]:
        """The parsed ``match`` of ``rule`` (read once: a private attribute is slow to reach)."""
        key = id(rule)
        found = self._matchers.get(key)
        if found is None:
            found = self._matchers[key] = rule.matchers
        return found

    def region(self, code: str) -> tuple[tuple[float, float] | None, str]:
        """:func:`resolve_region` of ``code``, kept."""
        cached = self._regions.get(code)
        if cached is None:
            if len(self._regions) >= _CACHE_LIMIT:
                self._regions.clear()
            cached = resolve_region(code, self.rules, self.nodes)
            self._regions[code] = cached
        return cached

    def distances(self, origin: tuple[float, float]) -> dict[str, float]:
        """Kilometres from ``origin`` to every node, by node id, kept."""
        cached = self._distances.get(origin)
        if cached is None:
            if len(self._distances) >= _CACHE_LIMIT:
                self._distances.clear()
            lat, lon = origin
            cached = {n.location_id: haversine_km(lat, lon, n.lat, n.lon) for n in self.nodes}
            self._distances[origin] = cached
        return cached


@dataclass(frozen=True)
class NodeEntry:
    """A node under one rule, method and origin, before any order (:meth:`Network.entries`)."""

    node: LocationBody
    facts: NodeRule
    distance: float | None
    far: tuple[Reason, str] | None
    """The too-far reason (None: within the limit, no limit, or the distance unknown)."""
    excluded: NodeCandidate | None
    """The evaluation of a wrong-kind or disabled node (the same for every order)."""
    entry: Candidate | None
    """The trace entry of such a node."""


def _entry(node: LocationBody, facts: NodeRule, distances: Mapping[str, float] | None) -> NodeEntry:
    distance = None if distances is None else distances[node.location_id]
    far: tuple[Reason, str] | None = None
    if facts.limit is not None and distance is not None and distance > facts.limit:
        far = ("too_far", f"{fmt_km(distance)} > {fmt_km(facts.limit)}")
    excluded: NodeCandidate | None = None
    entry: Candidate | None = None
    if facts.excluded is not None:
        excluded = NodeCandidate(
            node, distance, NO_SLOT, [facts.excluded], frozenset(), 0, facts.rank, False, ""
        )
        reason, text = facts.excluded
        entry = _NEW_CANDIDATE(
            location_id=node.location_id,
            kind=node.kind,
            outcome="rejected",
            reason=reason,
            detail=text,
            distance_km=None if distance is None else round(distance, 2),
            at=None,
        )
    return NodeEntry(node, facts, distance, far, excluded, entry)


_NETWORKS: dict[tuple[int, tuple[int, ...]], Network] = {}


def network(rules: FulfillmentRouting, nodes: Sequence[LocationBody]) -> Network:
    """The :class:`Network` of ``nodes`` under ``rules``, shared by calls with the same objects.

    Keyed on the identity of the rules object and of each node (a cached network holds
    them, so the identities stay theirs); a reloaded rules file or an edited node is a new
    object, hence a new network.  A handful are kept.
    """
    key = (id(rules), tuple(map(id, nodes)))
    found = _NETWORKS.get(key)
    if found is None:
        found = Network(rules, nodes)
        if len(_NETWORKS) >= 16:
            _NETWORKS.clear()
        _NETWORKS[key] = found
    return found


@dataclass
class RouteContext:
    """Per-order facts computed once per call of :func:`route`."""

    order: RouteOrder
    stock: Inventory
    nodes: Sequence[LocationBody]
    rules: FulfillmentRouting
    now: datetime
    by_id: dict[str, LocationBody]
    origin: tuple[float, float] | None
    market: str
    value: float
    weight: float
    line_labels: dict[str, list[str]]
    network: Network | None = None
    """The rules' and nodes' derived facts (None: derived now, for a context built by hand)."""
    slots: dict[tuple[str, bool, int], Slot] = field(default_factory=dict)
    evaluated: dict[tuple[int, str, tuple[float, float] | None], list[NodeCandidate]] = field(
        default_factory=dict
    )
    """Every node under a rule, method and origin (a relaxed pass reuses the strict one's)."""

    def labels(self, method: Method) -> dict[str, str]:
        """The order's labels when routed for ``method``."""
        o = self.order
        return {
            "region": o.destination_region,
            "market": self.market,
            "channel": o.channel,
            "method": method,
        }


_NEVER = datetime.min.replace(tzinfo=UTC)
NO_SLOT = Slot(_NEVER, _NEVER, False, None, "")
"""The slot of a node that is not a candidate at all (wrong kind, disabled)."""


@dataclass(slots=True)
class NodeCandidate:
    """How one node fared under one rule, before ranking (the trace's raw material)."""

    node: LocationBody
    distance: float | None
    slot: Slot
    reasons: list[tuple[Reason, str]]
    fills: frozenset[int]
    capacity_left: float
    rank: int
    market_ok: bool
    stock_detail: str


def label_holds(
    m: Matcher, labels: Mapping[str, str], line_labels: Mapping[str, list[str]]
) -> bool:
    """Whether ``m`` holds: on an order label directly, on a line label like a set."""
    values = line_labels.get(m.name)
    if values is None:
        return m.matches(labels)
    if m.op in ("=", "=~"):
        return any(m.matches({m.name: v}) for v in values)
    return all(m.matches({m.name: v}) for v in values)


def why_not_matched(rule: RoutingRule, ctx: RouteContext, method: Method) -> str | None:
    """Why ``rule`` does not apply to the order, in words (None: it matches)."""
    labels = ctx.labels(method)
    matchers = rule.matchers if ctx.network is None else ctx.network.matchers(rule)
    for m in matchers:
        if not label_holds(m, labels, ctx.line_labels):
            shown = ctx.line_labels.get(m.name) or [labels.get(m.name, "")]
            return f"{m} does not hold ({m.name} is {', '.join(sorted(set(shown))) or '∅'})"
    if rule.min_value is not None and ctx.value < rule.min_value:
        return f"order value {ctx.value:,.2f} is below {rule.min_value:,.2f}"
    if rule.max_value is not None and ctx.value > rule.max_value:
        return f"order value {ctx.value:,.2f} is above {rule.max_value:,.2f}"
    if rule.min_weight_kg is not None and ctx.weight < rule.min_weight_kg:
        return f"weight {ctx.weight:,.2f} kg is below {rule.min_weight_kg:,.2f} kg"
    if rule.max_weight_kg is not None and ctx.weight > rule.max_weight_kg:
        return f"weight {ctx.weight:,.2f} kg is above {rule.max_weight_kg:,.2f} kg"
    return None


def _prep(node: LocationBody, rules: FulfillmentRouting, rule: RoutingRule) -> int:
    settings = rules.nodes.get(node.location_id)
    if settings is not None and settings.prep_minutes is not None:
        return settings.prep_minutes
    if rule.prep_minutes is not None:
        return rule.prep_minutes
    return rules.prep_minutes.get(node.kind, DEFAULT_PREP_MINUTES[node.kind])


def _slot(ctx: RouteContext, node: LocationBody, pickup: bool, prep: int) -> Slot:
    key = (node.location_id, pickup, prep)
    slot = ctx.slots.get(key)
    if slot is None:
        net = ctx.network
        if net is not None and net.by_id.get(node.location_id) is node:
            slot = net.slot(node, pickup, prep, ctx.now)
        else:
            fn = pickup_slot if pickup else ship_slot
            days = calendar(node, ctx.rules)
            slot = fn(node.hours, node.timezone, ctx.now, _minutes(prep), days)
        ctx.slots[key] = slot
    return slot


@lru_cache(maxsize=256)
def _minutes(prep: int) -> timedelta:
    return timedelta(minutes=prep)


def calendar(node: LocationBody, rules: FulfillmentRouting) -> Calendar:
    """``node``'s closed days and special hours: its kind's and its own (which win)."""
    settings = rules.nodes.get(node.location_id)
    closed = set(rules.closed_days.get(node.kind, ()))
    special = dict(rules.special_hours.get(node.kind, {}))
    if settings is not None:
        closed.update(settings.closed_days)
        special.update(settings.special_hours)
    if not closed and not special:
        return ALWAYS_OPEN
    return Calendar(
        frozenset(closed),
        tuple(
            (d, h.opens, h.closes, h.cutoff)
            for d, h in sorted(special.items(), key=lambda item: str(item[0]))
        ),
    )


def _capacity(node: LocationBody, rules: FulfillmentRouting) -> int | None:
    settings = rules.nodes.get(node.location_id)
    if settings is not None and settings.capacity is not None:
        return settings.capacity
    return rules.capacity.get(node.kind)


def evaluate_node(
    ctx: RouteContext,
    rule: RoutingRule,
    node: LocationBody,
    method: Method,
    origin: tuple[float, float] | None,
) -> NodeCandidate:
    """Every eligibility check of one node under one rule (all reasons, in order)."""
    net = ctx.network
    if net is None:
        net = ctx.network = network(ctx.rules, ctx.nodes)
    entries = net.entries(rule, method, origin)
    entry = next(e for e in entries if e.node.location_id == node.location_id)
    return evaluate_entry(ctx, rule, entry, method)


def evaluate_entry(
    ctx: RouteContext, rule: RoutingRule, entry: NodeEntry, method: Method
) -> NodeCandidate:
    """:func:`evaluate_node` of a node's :class:`NodeEntry` (what the order adds to it)."""
    if entry.excluded is not None:  # not a candidate at all: the other checks would be noise
        return entry.excluded
    node = entry.node
    facts = entry.facts
    distance = entry.distance
    reasons: list[tuple[Reason, str]] = []
    if facts.limit is not None:
        if distance is None:
            reasons.append(
                ("too_far", f"distance unknown: add {ctx.order.destination_region!r} to regions")
            )
        elif entry.far is not None:
            reasons.append(entry.far)
    capacity = facts.capacity
    left = math.inf if capacity is None else capacity - ctx.stock.load.get(node.location_id, 0)
    if rule.respect_capacity and left < 1:
        reasons.append(("no_capacity", f"daily capacity {capacity} used up"))
    try:
        slot = _slot(ctx, node, method == "bopis", facts.prep)
    except ValueError as exc:  # never eligible, not even for the next window
        reasons.append(("never_open", str(exc)))
        return NodeCandidate(
            node, distance, NO_SLOT, reasons, frozenset(), 0, facts.rank, False, ""
        )
    promise = ctx.order.promised_by
    window = rule.window
    if window == "today" or (window == "promise" and promise is None):
        if not slot.same_day:
            reasons.append((slot.issue or "closed", slot.detail))
    elif window == "promise" and promise is not None and slot.at > promise:
        reasons.append(
            (
                slot.issue or "past_cutoff",
                f"{slot.detail}; misses promised-by {promise:%d %b %H:%M}Z",
            )
        )
    # Stock: lines this node can fill whole, after its buffer; a SKU on two lines adds up.
    buffer = facts.buffer
    levels = ctx.stock.levels
    node_id = node.location_id
    fills: set[int] = set()
    short: list[str] = []
    used: dict[str, int] = {}
    for n, line in enumerate(ctx.order.lines):
        sku = line.sku
        level = levels.get((sku, node_id))
        free = (0 if level is None else level.on_hand - level.reserved - buffer) - used.get(sku, 0)
        if free >= line.quantity:
            fills.add(n)
            used[sku] = used.get(sku, 0) + line.quantity
        else:
            short.append(f"{sku} {max(0, free)} after buffer {buffer}, needs {line.quantity}")
    if not fills:
        reasons.append(("no_stock", "; ".join(short)))
    return NodeCandidate(  # positional: the fields' order (a keyword call costs more)
        node,
        distance,
        slot,
        reasons,
        frozenset(fills),
        left,
        facts.rank,
        facts.market == ctx.market,
        "; ".join(short),
    )


WINDOW_REASONS = ("closed", "past_cutoff")


def rank_key(
    c: NodeCandidate, criteria: Sequence[Criterion], remaining: frozenset[int]
) -> tuple[Any, ...]:
    """The sort key of a candidate under the ranking criteria (node id last)."""
    key: list[Any] = []
    for criterion in criteria:
        if criterion == "fewest_splits":
            key.append(-len(c.fills & remaining))
        elif criterion == "same_market":
            key.append(0 if c.market_ok else 1)
        elif criterion == "distance":
            key.append(math.inf if c.distance is None else round(c.distance, 3))
        elif criterion == "manual_rank":
            key.append(c.rank)
        elif criterion == "remaining_capacity":
            key.append(-c.capacity_left)
        else:  # soonest
            key.append(c.slot.at)
    key.append(c.node.location_id)
    return tuple(key)


def describe_loss(
    loser: NodeCandidate,
    winner: NodeCandidate,
    criteria: Sequence[Criterion],
    remaining: frozenset[int],
    *,
    keys: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None,
) -> str:
    """The first criterion on which ``loser`` ranks below ``winner``, in words.

    ``keys``: their :func:`rank_key` s when the caller has them already.
    """
    if keys is not None:
        lk, wk = keys
    else:
        lk, wk = rank_key(loser, criteria, remaining), rank_key(winner, criteria, remaining)
    for criterion, a, b in zip((*criteria, "node id"), lk, wk, strict=True):
        if a == b:
            continue
        name = winner.node.location_id
        if criterion == "fewest_splits":
            return f"ranked below {name}: fills {-a} line(s) vs {-b}"
        if criterion == "same_market":
            return f"ranked below {name}: outside the destination's market"
        if criterion == "distance":
            return (
                f"ranked below {name} on distance ({fmt_km(loser.distance)} vs "
                f"{fmt_km(winner.distance)})"
            )
        if criterion == "manual_rank":
            return f"ranked below {name} on manual rank ({a} vs {b})"
        if criterion == "remaining_capacity":
            return f"ranked below {name} on remaining capacity ({-a:g} vs {-b:g})"
        if criterion == "soonest":
            return f"ranked below {name}: later slot ({loser.slot.detail})"
        return f"ranked below {name} on node id (tie)"
    return f"ranked below {winner.node.location_id}"
