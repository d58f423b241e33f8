"""Persistence of alert state: instances, transitions, acknowledgements, silences.

Every function is synchronous and takes a :class:`sqlite3.Connection` opened in autocommit
mode (``isolation_level=None``, see :func:`connect`).  Each mutation is one short
``BEGIN IMMEDIATE`` transaction: acknowledgements and silences come from any number of
consoles while the writer process evaluates, and SQLite's busy timeout queues them.  The
evaluator itself uses :func:`immediate` to read the active alerts and write its changes in
one transaction, so an acknowledgement can never be lost between the two.

This module stores and reads; the state machine is :mod:`rules.alerts`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

from store import outbox
from store.schema import migrate

AlertState = Literal["pending", "firing", "nodata", "resolved"]
"""``pending``: condition true, not yet for long enough; ``firing``; ``nodata``: firing
because the metric has no data and the rule says that is an alert; ``resolved``."""
ACTIVE_STATES: tuple[AlertState, ...] = ("pending", "firing", "nodata")
TransitionKind = Literal["state", "ack", "unack"]


def to_epoch(moment: datetime) -> int:
    """Integer seconds since the epoch (UTC) of an aware datetime."""
    return int(moment.timestamp())


def from_epoch(seconds: int | None) -> datetime | None:
    """The aware UTC datetime of stored seconds (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _must(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class AlertRecord:
    """The current state of one alert rule × scope (its latest incident)."""

    fingerprint: str
    """``rule_id|scope``: stable across restarts and threshold edits."""
    rule_id: str
    metric: str
    scope: str
    """The scope's labels as matcher text, e.g. ``location=WH-NJ, scope=location``."""
    labels: Mapping[str, str]
    """Every label: alertname, severity, the rule's labels and the scope's labels."""
    state: AlertState
    severity: str
    op: str
    threshold: float
    clear: float
    value: float | None
    """The latest value; None when the metric had no data."""
    description: str
    started_at: datetime
    """When the condition first held in this incident (pending since)."""
    fired_at: datetime | None
    resolved_at: datetime | None
    updated_at: datetime
    """When the evaluator last looked at it."""
    no_data_since: datetime | None = None
    acked_by: str | None = None
    acked_at: datetime | None = None
    ack_comment: str = ""

    @property
    def active(self) -> bool:
        """Pending, firing or firing on no data."""
        return self.state != "resolved"

    @property
    def since(self) -> datetime:
        """When the current state began: fired, resolved, or pending since."""
        if self.state == "resolved" and self.resolved_at is not None:
            return self.resolved_at
        if self.state in ("firing", "nodata") and self.fired_at is not None:
            return self.fired_at
        return self.started_at


@dataclass(frozen=True)
class Transition:
    """One recorded change of an alert: a state change or an (un)acknowledgement."""

    fingerprint: str
    rule_id: str
    at: datetime
    kind: TransitionKind
    from_state: str | None
    to_state: str
    value: float | None
    by: str
    """The OS user: of the evaluating process for state changes, of the operator otherwise."""
    note: str = ""


@dataclass(frozen=True)
class Silence:
    """Label matchers that mute notifications until ``ends_at`` (alerts still resolve)."""

    id: int
    matchers: str
    comment: str
    created_by: str
    created_at: datetime
    ends_at: datetime
    expired_by: str | None = None
    expired_at: datetime | None = None

    def active_at(self, now: datetime) -> bool:
        """In force at ``now``: not expired by hand and not past its end."""
        return self.expired_at is None and self.created_at <= now < self.ends_at


@dataclass(frozen=True)
class ReceiverStatus:
    """What the notifier did for one receiver (the writing process's counters)."""

    receiver: str
    delivered: int = 0
    failed_attempts: int = 0
    pending: int = 0
    """Notifications not yet delivered (still being retried)."""
    dropped: int = 0
    """Notifications given up on (refused by the receiver, or replaced while queued)."""
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_delivered_at: datetime | None = None
    updated_at: datetime | None = None
    dead_letter: int = 0
    """Notifications given up on and kept in the outbox (see :mod:`store.outbox`)."""
    next_attempt_at: datetime | None = None
    """When the waiting notifications are tried next (None when nothing waits)."""


@dataclass
class AlertChanges:
    """What one evaluation writes: changed alert rows and the transitions behind them."""

    alerts: list[AlertRecord] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


# -- connections and transactions --------------------------------------------------------------


def connect(path: Path, *, create: bool = False) -> sqlite3.Connection:
    """A writable connection for alert state (autocommit mode, WAL, busy timeout).

    The store must exist unless ``create`` is true (tests, first run); it is migrated.
    Usable from any thread, one thread at a time.
    """
    if not create and not Path(path).exists():
        raise FileNotFoundError(f"{path}: no such store (run `omniops ingest` or `serve` first)")
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    migrate(conn)
    return conn


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- alerts ------------------------------------------------------------------------------------

_ALERT_COLUMNS = (
    "fingerprint, rule_id, metric, scope, labels, state, severity, op, threshold, clear, value,"
    " description, started_at, fired_at, resolved_at, updated_at, no_data_since, acked_by,"
    " acked_at, ack_comment"
)


def _alert_from_row(row: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        fingerprint=row[0],
        rule_id=row[1],
        metric=row[2],
        scope=row[3],
        labels=cast(dict[str, str], json.loads(row[4])),
        state=cast(AlertState, row[5]),
        severity=row[6],
        op=row[7],
        threshold=row[8],
        clear=row[9],
        value=row[10],
        description=row[11],
        started_at=_must(row[12]),
        fired_at=from_epoch(row[13]),
        resolved_at=from_epoch(row[14]),
        updated_at=_must(row[15]),
        no_data_since=from_epoch(row[16]),
        acked_by=row[17],
        acked_at=from_epoch(row[18]),
        ack_comment=row[19],
    )


def _alert_params(a: AlertRecord) -> tuple[Any, ...]:
    def ts(moment: datetime | None) -> int | None:
        return None if moment is None else to_epoch(moment)

    return (
        a.fingerprint,
        a.rule_id,
        a.metric,
        a.scope,
        json.dumps(dict(sorted(a.labels.items()))),
        a.state,
        a.severity,
        a.op,
        a.threshold,
        a.clear,
        a.value,
        a.description,
        to_epoch(a.started_at),
        ts(a.fired_at),
        ts(a.resolved_at),
        to_epoch(a.updated_at),
        ts(a.no_data_since),
        a.acked_by,
        ts(a.acked_at),
        a.ack_comment,
    )


def load_active(conn: sqlite3.Connection) -> dict[str, AlertRecord]:
    """Every pending, firing or no-data alert by fingerprint (call inside :func:`immediate`)."""
    rows = conn.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state != 'resolved'").fetchall()
    return {row[0]: _alert_from_row(row) for row in rows}


def write_changes(conn: sqlite3.Connection, changes: AlertChanges) -> None:
    """Upsert changed alert rows and append transitions (call inside :func:`immediate`)."""
    placeholders = ", ".join("?" * 20)
    conn.executemany(
        f"INSERT OR REPLACE INTO alerts ({_ALERT_COLUMNS}) VALUES ({placeholders})",
        [_alert_params(a) for a in changes.alerts],
    )
    add_transitions(conn, changes.transitions)


def add_transitions(conn: sqlite3.Connection, transitions: Sequence[Transition]) -> None:
    """Append transitions (inside a caller's transaction)."""
    conn.executemany(
        "INSERT INTO alert_transitions (fingerprint, rule_id, at, kind, from_state, to_state,"
        " value, by_user, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                t.fingerprint,
                t.rule_id,
                to_epoch(t.at),
                t.kind,
                t.from_state,
                t.to_state,
                t.value,
                t.by,
                t.note,
            )
            for t in transitions
        ],
    )


def list_alerts(
    conn: sqlite3.Connection, *, resolved_since: datetime | None = None
) -> list[AlertRecord]:
    """Active alerts, plus those resolved at or after ``resolved_since`` if given.

    Firing first (no-data with them), then pending, then resolved; critical first, then
    newest first within.
    """
    if resolved_since is None:
        rows = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state != 'resolved'"
        ).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE state != 'resolved' OR resolved_at >= ?",
            (to_epoch(resolved_since),),
        ).fetchall()
    records = [_alert_from_row(row) for row in rows]
    rank = {"firing": 0, "nodata": 0, "pending": 1, "resolved": 2}
    severity = {"critical": 0, "warning": 1, "info": 2}
    records.sort(
        key=lambda a: (
            rank[a.state],
            severity.get(a.severity, 3),
            -a.since.timestamp(),
            a.fingerprint,
        )
    )
    return records


def get_alert(conn: sqlite3.Connection, fingerprint: str) -> AlertRecord | None:
    """One alert by fingerprint, or None."""
    row = conn.execute(
        f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE fingerprint = ?", (fingerprint,)
    ).fetchone()
    return None if row is None else _alert_from_row(row)


def acknowledge(
    conn: sqlite3.Connection, fingerprint: str, *, by: str, at: datetime, comment: str = ""
) -> AlertRecord:
    """Acknowledge an active alert; the acknowledgement ends when the alert resolves.

    Raises:
        LookupError: no such alert, or it is already resolved.
    """
    with immediate(conn):
        alert = get_alert(conn, fingerprint)
        if alert is None or not alert.active:
            raise LookupError(f"alert {fingerprint!r} is not active; nothing to acknowledge")
        conn.execute(
            "UPDATE alerts SET acked_by = ?, acked_at = ?, ack_comment = ? WHERE fingerprint = ?",
            (by, to_epoch(at), comment, fingerprint),
        )
        add_transitions(
            conn,
            [
                Transition(
                    fingerprint,
                    alert.rule_id,
                    at,
                    "ack",
                    alert.state,
                    alert.state,
                    alert.value,
                    by,
                    comment,
                )
            ],
        )
        updated = get_alert(conn, fingerprint)
    assert updated is not None
    return updated


def unacknowledge(conn: sqlite3.Connection, fingerprint: str, *, by: str, at: datetime) -> None:
    """Withdraw an acknowledgement (recorded as a transition).

    Raises:
        LookupError: no such alert, or it is not acknowledged.
    """
    with immediate(conn):
        alert = get_alert(conn, fingerprint)
        if alert is None or alert.acked_by is None:
            raise LookupError(f"alert {fingerprint!r} is not acknowledged")
        conn.execute(
            "UPDATE alerts SET acked_by = NULL, acked_at = NULL, ack_comment = ''"
            " WHERE fingerprint = ?",
            (fingerprint,),
        )
        add_transitions(
            conn,
            [
                Transition(
                    fingerprint,
                    alert.rule_id,
                    at,
                    "unack",
                    alert.state,
                    alert.state,
                    alert.value,
                    by,
                    "",
                )
            ],
        )


def transitions(
    conn: sqlite3.Connection,
    *,
    fingerprint: str | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[Transition]:
    """Recorded transitions, newest first, optionally of one alert and since a time."""
    where: list[str] = []
    args: list[Any] = []
    if fingerprint is not None:
        where.append("fingerprint = ?")
        args.append(fingerprint)
    if since is not None:
        where.append("at >= ?")
        args.append(to_epoch(since))
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        "SELECT fingerprint, rule_id, at, kind, from_state, to_state, value, by_user, note"
        f" FROM alert_transitions {clause} ORDER BY at DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        Transition(
            r[0], r[1], _must(r[2]), cast(TransitionKind, r[3]), r[4], r[5], r[6], r[7], r[8]
        )
        for r in rows
    ]


def fired_counts(conn: sqlite3.Connection, since: datetime) -> dict[str, int]:
    """How many times each rule started firing (or firing on no data) since ``since``."""
    rows = conn.execute(
        "SELECT rule_id, COUNT(*) FROM alert_transitions"
        " WHERE kind = 'state' AND to_state IN ('firing', 'nodata')"
        " AND (from_state IS NULL OR from_state IN ('pending', 'resolved')) AND at >= ?"
        " GROUP BY rule_id",
        (to_epoch(since),),
    ).fetchall()
    return {str(rule): int(n) for rule, n in rows}


# -- silences ----------------------------------------------------------------------------------


def _silence_from_row(row: Sequence[Any]) -> Silence:
    return Silence(
        id=row[0],
        matchers=row[1],
        comment=row[2],
        created_by=row[3],
        created_at=_must(row[4]),
        ends_at=_must(row[5]),
        expired_by=row[6],
        expired_at=from_epoch(row[7]),
    )


_SILENCE_COLUMNS = "id, matchers, comment, created_by, created_at, ends_at, expired_by, expired_at"


def add_silence(
    conn: sqlite3.Connection,
    matchers: str,
    *,
    by: str,
    at: datetime,
    ends_at: datetime,
    comment: str = "",
) -> Silence:
    """Create a silence from ``at`` until ``ends_at`` (the caller validated the matchers)."""
    if ends_at <= at:
        raise ValueError("a silence must end after it starts")
    with immediate(conn):
        cursor = conn.execute(
            "INSERT INTO silences (matchers, comment, created_by, created_at, ends_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (matchers, comment, by, to_epoch(at), to_epoch(ends_at)),
        )
        row = conn.execute(
            f"SELECT {_SILENCE_COLUMNS} FROM silences WHERE id = ?", (cursor.lastrowid,)
        ).fetchone()
    return _silence_from_row(row)


def expire_silence(conn: sqlite3.Connection, silence_id: int, *, by: str, at: datetime) -> None:
    """End a silence now.

    Raises:
        LookupError: no such silence, or it has already ended.
    """
    with immediate(conn):
        cursor = conn.execute(
            "UPDATE silences SET expired_by = ?, expired_at = ?"
            " WHERE id = ? AND expired_at IS NULL AND ends_at > ?",
            (by, to_epoch(at), silence_id, to_epoch(at)),
        )
        if cursor.rowcount != 1:
            raise LookupError(f"silence {silence_id} is not in force")


def list_silences(
    conn: sqlite3.Connection, now: datetime, *, include_ended: bool = False
) -> list[Silence]:
    """Silences in force at ``now`` (or every silence), ending soonest first."""
    if include_ended:
        rows = conn.execute(f"SELECT {_SILENCE_COLUMNS} FROM silences ORDER BY ends_at").fetchall()
    else:
        t = to_epoch(now)
        rows = conn.execute(
            f"SELECT {_SILENCE_COLUMNS} FROM silences"
            " WHERE expired_at IS NULL AND created_at <= ? AND ends_at > ? ORDER BY ends_at",
            (t, t),
        ).fetchall()
    return [_silence_from_row(row) for row in rows]


# -- receiver health ---------------------------------------------------------------------------


def save_receiver_status(
    conn: sqlite3.Connection, statuses: Sequence[ReceiverStatus], *, at: datetime
) -> None:
    """Replace the stored counters of the given receivers."""

    def ts(moment: datetime | None) -> int | None:
        return None if moment is None else to_epoch(moment)

    with immediate(conn):
        conn.executemany(
            "INSERT OR REPLACE INTO receiver_status (receiver, delivered, failed_attempts,"
            " pending, dropped, last_error, last_error_at, last_delivered_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    s.receiver,
                    s.delivered,
                    s.failed_attempts,
                    s.pending,
                    s.dropped,
                    s.last_error,
                    ts(s.last_error_at),
                    ts(s.last_delivered_at),
                    to_epoch(at),
                )
                for s in statuses
            ],
        )


def load_receiver_status(conn: sqlite3.Connection) -> list[ReceiverStatus]:
    """The stored counters of every receiver, by name, with what its outbox holds.

    ``pending``, ``dead_letter`` and ``next_attempt_at`` are read from the notification
    outbox (:mod:`store.outbox`), so they are right even while no process delivers; a
    receiver with notifications in the outbox but no stored counters is listed too.
    """
    rows = conn.execute(
        "SELECT receiver, delivered, failed_attempts, pending, dropped, last_error,"
        " last_error_at, last_delivered_at, updated_at FROM receiver_status ORDER BY receiver"
    ).fetchall()
    statuses = {
        r[0]: ReceiverStatus(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            from_epoch(r[6]),
            from_epoch(r[7]),
            from_epoch(r[8]),
        )
        for r in rows
    }
    if not outbox.has_outbox(conn):
        return list(statuses.values())
    held = outbox.counts(conn)
    for name in sorted(set(statuses) | set(held)):
        base = statuses.get(name) or ReceiverStatus(name)
        counts = held.get(name) or outbox.OutboxCounts(name)
        statuses[name] = replace(
            base,
            pending=counts.waiting,
            dead_letter=counts.dead,
            next_attempt_at=counts.next_attempt_at,
            last_error=base.last_error or counts.last_error,
        )
    return [statuses[name] for name in sorted(statuses)]
