"""The canonical model: every event omniops stores, whatever feed it came from.

A canonical event is one JSON object (one line of a JSON Lines file)::

    {"id": "shopify-8123", "type": "order.placed", "ts": "2026-11-23T14:05:00Z",
     "source": "webshop", "body": {...}}

* ``id``: unique per event, across every feed; the store is idempotent on it.
* ``type``: one of :data:`EVENT_TYPES`; selects the shape of ``body``.
* ``ts``: when the fact happened at the source, timezone-aware, normalised to UTC.
  For an order it is the time it was placed, for a stock snapshot the time it was counted.
* ``source``: the feed that delivered it (``webshop``, ``pos``, ``wms``, ...).
* ``body``: the fact itself, one of the ``*Body`` models below.

Money is a decimal with at most two places; quantities are integers.  Every model
forbids unknown fields so a renamed field upstream is caught, not silently dropped.

Only what the store can hold, and what is plausible, passes (a :class:`ValidationError`
naming the field otherwise, which every feed turns into a 422 / quarantine row, so a
poison value never reaches the writer):

* counts and quantities within ±10^12 (:data:`COUNT_LIMIT`: far inside SQLite's 64-bit
  integers, with room for sums over millions of rows);
* finite numbers only (no ``NaN`` or ``Infinity``), with plausible bounds on lead times
  and weights;
* text that is valid UTF-8 (no lone surrogates such as ``U+D800``);
* money with at most two decimals (``1.005`` is refused, never rounded);
* event times within :class:`TimeWindow` around the clock: 1 year ahead at most, and
  100 years back for a bulk import of history (``omniops serve`` narrows it to its config,
  10 years back by default: ``max_past_days``, ``max_future_days``, ``max_promise_days``,
  with its clock); promises, ETAs and delivery estimates up to 2 years ahead.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
)

from store.clock import SystemClock
from store.invisible import IDENTIFIER_PATTERN, clean_text

COUNT_LIMIT = 10**12
"""Largest magnitude of a count or quantity (well inside SQLite's 64-bit integers)."""

Count = Annotated[int, Field(ge=-COUNT_LIMIT, le=COUNT_LIMIT)]
"""A stock count or delta the store can hold and sum."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TimeWindow:
    """The plausible times around "now": older or later ones are a sender's bug.

    ``past`` / ``future`` bound an event's ``ts``; ``promise`` bounds how far ahead
    promises, ETAs and delivery estimates may lie (back, they may go as far as ``past``
    or ``promise``, whichever is longer).  ``now`` is the server's clock.
    """

    past: timedelta = timedelta(days=36500)
    future: timedelta = timedelta(days=365)
    promise: timedelta = timedelta(days=730)
    now: Callable[[], datetime] = field(default=_utcnow, compare=False)
    system: bool = field(init=False, compare=False, repr=False)
    """Whether ``now`` is the system clock: the default, or a :class:`SystemClock`'s
    ``now`` (``serve`` hands its clock's; reading it per event was 6 % of the GIL's time
    under ``POST /events`` batches)."""

    def __post_init__(self) -> None:
        system = self.now is _utcnow or getattr(self.now, "__func__", None) is SystemClock.now
        object.__setattr__(self, "system", system)

    def check(self, value: datetime, *, promise: bool = False) -> datetime:
        """``value`` if inside the window, else :class:`ValueError` saying which bound.

        On the system clock (the default ``now``, or a :class:`SystemClock`'s), a time well
        inside the window (:data:`CLOCK_MARGIN` from either bound) is accepted against a
        sample of the clock at most :data:`CLOCK_LIFE` old, which is the answer the clock
        itself gives (a bulk load validates hundreds of thousands of times a second; reading
        the clock was a sixth of validation).  A time near a bound, or any other ``now``
        (a test's, a replay's), reads the clock.
        """
        # A promise may lie as far back as history goes; ahead, it has its own bound.
        before = max(self.past, self.promise) if promise else self.past
        after = self.promise if promise else self.future
        if self.system:
            sample = _clock_sample
            if time.monotonic() - sample[0] < CLOCK_LIFE:
                bounds = sample[1].get((before, after))
                if bounds is None:
                    bounds = sample[1][(before, after)] = (
                        sample[2] - before + CLOCK_MARGIN,
                        sample[2] + after - CLOCK_MARGIN,
                    )
                if bounds[0] < value < bounds[1]:
                    return value
            else:
                _sample_clock()
        now = self.now()
        if value < now - before:
            raise ValueError(
                f"time {value.isoformat()} is more than {before.days} days before now "
                f"({now:%Y-%m-%d}): refused as implausible"
            )
        if value > now + after:
            raise ValueError(
                f"time {value.isoformat()} is more than {after.days} days after now "
                f"({now:%Y-%m-%d}): refused as implausible"
            )
        return value


CLOCK_LIFE = 0.05
"""Seconds a sample of the system clock stands for it in :meth:`TimeWindow.check`."""

CLOCK_MARGIN = timedelta(seconds=60)
"""How far inside the window a time must be to be accepted against a clock sample."""

_clock_sample: tuple[float, dict[tuple[timedelta, timedelta], tuple[datetime, datetime]], datetime]
_clock_sample = (-math.inf, {}, datetime.min.replace(tzinfo=UTC))
"""``(monotonic time taken, bounds by (before, after), system clock then)``; replaced whole."""


def _sample_clock() -> None:
    global _clock_sample
    _clock_sample = (time.monotonic(), {}, _utcnow())


_window = TimeWindow()


def set_time_window(window: TimeWindow) -> TimeWindow:
    """Make ``window`` the one every validation uses; returns the previous one."""
    global _window
    previous, _window = _window, window
    return previous


def time_window() -> TimeWindow:
    """The window in force."""
    return _window


def _text_storable(value: str) -> str:
    value = clean_text(value)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"not valid UTF-8: lone surrogate at character {exc.start}") from None
    return value


Text = Annotated[str, AfterValidator(_text_storable)]
"""Free text (names, reasons, details): any string that is valid UTF-8, kept with each
control character as a space and each invisible one dropped (:mod:`store.invisible`).

The check is on these fields only: pydantic-core already refuses a lone surrogate in JSON
text, and in a Python ``str`` bound for a constrained string (:data:`Identifier`) or a
``Literal``, before any validator runs; a validator on every field (as this module had)
made a Python call per field of every event for nothing (a fifth of validation's CPU)."""

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=2)]
"""A non-negative amount in the store's currency, two decimal places."""

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=IDENTIFIER_PATTERN)]
"""A non-empty external or canonical identifier, with no control or invisible character
(:mod:`store.invisible`: refused, not cleaned, so two ids never merge unseen)."""

HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

LocationKind = Literal["warehouse", "store", "dropship"]
ChannelKind = Literal["web", "pos", "marketplace"]
Method = Literal["ship", "bopis", "ship_from_store"]
METHODS: tuple[Method, ...] = get_args(Method)
"""Every method, in the order of :data:`Method`."""
FulfillmentStatus = Literal[
    "released",
    "picked",
    "packed",
    "shipped",
    "ready_for_pickup",
    "picked_up",
    "delivered",
    "exception",
]
InboundStatus = Literal["open", "received", "cancelled"]

UNCATEGORISED = "uncategorised"
"""The category of a product that came without one."""

UNAVAILABLE_REASON = "unavailable"
"""Why an order placed with no lines counts as cancelled the instant it was placed."""


def _is_none(value: object) -> bool:
    """True for an unset optional field added later: left out of the serialised form.

    So an event that does not use it serialises exactly as before the field existed.
    """
    return value is None


class _Strict(BaseModel):
    """Base for canonical bodies: unknown fields are an error, models are immutable.

    Every text field must be valid UTF-8 (SQLite binds only that): a free-text field is
    :data:`Text`; an :data:`Identifier` or a ``Literal`` is refused by pydantic-core itself
    when it holds a lone surrogate.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SkuBody(_Strict):
    """A sellable item of the catalogue (the golden record for one SKU).

    A product with no category (absent, ``null`` or blank) lands in the explicit
    :data:`UNCATEGORISED` category instead of being refused.
    """

    sku: Identifier
    name: Text = ""
    category: Identifier = "uncategorised"
    product_type: Identifier
    unit_cost: Money
    price: Money
    reorder_point: int = Field(default=0, ge=0, le=COUNT_LIMIT)
    """Available units below which a SKU × location is at risk."""
    lead_time_days: float = Field(default=3.0, ge=0, le=3650)
    """Replenishment lead time; days of cover below it means at risk."""
    hazmat: bool = False
    weight_kg: float = Field(default=0.5, ge=0, le=1_000_000)

    @field_validator("category", mode="before")
    @classmethod
    def _category_or_uncategorised(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return UNCATEGORISED
        return value


class OpeningHours(_Strict):
    """Daily opening hours and order cut-off in the node's own time zone (``HH:MM``)."""

    opens: Text = "00:00"
    closes: Text = "23:59"
    cutoff: Text | None = None
    """Orders released after this local time leave the next day."""

    @field_validator("opens", "closes", "cutoff")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not HHMM.match(value):
            raise ValueError(f"expected HH:MM (24 h), got {value!r}")
        return value


class LocationBody(_Strict):
    """A fulfillment node: warehouse, store or drop-ship supplier."""

    location_id: Identifier
    name: Text = ""
    kind: LocationKind
    region: Identifier
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    timezone: Text = "UTC"
    hours: OpeningHours = OpeningHours()
    safety_buffer: int = Field(default=0, ge=0, le=COUNT_LIMIT)
    """Units held back from sale at this node (walk-in customers, miscounts)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class ChannelBody(_Strict):
    """A sales channel: the web shop, store POS, a marketplace."""

    channel_id: Identifier
    name: Text = ""
    kind: ChannelKind


class OrderLine(_Strict):
    """One line of an order."""

    sku: Identifier
    quantity: int = Field(gt=0, le=COUNT_LIMIT)
    unit_price: Money
    discount: Money = Decimal("0")
    """Discount on the whole line (not per unit)."""
    location_id: Identifier | None = Field(default=None, exclude_if=_is_none)
    """The node fulfilling this line when it is not the order's (several sellers, or a
    split): the line's sales and the per-location fulfillment figures count there."""


class OrderPlacedBody(_Strict):
    """An order was placed; ``ts`` of the event is the time it was placed.

    An order with no ``lines`` (a marketplace order whose items were never available) is
    stored as placed and cancelled at the same instant (see :data:`UNAVAILABLE_REASON`).
    """

    order_id: Identifier
    channel: Identifier
    method: Method
    destination_region: Identifier
    location_id: Identifier | None = None
    """The node fulfilling it, when the channel already assigned one."""
    promised_by: AwareDatetime | None = None
    """Ship-by time for ship orders, ready-by time for BOPIS: what the node must meet."""
    delivery_promised_by: AwareDatetime | None = Field(default=None, exclude_if=_is_none)
    """The delivery date promised to the customer (e.g. a marketplace's estimate shown at
    checkout), when the channel gives one; delivered after it is delivered late."""
    lines: list[OrderLine] = Field(default_factory=list, max_length=100_000)
    """Empty for an order that was never available: stored placed and cancelled."""
    shipping_charged: Money | None = Field(default=None, exclude_if=_is_none)
    """Shipping charged to the customer for the whole order (not part of net sales)."""

    @field_validator("promised_by", "delivery_promised_by")
    @classmethod
    def _plausible_promise(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _window.check(value, promise=True)


class OrderCancelledBody(_Strict):
    """An order was cancelled before fulfillment."""

    order_id: Identifier
    reason: Text = ""


class FulfillmentBody(_Strict):
    """A step in fulfilling an order; ``ts`` is when it happened."""

    order_id: Identifier
    status: FulfillmentStatus
    location_id: Identifier | None = None
    carrier: Text | None = None
    tracking: Text | None = None
    estimated_delivery: AwareDatetime | None = None
    """The carrier's own delivery estimate, given when shipped or updated in transit."""
    detail: Text = ""
    shipping_cost: Money | None = Field(default=None, exclude_if=_is_none)
    """What this shipment (its ``tracking``, or the order's only one) cost to send; the
    latest report of a shipment replaces an earlier one."""

    @field_validator("estimated_delivery")
    @classmethod
    def _plausible_estimate(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _window.check(value, promise=True)


class StockSnapshotBody(_Strict):
    """A full count of one SKU at one node; ``ts`` is when it was counted."""

    sku: Identifier
    location_id: Identifier
    on_hand: Count
    reserved: int = Field(default=0, ge=0, le=COUNT_LIMIT)
    source_system: Text = ""


class StockAdjustedBody(_Strict):
    """A change to on-hand stock (sale, receipt, damage, write-off, recount).

    ``reason`` is free text; the importers use ``write-off`` for stock written off.
    """

    sku: Identifier
    location_id: Identifier
    delta: Count
    reason: Text = ""
    source_system: Text = ""


class ListingBody(_Strict):
    """The quantity a channel currently advertises for a SKU (for oversell risk)."""

    channel: Identifier
    sku: Identifier
    location_id: Identifier
    advertised: int = Field(ge=0, le=COUNT_LIMIT)


class InboundBody(_Strict):
    """An inbound purchase-order line and its expected arrival."""

    po_id: Identifier
    sku: Identifier
    location_id: Identifier
    quantity: int = Field(gt=0, le=COUNT_LIMIT)
    eta: AwareDatetime
    status: InboundStatus = "open"

    @field_validator("eta")
    @classmethod
    def _plausible_eta(cls, value: datetime) -> datetime:
        return _window.check(value, promise=True)


class ReturnBody(_Strict):
    """Units returned; ``ts`` is when they were received."""

    return_id: Identifier
    order_id: Identifier | None = None
    sku: Identifier
    location_id: Identifier
    channel: Identifier
    quantity: int = Field(gt=0, le=COUNT_LIMIT)
    reason: Text = "unspecified"
    refund: Money = Decimal("0")


class _EventBase(_Strict):
    id: Identifier
    ts: AwareDatetime
    source: Identifier

    @field_validator("ts")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        try:
            moment = value.astimezone(UTC)
        except OverflowError:
            raise ValueError(f"time {value.isoformat()} is out of range") from None
        return _window.check(moment)


class SkuUpserted(_EventBase):
    """The catalogue record of a SKU was created or changed."""

    type: Literal["sku.upserted"]
    body: SkuBody


class LocationUpserted(_EventBase):
    """A node was created or changed."""

    type: Literal["location.upserted"]
    body: LocationBody


class ChannelUpserted(_EventBase):
    """A sales channel was created or changed."""

    type: Literal["channel.upserted"]
    body: ChannelBody


class OrderPlaced(_EventBase):
    """An order was placed."""

    type: Literal["order.placed"]
    body: OrderPlacedBody


class OrderCancelled(_EventBase):
    """An order was cancelled."""

    type: Literal["order.cancelled"]
    body: OrderCancelledBody


class FulfillmentUpdated(_EventBase):
    """An order moved through fulfillment."""

    type: Literal["fulfillment.updated"]
    body: FulfillmentBody


class StockSnapshot(_EventBase):
    """Stock of one SKU at one node was counted."""

    type: Literal["stock.snapshot"]
    body: StockSnapshotBody


class StockAdjusted(_EventBase):
    """Stock of one SKU at one node changed by a delta."""

    type: Literal["stock.adjusted"]
    body: StockAdjustedBody


class ListingUpdated(_EventBase):
    """A channel changed the quantity it advertises."""

    type: Literal["listing.updated"]
    body: ListingBody


class InboundUpdated(_EventBase):
    """An inbound purchase-order line was created or changed."""

    type: Literal["inbound.updated"]
    body: InboundBody


class ReturnReceived(_EventBase):
    """A return was received."""

    type: Literal["return.received"]
    body: ReturnBody


class OrderEditedBody(_Strict):
    """An order was edited after placement; ``ts`` of the event is when the edit happened.

    ``lines`` are the order's complete lines after the edit (the same shape as
    :class:`OrderPlacedBody`'s): an item removed, a quantity changed, a line added, a price
    or discount changed.  The edit stamped latest wins, whatever order edits arrive in; an
    edit of an order not placed yet waits for its placement.  An edit that removes every
    line is a cancellation (send ``order.cancelled``), so at least one line is required.
    """

    order_id: Identifier
    lines: list[OrderLine] = Field(min_length=1, max_length=100_000)


class OrderEdited(_EventBase):
    """An order's lines were changed after placement."""

    type: Literal["order.edited"]
    body: OrderEditedBody


Event = Annotated[
    (
        SkuUpserted
        | LocationUpserted
        | ChannelUpserted
        | OrderPlaced
        | OrderCancelled
        | FulfillmentUpdated
        | StockSnapshot
        | StockAdjusted
        | ListingUpdated
        | InboundUpdated
        | ReturnReceived
        | OrderEdited
    ),
    Field(discriminator="type"),
]
"""Any canonical event, discriminated by ``type``."""

EVENT_TYPES: tuple[str, ...] = (
    "sku.upserted",
    "location.upserted",
    "channel.upserted",
    "order.placed",
    "order.cancelled",
    "fulfillment.updated",
    "stock.snapshot",
    "stock.adjusted",
    "listing.updated",
    "inbound.updated",
    "return.received",
    "order.edited",
)

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(frozen=True)
class Quarantined:
    """A payload that failed validation, on its way to the quarantine table.

    ``raw`` is the payload as received (redacted where a feed must), ``error`` names the
    file, line or field that failed.
    """

    source: str
    raw: str
    error: str

    def __post_init__(self) -> None:
        # A quarantine row must always be storable, whatever arrived: lone surrogates
        # become their escapes, so the row that explains a refusal cannot fail itself.
        for name in ("source", "raw", "error"):
            value = getattr(self, name)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                fixed = value.encode("utf-8", "backslashreplace").decode("utf-8")
                object.__setattr__(self, name, fixed)


def parse_event(data: str | bytes | dict[str, Any]) -> Event:
    """Validate one canonical event from JSON text or a decoded object.

    Raises :class:`pydantic.ValidationError` naming the failing field.
    """
    if isinstance(data, dict):
        return EVENT_ADAPTER.validate_python(data)
    return EVENT_ADAPTER.validate_json(data)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema of one canonical event (what ``omniops schema`` prints)."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = "omniops canonical event"
    schema["description"] = (
        "One line of an omniops JSON Lines feed: a unique id, a type, a UTC timestamp, "
        "the source feed and the body the type selects."
    )
    return schema


def dump_event(event: Event) -> str:
    """Serialise an event to its canonical one-line JSON form (``ts`` with ``Z``)."""
    return event.model_dump_json(exclude_none=False)
