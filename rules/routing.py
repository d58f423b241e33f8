"""Fulfilment routing: the ``[fulfilment]`` rules and the pure routing function.

Routing decides which node (warehouse, store, drop-ship supplier) fulfils each line of an
order, with which carrier, by when, and records why.  The rules have the shape the
established order-management systems use (Shopify's ordered ranking rules, Fluent
Commerce's sourcing strategies, HotWax's routings):

1. **Ordered rules.**  The first enabled rule whose ``match`` holds for the order is
   tried.  ``match`` is a label-matcher expression (the grammar of
   :mod:`rules.matchers`) over the order's labels ``region`` (destination region as
   given), ``market`` (the destination's market, from the region table), ``channel``,
   ``method`` and its lines' ``category``, ``product_type``, ``sku`` and ``hazmat``
   (``true``/``false``), plus optional order value and weight ranges.  A line label
   matches like a set: ``category=furniture`` holds when *any* line is furniture,
   ``category!=furniture`` when *no* line is.
2. **Eligibility filters**, per node: its kind (``kinds``; BOPIS and ship-from-store
   only ever use stores), not disabled in ``[fulfilment.nodes]``, within
   ``max_distance_km`` of the destination (for BOPIS: of the pickup store the customer
   chose, else of the destination; the service distance defaults to
   ``bopis_service_km``), remaining daily capacity, a valid fulfilment window
   (``window``: ``promise`` = ships / is ready by the order's promised-by, or today when
   it has none; ``today`` = ships / is ready on the node's local day; ``any``), and stock
   after the safety buffer (on hand − reserved − max(node's own buffer, the buffer for
   its kind)).  Ship-by and pickup times come from :mod:`rules.geo` (the node's opening
   hours and cut-off in its own zone, plus the preparation time: per node, else per
   rule, else per kind).
3. **Ranking criteria** (``rank_by``), applied in order as tie-breakers: ``fewest_splits``
   (a node that fills more of the remaining lines first), ``same_market`` (node's market
   equals the destination's), ``distance``, ``manual_rank`` (``[fulfilment.nodes]``,
   lower first), ``remaining_capacity`` (more first), ``soonest`` (earliest ship-by /
   ready time); the node id breaks any remaining tie.
4. **Split policy**: lines are allocated greedily to the best-ranked node that can fill
   them whole (a line is never split), using at most ``max_splits`` + 1 nodes (BOPIS: one).
5. **Fallback** when no plan is found: ``next_rule`` (try the next matching rule),
   ``next_pickup_window`` (the same rule without the time window: the order goes to the
   best node at its next pickup window or dispatch; then the next rule), or ``hold``
   (stop: a person decides).  A BOPIS order no rule can place is offered ship-to-home
   (routed again as a ``ship`` order) when ``bopis_ship_to_home`` is on.  An order is
   ``unfulfillable`` when some line cannot be filled whole by any node after buffers
   (whatever the rules), ``held`` when stock exists but the rules place it nowhere.
6. **Carrier**: the first ``[[fulfilment.carriers]]`` entry whose ``match`` holds for a
   shipment (order labels plus ``node``, ``node_kind``, ``node_region``, and the
   shipment's line labels), never an ``air`` carrier for a shipment holding hazmat unless
   ``allow_air_for_hazmat``; else ``default_carrier``.  Pickups have no carrier.

With no rules at all, the built-in :data:`DEFAULT_RULES` apply.  The module is pure: no
I/O, no clock; ``now`` is an argument (the time the order was placed, when replaying).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from rules.geo import Slot, haversine_km, pickup_slot, ship_slot, zone
from rules.matchers import Matcher, parse_matchers
from store.model import Identifier, LocationBody, Method, Money, OrderPlacedBody, SkuBody

NodeKind = Literal["warehouse", "store", "dropship"]
NODE_KINDS: tuple[NodeKind, ...] = ("warehouse", "store", "dropship")

Criterion = Literal[
    "fewest_splits", "same_market", "distance", "manual_rank", "remaining_capacity", "soonest"
]
"""A ranking criterion (see the module docstring)."""

Fallback = Literal["next_rule", "next_pickup_window", "hold"]
"""What a rule does when it finds no plan."""

Window = Literal["promise", "today", "any"]
"""Which fulfilment / pickup window a node must meet."""

Status = Literal["routed", "held", "unfulfillable"]
"""The outcome of routing one order."""

FallbackUsed = Literal["next_pickup_window", "ship_to_home", "hold"]
"""The fallback a decision was reached through (None: an exact match)."""

Reason = Literal[
    "unknown_sku",
    "wrong_kind",
    "disabled",
    "too_far",
    "no_capacity",
    "closed",
    "past_cutoff",
    "never_open",
    "no_stock",
    "split_limit",
]
"""Why a candidate node was rejected (``unknown_sku`` rejects the whole order;
``never_open``: its preparation time never fits in its opening hours, a setup error)."""

ORDER_LABELS = ("region", "market", "channel", "method")
LINE_LABELS = ("category", "product_type", "sku", "hazmat")
NODE_LABELS = ("node", "node_kind", "node_region")
RULE_LABELS = ORDER_LABELS + LINE_LABELS
CARRIER_LABELS = RULE_LABELS + NODE_LABELS

DEFAULT_PREP_MINUTES: dict[NodeKind, int] = {"store": 60, "warehouse": 30, "dropship": 0}
"""Preparation (pick and pack) time per node kind, when the rules do not set one."""

DEFAULT_RANKING: tuple[Criterion, ...] = (
    "fewest_splits",
    "same_market",
    "distance",
    "manual_rank",
    "remaining_capacity",
)


# -- the rules file section ---------------------------------------------------------------


class _Model(BaseModel):
    """Base of the rules models: unknown keys are an error (a typo is caught), immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_matchers(text: str, known: Sequence[str], what: str) -> list[Matcher]:
    matchers = parse_matchers(text)
    for m in matchers:
        if m.name not in known:
            raise ValueError(
                f"{what}: unknown label {m.name!r} in {text!r}; known labels: {', '.join(known)}"
            )
    return matchers


class RegionInfo(_Model):
    """Where a destination region (or postal prefix) is, for distances, and its market."""

    lat: float = Field(ge=-90, le=90)
    """Latitude of the region's centroid (degrees)."""
    lon: float = Field(ge=-180, le=180)
    """Longitude of the region's centroid (degrees)."""
    market: str | None = None
    """The market the region belongs to (default: the region itself)."""


class NodeSettings(_Model):
    """Per-node routing settings (``[fulfilment.nodes.<location_id>]``)."""

    enabled: bool = True
    """False takes the node out of routing (a store short-staffed, a flooded warehouse)."""
    capacity: int | None = Field(default=None, ge=0)
    """Orders the node can take per day (overrides the capacity of its kind)."""
    rank: int = 100
    """Manual rank for the ``manual_rank`` criterion; lower is preferred."""
    prep_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    """Preparation time at this node (overrides the kind's and the rule's)."""


class CarrierRule(_Model):
    """One ``[[fulfilment.carriers]]`` entry: the first one matching a shipment is used."""

    match: str = ""
    """Label matchers on the shipment (order labels, node labels, its lines' labels)."""
    carrier: Identifier
    """The carrier / service name, e.g. ``UPS Ground``."""
    air: bool = False
    """An air service: never used for hazmat unless ``allow_air_for_hazmat``."""
    transit_days: float | None = Field(default=None, ge=0)
    """Days from ship-by to delivery, for the estimated delivery; None = unknown."""

    _matchers: list[Matcher] = PrivateAttr(default_factory=list)

    @field_validator("match")
    @classmethod
    def _valid_match(cls, value: str) -> str:
        _check_matchers(value, CARRIER_LABELS, "match")
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Parse the matchers once."""
        self._matchers = parse_matchers(self.match)

    @property
    def matchers(self) -> list[Matcher]:
        """The parsed ``match`` expression."""
        return self._matchers


class RoutingRule(_Model):
    """One ordered ``[[fulfilment.rules]]`` entry: match, filters, ranking, splits, fallback."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    """Unique name of the rule (letters, digits, ``_ . -``), shown in every decision."""
    enabled: bool = True
    """A disabled rule is skipped (and says so in the trace)."""
    description: str = ""
    """What the rule is for, in words."""
    match: str = ""
    """Label matchers the order must satisfy (empty: every order)."""
    min_value: float | None = Field(default=None, ge=0)
    """Lowest order value (Σ quantity × unit price − discounts) the rule applies to."""
    max_value: float | None = Field(default=None, ge=0)
    """Highest order value the rule applies to."""
    min_weight_kg: float | None = Field(default=None, ge=0)
    """Lowest order weight (Σ quantity × SKU weight)."""
    max_weight_kg: float | None = Field(default=None, ge=0)
    """Highest order weight."""
    kinds: list[NodeKind] = Field(default_factory=lambda: list(NODE_KINDS), min_length=1)
    """Node kinds the rule may use."""
    max_distance_km: float | None = Field(default=None, gt=0)
    """Service distance; BOPIS defaults to ``bopis_service_km``, shipping to no limit."""
    window: Window = "promise"
    """``promise``, ``today`` or ``any`` (see the module docstring)."""
    prep_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    """Preparation time under this rule (default: per node, then per kind)."""
    respect_capacity: bool = True
    """Reject nodes with no remaining daily capacity."""
    rank_by: list[Criterion] = Field(default_factory=lambda: list(DEFAULT_RANKING))
    """Ranking criteria, applied in order as tie-breakers."""
    max_splits: int = Field(default=0, ge=0, le=10)
    """Extra nodes an order may be split across (0: one node ships everything)."""
    fallback: Fallback = "next_rule"
    """What to do when no plan is found."""
    buffers: dict[NodeKind, int] = Field(default_factory=dict)
    """Safety buffers per node kind under this rule (override the section's)."""

    _matchers: list[Matcher] = PrivateAttr(default_factory=list)

    @field_validator("match")
    @classmethod
    def _valid_match(cls, value: str) -> str:
        _check_matchers(value, RULE_LABELS, "match")
        return value

    @field_validator("kinds", "rank_by")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"listed twice: {sorted({v for v in value if value.count(v) > 1})}")
        return value

    @field_validator("buffers")
    @classmethod
    def _non_negative(cls, value: dict[NodeKind, int]) -> dict[NodeKind, int]:
        for kind, units in value.items():
            if units < 0:
                raise ValueError(f"buffer for {kind} must be ≥ 0, got {units}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> RoutingRule:
        lo, hi = self.min_value, self.max_value
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_value is above max_value")
        lo, hi = self.min_weight_kg, self.max_weight_kg
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("min_weight_kg is above max_weight_kg")
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Parse the matchers once."""
        self._matchers = parse_matchers(self.match)

    @property
    def matchers(self) -> list[Matcher]:
        """The parsed ``match`` expression."""
        return self._matchers


DEFAULT_RULES: tuple[RoutingRule, ...] = (
    RoutingRule(
        id="default-ship",
        description="Built-in: ship orders from warehouses and drop-ship, one split at most",
        match="method=ship",
        kinds=["warehouse", "dropship"],
        max_splits=1,
        fallback="next_pickup_window",
    ),
    RoutingRule(
        id="default-stores",
        description="Built-in: pickups, ship-from-store, and ship orders no warehouse can take",
        kinds=["store"],
        fallback="next_pickup_window",
    ),
)
"""The rules used when ``[fulfilment]`` has no rules at all."""


class FulfilmentRouting(_Model):
    """The ``[fulfilment]`` section of the rules file: routing rules and their settings.

    Every field has a working default, so an empty (or absent) section is valid and
    routes with :data:`DEFAULT_RULES`.
    """

    rules: list[RoutingRule] = Field(default_factory=list)
    """Ordered routing rules; the first enabled rule that matches is tried first."""
    buffers: dict[NodeKind, int] = Field(default_factory=dict)
    """Units held back per node kind (e.g. ``store = 2`` for walk-in customers); a node's
    effective buffer is the larger of this and its own ``safety_buffer``."""
    capacity: dict[NodeKind, int] = Field(default_factory=dict)
    """Orders per day per node kind; a kind not listed is unlimited."""
    prep_minutes: dict[NodeKind, int] = Field(default_factory=dict)
    """Preparation time per node kind (defaults: store 60, warehouse 30, dropship 0)."""
    bopis_service_km: float = Field(default=50.0, gt=0)
    """BOPIS service distance when a rule sets no ``max_distance_km``."""
    bopis_ship_to_home: bool = True
    """Offer ship-to-home when no store can take a BOPIS order."""
    bopis_alternatives: int = Field(default=3, ge=0, le=20)
    """How many other pickup stores a BOPIS decision lists."""
    default_carrier: Identifier = "ground"
    """Carrier when no ``carriers`` entry matches (must be a ground service)."""
    allow_air_for_hazmat: bool = False
    """Allow air carriers for shipments holding hazmat items (normally forbidden)."""
    carriers: list[CarrierRule] = Field(default_factory=list)
    """Carrier choice by region, product type and node; the first match wins."""
    regions: dict[str, RegionInfo] = Field(default_factory=dict)
    """Destination region (or postal prefix) centroids, over :data:`DEFAULT_REGIONS`."""
    nodes: dict[str, NodeSettings] = Field(default_factory=dict)
    """Per-node settings keyed by location id."""

    @field_validator("buffers", "capacity", "prep_minutes")
    @classmethod
    def _non_negative(cls, value: dict[NodeKind, int]) -> dict[NodeKind, int]:
        for kind, number in value.items():
            if number < 0:
                raise ValueError(f"{kind} must be ≥ 0, got {number}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> FulfilmentRouting:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                raise ValueError(f"rules[{index}]: rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self

    def rule(self, rule_id: str) -> RoutingRule | None:
        """The rule with ``rule_id``, if any."""
        return next((r for r in self.rules if r.id == rule_id), None)


DEFAULT_REGIONS: dict[str, RegionInfo] = {
    # Rough demand centroids of the US regions the fixtures (and many retailers) use, and
    # their short codes, for distances when [fulfilment.regions] has no entry.
    "northeast": RegionInfo(lat=41.5, lon=-73.5),
    "southeast": RegionInfo(lat=33.5, lon=-83.0),
    "midwest": RegionInfo(lat=41.8, lon=-88.0),
    "south": RegionInfo(lat=31.5, lon=-96.5),
    "mountain": RegionInfo(lat=39.7, lon=-105.0),
    "west": RegionInfo(lat=35.0, lon=-119.0),
    "NE": RegionInfo(lat=41.5, lon=-73.5, market="northeast"),
    "SE": RegionInfo(lat=33.5, lon=-83.0, market="southeast"),
    "MW": RegionInfo(lat=41.8, lon=-88.0, market="midwest"),
    "S": RegionInfo(lat=31.5, lon=-96.5, market="south"),
    "MT": RegionInfo(lat=39.7, lon=-105.0, market="mountain"),
    "W": RegionInfo(lat=35.0, lon=-119.0, market="west"),
}
"""Built-in destination centroids: ``northeast`` (NE), ``southeast`` (SE), ``midwest``
(MW), ``south`` (S), ``mountain`` (MT), ``west`` (W); a short code's market is its long
name.  ``[fulfilment.regions]`` entries take precedence."""


# -- routing inputs -----------------------------------------------------------------------


class RouteLine(_Model):
    """One line of an order to route."""

    sku: Identifier
    quantity: int = Field(gt=0)
    unit_price: Money | None = None
    """Unit price for the order value (default: the SKU's catalogue price)."""
    discount: Money = Decimal("0")
    """Discount on the whole line."""


class RouteOrder(_Model):
    """An order as the router sees it (a placed order, or a cart checked over HTTP)."""

    order_id: Identifier = "check"
    channel: Identifier = "web"
    method: Method = "ship"
    destination_region: Identifier
    location_id: Identifier | None = None
    """BOPIS: the store the customer chose (distances are measured from it)."""
    promised_by: AwareDatetime | None = None
    """Ship-by (ship) or ready-by (BOPIS) the channel promised; None = no promise."""
    lines: list[RouteLine] = Field(min_length=1, max_length=500)

    @classmethod
    def from_placed(cls, body: OrderPlacedBody) -> RouteOrder:
        """The router's view of a placed order.

        ``location_id`` is kept only for BOPIS (the store the customer chose to pick up
        at, the centre of the service distance); a shipping order's node is decided anew.
        """
        return cls(
            order_id=body.order_id,
            channel=body.channel,
            method=body.method,
            destination_region=body.destination_region,
            location_id=body.location_id if body.method == "bopis" else None,
            promised_by=body.promised_by,
            lines=[
                RouteLine(
                    sku=line.sku,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    discount=line.discount,
                )
                for line in body.lines
            ],
        )


@dataclass(frozen=True)
class StockLevel:
    """Stock of one SKU at one node, as the store holds it."""

    on_hand: int
    reserved: int = 0


@dataclass(frozen=True)
class Inventory:
    """What :func:`route` reads besides the order: catalogue, stock, today's load.

    ``levels`` is keyed by ``(sku, location_id)``; ``load`` is the number of orders routed
    to each node today (for remaining daily capacity).  :func:`route` never changes them;
    :func:`route_sequence` works on its own copies.
    """

    skus: Mapping[str, SkuBody]
    levels: Mapping[tuple[str, str], StockLevel]
    load: Mapping[str, int] = field(default_factory=dict)


# -- decisions ----------------------------------------------------------------------------


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LineRoute(_Out):
    """Where one order line goes."""

    line_no: int
    sku: str
    quantity: int
    location_id: str | None


class Shipment(_Out):
    """One node's part of a decision."""

    location_id: str
    kind: NodeKind
    line_nos: list[int]
    carrier: str | None
    """None for a pickup."""
    distance_km: float | None
    at: datetime
    """Ship-by (it leaves at this cut-off) or ready-for-pickup time, UTC."""
    until: datetime
    """End of the window: the cut-off for shipping, closing time for a pickup."""
    deliver_by: datetime | None = None
    """Estimated delivery when the carrier entry has ``transit_days``."""


class Candidate(_Out):
    """How one node fared under one rule."""

    location_id: str
    kind: NodeKind
    outcome: Literal["chosen", "eligible", "rejected"]
    reason: Reason | None = None
    """The first reason it was rejected."""
    detail: str = ""
    """Every reason, or how it ranked, in words."""
    distance_km: float | None = None
    at: datetime | None = None
    """Its ship-by / ready time."""


class RuleTrace(_Out):
    """What one rule did for the order."""

    rule_id: str
    outcome: Literal["skipped", "not_matched", "no_plan", "chosen", "held"]
    detail: str
    relaxed: bool = False
    """True for the pass without the time window (``next_pickup_window``)."""
    method: Method = "ship"
    """The method the pass routed for (``ship`` in a ship-to-home pass)."""
    candidates: list[Candidate] = Field(default_factory=list)


class Alternative(_Out):
    """Another store a BOPIS order could be picked up from, and when."""

    location_id: str
    distance_km: float | None
    ready_at: datetime
    until: datetime
    same_day: bool


class Decision(_Out):
    """The outcome of routing one order, with the trace of why."""

    order_id: str
    status: Status
    requested_method: Method
    method: Method
    """The method fulfilled (``ship`` when a BOPIS order is offered ship-to-home)."""
    rule_id: str | None
    decided_for: datetime
    """The moment routed for (``now``)."""
    lines: list[LineRoute]
    shipments: list[Shipment]
    carrier: str | None
    """The first shipment's carrier (None for a pickup or no shipment)."""
    promised_by: datetime | None
    """The latest shipment's ship-by / ready-for-pickup time."""
    late: bool
    """The promise is after the order's own promised-by."""
    fallback: FallbackUsed | None
    pickup_window: tuple[datetime, datetime] | None = None
    """BOPIS: when the order can be picked up (ready, closing)."""
    alternatives: list[Alternative] = Field(default_factory=list)
    summary: str
    notes: list[str] = Field(default_factory=list)
    trace: list[RuleTrace]

    @property
    def nodes(self) -> list[str]:
        """The nodes used, in shipment order."""
        return [s.location_id for s in self.shipments]

    @property
    def splits(self) -> int:
        """Extra nodes beyond the first (0 for a single-node order)."""
        return max(0, len(self.shipments) - 1)

    @property
    def mean_distance_km(self) -> float | None:
        """Mean distance of the shipments with a known distance."""
        known = [s.distance_km for s in self.shipments if s.distance_km is not None]
        return sum(known) / len(known) if known else None


# -- the routing function -----------------------------------------------------------------


def resolve_region(
    code: str, rules: FulfilmentRouting, nodes: Sequence[LocationBody]
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


def node_market(node: LocationBody, rules: FulfilmentRouting) -> str:
    """The market of a node: its region's market, or the region itself."""
    info = rules.regions.get(node.region) or DEFAULT_REGIONS.get(node.region)
    return (info.market if info and info.market else None) or node.region


def effective_buffer(node: LocationBody, rules: FulfilmentRouting, rule: RoutingRule | None) -> int:
    """Units held back at ``node``: max(its own buffer, its kind's buffer under the rule)."""
    kind_buffer = rules.buffers.get(node.kind, 0)
    if rule is not None and node.kind in rule.buffers:
        kind_buffer = rule.buffers[node.kind]
    return max(node.safety_buffer, kind_buffer)


def _fmt_km(km: float | None) -> str:
    return "? km" if km is None else f"{km:,.0f} km" if km >= 10 else f"{km:.1f} km"


@dataclass
class _Ctx:
    """Per-order facts computed once per call of :func:`route`."""

    order: RouteOrder
    stock: Inventory
    nodes: Sequence[LocationBody]
    rules: FulfilmentRouting
    now: datetime
    by_id: dict[str, LocationBody]
    origin: tuple[float, float] | None
    market: str
    value: float
    weight: float
    line_labels: dict[str, list[str]]
    distance: dict[str, float | None] = field(default_factory=dict)
    slots: dict[tuple[str, bool, int], Slot] = field(default_factory=dict)

    def labels(self, method: Method) -> dict[str, str]:
        o = self.order
        return {
            "region": o.destination_region,
            "market": self.market,
            "channel": o.channel,
            "method": method,
        }


_NEVER = datetime.min.replace(tzinfo=UTC)
_NO_SLOT = Slot(_NEVER, _NEVER, False, None, "")
"""The slot of a node that is not a candidate at all (wrong kind, disabled)."""


@dataclass
class _Cand:
    node: LocationBody
    distance: float | None
    slot: Slot
    reasons: list[tuple[Reason, str]]
    fills: frozenset[int]
    capacity_left: float
    rank: int
    market_ok: bool
    stock_detail: str


def _holds(m: Matcher, labels: Mapping[str, str], line_labels: Mapping[str, list[str]]) -> bool:
    values = line_labels.get(m.name)
    if values is None:
        return m.matches(labels)
    if m.op in ("=", "=~"):
        return any(m.matches({m.name: v}) for v in values)
    return all(m.matches({m.name: v}) for v in values)


def _why_not_matched(rule: RoutingRule, ctx: _Ctx, method: Method) -> str | None:
    labels = ctx.labels(method)
    for m in rule.matchers:
        if not _holds(m, labels, ctx.line_labels):
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


def _prep(node: LocationBody, rules: FulfilmentRouting, rule: RoutingRule) -> int:
    settings = rules.nodes.get(node.location_id)
    if settings is not None and settings.prep_minutes is not None:
        return settings.prep_minutes
    if rule.prep_minutes is not None:
        return rule.prep_minutes
    return rules.prep_minutes.get(node.kind, DEFAULT_PREP_MINUTES[node.kind])


def _slot(ctx: _Ctx, node: LocationBody, pickup: bool, prep: int) -> Slot:
    key = (node.location_id, pickup, prep)
    slot = ctx.slots.get(key)
    if slot is None:
        fn = pickup_slot if pickup else ship_slot
        slot = fn(node.hours, node.timezone, ctx.now, timedelta(minutes=prep))
        ctx.slots[key] = slot
    return slot


def _distance(ctx: _Ctx, node: LocationBody, origin: tuple[float, float] | None) -> float | None:
    if origin is None:
        return None
    if origin is ctx.origin:
        cached = ctx.distance.get(node.location_id, -1.0)
        if cached != -1.0:
            return cached
    km = haversine_km(origin[0], origin[1], node.lat, node.lon)
    if origin is ctx.origin:
        ctx.distance[node.location_id] = km
    return km


def _capacity(node: LocationBody, rules: FulfilmentRouting) -> int | None:
    settings = rules.nodes.get(node.location_id)
    if settings is not None and settings.capacity is not None:
        return settings.capacity
    return rules.capacity.get(node.kind)


def _evaluate(
    ctx: _Ctx,
    rule: RoutingRule,
    node: LocationBody,
    method: Method,
    origin: tuple[float, float] | None,
) -> _Cand:
    """Every eligibility check of one node under one rule (all reasons, in order)."""
    rules = ctx.rules
    pickup = method == "bopis"
    reasons: list[tuple[Reason, str]] = []
    allowed = set(rule.kinds)
    if method in ("bopis", "ship_from_store"):
        allowed &= {"store"}
    settings = rules.nodes.get(node.location_id)
    distance = _distance(ctx, node, origin)
    rank = settings.rank if settings is not None else 100
    if node.kind not in allowed:
        reasons.append(("wrong_kind", f"{node.kind} not used by this rule for {method}"))
    elif settings is not None and not settings.enabled:
        reasons.append(("disabled", "disabled in [fulfilment.nodes]"))
    if reasons:  # not a candidate at all: the other checks would only be noise
        return _Cand(node, distance, _NO_SLOT, reasons, frozenset(), 0, rank, False, "")
    limit = rule.max_distance_km or (rules.bopis_service_km if pickup else None)
    if limit is not None:
        if distance is None:
            reasons.append(
                ("too_far", f"distance unknown: add {ctx.order.destination_region!r} to regions")
            )
        elif distance > limit:
            reasons.append(("too_far", f"{_fmt_km(distance)} > {_fmt_km(limit)}"))
    capacity = _capacity(node, rules)
    left = math.inf if capacity is None else capacity - ctx.stock.load.get(node.location_id, 0)
    if rule.respect_capacity and left < 1:
        reasons.append(("no_capacity", f"daily capacity {capacity} used up"))
    try:
        slot = _slot(ctx, node, pickup, _prep(node, rules, rule))
    except ValueError as exc:  # never eligible, not even for the next window
        reasons.append(("never_open", str(exc)))
        return _Cand(node, distance, _NO_SLOT, reasons, frozenset(), 0, rank, False, "")
    promise = ctx.order.promised_by
    if rule.window == "today" or (rule.window == "promise" and promise is None):
        if not slot.same_day:
            reasons.append((slot.issue or "closed", slot.detail))
    elif rule.window == "promise" and promise is not None and slot.at > promise:
        reasons.append(
            (
                slot.issue or "past_cutoff",
                f"{slot.detail}; misses promised-by {promise:%d %b %H:%M}Z",
            )
        )
    # Stock: lines this node can fill whole, after its buffer; a SKU on two lines adds up.
    buffer = effective_buffer(node, rules, rule)
    fills: set[int] = set()
    short: list[str] = []
    used: dict[str, int] = {}
    for n, line in enumerate(ctx.order.lines):
        level = ctx.stock.levels.get((line.sku, node.location_id))
        free = 0 if level is None else level.on_hand - level.reserved - buffer
        if free - used.get(line.sku, 0) >= line.quantity:
            fills.add(n)
            used[line.sku] = used.get(line.sku, 0) + line.quantity
        else:
            have = max(0, free - used.get(line.sku, 0))
            short.append(f"{line.sku} {have} after buffer {buffer}, needs {line.quantity}")
    if not fills:
        reasons.append(("no_stock", "; ".join(short)))
    return _Cand(
        node=node,
        distance=distance,
        slot=slot,
        reasons=reasons,
        fills=frozenset(fills),
        capacity_left=left,
        rank=rank,
        market_ok=node_market(node, rules) == ctx.market,
        stock_detail="; ".join(short),
    )


_WINDOW_REASONS = ("closed", "past_cutoff")


def _key(c: _Cand, criteria: Sequence[Criterion], remaining: frozenset[int]) -> tuple[Any, ...]:
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


def _describe_loss(
    loser: _Cand, winner: _Cand, criteria: Sequence[Criterion], remaining: frozenset[int]
) -> str:
    """The first criterion on which ``loser`` ranks below ``winner``, in words."""
    lk, wk = _key(loser, criteria, remaining), _key(winner, criteria, remaining)
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
                f"ranked below {name} on distance ({_fmt_km(loser.distance)} vs "
                f"{_fmt_km(winner.distance)})"
            )
        if criterion == "manual_rank":
            return f"ranked below {name} on manual rank ({a} vs {b})"
        if criterion == "remaining_capacity":
            return f"ranked below {name} on remaining capacity ({-a:g} vs {-b:g})"
        if criterion == "soonest":
            return f"ranked below {name}: later slot ({loser.slot.detail})"
        return f"ranked below {name} on node id (tie)"
    return f"ranked below {winner.node.location_id}"


@dataclass
class _Plan:
    picks: list[tuple[_Cand, frozenset[int]]]
    trace: RuleTrace
    eligible: list[_Cand]


def _try_rule(
    ctx: _Ctx, rule: RoutingRule, method: Method, relaxed: bool
) -> tuple[_Plan | None, RuleTrace]:
    """Filter, rank and allocate under one rule; the plan (or None) and its trace."""
    pickup = method == "bopis"
    origin = ctx.origin
    if pickup and ctx.order.location_id is not None:
        chosen_store = ctx.by_id.get(ctx.order.location_id)
        if chosen_store is not None:
            origin = (chosen_store.lat, chosen_store.lon)
    evaluated = [_evaluate(ctx, rule, node, method, origin) for node in ctx.nodes]
    all_lines = frozenset(range(len(ctx.order.lines)))
    max_nodes = 1 if pickup else rule.max_splits + 1

    def blocking(c: _Cand) -> list[tuple[Reason, str]]:
        if relaxed:
            return [r for r in c.reasons if r[0] not in _WINDOW_REASONS]
        return c.reasons

    pool = [c for c in evaluated if not blocking(c)]
    picks: list[tuple[_Cand, frozenset[int]]] = []
    remaining = all_lines
    losses: dict[str, str] = {}
    failure: tuple[Reason, str] | None = None
    while remaining:
        options = [c for c in pool if c.fills & remaining and all(c is not p for p, _ in picks)]
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
        options.sort(key=lambda c: _key(c, rule.rank_by, remaining))
        best = options[0]
        for other in options[1:]:
            losses.setdefault(
                other.node.location_id, _describe_loss(other, best, rule.rank_by, remaining)
            )
        taken = best.fills & remaining
        picks.append((best, taken))
        remaining = remaining - taken
    ok = not remaining
    chosen_ids = {p.node.location_id for p, _ in picks} if ok else set()

    candidates: list[Candidate] = []
    for c in evaluated:
        node_id = c.node.location_id
        block = blocking(c)
        if node_id in chosen_ids:
            lines = sorted(next(t for p, t in picks if p is c))
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
        trace = RuleTrace(
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
    trace = RuleTrace(
        rule_id=rule.id,
        outcome="no_plan",
        detail=f"no plan: {why}",
        relaxed=relaxed,
        method=method,
        candidates=candidates,
    )
    return None, trace


def _candidate(
    c: _Cand, outcome: Literal["chosen", "eligible", "rejected"], reason: Reason | None, detail: str
) -> Candidate:
    return Candidate(
        location_id=c.node.location_id,
        kind=c.node.kind,
        outcome=outcome,
        reason=reason,
        detail=detail,
        distance_km=None if c.distance is None else round(c.distance, 2),
        at=None if c.slot is _NO_SLOT else c.slot.at,
    )


def _carrier(
    ctx: _Ctx, node: LocationBody, line_nos: Iterable[int], method: Method
) -> tuple[str, CarrierRule | None, list[str]]:
    """The carrier for one shipment, the entry that chose it, and notes."""
    lines = [ctx.order.lines[n] for n in line_nos]
    skus = [ctx.stock.skus[line.sku] for line in lines]
    labels = ctx.labels(method) | {
        "node": node.location_id,
        "node_kind": node.kind,
        "node_region": node.region,
    }
    line_labels = _line_labels(skus)
    hazmat = any(s.hazmat for s in skus)
    notes: list[str] = []
    for entry in ctx.rules.carriers:
        if not all(_holds(m, labels, line_labels) for m in entry.matchers):
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
    return moment.astimezone(zone(node.timezone)).strftime("%a %H:%M %Z")


def _decide(
    ctx: _Ctx,
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
            Shipment(
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
        others.sort(key=lambda c: _key(c, rule.rank_by, frozenset(range(len(order.lines)))))
        alternatives = [
            Alternative(
                location_id=c.node.location_id,
                distance_km=None if c.distance is None else round(c.distance, 2),
                ready_at=c.slot.at,
                until=c.slot.until,
                same_day=c.slot.same_day,
            )
            for c in others[: ctx.rules.bopis_alternatives]
        ]
        summary = (
            f"pickup at {first.node.location_id} ({_fmt_km(first.distance)}), "
            f"ready {_fmt_local(first.slot.at, first.node)} until "
            f"{_fmt_local(first.slot.until, first.node)}"
        )
    else:
        parts = [
            f"{s.location_id} ({_fmt_km(s.distance_km)}, {s.carrier}, ships "
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
    return Decision(
        order_id=order.order_id,
        status="routed",
        requested_method=requested,
        method=method,
        rule_id=rule.id,
        decided_for=ctx.now,
        lines=[
            LineRoute(line_no=n, sku=line.sku, quantity=line.quantity, location_id=line_routes[n])
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
    ctx: _Ctx, method: Method, traces: list[RuleTrace]
) -> tuple[RoutingRule, _Plan, FallbackUsed | None] | RoutingRule | None:
    """Try the rules in order for ``method``: a plan, the rule that held, or None."""
    rule_list = ctx.rules.rules or DEFAULT_RULES
    for rule in rule_list:
        if not rule.enabled:
            traces.append(
                RuleTrace(rule_id=rule.id, outcome="skipped", detail="disabled", method=method)
            )
            continue
        why = _why_not_matched(rule, ctx, method)
        if why is not None:
            traces.append(
                RuleTrace(rule_id=rule.id, outcome="not_matched", detail=why, method=method)
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
                RuleTrace(rule_id=rule.id, outcome="held", detail="fallback: hold", method=method)
            )
            return rule
    return None


def _context(
    order: RouteOrder,
    stock: Inventory,
    nodes: Sequence[LocationBody],
    rules: FulfilmentRouting,
    now: datetime,
) -> _Ctx:
    origin, market = resolve_region(order.destination_region, rules, nodes)
    skus = [stock.skus[line.sku] for line in order.lines]
    value = 0.0
    weight = 0.0
    for line, sku in zip(order.lines, skus, strict=True):
        price = line.unit_price if line.unit_price is not None else sku.price
        value += float(price) * line.quantity - float(line.discount)
        weight += sku.weight_kg * line.quantity
    return _Ctx(
        order=order,
        stock=stock,
        nodes=nodes,
        rules=rules,
        now=now,
        by_id={n.location_id: n for n in nodes},
        origin=origin,
        market=market,
        value=value,
        weight=weight,
        line_labels=_line_labels(skus),
    )


def _short_lines(
    order: RouteOrder, stock: Inventory, nodes: Sequence[LocationBody], rules: FulfilmentRouting
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
    rules: FulfilmentRouting,
    now: datetime,
) -> Decision:
    """Decide where ``order`` is fulfilled from at ``now``; pure and deterministic.

    Args:
        order: The order (or cart) to route.
        stock: Catalogue, stock per SKU × node and today's load per node; not changed.
        nodes: Every fulfilment node; their order does not matter (ties break on id).
        rules: The ``[fulfilment]`` section in force.
        now: The moment to route for, timezone-aware (when replaying: when it was placed).

    Returns:
        The decision: node(s) per line, carrier, promised-by, and a trace of every rule
        and candidate node considered.
    """
    unknown = [line.sku for line in order.lines if line.sku not in stock.skus]
    nodes = sorted(nodes, key=lambda n: n.location_id)
    if unknown:
        detail = f"unknown SKU(s): {', '.join(dict.fromkeys(unknown))}"
        return _unrouted(order, now, "unfulfillable", None, detail, [], [detail])
    ctx = _context(order, stock, nodes, rules, now)
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
        home_ctx = replace(ctx, order=home_order, distance={}, slots={})
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
    return Decision(
        order_id=order.order_id,
        status=status,
        requested_method=order.method,
        method=order.method,
        rule_id=rule_id,
        decided_for=now,
        lines=[
            LineRoute(line_no=n, sku=line.sku, quantity=line.quantity, location_id=None)
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


# -- routing many orders ------------------------------------------------------------------


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
    rules: FulfilmentRouting,
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


# -- saving into the rules file -------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A tomlkit item as plain Python data (plain data passes through)."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _set_fields(
    table: MutableMapping[str, Any], old: BaseModel | None, new: BaseModel, skip: str = ""
) -> None:
    """Rewrite only the keys of ``table`` whose parsed value differs between the models."""
    dumped = new.model_dump(mode="json", exclude_none=True)  # TOML has no null
    for name, info in type(new).model_fields.items():
        if name == skip:
            continue
        value = getattr(new, name)
        if old is not None and getattr(old, name) == value:
            continue
        is_default = not info.is_required() and value == info.get_default(call_default_factory=True)
        if is_default:
            if name in table:
                del table[name]
        elif _plain(table.get(name)) != dumped[name]:
            table[name] = dumped[name]


def update_fulfilment_document(
    document: MutableMapping[str, Any], routing: FulfilmentRouting
) -> None:
    """Write ``routing`` into a tomlkit document's ``[fulfilment]`` section, in place.

    Only what changed is touched, so comments survive: a rule that did not change keeps
    its table exactly (comments and all) even when rules are reordered; in a changed rule
    only the changed keys are rewritten (a key set back to its default is removed); the
    other settings are rewritten only when their value changed.  The caller validates and
    saves the document atomically (``rules.file``).
    """
    import tomlkit  # local: only saving needs it

    section = document.get("fulfilment")
    if section is None:
        if routing == FulfilmentRouting():
            return
        document["fulfilment"] = tomlkit.table()
        section = document["fulfilment"]
    try:
        before: FulfilmentRouting | None = FulfilmentRouting.model_validate(_plain(section))
    except ValueError:
        before = None
    _set_fields(section, before, routing, skip="rules")
    if before is not None and before.rules == routing.rules:
        return
    old_tables = {str(t.get("id")): t for t in section.get("rules") or []}
    old_rules = {r.id: r for r in before.rules} if before is not None else {}
    aot = tomlkit.aot()
    for rule in routing.rules:
        table = old_tables.get(rule.id)
        if table is None:
            table = tomlkit.table()
            table["id"] = rule.id
        _set_fields(table, old_rules.get(rule.id) if rule.id in old_tables else None, rule)
        aot.append(table)
    if "rules" in section:
        del section["rules"]
    if routing.rules:
        section["rules"] = aot
