"""The ``[fulfillment]`` section of the rules file: routing rules, carriers, nodes, regions.

Every model forbids unknown keys (a typo is caught) and is immutable; every field has a
working default, so an absent section routes with :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_validator,
)

from rules.geo import CalendarDay, NthWeekday
from rules.matchers import Matcher, parse_matchers
from store.model import Identifier, OpeningHours

NodeKind = Literal["warehouse", "store", "dropship"]
NODE_KINDS: tuple[NodeKind, ...] = ("warehouse", "store", "dropship")


Criterion = Literal[
    "fewest_splits", "same_market", "distance", "manual_rank", "remaining_capacity", "soonest"
]
"""A ranking criterion (see the module docstring)."""


Fallback = Literal["next_rule", "next_pickup_window", "hold"]
"""What a rule does when it finds no plan."""


Window = Literal["promise", "today", "any"]
"""Which fulfillment / pickup window a node must meet."""


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


class StrictModel(BaseModel):
    """Base of the routing models: unknown keys are an error (a typo is caught), immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_matchers(text: str, known: Sequence[str], what: str) -> list[Matcher]:
    matchers = parse_matchers(text)
    for m in matchers:
        if m.name not in known:
            raise ValueError(
                f"{what}: unknown label {m.name!r} in {text!r}; known labels: {', '.join(known)}"
            )
    return matchers


class RegionInfo(StrictModel):
    """Where a destination region (or postal prefix) is, for distances, and its market."""

    lat: float = Field(ge=-90, le=90)
    """Latitude of the region's centroid (degrees)."""
    lon: float = Field(ge=-180, le=180)
    """Longitude of the region's centroid (degrees)."""
    market: str | None = None
    """The market the region belongs to (default: the region itself)."""


_YEARLY = re.compile(r"--(\d\d)-(\d\d)")
_NTH = {"1st": 1, "first": 1, "2nd": 2, "second": 2, "3rd": 3, "third": 3, "4th": 4}
_NTH |= {"fourth": 4, "5th": 5, "fifth": 5, "last": -1}
_RULE = re.compile(
    r"(?P<nth>[a-z0-9]+)\s+(?P<weekday>[a-z]+)\s+(?:of|in)\s+(?P<month>[a-z]+)"
    r"(?:\s*(?P<sign>[+-])\s*(?P<days>[0-9]|[12][0-9]|3[01])(?:\s*days?)?)?",
    re.IGNORECASE,
)


_WEEKDAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august"]
_MONTH_NAMES += ["september", "october", "november", "december"]
_WEEKDAY_WORDS = {w: i for i, n in enumerate(_WEEKDAY_NAMES) for w in (n, n[:3])}
_MONTH_WORDS = {w: i + 1 for i, n in enumerate(_MONTH_NAMES) for w in (n, n[:3])}


def _weekday_rule(text: str) -> NthWeekday | None:
    """``"4th Thu of Nov"``, ``"last Monday in May"``, ``"4th Thu of Nov +1"``, or None."""
    match = _RULE.fullmatch(text.strip())
    if match is None:
        return None
    nth = _NTH.get(match["nth"].lower())
    weekday = _WEEKDAY_WORDS.get(match["weekday"].lower())
    month = _MONTH_WORDS.get(match["month"].lower())
    if nth is None or weekday is None or month is None:
        return None
    offset = int(match["days"] or 0) * (-1 if match["sign"] == "-" else 1)
    return NthWeekday(month=month, weekday=weekday, nth=nth, offset=offset)


def _day(value: object) -> CalendarDay:
    """A local date, ``"--MM-DD"`` for that day of every year, or a weekday rule."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, NthWeekday):
        return value
    if isinstance(value, str):
        yearly = _YEARLY.fullmatch(value)
        try:
            if yearly is not None:
                date(2000, int(yearly[1]), int(yearly[2]))  # a leap year: --02-29 exists
                return value
            return date.fromisoformat(value)
        except ValueError:
            pass
        rule = _weekday_rule(value)
        if rule is not None:
            return rule
    raise ValueError(
        f'expected a date (2026-12-25) or a day of every year ("--12-25", "4th Thu of Nov", '
        f'"last Mon of May", "4th Thu of Nov +1"), got {value!r}'
    )


def _day_text(value: CalendarDay) -> object:
    """How a day is written back to the rules file: a date stays a date, a rule its text."""
    return str(value) if isinstance(value, NthWeekday) else value


Day = Annotated[
    CalendarDay,
    PlainValidator(_day),
    PlainSerializer(_day_text, return_type=date | str),
]
"""A local date (``2026-12-25``, or the text ``"2026-12-25"``), a day of every year, ISO
8601's ``"--MM-DD"`` (``"--12-25"``), or a weekday rule: ``"<nth> <weekday> of <month>"``
with nth ``1st`` to ``5th`` or ``last``, optionally ``+N`` / ``-N`` days (``"4th Thu of
Nov"`` is US Thanksgiving, ``"4th Thu of Nov +1"`` the Friday after it, ``"last Mon of
May"`` Memorial Day)."""


class NodeSettings(StrictModel):
    """Per-node routing settings (``[fulfillment.nodes.<location_id>]``)."""

    enabled: bool = True
    """False takes the node out of routing (a store short-staffed, a flooded warehouse)."""
    capacity: int | None = Field(default=None, ge=0)
    """Orders the node can take per day (overrides the capacity of its kind)."""
    rank: int = 100
    """Manual rank for the ``manual_rank`` criterion; lower is preferred."""
    prep_minutes: int | None = Field(default=None, ge=0, le=7 * 24 * 60)
    """Preparation time at this node (overrides the kind's and the rule's)."""
    closed_days: list[Day] = Field(default_factory=list, max_length=1000)
    """Local dates the node does not open (a holiday, a stock-take), besides those of its
    kind in ``[fulfillment] closed_days``: ``closed_days = [2026-12-26, "2027-01-02"]``;
    ``"--12-25"`` is the 25th of December of every year."""
    special_hours: dict[Day, OpeningHours] = Field(default_factory=dict, max_length=1000)
    """Hours for given local dates instead of the daily ones, e.g. ``"2026-12-24" = {
    opens = "09:00", closes = "17:00", cutoff = "15:00" }`` (replacing its kind's for the
    date)."""


class CarrierRule(StrictModel):
    """One ``[[fulfillment.carriers]]`` entry: the first one matching a shipment is used."""

    match: str = ""
    """Label matchers on the shipment (order labels, node labels, its lines' labels)."""
    carrier: Identifier
    """The carrier / service name, e.g. ``UPS Ground``."""
    air: bool = False
    """An air service: never used for hazmat unless ``allow_air_for_hazmat``."""
    transit_days: float | None = Field(default=None, ge=0, le=365, allow_inf_nan=False)
    """Days from ship-by to delivery, for the estimated delivery; None = unknown (at most
    365: a year in transit is a typo, and infinity would overflow the estimate)."""

    _matchers: list[Matcher] = PrivateAttr(default_factory=list)

    @field_validator("match")
    @classmethod
    def _valid_match(cls, value: str) -> str:
        for m in _check_matchers(value, CARRIER_LABELS, "match"):
            if m.name == "node_kind" and m.op in ("=", "!=") and m.value not in NODE_KINDS:
                raise ValueError(
                    f"match: unknown node kind {m.value!r} in {value!r}; "
                    f"node kinds: {', '.join(NODE_KINDS)}"
                )
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Parse the matchers once."""
        self._matchers = parse_matchers(self.match)

    @property
    def matchers(self) -> list[Matcher]:
        """The parsed ``match`` expression."""
        return self._matchers


class RoutingRule(StrictModel):
    """One ordered ``[[fulfillment.rules]]`` entry: match, filters, ranking, splits, fallback."""

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


SECTION = "fulfillment"
"""The rules file's routing section."""
LEGACY_SECTION = "fulfilment"
"""The section's British spelling, still accepted so existing files load unchanged."""


def section_key(document: Mapping[str, Any]) -> str:
    """The routing section's key in ``document``: the legacy one only if the file uses it."""
    return LEGACY_SECTION if LEGACY_SECTION in document and SECTION not in document else SECTION


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
"""The rules used when ``[fulfillment]`` has no rules at all."""


class FulfillmentRouting(StrictModel):
    """The ``[fulfillment]`` section of the rules file: routing rules and their settings.

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
    closed_days: dict[NodeKind, Annotated[list[Day], Field(max_length=1000)]] = Field(
        default_factory=dict
    )
    """Local dates each kind of node does not open, e.g. ``store = [2026-11-26,
    2026-12-25]`` (each node in its own time zone); a node's own ``closed_days`` add to
    its kind's."""
    special_hours: dict[NodeKind, Annotated[dict[Day, OpeningHours], Field(max_length=1000)]] = (
        Field(default_factory=dict)
    )
    """Hours each kind of node keeps on given local dates instead of its daily ones:
    ``[fulfillment.special_hours.store] "2026-12-24" = { opens = "09:00", closes =
    "17:00" }`` (a closed day stays closed)."""

    @field_validator("buffers", "capacity", "prep_minutes")
    @classmethod
    def _non_negative(cls, value: dict[NodeKind, int]) -> dict[NodeKind, int]:
        for kind, number in value.items():
            if number < 0:
                raise ValueError(f"{kind} must be ≥ 0, got {number}")
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> FulfillmentRouting:
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
    # their short codes, for distances when [fulfillment.regions] has no entry.
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
name.  ``[fulfillment.regions]`` entries take precedence."""


def check_references(
    routing: FulfillmentRouting,
    *,
    nodes: Collection[str] | None = None,
    carriers: Collection[str] | None = None,
) -> list[tuple[tuple[str | int, ...], str]]:
    """Nodes and carriers the section names that do not exist, as (location, message).

    Node kinds are checked when the section is parsed; node ids and carrier names live in
    the store, so they are checked only against what the caller passes (None: unchecked).
    Locations are paths in the rules file (``("fulfillment", "nodes", "WH-XX")``) so the
    problem can name its line.
    """
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if nodes is not None:
        known = ", ".join(sorted(nodes)) or "none yet"
        for node_id in routing.nodes:
            if node_id not in nodes:
                problems.append(
                    (("fulfillment", "nodes", node_id), f"unknown node {node_id!r}; nodes: {known}")
                )
        for i, entry in enumerate(routing.carriers):
            for m in entry.matchers:
                if m.name == "node" and m.op in ("=", "!=") and m.value not in nodes:
                    problems.append(
                        (
                            ("fulfillment", "carriers", i, "match"),
                            f"unknown node {m.value!r} in {entry.match!r}; nodes: {known}",
                        )
                    )
    if carriers is not None:
        known_carriers = ", ".join(sorted(carriers)) or "none yet"
        named: list[tuple[tuple[str | int, ...], str]] = [
            (("fulfillment", "default_carrier"), routing.default_carrier)
        ]
        for i, c in enumerate(routing.carriers):
            named.append((("fulfillment", "carriers", i, "carrier"), c.carrier))
        for loc, name in named:
            if name not in carriers:
                problems.append((loc, f"unknown carrier {name!r}; carriers: {known_carriers}"))
    return problems
