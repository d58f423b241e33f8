"""One Kafka record → canonical events or a quarantined payload.

* ``canonical``: the value is what ``POST /events`` takes (one event, an array, or JSON
  Lines), parsed by :func:`feeds.webhooks.canonical.parse_events_body`.
* ``channel``: the value is a channel's webhook payload relayed through a topic; a header
  (``channel`` by default) names the channel (``shopify``, ``square``, ``easypost``,
  ``amazon``) and the webhook mappers of :mod:`feeds.webhooks` map it.  The topic is
  trusted (the cluster authenticates producers), so no signature is checked.  Shopify's
  ``X-Shopify-Topic`` / ``X-Shopify-Event-Id`` travel as headers of the same names; a
  record without an event id header is identified by its topic, partition and offset.
* ``debezium``: a change envelope mapped by the ``[debezium]`` table mapping
  (:mod:`feeds.kafka.debezium`).

Whatever cannot be mapped is quarantined with ``kafka <topic>/<partition>@<offset>`` in
the reason, so the operator can find the record on the cluster.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from feeds.kafka.config import Format
from feeds.webhooks import Mapped, PayloadError, amazon, easypost, shopify, square
from feeds.webhooks.canonical import parse_events_body
from feeds.webhooks.mapping import Mapping
from feeds.webhooks.redact import redact_raw
from rules.errors import describe_validation_error
from store.model import Event, Method, Quarantined, parse_event

from .debezium import map_change

TrackingLookup = Callable[[str], Awaitable[str | None]]
MethodLookup = Callable[[str], Awaitable[Method | None]]
"""Placed order id → its method (None: not placed), read from the store."""
"""Tracking number → order id (the store's lookup, for EasyPost trackers)."""

CHANNELS = ("shopify", "square", "easypost", "amazon")


@dataclass(frozen=True)
class Record:
    """The parts of a Kafka record the formats read."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()

    @property
    def where(self) -> str:
        """``kafka topic/partition@offset``: where the record is on the cluster."""
        return f"kafka {self.topic}/{self.partition}@{self.offset}"

    def header(self, name: str) -> str | None:
        """A header's value as text (names compare case-insensitively)."""
        wanted = name.lower()
        for key, raw in self.headers:
            if key.lower() == wanted:
                return raw.decode("utf-8", "replace") if raw is not None else None
        return None


async def no_lookup(code: str) -> str | None:
    """A tracking lookup that finds no order (no store to read)."""
    return None


async def no_method(order_id: str) -> Method | None:
    """A method lookup that finds no order (no store to read)."""
    return None


HELD_HEADERS = ("X-Shopify-Topic", "X-Shopify-Event-Id", "X-Shopify-Webhook-Id")
"""Headers a channel record is mapped with (besides its channel header): kept with it."""


async def decode(
    record: Record,
    fmt: Format,
    *,
    feed: str,
    mapping: Mapping,
    channel_header: str = "channel",
    order_for_tracking: TrackingLookup = no_lookup,
    unmapped: list[tuple[str, str]] | None = None,
    order_method: MethodLookup = no_method,
) -> list[Event | Quarantined]:
    """The items of one record (empty for a tombstone or a payload with no fact).

    ``order_for_tracking`` and ``order_method`` read the store (``serve``'s reader): the
    order an EasyPost tracker belongs to, and the method of the order a Square
    fulfillment update names (its states are a pickup's or a shipment's by it).

    ``unmapped``: the ``(kind, external id)`` a channel record was mapped without (a
    Shopify order stored without a node) are added to it.
    """
    known: dict[str, str | None] = {}
    methods: dict[str, Method | None] = {}
    if fmt == "channel" and record.value is not None:
        channel = (record.header(channel_header) or "").strip().lower()
        if channel == "easypost":
            # The tracker's order is looked up (asynchronously) before the record is mapped.
            with contextlib.suppress(Exception):
                tracker = easypost.parse_tracker(json.loads(record.value))
                if tracker.status in easypost.STATUS:
                    code = tracker.tracking_code
                    known[code] = await order_for_tracking(code)
        elif channel == "square" and b"order.fulfillment.updated" in record.value:
            with contextlib.suppress(Exception):
                fulfilled = square.fulfilled_order(json.loads(record.value))
                if fulfilled is not None:
                    methods[fulfilled] = await order_method(fulfilled)
    return decode_now(
        record,
        fmt,
        feed=feed,
        mapping=mapping,
        channel_header=channel_header,
        order_for_tracking=known.get,
        unmapped=unmapped,
        order_method=methods.get,
    )


def decode_now(
    record: Record,
    fmt: Format,
    *,
    feed: str,
    mapping: Mapping,
    channel_header: str = "channel",
    order_for_tracking: Callable[[str], str | None] = lambda code: None,
    unmapped: list[tuple[str, str]] | None = None,
    order_method: Callable[[str], Method | None] = lambda order_id: None,
) -> list[Event | Quarantined]:
    """:func:`decode` with lookups that answer at once (``quarantine replay``'s)."""
    raw = record.value
    try:
        if fmt == "canonical":
            if raw is None:
                return []
            if raw[:1] == b"{":
                # The usual record, one event: validated straight from the bytes.  Anything
                # else (a batch, JSON Lines, an error) takes the path POST /events takes.
                with contextlib.suppress(ValidationError):
                    return [parse_event(raw)]
            items: list[Event | Quarantined] = []
            for line in parse_events_body(raw):
                item = line.item
                if isinstance(item, Quarantined):
                    reason = item.error.replace("POST /events", record.where, 1)
                    item = Quarantined(source=item.source, raw=item.raw, error=reason)
                items.append(item)
            return items
        if raw is None:
            return []
        data = _json(raw)
        if fmt == "debezium":
            return _placed(record, map_change(data, mapping.debezium))
        mapped = _channel(record, data, mapping, channel_header, order_for_tracking, order_method)
        if unmapped is not None:
            unmapped.extend(mapped.unmapped)
        return _placed(record, mapped.items)
    except PayloadError as exc:
        message = str(exc)
    except ValidationError as exc:
        message = describe_validation_error(exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        message = f"could not map the payload ({type(exc).__name__}: {exc})"
    text = "" if raw is None else raw.decode("utf-8", "replace")
    return [Quarantined(source=feed, raw=redact_raw(text), error=f"{record.where}: {message}")]


def _placed(record: Record, items: Iterable[Event | Quarantined]) -> list[Event | Quarantined]:
    """``items``, each quarantined part's reason saying where the record is."""
    out: list[Event | Quarantined] = []
    for item in items:
        if isinstance(item, Quarantined) and record.where not in item.error:
            item = Quarantined(
                source=item.source, raw=item.raw, error=f"{record.where}: {item.error}"
            )
        out.append(item)
    return out


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise PayloadError("(value)", f"not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise PayloadError("(value)", f"not valid JSON: {exc}") from None


def _channel(
    record: Record,
    data: object,
    mapping: Mapping,
    channel_header: str,
    order_for_tracking: Callable[[str], str | None],
    order_method: Callable[[str], Method | None],
) -> Mapped:
    if not isinstance(data, dict):
        raise PayloadError("(value)", "expected a JSON object")
    channel = (record.header(channel_header) or "").strip().lower()
    if channel not in CHANNELS:
        raise PayloadError(
            channel_header, f"header must name one of {', '.join(CHANNELS)}; got {channel!r}"
        )
    if channel == "shopify":
        topic = record.header("X-Shopify-Topic")
        if not topic:
            raise PayloadError("X-Shopify-Topic", "missing header")
        delivery = (
            record.header("X-Shopify-Event-Id")
            or record.header("X-Shopify-Webhook-Id")
            or f"{record.topic}-{record.partition}-{record.offset}"
        )
        return shopify.map_shopify(topic, delivery, data, mapping.shopify)
    if channel == "square":
        fulfilled = square.fulfilled_order(data)
        method = None if fulfilled is None else order_method(fulfilled)
        return square.map_square(data, mapping.square, method=method)
    if channel == "amazon":
        return amazon.map_amazon(data, mapping.amazon)
    tracker = easypost.parse_tracker(data)
    order = None
    if tracker.status in easypost.STATUS:
        order = order_for_tracking(tracker.tracking_code)
    return easypost.map_tracker(tracker, order)
