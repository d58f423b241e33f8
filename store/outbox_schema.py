"""DDL of the notification outbox migration (see :mod:`store.outbox`).

* ``notification_outbox``: one row per notification waiting for a receiver, deleted once
  delivered; a row given up on keeps ``dead_ms`` (a dead letter).  ``key`` is the
  notification's idempotency key, unique per receiver; ``group_key`` its alert group.

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
