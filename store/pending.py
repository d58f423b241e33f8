"""Notifications kept until the vendor's API answers: durable, retried, never dropped.

A Square ``order.created`` carries no lines; ``serve`` must fetch the order from Square's
Orders API before it can store anything.  Between the webhook's 200 and that fetch
succeeding, the notification lives here (table ``pending_webhooks``, a migration appended
to :data:`store.schema.MIGRATIONS`; not to be confused with the alert notifications of
``notification_outbox``):

* :func:`keep` adds one (the vendor's event id is the key, so a redelivery is kept once);
* :func:`due` lists those whose next attempt has come, oldest first;
* :func:`record_failure` counts a failed attempt, its error and when to try again;
* :func:`resolve` removes one once its events are committed (or it was quarantined).

Every write runs on the store's single writer (``StoreWriter.run``), in a transaction of
its own; :func:`pending_summary` is the read side (the feeds view, ``/health``).  Times are
integer seconds since the epoch, UTC, as everywhere in the store.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

PENDING_DDL = """
CREATE TABLE pending_webhooks (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    UNIQUE (source, key)
);
CREATE INDEX pending_webhooks_due ON pending_webhooks (source, next_attempt_at);
"""
"""DDL of the migration that adds the table (appended to :data:`store.schema.MIGRATIONS`)."""


@dataclass(frozen=True)
class Pending:
    """One kept notification: what it is, the raw body, and how its attempts went."""

    id: int
    source: str
    key: str
    kind: str
    body: str
    received_at: int
    attempts: int
    next_attempt_at: int
    last_error: str


@dataclass(frozen=True)
class PendingSummary:
    """What the feeds view says about one source's kept notifications."""

    source: str
    count: int
    oldest_received_at: int | None
    """When the oldest kept notification arrived (epoch seconds), or None."""
    last_error: str
    """The error of the most recent failed attempt ('' when none failed yet)."""
    last_attempt_at: int | None
    attempts: int
    """Failed attempts over all kept notifications."""


def _tx(db: sqlite3.Connection, sql: str, args: tuple[object, ...]) -> int:
    db.execute("BEGIN IMMEDIATE")
    try:
        cursor = db.execute(sql, args)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return cursor.rowcount


def keep(db: sqlite3.Connection, source: str, key: str, kind: str, body: str, now: int) -> bool:
    """Keep a notification (due at once); False when the same ``key`` is already kept."""
    added = _tx(
        db,
        "INSERT OR IGNORE INTO pending_webhooks"
        " (source, key, kind, body, received_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?)",
        (source, key, kind, body, now, now),
    )
    return added > 0


def due(db: sqlite3.Connection, source: str, now: int, limit: int = 50) -> list[Pending]:
    """Kept notifications of ``source`` whose next attempt is at or before ``now``."""
    rows = db.execute(
        "SELECT id, source, key, kind, body, received_at, attempts, next_attempt_at, last_error"
        " FROM pending_webhooks WHERE source = ? AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, id LIMIT ?",
        (source, now, limit),
    ).fetchall()
    return [Pending(*row) for row in rows]


def next_due(db: sqlite3.Connection, source: str) -> int | None:
    """When the earliest kept notification of ``source`` is due, or None if none is kept."""
    row = db.execute(
        "SELECT MIN(next_attempt_at) FROM pending_webhooks WHERE source = ?", (source,)
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def record_failure(
    db: sqlite3.Connection, pending_id: int, error: str, now: int, next_attempt_at: int
) -> None:
    """One more failed attempt: its error, and when to try again."""
    _tx(
        db,
        "UPDATE pending_webhooks SET attempts = attempts + 1, last_error = ?,"
        " last_attempt_at = ?, next_attempt_at = ? WHERE id = ?",
        (error[:2000], now, next_attempt_at, pending_id),
    )


def note_error(db: sqlite3.Connection, source: str, error: str, now: int) -> None:
    """Set the error every kept notification of ``source`` is waiting on (configuration)."""
    _tx(
        db,
        "UPDATE pending_webhooks SET last_error = ?, last_attempt_at = ? WHERE source = ?",
        (error[:2000], now, source),
    )


def resolve(db: sqlite3.Connection, pending_id: int) -> None:
    """Remove a notification whose events are committed (or that was quarantined)."""
    _tx(db, "DELETE FROM pending_webhooks WHERE id = ?", (pending_id,))


def pending_summary(db: sqlite3.Connection, source: str = "square") -> PendingSummary:
    """How many notifications of ``source`` are kept, the oldest, and the last error.

    A read: works on any connection (the console's read connection included).  A store
    without the table yet has none.
    """
    try:
        count, oldest, attempts = db.execute(
            "SELECT COUNT(*), MIN(received_at), COALESCE(SUM(attempts), 0)"
            " FROM pending_webhooks WHERE source = ?",
            (source,),
        ).fetchone()
        last = db.execute(
            "SELECT last_error, last_attempt_at FROM pending_webhooks"
            " WHERE source = ? AND last_error != ''"
            " ORDER BY last_attempt_at DESC, id DESC LIMIT 1",
            (source,),
        ).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return PendingSummary(source, 0, None, "", None, 0)
    error, attempted = (last[0], last[1]) if last is not None else ("", None)
    return PendingSummary(source, int(count), oldest, error, attempted, int(attempts))


__all__ = [
    "PENDING_DDL",
    "Pending",
    "PendingSummary",
    "due",
    "keep",
    "next_due",
    "note_error",
    "pending_summary",
    "record_failure",
    "resolve",
]
