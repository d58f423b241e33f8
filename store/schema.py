"""The SQLite schema, as an ordered list of versioned migrations.

``PRAGMA user_version`` holds the number of migrations applied; :func:`migrate` applies
the rest in one transaction each.  Times are integer seconds since the Unix epoch, UTC;
money is integer cents.  Migrations are append-only: never edit a released one.
"""

from __future__ import annotations

import sqlite3

from store.alerts_schema import ALERTS_DDL
from store.fulfilled import DONE_SQL_EXPR, FINISHING_STATUSES, FULFILLED_SQL
from store.held_schema import HELD_DDL, HELD_EDITS_DDL
from store.outbox_schema import GROUPS_DDL, OUTBOX_DDL
from store.pending import PENDING_DDL
from store.routing_schema import NODES_VERSION_DDL, ROUTING_DDL

_FINISHING = ", ".join(f"'{status}'" for status in FINISHING_STATUSES)
"""The finishing statuses as an SQL list (migration 22)."""

MIGRATIONS: tuple[str, ...] = (
    # 1: the event log, quarantine, catalogue, current state and rollups.
    """
    CREATE TABLE event_log (
        seq INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        source TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX event_log_source_ts ON event_log (source, ts);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        received_at INTEGER NOT NULL,
        source TEXT NOT NULL,
        error TEXT NOT NULL,
        raw TEXT NOT NULL
    );
    CREATE TABLE feed_state (
        feed TEXT PRIMARY KEY,
        last_event_ts INTEGER,
        last_received_at INTEGER,
        events INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        quarantined INTEGER NOT NULL DEFAULT 0,
        cursor TEXT
    );
    CREATE TABLE feed_health (
        feed TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL,
        events_per_minute REAL NOT NULL,
        errors INTEGER NOT NULL,
        quarantined INTEGER NOT NULL,
        last_event_at INTEGER,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE skus (
        sku TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        category TEXT NOT NULL,
        product_type TEXT NOT NULL,
        unit_cost_cents INTEGER NOT NULL,
        price_cents INTEGER NOT NULL,
        reorder_point INTEGER NOT NULL,
        lead_time_days REAL NOT NULL,
        hazmat INTEGER NOT NULL,
        weight_kg REAL NOT NULL,
        updated_ts INTEGER NOT NULL
    );
    CREATE TABLE locations (
        location_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        lat REAL NOT NULL,
        lon REAL NOT NULL,
        timezone TEXT NOT NULL,
        opens TEXT NOT NULL,
        closes TEXT NOT NULL,
        cutoff TEXT,
        safety_buffer INTEGER NOT NULL,
        updated_ts INTEGER NOT NULL
    );
    CREATE TABLE channels (
        channel_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        updated_ts INTEGER NOT NULL
    );
    CREATE TABLE stock (
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        on_hand INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        as_of_ts INTEGER NOT NULL,
        source_system TEXT NOT NULL,
        risk INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (sku, location_id)
    ) WITHOUT ROWID;
    CREATE INDEX stock_at_risk ON stock (risk) WHERE risk = 1;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        has_order INTEGER NOT NULL DEFAULT 0,
        channel TEXT,
        method TEXT,
        destination_region TEXT,
        location_id TEXT,
        placed_ts INTEGER,
        promised_ts INTEGER,
        gross_cents INTEGER NOT NULL DEFAULT 0,
        discount_cents INTEGER NOT NULL DEFAULT 0,
        units INTEGER NOT NULL DEFAULT 0,
        released_ts INTEGER,
        picked_ts INTEGER,
        packed_ts INTEGER,
        shipped_ts INTEGER,
        ready_ts INTEGER,
        picked_up_ts INTEGER,
        delivered_ts INTEGER,
        exception_ts INTEGER,
        exception_detail TEXT,
        cancelled_ts INTEGER,
        sales_reversed INTEGER NOT NULL DEFAULT 0,
        carrier TEXT,
        tracking TEXT,
        estimated_delivery_ts INTEGER,
        estimate_ts INTEGER,
        fulfil_location_id TEXT,
        fulfilled_ts INTEGER,
        done_ts INTEGER
    );
    CREATE INDEX orders_placed ON orders (placed_ts);
    CREATE INDEX orders_done ON orders (done_ts);
    CREATE INDEX orders_fulfilled ON orders (fulfilled_ts);
    CREATE INDEX orders_picked ON orders (picked_ts);
    CREATE INDEX orders_delivered ON orders (delivered_ts);
    CREATE TABLE stock_adjustments (
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        delta INTEGER NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX stock_adjustments_pair ON stock_adjustments (sku, location_id, ts);
    CREATE TABLE order_lines (
        order_id TEXT NOT NULL,
        line_no INTEGER NOT NULL,
        sku TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        unit_price_cents INTEGER NOT NULL,
        discount_cents INTEGER NOT NULL,
        sales_location TEXT,
        sales_category TEXT,
        PRIMARY KEY (order_id, line_no)
    ) WITHOUT ROWID;
    CREATE TABLE sales_hourly (
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        hour INTEGER NOT NULL,
        units INTEGER NOT NULL,
        net_cents INTEGER NOT NULL,
        PRIMARY KEY (sku, location_id, hour, channel)
    ) WITHOUT ROWID;
    CREATE INDEX sales_hourly_hour ON sales_hourly (hour);
    CREATE TABLE category_hourly (
        category TEXT NOT NULL,
        channel TEXT NOT NULL,
        hour INTEGER NOT NULL,
        units INTEGER NOT NULL,
        PRIMARY KEY (category, channel, hour)
    ) WITHOUT ROWID;
    CREATE TABLE category_returns_hourly (
        category TEXT NOT NULL,
        channel TEXT NOT NULL,
        hour INTEGER NOT NULL,
        units INTEGER NOT NULL,
        PRIMARY KEY (category, channel, hour)
    ) WITHOUT ROWID;
    CREATE TABLE sku_hourly (
        sku TEXT NOT NULL,
        hour INTEGER NOT NULL,
        units INTEGER NOT NULL,
        PRIMARY KEY (sku, hour)
    ) WITHOUT ROWID;
    CREATE TABLE returns (
        return_id TEXT PRIMARY KEY,
        order_id TEXT,
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        reason TEXT NOT NULL,
        refund_cents INTEGER NOT NULL,
        received_ts INTEGER NOT NULL,
        category TEXT NOT NULL DEFAULT '-'
    );
    CREATE INDEX returns_received ON returns (received_ts);
    CREATE INDEX returns_sku ON returns (sku, received_ts);
    CREATE INDEX returns_uncategorised ON returns (sku) WHERE category = '-';
    CREATE INDEX order_lines_uncategorised ON order_lines (sku) WHERE sales_category = '-';
    CREATE TABLE inbound (
        po_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        eta_ts INTEGER NOT NULL,
        status TEXT NOT NULL,
        updated_ts INTEGER NOT NULL,
        PRIMARY KEY (po_id, sku, location_id)
    ) WITHOUT ROWID;
    CREATE INDEX inbound_pair ON inbound (sku, location_id);
    CREATE TABLE listings (
        channel TEXT NOT NULL,
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        advertised INTEGER NOT NULL,
        updated_ts INTEGER NOT NULL,
        PRIMARY KEY (sku, location_id, channel)
    ) WITHOUT ROWID;
    """,
    # 2: alert state and its transitions (see store/alerts_schema.py).
    ALERTS_DDL,
    # 3: routing decisions (see store/routing_schema.py).
    ROUTING_DDL,
    # 4: indexes that keep the refresh's cost off the store's age: the flagged pairs' stock
    # (what the stockout panel reads about them, without a lookup into the whole stock
    # table), the shipments not yet delivered (the carrier rows, without a scan of every
    # order ever placed), units returned per SKU in the index (a SKU's baseline returns
    # without a lookup per return), the headline's order columns in the placed-time index
    # (the day and rolling-week sums read the index alone) and the SKU columns the stockout
    # definition needs (one seek per flagged pair instead of two).
    """
    DROP INDEX stock_at_risk;
    CREATE INDEX stock_flagged ON stock (risk, sku, location_id, on_hand, reserved)
        WHERE risk = 1;
    CREATE INDEX orders_in_transit ON orders (shipped_ts)
        WHERE carrier IS NOT NULL AND delivered_ts IS NULL;
    DROP INDEX returns_sku;
    CREATE INDEX returns_sku_quantity ON returns (sku, received_ts, quantity);
    DROP INDEX orders_placed;
    CREATE INDEX orders_placed_cover
        ON orders (placed_ts, has_order, channel, cancelled_ts, gross_cents, discount_cents);
    CREATE INDEX skus_risk_inputs ON skus (sku, reorder_point, lead_time_days, category);
    """,
    # 5: the cancelled orders by cancellation time, so a window read as of a past moment
    # finds the orders cancelled after it (their sales still count then) without a scan;
    # live, the range is empty.  See store/asof.py.
    # It also keeps the history stock as of a past moment needs: every count (the stock
    # table keeps only the newest), every listing update and every inbound update (those
    # tables keep the last write), seeded from what the store holds now.
    """
    CREATE INDEX orders_cancelled ON orders (cancelled_ts) WHERE cancelled_ts IS NOT NULL;
    CREATE TABLE stock_counts (
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        on_hand INTEGER NOT NULL,
        reserved INTEGER NOT NULL,
        PRIMARY KEY (sku, location_id, ts)
    ) WITHOUT ROWID;
    INSERT INTO stock_counts (sku, location_id, ts, on_hand, reserved)
        SELECT s.sku, s.location_id, s.as_of_ts,
               s.on_hand - (SELECT COALESCE(SUM(delta), 0) FROM stock_adjustments a
                            WHERE a.sku = s.sku AND a.location_id = s.location_id
                              AND a.ts > s.as_of_ts),
               s.reserved
        FROM stock s WHERE s.as_of_ts > 0;
    CREATE TABLE listing_history (
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        channel TEXT NOT NULL,
        ts INTEGER NOT NULL,
        advertised INTEGER NOT NULL,
        PRIMARY KEY (sku, location_id, channel, ts)
    ) WITHOUT ROWID;
    INSERT INTO listing_history (sku, location_id, channel, ts, advertised)
        SELECT sku, location_id, channel, updated_ts, advertised FROM listings;
    CREATE TABLE inbound_history (
        po_id TEXT NOT NULL,
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        eta_ts INTEGER NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (po_id, sku, location_id, ts)
    ) WITHOUT ROWID;
    INSERT INTO inbound_history (po_id, sku, location_id, ts, quantity, eta_ts, status)
        SELECT po_id, sku, location_id, updated_ts, quantity, eta_ts, status FROM inbound;
    """,
    # 6: a counter of edits to locations, for readers that cache the nodes.
    NODES_VERSION_DDL,
    # 7: notifications waiting for a receiver, and dead letters (see store/outbox_schema.py).
    OUTBOX_DDL,
    # 8: notifications kept until the vendor's API answers (Square orders without lines).
    PENDING_DDL,
    # 9: the delivery date promised to the customer, next to the node's ship-by
    # (``promised_ts``), for delivered late against the customer's promise.
    """
    ALTER TABLE orders ADD COLUMN delivery_promised_ts INTEGER;
    """,
    # 10: shipping charged to the customer per order, and every report of what a shipment
    # cost to send (per order and tracking number, ``-`` without one), by report time, so
    # the cost as of a past moment is the latest report by then.
    """
    ALTER TABLE orders ADD COLUMN shipping_charged_cents INTEGER;
    CREATE TABLE shipment_costs (
        order_id TEXT NOT NULL,
        shipment TEXT NOT NULL,
        ts INTEGER NOT NULL,
        cost_cents INTEGER NOT NULL,
        PRIMARY KEY (order_id, shipment, ts)
    ) WITHOUT ROWID;
    CREATE INDEX shipment_costs_ts ON shipment_costs (ts);
    """,
    # 11: the distinct nodes of an order whose lines are fulfilled from more than one
    # (JSON array, sorted; NULL when every line is at the order's node).
    """
    ALTER TABLE orders ADD COLUMN line_nodes TEXT;
    """,
    # 12: what could not be placed, kept to be replayed (see store/held.py): the external
    # ids seen without a mapping, and the (redacted) deliveries held for a replay.
    HELD_DDL,
    # 13: the catalogue's history, for the catalogue as of a past moment (store/asof.py):
    # every SKU and node record by its time (the later arrival of two stamped alike wins),
    # and every routing decision by the moment routed for and every reservation (triggers
    # keep them, so a re-route that replaces ``routing_decisions``' and
    # ``routing_reservations``' rows leaves the earlier ones here).
    """
    CREATE TABLE sku_history (
        sku TEXT NOT NULL,
        ts INTEGER NOT NULL,
        category TEXT NOT NULL,
        product_type TEXT NOT NULL,
        unit_cost_cents INTEGER NOT NULL,
        price_cents INTEGER NOT NULL,
        reorder_point INTEGER NOT NULL,
        lead_time_days REAL NOT NULL,
        PRIMARY KEY (sku, ts)
    ) WITHOUT ROWID;
    CREATE INDEX sku_history_ts ON sku_history (ts);
    INSERT INTO sku_history (sku, ts, category, product_type, unit_cost_cents, price_cents,
                             reorder_point, lead_time_days)
        SELECT sku, updated_ts, category, product_type, unit_cost_cents, price_cents,
               reorder_point, lead_time_days FROM skus;
    CREATE TABLE location_history (
        location_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,
        opens TEXT NOT NULL,
        closes TEXT NOT NULL,
        cutoff TEXT,
        safety_buffer INTEGER NOT NULL,
        PRIMARY KEY (location_id, ts)
    ) WITHOUT ROWID;
    CREATE INDEX location_history_ts ON location_history (ts);
    INSERT INTO location_history (location_id, ts, kind, opens, closes, cutoff, safety_buffer)
        SELECT location_id, updated_ts, kind, opens, closes, cutoff, safety_buffer
        FROM locations;
    CREATE TABLE routing_history (
        seq INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL,
        routed_for INTEGER NOT NULL,
        decided_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        location_id TEXT,
        nodes TEXT NOT NULL
    );
    CREATE INDEX routing_history_for ON routing_history (routed_for);
    CREATE INDEX routing_history_order ON routing_history (order_id, routed_for);
    INSERT INTO routing_history (order_id, routed_for, decided_at, status, location_id, nodes)
        SELECT order_id, routed_for, decided_at, status, location_id, nodes
        FROM routing_decisions ORDER BY decided_at, order_id;
    CREATE TRIGGER routing_history_insert AFTER INSERT ON routing_decisions BEGIN
        INSERT INTO routing_history (order_id, routed_for, decided_at, status, location_id,
                                     nodes)
        VALUES (NEW.order_id, NEW.routed_for, NEW.decided_at, NEW.status, NEW.location_id,
                NEW.nodes);
    END;
    CREATE TABLE reservation_history (
        order_id TEXT NOT NULL,
        line_no INTEGER NOT NULL,
        reserved_at INTEGER NOT NULL,
        sku TEXT NOT NULL,
        location_id TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        released_at INTEGER,
        PRIMARY KEY (order_id, line_no, reserved_at)
    ) WITHOUT ROWID;
    CREATE INDEX reservation_history_at ON reservation_history (reserved_at);
    INSERT INTO reservation_history (order_id, line_no, reserved_at, sku, location_id,
                                     quantity, released_at)
        SELECT order_id, line_no, reserved_at, sku, location_id, quantity, released_at
        FROM routing_reservations;
    CREATE TRIGGER reservation_history_insert AFTER INSERT ON routing_reservations BEGIN
        INSERT OR REPLACE INTO reservation_history (order_id, line_no, reserved_at, sku,
                                                    location_id, quantity, released_at)
        VALUES (NEW.order_id, NEW.line_no, NEW.reserved_at, NEW.sku, NEW.location_id,
                NEW.quantity, NEW.released_at);
    END;
    CREATE TRIGGER reservation_history_release AFTER UPDATE OF released_at
        ON routing_reservations BEGIN
        UPDATE reservation_history SET released_at = NEW.released_at
        WHERE order_id = NEW.order_id AND line_no = NEW.line_no
          AND reserved_at = NEW.reserved_at;
    END;
    """,
    # 14: what each alert group was last told (see store/outbox_schema.py), so a restarted
    # notifier does not notify a firing group again.
    GROUPS_DDL,
    # 15: what keeps two reads of the refresh off the size of the store (issue 15): the
    # number of stocked pairs, kept by triggers on every insert and delete (an upsert that
    # updates fires neither; ``INSERT OR REPLACE`` would miss its delete, and nothing writes
    # stock that way), seeded from the table; the delivered orders that carry a promised
    # delivery date, by delivery time (delivered late against the promise reads only those);
    # and the carrier rows' and the returns' columns in the indexes they are read by (the
    # shipments in transit, the deliveries against the carrier's estimate, the returns by
    # receipt time with their refund, SKU, quantity and reason), so none of those reads
    # looks up a row of the table (``delivered_ts``, always NULL in the shipments in
    # transit, is in theirs because the query names it).
    """
    CREATE TABLE row_counts (
        name TEXT PRIMARY KEY,
        n INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO row_counts (name, n) SELECT 'stock', COUNT(*) FROM stock;
    CREATE TRIGGER stock_count_insert AFTER INSERT ON stock BEGIN
        UPDATE row_counts SET n = n + 1 WHERE name = 'stock';
    END;
    CREATE TRIGGER stock_count_delete AFTER DELETE ON stock BEGIN
        UPDATE row_counts SET n = n - 1 WHERE name = 'stock';
    END;
    CREATE INDEX orders_delivery_promised ON orders (delivered_ts)
        WHERE delivery_promised_ts IS NOT NULL;
    DROP INDEX orders_in_transit;
    CREATE INDEX orders_in_transit
        ON orders (shipped_ts, carrier, estimated_delivery_ts, delivered_ts)
        WHERE carrier IS NOT NULL AND delivered_ts IS NULL;
    CREATE INDEX orders_delivered_carrier ON orders (delivered_ts, carrier, estimated_delivery_ts)
        WHERE carrier IS NOT NULL AND estimated_delivery_ts IS NOT NULL;
    DROP INDEX returns_received;
    CREATE INDEX returns_received ON returns (received_ts, refund_cents, sku, quantity, reason);
    """,
    # 16: when a fulfillment feed first reported the node of an order placed without one
    # (``report --at`` before that moment shows the order at no node, as the router's
    # later decisions already do).  Kept by store/apply.py; NULL when the router gave the
    # node or no feed reported one (read only for orders placed without a node).  Existing
    # stores are filled from the event log: the earliest step that named the node the order
    # keeps, unless a routed decision was stamped before it (the router's node came first).
    """
    ALTER TABLE orders ADD COLUMN fulfil_location_ts INTEGER;
    UPDATE orders SET fulfil_location_ts = f.ts
      FROM (SELECT json_extract(body, '$.order_id') AS order_id,
                   json_extract(body, '$.location_id') AS node, MIN(ts) AS ts
            FROM event_log WHERE type = 'fulfillment.updated'
            GROUP BY 1, 2) AS f
     WHERE f.order_id = orders.order_id AND f.node = orders.fulfil_location_id
       AND NOT EXISTS (SELECT 1 FROM routing_history h
                       WHERE h.order_id = orders.order_id AND h.status = 'routed'
                         AND h.routed_for <= f.ts);
    CREATE INDEX orders_fulfil_location_ts ON orders (fulfil_location_ts)
        WHERE fulfil_location_ts IS NOT NULL;
    """,
    # 17: every edit of a held payload (``omniops quarantine edit``, store/held.py): who,
    # when, what changed, and the payload before and after.
    HELD_EDITS_DDL,
    # 18: order edits after placement (``order.edited``, store/apply.py): every edit by its
    # time (the later arrival of two stamped alike wins), its lines as JSON ``[sku,
    # quantity, unit price cents, discount cents, own node or null]`` and its totals; and
    # the placement's lines of an edited order, kept when its first edit changes them (as
    # ``order_lines`` held them: ``[sku, quantity, unit price, discount, sales location,
    # sales category]``), so an order reads as placed before its edits (store/asof.py).
    """
    CREATE TABLE order_edits (
        order_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        lines TEXT NOT NULL,
        gross_cents INTEGER NOT NULL,
        discount_cents INTEGER NOT NULL,
        units INTEGER NOT NULL,
        PRIMARY KEY (order_id, ts)
    ) WITHOUT ROWID;
    CREATE INDEX order_edits_ts ON order_edits (ts);
    CREATE TABLE order_placed_lines (
        order_id TEXT PRIMARY KEY,
        lines TEXT NOT NULL,
        gross_cents INTEGER NOT NULL,
        discount_cents INTEGER NOT NULL,
        units INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 19: every tracking number a fulfillment step gave an order (``orders.tracking`` keeps
    # the latest only), so a carrier's tracker of any parcel of a split shipment finds its
    # order; filled from the event log for the steps stored before.
    """
    CREATE TABLE order_tracking (
        tracking TEXT NOT NULL,
        order_id TEXT NOT NULL,
        PRIMARY KEY (tracking, order_id)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO order_tracking (tracking, order_id)
        SELECT tracking, order_id FROM orders WHERE tracking IS NOT NULL;
    INSERT OR IGNORE INTO order_tracking (tracking, order_id)
        SELECT json_extract(body, '$.tracking'), json_extract(body, '$.order_id')
        FROM event_log
        WHERE type = 'fulfillment.updated' AND json_extract(body, '$.tracking') IS NOT NULL;
    """,
    # 20: every report of an order's carrier or the carrier's delivery estimate, by the
    # report's time (of two stamped alike the later arrival wins, field by field), so the
    # carrier rows as of a past moment read the carrier and estimate in force then
    # (``orders`` keeps only the latest); filled from the event log.
    """
    CREATE TABLE carrier_reports (
        order_id TEXT NOT NULL,
        ts INTEGER NOT NULL,
        carrier TEXT,
        estimate_ts INTEGER,
        PRIMARY KEY (order_id, ts)
    ) WITHOUT ROWID;
    CREATE INDEX carrier_reports_ts ON carrier_reports (ts);
    INSERT INTO carrier_reports (order_id, ts, carrier, estimate_ts)
        SELECT json_extract(body, '$.order_id'), ts, json_extract(body, '$.carrier'),
               CAST(strftime('%s', json_extract(body, '$.estimated_delivery')) AS INTEGER)
        FROM event_log
        WHERE type = 'fulfillment.updated'
          AND (json_extract(body, '$.carrier') IS NOT NULL
               OR json_extract(body, '$.estimated_delivery') IS NOT NULL)
        ORDER BY seq
        ON CONFLICT (order_id, ts) DO UPDATE SET
            carrier = COALESCE(excluded.carrier, carrier),
            estimate_ts = COALESCE(excluded.estimate_ts, estimate_ts);
    """,
    # 21: the microseconds of a stock count's time (events keep whole seconds elsewhere), so
    # of two counts of a pair stamped within one second the later one stands, whichever
    # arrived last; counts stored before this are at microsecond 0 of their second.
    """
    ALTER TABLE stock ADD COLUMN as_of_us INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE stock_counts ADD COLUMN us INTEGER NOT NULL DEFAULT 0;
    """,
    # 22: the earliest finishing report (shipped, ready for pickup, picked up, delivered)
    # of each order per reporting node, or per tracking number for a report naming no node
    # ('' for neither), and the node each parcel was first reported at, so an order whose
    # lines are at several nodes is fulfilled once every one of them has reported (a split
    # order was fulfilled with its first parcel); filled from the event log, and the split
    # orders' fulfilled and done times recomputed from it (store/fulfilled.py).
    f"""
    CREATE TABLE node_fulfilled (
        order_id TEXT NOT NULL,
        location_id TEXT NOT NULL,
        tracking TEXT NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (order_id, location_id, tracking)
    ) WITHOUT ROWID;
    ALTER TABLE order_tracking ADD COLUMN location_id TEXT;
    INSERT INTO order_tracking (tracking, order_id, location_id)
        SELECT json_extract(body, '$.tracking'), json_extract(body, '$.order_id'),
               json_extract(body, '$.location_id')
        FROM (SELECT body, MIN(seq) FROM event_log
              WHERE type = 'fulfillment.updated'
                AND json_extract(body, '$.tracking') IS NOT NULL
                AND json_extract(body, '$.location_id') IS NOT NULL
              GROUP BY json_extract(body, '$.tracking'), json_extract(body, '$.order_id'))
        WHERE true
        ON CONFLICT (tracking, order_id) DO UPDATE SET location_id = excluded.location_id;
    INSERT INTO node_fulfilled (order_id, location_id, tracking, ts)
        SELECT json_extract(body, '$.order_id'), COALESCE(json_extract(body, '$.location_id'), ''),
               CASE WHEN json_extract(body, '$.location_id') IS NULL
                    THEN COALESCE(json_extract(body, '$.tracking'), '') ELSE '' END,
               MIN(ts)
        FROM event_log
        WHERE type = 'fulfillment.updated'
          AND json_extract(body, '$.status') IN ({_FINISHING})
        GROUP BY 1, 2, 3;
    UPDATE orders SET fulfilled_ts = {FULFILLED_SQL}, done_ts = {DONE_SQL_EXPR}
        WHERE line_nodes IS NOT NULL;
    """,
)
"""Migration scripts; index + 1 is the schema version they bring the store to."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store at ``conn`` to :data:`SCHEMA_VERSION`; return the version found.

    Refuses a store written by a newer omniops instead of corrupting it.
    """
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise RuntimeError(
            f"store schema version {found} is newer than this omniops ({SCHEMA_VERSION}); "
            "upgrade omniops"
        )
    for version in range(found, SCHEMA_VERSION):
        script = MIGRATIONS[version]
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
    return found
