"""What the router reads (an order, the inventory) and what it decides (a traced decision)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
)

from rules.routing.config import NodeKind, StrictModel
from store.model import COUNT_LIMIT, Identifier, Method, Money, OrderPlacedBody, SkuBody

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


class RouteLine(StrictModel):
    """One line of an order to route."""

    sku: Identifier
    quantity: int = Field(gt=0, le=COUNT_LIMIT)
    unit_price: Money | None = None
    """Unit price for the order value (default: the SKU's catalogue price)."""
    discount: Money = Decimal("0")
    """Discount on the whole line."""


class RouteOrder(StrictModel):
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


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_O = TypeVar("_O", bound=BaseModel)
_MAKERS: dict[type[BaseModel], Callable[..., Any]] = {}


def _maker(cls: type[BaseModel]) -> Callable[..., Any]:
    """A constructor of ``cls`` taking its fields as keywords, generated once per class."""
    params: list[str] = []
    env: dict[str, Any] = {"_new": cls.__new__, "_cls": cls, "_set": object.__setattr__}
    items: list[str] = []
    for n, (name, info) in enumerate(cls.model_fields.items()):
        value = name
        if info.is_required():
            params.append(name)
        elif info.default_factory is not None:
            env[f"_f{n}"] = info.default_factory
            params.append(f"{name}=_none")
            value = f"(_f{n}() if {name} is _none else {name})"
        else:
            env[f"_d{n}"] = info.default
            params.append(f"{name}=_d{n}")
        items.append(f"{name!r}: {value}")
    env["_none"] = object()
    # One set shared by every instance: pydantic only reads it (a copy copies it first).
    env["_names"] = set(cls.model_fields)
    source = (
        f"def make(*, {', '.join(params)}):\n"
        "    m = _new(_cls)\n"
        f"    _set(m, '__dict__', {{{', '.join(items)}}})\n"
        "    _set(m, '__pydantic_fields_set__', _names)\n"
        "    _set(m, '__pydantic_extra__', None)\n"
        "    _set(m, '__pydantic_private__', None)\n"
        "    return m\n"
    )
    exec(source, env)  # generated from the model's own field names
    make: Callable[..., Any] = env["make"]
    _MAKERS[cls] = make
    return make


def maker(cls: type[_O]) -> Callable[..., _O]:
    """:func:`trusted` of ``cls`` as a function of the values (one call less per object)."""
    return _MAKERS.get(cls) or _maker(cls)


def trusted(cls: type[_O], /, **values: Any) -> _O:
    """A model (without private attributes) built from values already checked, unvalidated.

    For the router's hot path: validation costs several µs per object and a decision has
    a dozen.  The values must already be what validation would give (the right types, a
    float for a float); the instance holds every field in declaration order, the defaults
    for those not given, so it compares and serialises exactly like a validated one (its
    ``model_fields_set`` is every field, one set shared by the class's trusted instances:
    read it, never change it in place).  An unknown or missing field is a ``TypeError``.
    """
    make = _MAKERS.get(cls) or _maker(cls)
    model: _O = make(**values)
    return model


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
