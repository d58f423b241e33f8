"""Held deliveries: keep them, suggest the mapping, replay them through today's mapping.

A delivery is *held* (:mod:`store.held`) when part of it was quarantined (an unmapped id,
a field that failed validation, an EasyPost tracker for an order not seen yet) or when it
was stored with an unmapped id (a Shopify order whose ``location_id`` has no mapping is
stored without a node and routed by the fulfillment rules).  ``serve`` keeps it redacted,
as quarantine keeps raw payloads (:func:`feeds.webhooks.redact.redact_raw`).

* :func:`hold_for`: what ``serve`` keeps of a delivery (None: nothing to keep);
  ``omniops ingest`` keeps a canonical line that failed validation
  (:func:`feeds.runtime.ingest.hold_line`, source ``ingest``), a Kafka feed a record it
  quarantined or stored with an unmapped id (source ``kafka``, :mod:`feeds.kafka.held`),
  the drop folder a file's quarantined rows (source ``dropfolder``,
  :func:`feeds.dropfolder.remap_dropped`), ``omniops import-history`` an invoice it
  quarantined (source ``history``, :func:`feeds.csv_import.remap_history`);
* :func:`suggest`: ``omniops mapping suggest``: every external id seen without a
  mapping, with its event count and a TOML stub for the mapping file;
* :func:`replay`: ``omniops quarantine replay``: each held delivery is mapped again with
  today's mapping and validated again; what now maps is applied **once** through the
  store's writer: an event already stored is a duplicate, except a node-less placement
  whose new version has a node, which *replaces* it (:func:`store.held.unplace`: its
  sales, routing decision and reservations move to the mapped node, counted once).  What
  still fails stays held and quarantined with its new reason.  Replaying twice changes
  nothing the second time.
* :func:`preview`: how many held deliveries a mapping would place (``serve`` logs it and
  shows it on ``/health`` as ``replayable`` after a hot reload; it never replays by itself).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from feeds.jsonl import parse_line
from feeds.webhooks import Mapped, PayloadError, amazon, easypost, shopify, square
from feeds.webhooks.canonical import parse_events_body
from feeds.webhooks.mapping import Mapping
from feeds.webhooks.redact import CUT, RAW_LIMIT, TOO_DEEP, keep_raw, redact_raw
from store.apply import Outcome, Touched, apply_batch, epoch
from store.held import (
    HeldDelivery,
    HeldRow,
    Settlement,
    UnmappedId,
    held_rows,
    settle_held,
    stored_placements,
    unmapped_ids,
    unplace,
)
from store.model import Event, Method, OrderPlaced, Quarantined, TimeWindow, set_time_window
from store.order_lines import ORDER_FOR_TRACKING, ORDER_METHOD, as_method
from store.writer import StoreWriter

SOFT_IDS = frozenset({("amazon", "seller_sku")})
"""Ids with a working default (a SellerSKU is its own SKU): counted, never held."""

REPLAYABLE = (
    "shopify",
    "square",
    "amazon",
    "easypost",
    "events",
    "ingest",
    "kafka",
    "dropfolder",
    "history",
)
"""Sources whose held deliveries can be mapped again."""

SECTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("shopify", "location_id"): ("shopify.locations", "canonical location id"),
    ("shopify", "inventory_item_id"): ("shopify.inventory_items", "canonical SKU"),
    ("shopify", "variant_id"): ("shopify.variants", "canonical SKU"),
    ("square", "location_id"): ("square.locations", "canonical location id"),
    ("square", "catalog_object_id"): ("square.catalog_objects", "canonical SKU"),
    ("amazon", "marketplace"): ("amazon.marketplaces", "canonical location of the FBA pool"),
    ("amazon", "seller_sku"): ("amazon.skus", "canonical SKU (default: the SellerSKU itself)"),
}
"""Mapping-file table of each (adapter, kind) of unmapped id."""

VENDOR = {"shopify": "Shopify", "square": "Square", "amazon": "Amazon"}

LOST = (f'"{CUT}', f'"{TOO_DEEP}"')
"""Markers of a kept payload that lost a part (cut or too deep): it is never replayed."""

HISTORY_WINDOW: TimeWindow | None = None
"""The window ``omniops import-history``'s held rows are validated with on a replay (the
import's own: history goes back years), set by the ``quarantine`` commands, which run in
a process of their own; None (``serve``'s preview): the window in force."""

OrderLookup = Callable[[str], str | None]
"""Tracking number → order id (EasyPost trackers are mapped to the order they belong to)."""


@dataclass(frozen=True)
class StoreLookup:
    """What mapping a held delivery again reads from the store (what ``serve`` reads)."""

    order_for_tracking: OrderLookup
    """Tracking number → order id, for EasyPost trackers."""
    order_method: Callable[[str], Method | None]
    """Placed order id → its method, for Square fulfillment updates."""


def _hard(source: str, unmapped: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [pair for pair in unmapped if (source, pair[0]) not in SOFT_IDS]


def describe(source: str, mapped: Mapped) -> str:
    """Why a mapped delivery is held: its quarantine reasons, then its unmapped ids."""
    parts = [item.error for item in mapped.items if isinstance(item, Quarantined)]
    text = "; ".join(parts)
    vendor = VENDOR.get(source, source)
    for kind, ext in _hard(source, mapped.unmapped):
        if ext not in text:
            parts.append(f"stored with unmapped {vendor} {kind} {ext}")
    return "; ".join(parts) or "held"


def adapter(row: HeldRow) -> str:
    """Whose ids a held row's unmapped ids are: its source's, a Kafka record's channel's."""
    if row.source == "kafka":
        from feeds.kafka.held import adapter_of

        return adapter_of(row.topic) or row.source
    return row.source


def _is_mapped(mapping: Mapping, adapter: str, kind: str, ext: str) -> bool:
    section = SECTIONS.get((adapter, kind))
    if section is None:
        return False
    vendor, table = section[0].split(".")
    return ext in getattr(getattr(mapping, vendor), table)


def hold_for(
    source: str,
    mapped: Mapped,
    body: bytes,
    *,
    topic: str = "",
    delivery_id: str = "",
    error: str | None = None,
    redacted: str | None = None,
) -> HeldDelivery | None:
    """What ``serve`` keeps of a delivery once its items committed; None if nothing.

    ``error`` is the reason of a delivery that could not be read at all (kept whole, as
    quarantine keeps it: ``redacted``, when the caller has it already).  CPU work
    (redaction): run it off the event loop.
    """
    quarantined = [item for item in mapped.items if isinstance(item, Quarantined)]
    if error is not None:
        # The quarantine row holds the body cut at 64 KB; the held copy is the whole body
        # (up to HELD_RAW_LIMIT, else marked too large): a cut one could never be replayed.
        cut = redacted if redacted is not None else redact_raw(body)
        return HeldDelivery(
            source=source,
            raw=keep_raw(body) if len(body) > RAW_LIMIT else cut,
            reason=error,
            topic=topic,
            delivery_id=delivery_id,
            quarantined=((source, error, cut),),
        )
    if not quarantined and not mapped.unmapped:
        return None
    if source == "events":
        # Keep only the lines that failed (each already redacted), as JSON Lines.
        raw = "\n".join(item.raw for item in quarantined)
    elif source in REPLAYABLE:
        raw = keep_raw(body)
    else:
        return None
    return HeldDelivery(
        source=source,
        raw=raw,
        reason=describe(source, mapped),
        topic=topic,
        delivery_id=delivery_id,
        unmapped=tuple(mapped.unmapped),
        event_ids=tuple(item.id for item in mapped.items if not isinstance(item, Quarantined)),
        quarantined=tuple((q.source, q.error, q.raw) for q in quarantined),
        hold=bool(quarantined) or bool(_hard(source, mapped.unmapped)),
    )


def remap(row: HeldRow, mapping: Mapping, lookup: StoreLookup) -> Mapped:
    """Map a held delivery again with ``mapping`` (raises what the adapter raises)."""
    if any(marker in row.raw for marker in LOST):
        raise PayloadError(
            "(body)", "the kept payload was cut or nested too deeply; it cannot be replayed"
        )
    if row.source == "events":
        return Mapped(items=[line.item for line in parse_events_body(row.raw.encode("utf-8"))])
    if row.source == "kafka":
        # Imported here: every command's start imports this module, few replay these.
        from feeds.kafka.held import remap_record

        return remap_record(
            row.topic,
            row.delivery_id,
            row.raw,
            mapping,
            lookup.order_for_tracking,
            lookup.order_method,
        )
    if row.source == "dropfolder":
        from feeds.dropfolder import remap_dropped

        return Mapped(items=remap_dropped(row.topic, row.delivery_id, row.raw))
    if row.source == "ingest":
        return Mapped(items=[parse_line(row.raw, source=row.topic, where=row.delivery_id)])
    if row.source == "history":
        from feeds.csv_import import remap_history

        if HISTORY_WINDOW is None:
            return Mapped(items=remap_history(row.topic, row.delivery_id, row.raw))
        previous = set_time_window(HISTORY_WINDOW)
        try:
            return Mapped(items=remap_history(row.topic, row.delivery_id, row.raw))
        finally:
            set_time_window(previous)
    try:
        # Our own redacted text (at most 64 KB, nesting cut at the bound): no shape check.
        data = json.loads(row.raw)
    except (ValueError, RecursionError) as exc:
        raise PayloadError("(body)", f"not valid JSON: {exc}", status=400) from None
    if row.source == "shopify":
        return shopify.map_shopify(row.topic, row.delivery_id, data, mapping.shopify)
    if row.source == "square":
        fulfilled = square.fulfilled_order(data)
        method = None if fulfilled is None else lookup.order_method(fulfilled)
        return square.map_square(data, mapping.square, method=method)
    if row.source == "amazon":
        return amazon.map_amazon(data, mapping.amazon)
    if row.source == "easypost":
        tracker = easypost.parse_tracker(data)
        order = (
            lookup.order_for_tracking(tracker.tracking_code)
            if tracker.status in easypost.STATUS
            else None
        )
        return easypost.map_tracker(tracker, order)
    raise PayloadError("(source)", f"deliveries from {row.source!r} cannot be replayed")


@dataclass
class Attempt:
    """One held delivery mapped again (not yet written)."""

    row: HeldRow
    mapped: Mapped | None = None
    error: str | None = None

    @property
    def events(self) -> list[Event]:
        """The canonical events it now maps to."""
        if self.mapped is None:
            return []
        return [item for item in self.mapped.items if not isinstance(item, Quarantined)]

    @property
    def quarantined(self) -> list[Quarantined]:
        """The parts that still fail."""
        if self.mapped is None:
            return []
        return [item for item in self.mapped.items if isinstance(item, Quarantined)]

    @property
    def unmapped(self) -> list[tuple[str, str]]:
        """Ids still unknown to the mapping (soft ones left out)."""
        return [] if self.mapped is None else _hard(self.row.source, self.mapped.unmapped)

    @property
    def placed(self) -> bool:
        """Everything in it maps and validates now."""
        return self.error is None and not self.quarantined and not self.unmapped

    @property
    def reason(self) -> str:
        """Why it is still held (or ``placed``)."""
        if self.error is not None:
            return self.error
        if self.placed or self.mapped is None:
            return "placed"
        return describe(adapter(self.row), self.mapped)


def attempt(row: HeldRow, mapping: Mapping, lookup: StoreLookup) -> Attempt:
    """Map ``row`` again; an unreadable or invalid payload becomes its new reason."""
    try:
        return Attempt(row, mapped=remap(row, mapping, lookup))
    except Exception as exc:  # PayloadError, a validation error, a shape the adapter refused
        message = str(exc) if isinstance(exc, PayloadError) else f"{type(exc).__name__}: {exc}"
        return Attempt(row, error=f"{row.source}: {message}"[:2000])


def tracking_lookup(db: sqlite3.Connection) -> StoreLookup:
    """The lookups on ``db`` (the same ones ``serve`` makes for EasyPost and Square)."""

    def find(code: str) -> str | None:
        row = db.execute(ORDER_FOR_TRACKING, (code,)).fetchone()
        return None if row is None else str(row[0])

    def method(order_id: str) -> Method | None:
        row = db.execute(ORDER_METHOD, (order_id,)).fetchone()
        return None if row is None else as_method(row[0])

    return StoreLookup(find, method)


def preview(db: sqlite3.Connection, mapping: Mapping) -> tuple[int, int]:
    """``(held, replayable)``: deliveries held, and how many ``mapping`` would place now."""
    rows = held_rows(db)
    lookup = tracking_lookup(db)
    return len(rows), sum(1 for row in rows if attempt(row, mapping, lookup).placed)


# -- mapping suggest -------------------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    """The unmapped ids still unknown to the mapping, and the stub that maps them."""

    ids: list[UnmappedId]
    toml: str

    def as_json(self) -> dict[str, object]:
        """The ``--json`` form."""
        return {
            "unmapped": [
                {
                    "adapter": u.adapter,
                    "kind": u.kind,
                    "external_id": u.external_id,
                    "events": u.events,
                    "first_seen": u.first_seen.isoformat().replace("+00:00", "Z"),
                    "last_seen": u.last_seen.isoformat().replace("+00:00", "Z"),
                    "table": SECTIONS.get((u.adapter, u.kind), ("", ""))[0],
                }
                for u in self.ids
            ],
            "toml": self.toml,
        }


def suggest(db: sqlite3.Connection, mapping: Mapping | None = None) -> Suggestion:
    """Every external id seen without a mapping (those ``mapping`` now knows left out)."""
    ids = [
        u
        for u in unmapped_ids(db)
        if mapping is None or not _is_mapped(mapping, u.adapter, u.kind, u.external_id)
    ]
    tables: dict[str, list[str]] = {}
    for u in ids:
        section = SECTIONS.get((u.adapter, u.kind))
        if section is None:
            continue
        table, what = section
        plural = "event" if u.events == 1 else "events"
        value = u.external_id if (u.adapter, u.kind) in SOFT_IDS else ""
        tables.setdefault(table, []).append(
            f"{json.dumps(u.external_id)} = {json.dumps(value)}"
            f"  # {u.events} {plural}, last {u.last_seen:%Y-%m-%d %H:%M}Z: the {what}"
        )
    out: list[str] = []
    for table, lines in tables.items():
        out.append(f"[{table}]")
        out.extend(lines)
        out.append("")
    return Suggestion(ids, "\n".join(out))


# -- replay ------------------------------------------------------------------------------------


@dataclass
class ReplayResult:
    """What a replay did."""

    held: int = 0
    """Deliveries selected."""
    placed: int = 0
    still_held: int = 0
    applied: int = 0
    """Events written for the first time."""
    replaced: int = 0
    """Node-less placements replaced by their mapped version."""
    duplicates: int = 0
    reasons: list[tuple[int, str]] = field(default_factory=list)
    """``(held id, new reason)`` of each delivery still held."""

    def summary(self) -> str:
        """The one summary line."""
        if not self.held:
            return "nothing to replay"
        return (
            f"{self.held} held: {self.placed} placed, {self.still_held} still held; "
            f"events {self.applied} applied, {self.replaced} replaced a node-less version, "
            f"{self.duplicates} already stored"
        )


def _replaceable(stored: dict[str, str], events: Sequence[Event]) -> list[str]:
    """Placements stored without a node whose new version has one."""
    out = []
    for event in events:
        if not isinstance(event, OrderPlaced) or event.id not in stored:
            continue
        old = json.loads(stored[event.id])
        if old.get("location_id") is None and event.body.location_id is not None:
            out.append(event.id)
    return out


REPLAY_CHUNK = 200
"""Held deliveries replayed per write (one transaction to apply, one to settle)."""


async def replay(
    writer: StoreWriter,
    mapping: Mapping,
    *,
    reason: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> ReplayResult:
    """Replay the held deliveries selected (see the module docstring) through ``writer``.

    In chunks of :data:`REPLAY_CHUNK`, oldest first: each chunk's now-mapped events are
    applied in one batch (node-less placements replaced in the same transaction), routed
    by the writer's after-commit hook, then the chunk's results are recorded.
    """
    result = ReplayResult()
    rows = await writer.run(lambda db: held_rows(db, reason=reason, source=source, since=since))
    result.held = len(rows)
    for start in range(0, len(rows), REPLAY_CHUNK):
        chunk = rows[start : start + REPLAY_CHUNK]
        await _replay_chunk(writer, chunk, mapping, now or writer.clock.now(), result)
    return result


async def replay_rows(
    writer: StoreWriter, rows: Sequence[HeldRow], mapping: Mapping, *, now: datetime | None = None
) -> ReplayResult:
    """Replay exactly ``rows`` (as read, or as edited: ``quarantine edit``) through ``writer``."""
    result = ReplayResult(held=len(rows))
    for start in range(0, len(rows), REPLAY_CHUNK):
        chunk = rows[start : start + REPLAY_CHUNK]
        await _replay_chunk(writer, chunk, mapping, now or writer.clock.now(), result)
    return result


async def _replay_chunk(
    writer: StoreWriter,
    rows: Sequence[HeldRow],
    mapping: Mapping,
    at: datetime,
    result: ReplayResult,
) -> None:
    """Map held deliveries again, apply what maps (once), record what still fails."""
    tried = await writer.run(
        lambda db: [attempt(row, mapping, tracking_lookup(db)) for row in rows]
    )
    events = [event for t in tried for event in t.events]
    if events:
        stored = await writer.run(lambda db: stored_placements(db, (e.id for e in events)))
        replace = sorted(set(_replaceable(stored, events)))
        prepare = unplace(replace) if replace else None
        if replace:
            # The version with a node is the one applied (a copy still without one, from
            # another delivery of the same order, is then the duplicate).
            wanted = set(replace)
            first = [
                e
                for e in events
                if isinstance(e, OrderPlaced) and e.id in wanted and e.body.location_id
            ]
            moved = {id(e) for e in first}
            events = first + [e for e in events if id(e) not in moved]
        outcomes = await writer.run(lambda db: _apply(db, events, epoch(at), writer, prepare))
        for outcome in outcomes:
            writer.stats.add(outcome)
        result.applied += outcomes.count("applied") - len(replace)
        result.replaced += len(replace)
        result.duplicates += outcomes.count("duplicate")
        hook = writer.after_commit
        if hook is not None:
            timezone = writer.params.timezone
            await writer.run(lambda db: hook(db, events, decided_at=at, timezone=timezone))
    settlements = []
    for t in tried:
        row = t.row
        if t.mapped is None:
            # Unreadable again: the whole delivery stays in quarantine, with the new reason.
            settlement = Settlement(
                row.id, False, t.reason, row.unmapped, ((row.source, t.reason, row.raw),)
            )
        else:
            still = tuple(t.unmapped)
            settlement = Settlement(
                row.id,
                t.placed,
                t.reason,
                still,
                tuple((q.source, q.error, q.raw) for q in t.quarantined),
                tuple(pair for pair in row.unmapped if pair not in still),
                adapter(row),
            )
        settlements.append(settlement)
        if t.placed:
            result.placed += 1
        else:
            result.still_held += 1
            result.reasons.append((row.id, t.reason))
    await writer.run(lambda db: settle_held(db, settlements, epoch(at)))


def _apply(
    db: sqlite3.Connection,
    events: list[Event],
    received_at: int,
    writer: StoreWriter,
    prepare: Callable[[sqlite3.Connection, Touched], None] | None,
) -> list[Outcome]:
    return apply_batch(db, events, received_at, writer.params, prepare=prepare)


def utc(moment: datetime) -> str:
    """``2026-12-01T10:00:00Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = [
    "SECTIONS",
    "SOFT_IDS",
    "Attempt",
    "ReplayResult",
    "Suggestion",
    "adapter",
    "attempt",
    "describe",
    "hold_for",
    "preview",
    "remap",
    "replay",
    "replay_rows",
    "suggest",
    "tracking_lookup",
]
