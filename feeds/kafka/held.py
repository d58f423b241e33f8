"""Kafka records that were quarantined, kept for ``omniops quarantine replay``.

A record whose value could not be mapped (or mapped only in part: a Shopify refund at an
unmapped location), or that was stored with an unmapped id (a Shopify order whose location
has no mapping, stored without a node), is held like a webhook delivery
(:mod:`store.held`), source ``kafka``, its unmapped ids counted under its channel
(``shopify``, ...) for ``omniops mapping suggest``:

* ``raw``: the record's value, redacted as webhooks' bodies are
  (:func:`feeds.webhooks.redact.keep_raw`, whole up to its ``HELD_RAW_LIMIT``);
* ``topic``: what it is mapped with, as JSON: its ``format``, the channel header's name and
  the headers the format reads (channel, ``X-Shopify-Topic``, ``X-Shopify-Event-Id``);
* ``delivery_id``: where it is on the cluster, as JSON (``feed``, ``topic``,
  ``partition``, ``offset``), so a replay's reasons still say ``kafka topic/partition@offset``.

The held row's identity is its value and ``topic`` (not its offset): a producer's retry of
the same record at a new offset counts on the same row.  :func:`remap_record` maps a held
record again through :func:`feeds.kafka.formats.decode_now`, the mapper it came through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from feeds.kafka.config import Format
from feeds.kafka.formats import HELD_HEADERS, Record, decode_now
from feeds.webhooks import Mapped
from feeds.webhooks.mapping import Mapping
from feeds.webhooks.redact import keep_raw
from store.held import HeldDelivery
from store.model import Event, Method, Quarantined

SOURCE = "kafka"
"""The ``held`` source of a Kafka record."""

FORMATS: tuple[Format, ...] = ("canonical", "channel", "debezium")


SOFT_IDS = frozenset({("amazon", "seller_sku")})
"""Ids with a working default (a SellerSKU is its own SKU): counted, never held (the
same as :data:`feeds.runtime.quarantine.SOFT_IDS`, which cannot be imported here)."""

VENDOR = {"shopify": "Shopify", "square": "Square", "amazon": "Amazon"}


def hard_ids(channel: str, unmapped: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ids of ``unmapped`` that hold a record (soft ones left out)."""
    return [pair for pair in unmapped if (channel, pair[0]) not in SOFT_IDS]


def hold_record(
    record: Record,
    fmt: Format,
    items: Sequence[Event | Quarantined],
    *,
    feed: str,
    channel_header: str = "channel",
    unmapped: Sequence[tuple[str, str]] = (),
) -> HeldDelivery | None:
    """What to keep of ``record`` once its items are stored (None: nothing to keep).

    Kept when part of it was quarantined, or when it was stored with an ``unmapped`` id
    (a Shopify order without a node: held until the mapping knows its location, then
    replaced by its mapped version, as a webhook's is); only soft ids: counted, not held.
    """
    quarantined = [item for item in items if isinstance(item, Quarantined)]
    channel = (record.header(channel_header) or "").strip().lower() if fmt == "channel" else ""
    hard = hard_ids(channel, unmapped)
    if not quarantined and not unmapped:
        return None
    raw = keep_raw(record.value or b"")
    names = (channel_header, *HELD_HEADERS) if fmt == "channel" else ()
    headers = {name: got for name in names if (got := record.header(name)) is not None}
    context = {"format": fmt, "channel_header": channel_header, "headers": headers}
    where = {
        "feed": feed,
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    parts = [item.error for item in quarantined]
    text = "; ".join(parts)
    vendor = VENDOR.get(channel, channel)
    parts += [
        f"{record.where}: stored with unmapped {vendor} {kind} {ext}"
        for kind, ext in hard
        if ext not in text
    ]
    return HeldDelivery(
        source=SOURCE,
        raw=raw,
        reason="; ".join(parts) or "held",
        topic=json.dumps(context, sort_keys=True),
        delivery_id=json.dumps(where, sort_keys=True),
        unmapped=tuple(unmapped),
        event_ids=tuple(item.id for item in items if not isinstance(item, Quarantined)),
        quarantined=tuple((q.source, q.error, q.raw) for q in quarantined),
        hold=bool(quarantined) or bool(hard),
        adapter=channel,
    )


def adapter_of(topic: str) -> str:
    """Whose ids a held record's unmapped ids are: its channel (``""`` for other formats)."""
    try:
        context = json.loads(topic)
        if context.get("format") != "channel":
            return ""
        wanted = str(context.get("channel_header", "channel")).lower()
        for name, value in dict(context.get("headers", {})).items():
            if str(name).lower() == wanted:
                return str(value).strip().lower()
    except (ValueError, AttributeError, TypeError):
        pass
    return ""


def remap_record(
    topic: str,
    delivery_id: str,
    raw: str,
    mapping: Mapping,
    order_for_tracking: Callable[[str], str | None],
    order_method: Callable[[str], Method | None] = lambda order_id: None,
) -> Mapped:
    """Map a held record again (its ``topic``/``delivery_id`` as :func:`hold_record` wrote)."""
    context = json.loads(topic)
    where = json.loads(delivery_id)
    fmt = context["format"]
    if fmt not in FORMATS:
        raise ValueError(f"unknown Kafka record format {fmt!r}")
    record = Record(
        str(where["topic"]),
        int(where["partition"]),
        int(where["offset"]),
        raw.encode("utf-8"),
        tuple((str(k), str(v).encode("utf-8")) for k, v in context["headers"].items()),
    )
    unmapped: list[tuple[str, str]] = []
    items = decode_now(
        record,
        fmt,
        feed=str(where["feed"]),
        mapping=mapping,
        channel_header=str(context["channel_header"]),
        order_for_tracking=order_for_tracking,
        unmapped=unmapped,
        order_method=order_method,
    )
    # Only the ids that still hold it (a soft id's default works: it is placed).
    return Mapped(items=items, unmapped=hard_ids(adapter_of(topic), unmapped))


__all__ = ["SOFT_IDS", "SOURCE", "adapter_of", "hard_ids", "hold_record", "remap_record"]
