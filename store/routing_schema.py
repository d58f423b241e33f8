"""DDL of migration 3: fulfillment routing decisions, their traces, and stock reservations.

* ``routing_decisions``: one row per order the router decided (an order is routed once;
  a re-route replaces the row).  ``location_id`` is the first node (what the panel shows
  as "routed to"), ``nodes`` every node as a JSON list, ``decision`` the whole decision
  with its trace as JSON (what "why did it go there?" shows).  ``routed_for`` is the
  moment routed for (the order's placement time when replaying), ``decided_at`` when the
  row was written; both integer seconds since the epoch, UTC.
  The status index covers remaining-capacity counts (status, time, node, splits).
* ``routing_reservations``: the units each routed line reserved at its node; the same
  units were added to ``stock.reserved``.  ``released_at`` is set when they are given
  back (order shipped, picked up or cancelled), and ``stock.reserved`` reduced again.
  An order edit that changes a line releases its row and reserves the line anew (a new
  row, ``reserved_at`` the edit's processing time; store/reservations.py).
"""

ROUTING_DDL = """
CREATE TABLE routing_decisions (
    order_id TEXT PRIMARY KEY,
    decided_at INTEGER NOT NULL,
    routed_for INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('routed', 'held', 'unfulfillable')),
    rule_id TEXT,
    method TEXT NOT NULL,
    location_id TEXT,
    nodes TEXT NOT NULL,
    splits INTEGER NOT NULL,
    carrier TEXT,
    promised_ts INTEGER,
    late INTEGER NOT NULL,
    fallback TEXT,
    summary TEXT NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX routing_decisions_for ON routing_decisions (routed_for);
CREATE INDEX routing_decisions_status
    ON routing_decisions (status, routed_for, location_id, splits);
CREATE TABLE routing_reservations (
    order_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    sku TEXT NOT NULL,
    location_id TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    reserved_at INTEGER NOT NULL,
    released_at INTEGER,
    PRIMARY KEY (order_id, line_no)
) WITHOUT ROWID;
"""

NODES_VERSION_KEY = "locations_version"
"""The ``meta`` key of the locations counter (see :data:`NODES_VERSION_DDL`)."""

NODES_VERSION_DDL = f"""
INSERT OR IGNORE INTO meta (key, value) VALUES ('{NODES_VERSION_KEY}', '0');
CREATE TRIGGER locations_version_insert AFTER INSERT ON locations BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{NODES_VERSION_KEY}';
END;
CREATE TRIGGER locations_version_update AFTER UPDATE ON locations BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{NODES_VERSION_KEY}';
END;
CREATE TRIGGER locations_version_delete AFTER DELETE ON locations BEGIN
    UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = '{NODES_VERSION_KEY}';
END;
"""
"""DDL of migration 5: ``meta.locations_version``, a counter every write to ``locations``
bumps (by trigger, so no writer can forget it).  Readers that cache the nodes (the
``POST /route`` source) compare it in their read transaction instead of reloading them."""
