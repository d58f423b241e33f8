"""The demo's replay clock, recorded in its store so every console on it tells the same time.

The demo runs on a :class:`store.clock.ReplayClock`; a console opened on the demo's store by
another process (``omniops console --db``) would otherwise use the wall clock and see every
order late and every feed stale.  The demo records the clock (start, speed, the Unix time it
started) in the store's ``meta`` table; :func:`load_replay_clock` gives a clock that follows
it.  A live store (``serve``) has no such record, and its consoles keep the wall clock.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from store.clock import ReplayClock

_KEYS = ("replay_start", "replay_speed", "replay_wall_epoch")


def record_replay_clock(db: Path, clock: ReplayClock) -> None:
    """Store ``clock`` in the store at ``db`` (replacing an earlier record)."""
    values = (clock.start.isoformat(), repr(clock.speed), repr(clock.wall_epoch))
    conn = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            zip(_KEYS, values, strict=True),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def load_replay_clock(db: Path) -> ReplayClock | None:
    """The replay clock recorded in the store at ``db``, or None (a live store)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = dict(
            conn.execute("SELECT key, value FROM meta WHERE key IN (?, ?, ?)", _KEYS).fetchall()
        )
    except sqlite3.OperationalError:  # no meta table yet: not a demo store
        return None
    finally:
        conn.close()
    if len(rows) != len(_KEYS):
        return None
    start = datetime.fromisoformat(rows["replay_start"]).astimezone(UTC)
    return ReplayClock(
        start, float(rows["replay_speed"]), wall_epoch=float(rows["replay_wall_epoch"])
    )
