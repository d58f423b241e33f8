"""DDL of the held-deliveries migration: unmapped external ids and deliveries kept to replay.

* ``unmapped_ids``: one row per external id an adapter met without a mapping
  (``adapter`` ``shopify``/``square``/``amazon``, ``kind`` ``location_id``,
  ``inventory_item_id``, ``variant_id``, ``catalog_object_id``, ``marketplace``,
  ``seller_sku``), with how many distinct deliveries carried it and when it was first and
  last seen (integer seconds since the epoch, UTC).  ``omniops mapping suggest`` reads it.
* ``held``: one row per distinct delivery (``digest`` of source, topic and the redacted
  body) that was quarantined, or stored with an unmapped id: the redacted raw body
  (redacted as quarantine keeps it, :func:`feeds.webhooks.redact.redact_raw`), the
  headers a replay needs (``topic``, ``delivery_id``), the ids of the events it stored,
  the quarantine rows it produced, and its ``state``: ``held`` (waiting for a replay),
  ``placed`` (replayed: everything in it is stored) or ``noted`` (only a soft id, such as
  an Amazon SellerSKU that maps to itself by default: counted, never listed).
  Besides the webhook adapters, ``source`` is ``ingest`` (a canonical line),
  ``dropfolder`` (a dropped file's rows), ``history`` (an invoice's rows that
  ``omniops import-history`` held back) or ``kafka`` (a record), with what their replay
  needs in ``topic`` and ``delivery_id`` (no schema change: the same columns).
"""

HELD_DDL = """
CREATE TABLE unmapped_ids (
    adapter TEXT NOT NULL,
    kind TEXT NOT NULL,
    external_id TEXT NOT NULL,
    events INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (adapter, kind, external_id)
) WITHOUT ROWID;
CREATE TABLE held (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('held', 'placed', 'noted')),
    reason TEXT NOT NULL,
    unmapped TEXT NOT NULL,
    event_ids TEXT NOT NULL,
    quarantine_ids TEXT NOT NULL,
    raw TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    replayed_at INTEGER
);
CREATE INDEX held_state ON held (state, source, last_seen);
"""

HELD_EDITS_DDL = """
CREATE TABLE held_edits (
    id INTEGER PRIMARY KEY,
    held_id INTEGER NOT NULL REFERENCES held (id),
    at INTEGER NOT NULL,
    by TEXT NOT NULL,
    how TEXT NOT NULL,
    changes TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL
);
CREATE INDEX held_edits_held ON held_edits (held_id, id);
"""
"""DDL of the held-edits migration (17): every ``omniops quarantine edit`` of a held payload.

One row per edit that was saved: the held row, when (seconds since the epoch, UTC), who
(``--by``, else the OS user), how (``editor``, ``set``, ``file``), what changed (JSON list
of ``{"field", "before", "after"}``; the field ``(payload)`` for a payload that is not
JSON), and the payload before and after, so the original is never lost: the first edit's
``before`` is the payload as it arrived (redacted), and each edit's ``after`` is the next
one's ``before``.
"""
