"""What could not be placed, kept to be replayed: unmapped external ids and held deliveries.

Tables (migration 7, :mod:`store.held_schema`): ``unmapped_ids`` (every external id an
adapter met without a mapping, with how many distinct deliveries carried it) and ``held``
(each distinct delivery that was quarantined or stored with an unmapped id, its redacted
raw body and what it produced).

Writers (run them on the store writer's connection, :meth:`store.writer.StoreWriter.run`):

* :func:`record_held`: after a delivery's events committed, keep the delivery (once per
  distinct body; a re-delivery only counts) and count its unmapped ids;
  :func:`record_held_many` keeps a bulk load's in one transaction;
* :func:`unplace`: the ``prepare`` step of :func:`store.apply.apply_batch` that takes a
  node-less placement out of the store (its event, lines, roll-ups, routing decision and
  reservations) in the same transaction that applies its now-mapped version, so the order
  is counted once, at its node;
* :func:`settle_held`: a replay's result: ``placed``, or still ``held`` with its new
  reason (its quarantine rows replaced by the new ones).

* :func:`edit_held`: ``omniops quarantine edit``: a held payload replaced by its fixed
  version, the edit recorded in ``held_edits`` (migration 16: who, when, what changed, the
  payload before and after) in the same transaction.

Readers (any connection): :func:`unmapped_ids`, :func:`held_rows`, :func:`held_row`,
:func:`held_summary`, :func:`stored_placements`, :func:`held_edits`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from store.apply import Touched, _add_rollups
from store.model import Quarantined
from store.snapshots import HeldSummary

HeldState = str
"""``held`` (waiting for a replay), ``placed`` (replayed) or ``noted`` (soft ids only)."""

LINK_WINDOW = 1000
"""A delivery's quarantine rows are found among the newest this many rows."""


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class HeldDelivery:
    """One delivery to keep: what arrived (redacted) and what it became."""

    source: str
    """The adapter (``shopify``, ``square``, ``amazon``, ``easypost``, ``events``), or the
    bulk or streamed ingress it came through (``ingest``, ``dropfolder``, ``history``,
    ``kafka``)."""
    raw: str
    """The body, redacted as quarantine keeps it."""
    reason: str
    """Why it is held (the quarantine reasons, or the unmapped ids)."""
    topic: str = ""
    """What a replay must be told besides the body (Shopify's ``X-Shopify-Topic``; a Kafka
    record's format and headers; a dropped file's kind, name and zone; a line's feed)."""
    delivery_id: str = ""
    """Shopify's ``X-Shopify-Event-Id`` (the id of inventory facts); where a Kafka record,
    a dropped row or an ingested line was (offset, ``file:line``)."""
    unmapped: tuple[tuple[str, str], ...] = ()
    """``(kind, external id)`` the mapping did not know."""
    event_ids: tuple[str, ...] = ()
    """Ids of the events the delivery stored."""
    quarantined: tuple[tuple[str, str, str], ...] = ()
    """``(source, error, raw)`` of the quarantine rows it produced."""
    hold: bool = True
    """False when only soft ids were unmapped (counted for ``mapping suggest``, not listed)."""
    adapter: str = ""
    """Whose ids ``unmapped`` are, for ``unmapped_ids`` (``""``: ``source``'s; a Kafka
    record's are its channel's, ``shopify``, so ``mapping suggest`` stubs them)."""

    @classmethod
    def of_line(
        cls, item: Quarantined, raw: str, *, source: str, topic: str, where: str
    ) -> HeldDelivery:
        """A quarantined line to keep (``ingest``, ``dropfolder``).

        ``raw`` is the line already kept as the ingress keeps payloads; ``where`` is its
        ``file:line``.  The same line read again is the same held row.
        """
        return cls(
            source=source,
            raw=raw,
            reason=item.error,
            topic=topic,
            delivery_id=where,
            quarantined=((item.source, item.error, item.raw),),
        )

    @property
    def digest(self) -> str:
        """Identity of the delivery: a re-delivery of the same body is the same row."""
        text = "\x00".join((self.source, self.topic, self.raw))
        return hashlib.sha256(text.encode("utf-8", "backslashreplace")).hexdigest()


def _link_quarantine(db: sqlite3.Connection, parts: Iterable[tuple[str, str, str]]) -> list[int]:
    """The ids of the newest quarantine rows holding ``parts`` (just written by the batch)."""
    parts = list(parts)
    if len(parts) > _ONE_BY_ONE:
        return _link_many(db, parts)
    ids: list[int] = []
    for source, error, raw in parts:
        row = db.execute(
            "SELECT id FROM quarantine"
            " WHERE id > (SELECT COALESCE(MAX(id), 0) FROM quarantine) - ?"
            " AND source = ? AND error = ? AND raw = ?"
            " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id DESC LIMIT 1",
            (LINK_WINDOW, source, error, raw, json.dumps(ids)),
        ).fetchone()
        if row is not None:
            ids.append(int(row[0]))
    return ids


_ONE_BY_ONE = 8
"""Up to this many parts are looked up one query each; more are matched in one pass."""


def _link_many(db: sqlite3.Connection, parts: list[tuple[str, str, str]]) -> list[int]:
    """:func:`_link_quarantine` in one pass over the newest rows (a body of many bad lines).

    One query per part, each excluding the rows already taken, costs the square of the
    parts: 50,000 bad lines held the writer for seconds.
    """
    free: dict[tuple[str, str, str], list[int]] = {}
    for qid, source, error, raw in db.execute(
        "SELECT id, source, error, raw FROM quarantine"
        " WHERE id > (SELECT COALESCE(MAX(id), 0) FROM quarantine) - ? ORDER BY id DESC",
        (LINK_WINDOW + len(parts),),
    ):
        free.setdefault((str(source), str(error), str(raw)), []).append(int(qid))
    ids: list[int] = []
    for part in parts:
        found = free.get(part)
        if found:
            ids.append(found.pop(0))
    return ids


def record_held(db: sqlite3.Connection, delivery: HeldDelivery, at: int) -> int:
    """Keep ``delivery`` (or count a re-delivery of it); return its ``held`` id.

    A new delivery adds one to the event count of each of its unmapped ids.  Runs in its
    own ``BEGIN IMMEDIATE`` transaction on the writer's connection.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        held_id = _keep(db, delivery, _link_quarantine(db, delivery.quarantined), at)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return held_id


def quarantine_mark(db: sqlite3.Connection) -> int:
    """The newest quarantine row's id (0 when none): :func:`record_held_many`'s ``after``."""
    return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM quarantine").fetchone()[0])


def record_held_many(
    db: sqlite3.Connection,
    deliveries: Sequence[HeldDelivery],
    at: int,
    *,
    after: int,
    linked_only: bool = False,
) -> list[int]:
    """Keep each of ``deliveries`` (as :func:`record_held`) in one transaction.

    For a bulk load (``ingest``, the drop folder): their quarantine rows are found among
    those written after the row ``after`` (:func:`quarantine_mark` taken before the load)
    in one pass, however many there are, instead of in the newest :data:`LINK_WINDOW`.
    ``linked_only``: keep only those whose quarantine rows were found (a load that ended
    early read lines it never wrote).
    """
    if not deliveries:
        return []
    db.execute("BEGIN IMMEDIATE")
    try:
        free: dict[tuple[str, str, str], list[int]] = {}
        for qid, source, error, raw in db.execute(
            "SELECT id, source, error, raw FROM quarantine WHERE id > ? ORDER BY id DESC",
            (after,),
        ):
            free.setdefault((str(source), str(error), str(raw)), []).append(int(qid))
        ids = []
        for delivery in deliveries:
            linked = []
            for part in delivery.quarantined:
                found = free.get(part)
                if found:
                    linked.append(found.pop(0))
            if linked or not linked_only:
                ids.append(_keep(db, delivery, linked, at))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return ids


def _keep(db: sqlite3.Connection, delivery: HeldDelivery, linked: list[int], at: int) -> int:
    """Insert ``delivery`` or count its re-delivery (inside the caller's transaction)."""
    digest = delivery.digest
    row = db.execute(
        "SELECT id, quarantine_ids, state FROM held WHERE digest = ?", (digest,)
    ).fetchone()
    state = "held" if delivery.hold or delivery.quarantined else "noted"
    if row is None:
        cur = db.execute(
            "INSERT INTO held (digest, source, topic, delivery_id, state, reason, unmapped,"
            " event_ids, quarantine_ids, raw, first_seen, last_seen, deliveries)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                digest,
                delivery.source,
                delivery.topic,
                delivery.delivery_id,
                state,
                delivery.reason,
                json.dumps([list(pair) for pair in delivery.unmapped]),
                json.dumps(list(delivery.event_ids)),
                json.dumps(linked),
                delivery.raw,
                at,
                at,
            ),
        )
        held_id = int(cur.lastrowid or 0)
        db.executemany(
            "INSERT INTO unmapped_ids (adapter, kind, external_id, events, first_seen,"
            " last_seen) VALUES (?, ?, ?, 1, ?, ?)"
            " ON CONFLICT DO UPDATE SET events = events + 1,"
            " first_seen = MIN(first_seen, excluded.first_seen),"
            " last_seen = MAX(last_seen, excluded.last_seen)",
            [
                (delivery.adapter or delivery.source, kind, ext, at, at)
                for kind, ext in delivery.unmapped
            ],
        )
    else:
        held_id = int(row[0])
        known = json.loads(row[1]) + linked
        # A re-delivery that was quarantined again is held again (its rows are linked).
        again = "held" if linked and row[2] == "placed" else row[2]
        db.execute(
            "UPDATE held SET last_seen = MAX(last_seen, ?), deliveries = deliveries + 1,"
            " quarantine_ids = ?, state = ? WHERE id = ?",
            (at, json.dumps(known), again, held_id),
        )
        db.executemany(
            "UPDATE unmapped_ids SET last_seen = MAX(last_seen, ?)"
            " WHERE adapter = ? AND kind = ? AND external_id = ?",
            [
                (at, delivery.adapter or delivery.source, kind, ext)
                for kind, ext in delivery.unmapped
            ],
        )
    return held_id


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmappedId:
    """An external id seen without a mapping."""

    adapter: str
    kind: str
    external_id: str
    events: int
    """Distinct deliveries that carried it."""
    first_seen: datetime
    last_seen: datetime


def unmapped_ids(db: sqlite3.Connection) -> list[UnmappedId]:
    """Every external id seen without a mapping, most events first."""
    return [
        UnmappedId(adapter, kind, ext, int(events), _utc(first), _utc(last))
        for adapter, kind, ext, events, first, last in db.execute(
            "SELECT adapter, kind, external_id, events, first_seen, last_seen FROM unmapped_ids"
            " ORDER BY adapter, kind, events DESC, external_id"
        )
    ]


@dataclass(frozen=True)
class HeldRow:
    """One held delivery."""

    id: int
    source: str
    topic: str
    delivery_id: str
    state: HeldState
    reason: str
    unmapped: tuple[tuple[str, str], ...]
    event_ids: tuple[str, ...]
    quarantine_ids: tuple[int, ...]
    raw: str
    first_seen: datetime
    last_seen: datetime
    deliveries: int
    attempts: int
    replayed_at: datetime | None


_HELD_COLUMNS = (
    "id, source, topic, delivery_id, state, reason, unmapped, event_ids, quarantine_ids, raw,"
    " first_seen, last_seen, deliveries, attempts, replayed_at"
)


def _held(row: Sequence[object]) -> HeldRow:
    (hid, source, topic, delivery, state, reason, unmapped, events, quarantine, raw) = row[:10]
    first, last, deliveries, attempts, replayed = row[10:]
    return HeldRow(
        id=int(str(hid)),
        source=str(source),
        topic=str(topic),
        delivery_id=str(delivery),
        state=str(state),
        reason=str(reason),
        unmapped=tuple((str(k), str(v)) for k, v in json.loads(str(unmapped))),
        event_ids=tuple(json.loads(str(events))),
        quarantine_ids=tuple(int(i) for i in json.loads(str(quarantine))),
        raw=str(raw),
        first_seen=_utc(int(str(first))),
        last_seen=_utc(int(str(last))),
        deliveries=int(str(deliveries)),
        attempts=int(str(attempts)),
        replayed_at=None if replayed is None else _utc(int(str(replayed))),
    )


def held_rows(
    db: sqlite3.Connection,
    *,
    states: Collection[str] = ("held",),
    reason: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
) -> list[HeldRow]:
    """Held deliveries in ``states``, oldest first.

    ``reason``: only those whose reason contains this text (case-insensitive);
    ``source``: only this adapter; ``since``: only those last seen at or after it.
    """
    sql = f"SELECT {_HELD_COLUMNS} FROM held WHERE state IN (SELECT value FROM json_each(?))"
    args: list[object] = [json.dumps(sorted(states))]
    if reason:
        sql += " AND instr(lower(reason), lower(?)) > 0"
        args.append(reason)
    if source:
        sql += " AND source = ?"
        args.append(source)
    if since is not None:
        sql += " AND last_seen >= ?"
        args.append(int(since.timestamp()))
    return [_held(row) for row in db.execute(sql + " ORDER BY id", args)]


def held_row(db: sqlite3.Connection, held_id: int) -> HeldRow | None:
    """One held delivery by id (any state)."""
    row = db.execute(f"SELECT {_HELD_COLUMNS} FROM held WHERE id = ?", (held_id,)).fetchone()
    return None if row is None else _held(row)


TOP_REASONS = 12


def reason_class(error: str) -> str:
    """A quarantine reason without its ids and positions, so alike reasons group.

    ``order shopify-1 not placed: line_items[0]: unmapped Shopify variant_id 7`` and the
    same for order 2 are one reason: ``order # not placed: line_items[#]: unmapped Shopify
    variant_id #``.
    """
    out: list[str] = []
    for word in error.split(" "):
        stripped = word.strip(",;:()")
        if (any(ch.isdigit() for ch in stripped) and len(stripped) > 1) or stripped.isdigit():
            out.append(word.replace(stripped, "#"))
        else:
            out.append(word)
    return " ".join(out)[:160]


def held_summary(db: sqlite3.Connection) -> HeldSummary:
    """Counts for the feeds view (one short read; empty on a store without the tables)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'unmapped_ids'").fetchone() is None:
        return HeldSummary()
    by_adapter: dict[str, int] = {}
    events: dict[str, int] = {}
    for adapter, ids, total in db.execute(
        "SELECT adapter, COUNT(*), SUM(events) FROM unmapped_ids GROUP BY adapter ORDER BY adapter"
    ):
        by_adapter[adapter] = int(ids)
        events[adapter] = int(total)
    held = int(db.execute("SELECT COUNT(*) FROM held WHERE state = 'held'").fetchone()[0])
    reasons: dict[str, int] = {}
    quarantined = 0
    for error, count in db.execute("SELECT error, COUNT(*) FROM quarantine GROUP BY error"):
        key = reason_class(str(error))
        reasons[key] = reasons.get(key, 0) + int(count)
        quarantined += int(count)
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    return HeldSummary(by_adapter, events, held, tuple(top), quarantined)


def stored_placements(db: sqlite3.Connection, event_ids: Iterable[str]) -> dict[str, str]:
    """The stored body (JSON text) of each of ``event_ids`` that is an ``order.placed``."""
    rows = db.execute(
        "SELECT event_id, body FROM event_log WHERE type = 'order.placed'"
        " AND event_id IN (SELECT value FROM json_each(?))",
        (json.dumps(sorted(set(event_ids))),),
    )
    return {str(eid): str(body) for eid, body in rows}


# -- replay --------------------------------------------------------------------------------


def unplace(event_ids: Collection[str]) -> Callable[[sqlite3.Connection, Touched], None]:
    """The ``prepare`` step that takes node-less placements out, so new versions apply.

    For each ``order.placed`` among ``event_ids`` whose order has no node (``location_id``
    null): its counted sales leave the roll-ups (where they were counted: the unassigned
    bucket or the node the router chose), its lines are removed, the router's decision is
    dropped and its unreleased reservations given back, the order is marked as not placed,
    and the event leaves the log (and the feed's event count), so the batch applies the
    replacement as the order's first placement.  Orders with a node are left alone.
    """

    def run(db: sqlite3.Connection, touched: Touched) -> None:
        for event_id in sorted(set(event_ids)):
            row = db.execute(
                "SELECT source, body FROM event_log WHERE event_id = ? AND type = 'order.placed'",
                (event_id,),
            ).fetchone()
            if row is None:
                continue
            source, body = row
            order_id = json.loads(body)["order_id"]
            order = db.execute(
                "SELECT has_order, sales_reversed, location_id, channel, placed_ts"
                " FROM orders WHERE order_id = ?",
                (order_id,),
            ).fetchone()
            if order is None or order[2] is not None:
                continue
            has_order, reversed_, _, channel, placed = order
            lines = db.execute(
                "SELECT sku, quantity, quantity * unit_price_cents - discount_cents,"
                " sales_location, sales_category FROM order_lines WHERE order_id = ?",
                (order_id,),
            ).fetchall()
            if has_order and not reversed_ and placed is not None:
                hour = placed // 3600
                _add_rollups(
                    db,
                    [
                        (sku, location, category, channel, hour, -qty, -net)
                        for sku, qty, net, location, category in lines
                        if location is not None
                    ],
                )
            for sku, _, _, location, _ in lines:
                if location is not None and location != "-":
                    touched.pair(sku, location, placed or 0)
            db.execute("DELETE FROM order_lines WHERE order_id = ?", (order_id,))
            decision = db.execute(
                "SELECT location_id FROM routing_decisions WHERE order_id = ?", (order_id,)
            ).fetchone()
            for sku, location, quantity in db.execute(
                "SELECT sku, location_id, quantity FROM routing_reservations"
                " WHERE order_id = ? AND released_at IS NULL",
                (order_id,),
            ).fetchall():
                db.execute(
                    "UPDATE stock SET reserved = MAX(0, reserved - ?)"
                    " WHERE sku = ? AND location_id = ?",
                    (quantity, sku, location),
                )
                touched.pair(sku, location, placed or 0)
            db.execute("DELETE FROM routing_reservations WHERE order_id = ?", (order_id,))
            db.execute("DELETE FROM routing_decisions WHERE order_id = ?", (order_id,))
            db.execute(
                "UPDATE orders SET has_order = 0, fulfil_location_id = CASE"
                " WHEN fulfil_location_id IS ?1 THEN NULL ELSE fulfil_location_id END,"
                " fulfil_location_ts = CASE"
                " WHEN fulfil_location_id IS ?1 THEN NULL ELSE fulfil_location_ts END"
                " WHERE order_id = ?2",
                (None if decision is None else decision[0], order_id),
            )
            db.execute("DELETE FROM event_log WHERE event_id = ?", (event_id,))
            db.execute(
                "UPDATE feed_state SET events = MAX(0, events - 1) WHERE feed = ?", (source,)
            )

    return run


@dataclass(frozen=True)
class Settlement:
    """The result of replaying one held delivery."""

    held_id: int
    placed: bool
    reason: str
    """Why it is still held (``placed`` when it is not)."""
    unmapped: tuple[tuple[str, str], ...] = ()
    """Ids still unknown to the mapping."""
    quarantined: tuple[tuple[str, str, str], ...] = ()
    """``(source, error, raw)`` of the parts that still fail."""
    resolved: tuple[tuple[str, str], ...] = ()
    """Ids the mapping knows now (they leave ``unmapped_ids``)."""
    adapter: str = ""
    """Whose ids ``resolved`` are (``""``: the held row's source's)."""


def settle_held(db: sqlite3.Connection, settlements: Sequence[Settlement], at: int) -> None:
    """Record replays: each delivery ``placed``, or still held with its new reason.

    A delivery's quarantine rows are replaced by the parts that still fail, with their new
    reasons; ids the mapping now knows leave ``unmapped_ids``; ``attempts`` counts the
    replays and ``replayed_at`` is the last.  One ``BEGIN IMMEDIATE`` transaction.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        for s in settlements:
            row = db.execute(
                "SELECT quarantine_ids, source FROM held WHERE id = ?", (s.held_id,)
            ).fetchone()
            if row is None:
                continue
            old, source = json.loads(row[0]), row[1]
            db.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(old),),
            )
            new: list[int] = []
            for part_source, error, raw in s.quarantined:
                cur = db.execute(
                    "INSERT INTO quarantine (received_at, source, error, raw) VALUES (?, ?, ?, ?)",
                    (at, part_source, error, raw),
                )
                new.append(int(cur.lastrowid or 0))
            db.execute(
                "UPDATE held SET state = ?, reason = ?, unmapped = ?, quarantine_ids = ?,"
                " attempts = attempts + 1, replayed_at = ? WHERE id = ?",
                (
                    "placed" if s.placed else "held",
                    s.reason,
                    json.dumps([list(p) for p in s.unmapped]),
                    json.dumps(new),
                    at,
                    s.held_id,
                ),
            )
            db.executemany(
                "DELETE FROM unmapped_ids WHERE adapter = ? AND kind = ? AND external_id = ?",
                [(s.adapter or source, kind, ext) for kind, ext in s.resolved],
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


# -- edits ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeldEdit:
    """One saved edit of a held payload (``omniops quarantine edit``)."""

    id: int
    held_id: int
    at: datetime
    by: str
    how: str
    """``editor``, ``set`` or ``file``."""
    changes: tuple[tuple[str, object, object], ...]
    """``(field, before, after)`` of each value that changed."""
    before: str
    after: str


class StaleEdit(Exception):
    """The held row changed (or left ``held``) between reading it and saving the edit."""


def edit_held(
    db: sqlite3.Connection,
    held_id: int,
    *,
    before: str,
    after: str,
    by: str,
    how: str,
    changes: Sequence[tuple[str, object, object]],
    at: int,
) -> int:
    """Save an edit of held row ``held_id``: its payload becomes ``after``; the edit's id.

    The edit is recorded in ``held_edits`` (who, when, how, what changed, the payload
    before and after) in the same ``BEGIN IMMEDIATE`` transaction.  The row keeps its
    identity (``digest``: what arrived), so the same delivery arriving again still counts
    on it.  Raises :class:`StaleEdit` (nothing written) unless the row is still ``held``
    with payload ``before``.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT state, raw FROM held WHERE id = ?", (held_id,)).fetchone()
        if row is None or row[0] != "held" or row[1] != before:
            state = "gone" if row is None else str(row[0])
            raise StaleEdit(
                f"held delivery {held_id} changed while it was edited (now {state});"
                " nothing saved, edit it again"
            )
        db.execute("UPDATE held SET raw = ? WHERE id = ?", (after, held_id))
        cur = db.execute(
            "INSERT INTO held_edits (held_id, at, by, how, changes, before, after)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                held_id,
                at,
                by,
                how,
                json.dumps(
                    [{"field": f, "before": b, "after": a} for f, b, a in changes],
                    ensure_ascii=False,
                    default=str,
                ),
                before,
                after,
            ),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return int(cur.lastrowid or 0)


def held_edits(db: sqlite3.Connection, held_id: int) -> list[HeldEdit]:
    """Every saved edit of held row ``held_id``, oldest first (none on an older store)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'held_edits'").fetchone() is None:
        return []
    return [
        HeldEdit(
            id=int(eid),
            held_id=int(hid),
            at=_utc(int(at)),
            by=str(by),
            how=str(how),
            changes=tuple((c["field"], c["before"], c["after"]) for c in json.loads(changes)),
            before=str(before),
            after=str(after),
        )
        for eid, hid, at, by, how, changes, before, after in db.execute(
            "SELECT id, held_id, at, by, how, changes, before, after FROM held_edits"
            " WHERE held_id = ? ORDER BY id",
            (held_id,),
        )
    ]


__all__ = [
    "HeldDelivery",
    "HeldEdit",
    "HeldRow",
    "HeldSummary",
    "Settlement",
    "StaleEdit",
    "UnmappedId",
    "edit_held",
    "held_edits",
    "held_row",
    "held_rows",
    "held_summary",
    "quarantine_mark",
    "reason_class",
    "record_held",
    "record_held_many",
    "settle_held",
    "stored_placements",
    "unmapped_ids",
    "unplace",
]
