"""The notification outbox: notifications waiting for a receiver, kept in the store.

A notification is written here before its delivery is attempted and deleted once its
receiver took it, so what is waiting survives a restart of ``serve``.  A failed attempt
counts on the notification (``attempts``, ``last_error``) and moves the receiver's next try
(``next_attempt_ms`` of every waiting notification of that receiver: a receiver that is
down is retried as one, not once per notification).  A notification given up on (refused by
the receiver, too old, too many attempts, its receiver removed) stays as a *dead letter*
(``dead_ms`` set) so it is counted and can be read, never silently dropped.

Like :mod:`store.alerts`, every function is synchronous and takes a connection in
autocommit mode; each mutation is one short ``BEGIN IMMEDIATE`` transaction, so the
process evaluating alerts writes here beside the store's single event writer (SQLite's
busy timeout queues them).  :class:`Outbox` holds one such connection for the receivers
of a process, behind a lock.  The payload is opaque text: this module stores and reads;
what a notification is, and how it is delivered, is :mod:`rules.receivers`.

Times are integer milliseconds since the Unix epoch, UTC (back-off delays are sub-second
in tests and can be in a real deployment).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from store.outbox_schema import GROUPS_DDL, OUTBOX_DDL
from store.schema import migrate

T = TypeVar("T")


def to_ms(moment: datetime) -> int:
    """Integer milliseconds since the epoch of an aware datetime."""
    return round(moment.timestamp() * 1000)


def _ceil_ms(moment: datetime) -> int:
    """Milliseconds rounded up: a next try stored is never earlier than asked."""
    return math.ceil(moment.timestamp() * 1000)


def from_ms(ms: int | None) -> datetime | None:
    """The aware UTC datetime of stored milliseconds (None stays None)."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _must(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class OutboxItem:
    """One stored notification for one receiver."""

    id: int
    receiver: str
    key: str
    """The notification's idempotency key (unique per receiver)."""
    group_key: str
    """Its alert group: a newer notification for the group replaces a waiting one."""
    payload: str
    enqueued_at: datetime
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_error: str | None
    dead_at: datetime | None
    """When it was given up on (a dead letter), or None while it waits."""


@dataclass(frozen=True)
class OutboxCounts:
    """What the outbox holds for one receiver."""

    receiver: str
    waiting: int = 0
    """Notifications not yet delivered (to be tried again)."""
    dead: int = 0
    """Dead letters: notifications given up on, kept and counted."""
    next_attempt_at: datetime | None = None
    """When the receiver is tried next (None when nothing waits)."""
    oldest_waiting_at: datetime | None = None
    last_error: str | None = None
    """The error of the latest failed attempt among what waits or died."""


_COLUMNS = (
    "id, receiver, key, group_key, payload, enqueued_ms, attempts, next_attempt_ms,"
    " last_attempt_ms, last_error, dead_ms"
)


def _item(row: Sequence[Any]) -> OutboxItem:
    return OutboxItem(
        id=row[0],
        receiver=row[1],
        key=row[2],
        group_key=row[3],
        payload=row[4],
        enqueued_at=_must(row[5]),
        attempts=row[6],
        next_attempt_at=_must(row[7]),
        last_attempt_at=from_ms(row[8]),
        last_error=row[9],
        dead_at=from_ms(row[10]),
    )


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@dataclass(frozen=True)
class NewItem:
    """A notification to store: receiver, idempotency key, group key and payload."""

    receiver: str
    key: str
    group_key: str
    payload: str


def enqueue(
    conn: sqlite3.Connection,
    items: Sequence[NewItem],
    *,
    at: datetime,
    next_attempt_at: datetime | None = None,
) -> int:
    """Store ``items`` as waiting (first try at ``next_attempt_at``, default ``at``).

    A waiting notification of the same receiver and group is replaced (the newer one
    carries the group's current state); a key already stored is left as it is, so storing
    the same notification twice is harmless.  Returns how many were replaced.
    """
    now_ms = to_ms(at)
    next_ms = max(now_ms, _ceil_ms(next_attempt_at)) if next_attempt_at is not None else now_ms
    replaced = 0
    with _immediate(conn):
        for item in items:
            known = conn.execute(
                "SELECT 1 FROM notification_outbox WHERE receiver = ? AND key = ?",
                (item.receiver, item.key),
            ).fetchone()
            if known is not None:
                continue
            replaced += conn.execute(
                "DELETE FROM notification_outbox"
                " WHERE receiver = ? AND group_key = ? AND dead_ms IS NULL",
                (item.receiver, item.group_key),
            ).rowcount
            conn.execute(
                "INSERT INTO notification_outbox (receiver, key, group_key, payload,"
                " enqueued_ms, next_attempt_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (item.receiver, item.key, item.group_key, item.payload, now_ms, next_ms),
            )
    return replaced


def next_waiting(conn: sqlite3.Connection, receiver: str) -> OutboxItem | None:
    """The waiting notification of ``receiver`` to try next (soonest, then oldest)."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_outbox"
        " WHERE receiver = ? AND dead_ms IS NULL ORDER BY next_attempt_ms, id LIMIT 1",
        (receiver,),
    ).fetchone()
    return None if row is None else _item(row)


def due(
    conn: sqlite3.Connection, receiver: str, now: datetime, *, limit: int = 100
) -> list[OutboxItem]:
    """Waiting notifications of ``receiver`` due at ``now`` (next try passed), oldest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_outbox"
        " WHERE receiver = ? AND dead_ms IS NULL AND next_attempt_ms <= ?"
        " ORDER BY id LIMIT ?",
        (receiver, to_ms(now), limit),
    ).fetchall()
    return [_item(row) for row in rows]


def mark_delivered(conn: sqlite3.Connection, item_id: int) -> bool:
    """The receiver took it: remove it.  False if it was no longer stored (replaced)."""
    with _immediate(conn):
        return (
            conn.execute("DELETE FROM notification_outbox WHERE id = ?", (item_id,)).rowcount == 1
        )


def mark_failed(
    conn: sqlite3.Connection,
    item_id: int,
    *,
    at: datetime,
    next_attempt_at: datetime,
    error: str,
) -> int:
    """Count a failed attempt on the item and move its receiver's next try.

    Every waiting notification of the item's receiver is tried no sooner than
    ``next_attempt_at``.  Returns the item's attempts so far (0 if it was replaced
    meanwhile).
    """
    with _immediate(conn):
        row = conn.execute(
            "UPDATE notification_outbox SET attempts = attempts + 1, last_attempt_ms = ?,"
            " last_error = ? WHERE id = ? AND dead_ms IS NULL RETURNING receiver, attempts",
            (to_ms(at), error, item_id),
        ).fetchone()
        if row is None:
            return 0
        conn.execute(
            "UPDATE notification_outbox SET next_attempt_ms = ?"
            " WHERE receiver = ? AND dead_ms IS NULL AND next_attempt_ms < ?",
            (_ceil_ms(next_attempt_at), row[0], _ceil_ms(next_attempt_at)),
        )
        return int(row[1])


def defer(conn: sqlite3.Connection, receiver: str, until: datetime) -> None:
    """Try no waiting notification of ``receiver`` before ``until``."""
    with _immediate(conn):
        conn.execute(
            "UPDATE notification_outbox SET next_attempt_ms = ?"
            " WHERE receiver = ? AND dead_ms IS NULL AND next_attempt_ms < ?",
            (_ceil_ms(until), receiver, _ceil_ms(until)),
        )


def mark_dead(
    conn: sqlite3.Connection, item_id: int, *, at: datetime, error: str, attempted: bool = True
) -> bool:
    """Give up on the item: it becomes a dead letter with ``error``.

    ``attempted``: the give-up follows an attempt (counted); False when it is given up
    without one (too old, its receiver removed).  False if it was no longer waiting.
    """
    with _immediate(conn):
        return (
            conn.execute(
                "UPDATE notification_outbox SET dead_ms = ?, last_error = ?,"
                " attempts = attempts + ?, last_attempt_ms = CASE WHEN ? THEN ?"
                " ELSE last_attempt_ms END WHERE id = ? AND dead_ms IS NULL",
                (to_ms(at), error, int(attempted), int(attempted), to_ms(at), item_id),
            ).rowcount
            == 1
        )


def give_up_receiver(conn: sqlite3.Connection, receiver: str, *, at: datetime, error: str) -> int:
    """Make every waiting notification of ``receiver`` a dead letter; return how many."""
    with _immediate(conn):
        return conn.execute(
            "UPDATE notification_outbox SET dead_ms = ?, last_error = ?"
            " WHERE receiver = ? AND dead_ms IS NULL",
            (to_ms(at), error, receiver),
        ).rowcount


def prune_dead(conn: sqlite3.Connection, before: datetime) -> int:
    """Delete dead letters given up before ``before``; return how many."""
    with _immediate(conn):
        return conn.execute(
            "DELETE FROM notification_outbox WHERE dead_ms IS NOT NULL AND dead_ms < ?",
            (to_ms(before),),
        ).rowcount


def list_waiting(conn: sqlite3.Connection, receiver: str | None = None) -> list[OutboxItem]:
    """Waiting notifications (of one receiver or all), oldest first."""
    where, args = ("AND receiver = ?", (receiver,)) if receiver is not None else ("", ())
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_outbox WHERE dead_ms IS NULL {where} ORDER BY id",
        args,
    ).fetchall()
    return [_item(row) for row in rows]


def list_dead(
    conn: sqlite3.Connection, receiver: str | None = None, *, limit: int = 200
) -> list[OutboxItem]:
    """Dead letters (of one receiver or all), newest first."""
    where, args = ("AND receiver = ?", (receiver,)) if receiver is not None else ("", ())
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM notification_outbox WHERE dead_ms IS NOT NULL {where}"
        " ORDER BY dead_ms DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [_item(row) for row in rows]


def counts(conn: sqlite3.Connection, receiver: str | None = None) -> dict[str, OutboxCounts]:
    """Waiting and dead-letter counts per receiver, with its next try (a read)."""
    where, args = ("WHERE receiver = ?", (receiver,)) if receiver is not None else ("", ())
    rows = conn.execute(
        "SELECT receiver, SUM(dead_ms IS NULL), SUM(dead_ms IS NOT NULL),"
        " MIN(CASE WHEN dead_ms IS NULL THEN next_attempt_ms END),"
        " MIN(CASE WHEN dead_ms IS NULL THEN enqueued_ms END),"
        " (SELECT o.last_error FROM notification_outbox o WHERE o.receiver = b.receiver"
        "  AND o.last_error IS NOT NULL ORDER BY o.last_attempt_ms DESC, o.id DESC LIMIT 1)"
        f" FROM notification_outbox b {where} GROUP BY receiver ORDER BY receiver",
        args,
    ).fetchall()
    return {
        r[0]: OutboxCounts(
            receiver=r[0],
            waiting=int(r[1] or 0),
            dead=int(r[2] or 0),
            next_attempt_at=from_ms(r[3]),
            oldest_waiting_at=from_ms(r[4]),
            last_error=r[5],
        )
        for r in rows
    }


@dataclass(frozen=True)
class GroupMemory:
    """What one alert group was last told: kept so a restarted notifier carries on."""

    key: str
    """The group's key (route path and group label values)."""
    created_at: datetime
    """When the group first formed."""
    last_sent_at: datetime
    """When its latest notification was handed to the receivers."""
    notified: Mapping[str, str]
    """Fingerprint -> state of each alert that notification announced as firing."""


def load_groups(conn: sqlite3.Connection) -> list[GroupMemory]:
    """Every remembered alert group."""
    rows = conn.execute(
        "SELECT key, created_ms, last_sent_ms, notified FROM notification_groups ORDER BY key"
    ).fetchall()
    return [
        GroupMemory(key, _must(created), _must(sent), dict(json.loads(notified)))
        for key, created, sent, notified in rows
    ]


def save_groups(conn: sqlite3.Connection, changes: Mapping[str, GroupMemory | None]) -> None:
    """Store each group's memory (``None``: the group is gone), in one transaction."""
    with _immediate(conn):
        for key, memory in changes.items():
            if memory is None:
                conn.execute("DELETE FROM notification_groups WHERE key = ?", (key,))
                continue
            conn.execute(
                "INSERT INTO notification_groups (key, created_ms, last_sent_ms, notified)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " created_ms = excluded.created_ms, last_sent_ms = excluded.last_sent_ms,"
                " notified = excluded.notified",
                (
                    key,
                    to_ms(memory.created_at),
                    to_ms(memory.last_sent_at),
                    json.dumps(dict(sorted(memory.notified.items()))),
                ),
            )


def has_outbox(conn: sqlite3.Connection) -> bool:
    """Whether the store has the outbox table (a store migrated by this omniops)."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'notification_outbox'"
    ).fetchone()
    return row is not None


class Outbox:
    """One connection to the outbox for the receivers of a process, used from any thread.

    :meth:`open` uses a store file (migrated first); :meth:`memory` a private in-memory
    database with the same table, for a notifier without a store (tests, ``report``).
    """

    def __init__(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.durable = durable
        """Whether what it holds survives the process."""

    @classmethod
    def open(cls, path: Path) -> Outbox:
        """The outbox of the store at ``path`` (created and migrated if needed)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn)
        return cls(conn, durable=True)

    @classmethod
    def memory(cls) -> Outbox:
        """An outbox that lives as long as the process (nothing survives a restart)."""
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.executescript(OUTBOX_DDL + GROUPS_DDL)
        return cls(conn, durable=False)

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection, one caller at a time (blocking)."""
        with self._lock:
            return fn(self._conn)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()
