"""DDL of the notification outbox migration (see :mod:`store.outbox`).

* ``notification_outbox``: one row per notification waiting for a receiver, deleted once
  delivered; a row given up on keeps ``dead_ms`` (a dead letter).  ``key`` is the
  notification's idempotency key, unique per receiver; ``group_key`` its alert group.

* ``notification_groups`` (a later migration, :data:`GROUPS_DDL`): what each alert group was
  last told, so a restarted notifier neither announces a group again nor waits its
  ``group_wait`` again: when it was last sent and the fingerprints (with their states) it
  announced.  A row goes when its group goes idle.

Times are integer milliseconds since the Unix epoch, UTC.
"""

OUTBOX_DDL = """
CREATE TABLE notification_outbox (
    id INTEGER PRIMARY KEY,
    receiver TEXT NOT NULL,
    key TEXT NOT NULL,
    group_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_attempt_ms INTEGER,
    last_error TEXT,
    dead_ms INTEGER,
    UNIQUE (receiver, key)
);
CREATE INDEX notification_outbox_waiting
    ON notification_outbox (receiver, next_attempt_ms, id) WHERE dead_ms IS NULL;
CREATE INDEX notification_outbox_dead
    ON notification_outbox (receiver, dead_ms) WHERE dead_ms IS NOT NULL;
"""
"""DDL of the outbox migration (appended to ``store.schema.MIGRATIONS``)."""

GROUPS_DDL = """
CREATE TABLE notification_groups (
    key TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    last_sent_ms INTEGER NOT NULL,
    notified TEXT NOT NULL
) WITHOUT ROWID;
"""
"""DDL of the notification groups migration: the notifier's memory of what it sent."""
