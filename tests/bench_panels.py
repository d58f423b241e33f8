"""Panel refresh benchmark at retailer scale (a fixed workload, not a test).

``python -m tests.bench_panels [--skus 50000 --locations 50 --days 90 --orders 2000000]``

Builds a store the size of a large retailer directly in SQL (deterministic: no random
numbers, only a multiplicative hash): every SKU × location stocked, ``--days`` of
history with about 2.5 lines per order (5 million order lines by default), 5 % of lines
returned, open purchase orders and channel listings; the rollups the writer maintains
are built the same way the writer would leave them.  Then it times full refreshes (every
panel and the headline from one read transaction) and reports the process's memory.
The store is kept in ``--out`` (default ``bench-out/panels.db``) and reused when its
parameters match, because building it takes minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sqlite3
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams, rebuild_risk_flags
from store.schema import MIGRATIONS, migrate

END = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)  # noon in New York on the last day


def build(path: Path, skus: int, locations: int, days: int, orders: int) -> None:
    """Create the store at ``path``."""
    if path.exists():
        path.unlink()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    migrate(db)
    start = int((END - timedelta(days=days)).timestamp())
    span = days * 86400 - 600
    t0 = time.perf_counter()
    db.execute("BEGIN")
    db.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
           INSERT INTO skus SELECT printf('SKU%06d', i), '', printf('cat%02d', i % 20),
               printf('type%02d', i % 50), 400 + i % 900, 1000 + i % 4000, 5 + i % 20,
               2 + i % 10, 0, 0.5, ? FROM n""",
        (skus, start),
    )
    db.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
           INSERT INTO locations SELECT printf('L%02d', i), '',
               CASE WHEN i < 3 THEN 'warehouse' ELSE 'store' END, printf('R%d', i % 6),
               40.0, -74.0, 'America/New_York', '09:00', '21:00', '15:00', 2, ? FROM n""",
        (locations, start),
    )
    db.execute(
        """INSERT INTO stock SELECT s.sku, l.location_id,
               CASE WHEN abs(s.rowid * 7919 + l.rowid * 104729) % 50 = 0
                    THEN abs(s.rowid * 31 + l.rowid) % 8
                    ELSE 30 + abs(s.rowid * 7919 + l.rowid * 104729) % 200 END,
               0, ?, 'bench', 0
           FROM skus s, locations l""",
        (start,),
    )
    db.execute(
        """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
           INSERT INTO orders (order_id, has_order, channel, method, destination_region,
               location_id, placed_ts, promised_ts, released_ts, picked_ts, packed_ts,
               shipped_ts, delivered_ts, estimated_delivery_ts, carrier, fulfilled_ts, done_ts)
           SELECT printf('o%d', i), 1,
               CASE i % 3 WHEN 0 THEN 'webshop' WHEN 1 THEN 'pos' ELSE 'marketplace' END,
               'ship', printf('R%d', i % 6), printf('L%02d', (i * 31) % ?),
               p, p + 28800, p + 300, p + 1500, p + 2100, p + 3600, p + 176400, p + 172800,
               CASE i % 3 WHEN 0 THEN 'UPS' WHEN 1 THEN 'FedEx' ELSE 'USPS' END,
               p + 3600, p + 3600
           FROM (SELECT i, ? + (i * ?) / ? AS p FROM n)""",
        (orders, locations, start, span, orders),
    )
    # Orders of the last six hours are still open (nothing after release).
    cutoff = int(END.timestamp()) - 6 * 3600
    db.execute(
        """UPDATE orders SET picked_ts = NULL, packed_ts = NULL, shipped_ts = NULL,
               delivered_ts = NULL, fulfilled_ts = NULL, done_ts = NULL, carrier = NULL
           WHERE placed_ts > ?""",
        (cutoff,),
    )
    db.execute(
        """INSERT INTO order_lines
           SELECT o.order_id, k.k,
               printf('SKU%06d', (abs(o.rowid * 2654435761 + k.k * 40503) % ?) *
                                 (abs(o.rowid * 97 + k.k * 13) % ?) / ?),
               1 + (o.rowid + k.k) % 2, 1999, 0, o.location_id, NULL
           FROM orders o JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) k
             ON k.k < 2 + (o.rowid % 2)""",
        (skus, skus, skus),
    )
    db.execute(
        """UPDATE orders SET units = (SELECT SUM(quantity) FROM order_lines l
                                      WHERE l.order_id = orders.order_id),
               gross_cents = (SELECT SUM(quantity * unit_price_cents) FROM order_lines l
                              WHERE l.order_id = orders.order_id)"""
    )
    db.execute(
        """INSERT INTO sales_hourly
           SELECT l.sku, o.location_id, o.channel, o.placed_ts / 3600, SUM(l.quantity),
                  SUM(l.quantity * l.unit_price_cents - l.discount_cents)
           FROM order_lines l JOIN orders o USING (order_id)
           GROUP BY l.sku, o.location_id, o.channel, o.placed_ts / 3600"""
    )
    db.execute(
        """INSERT INTO sku_hourly
           SELECT sku, hour, SUM(units) FROM sales_hourly GROUP BY sku, hour"""
    )
    db.execute(
        """INSERT INTO category_hourly
           SELECT k.category, h.channel, h.hour, SUM(h.units)
           FROM sales_hourly h JOIN skus k USING (sku) GROUP BY 1, 2, 3"""
    )
    db.execute(
        """INSERT INTO returns
           SELECT 'r' || o.order_id || '-' || l.line_no, o.order_id, l.sku, o.location_id,
               o.channel, l.quantity,
               CASE o.rowid % 4 WHEN 0 THEN 'defective' WHEN 1 THEN 'too small'
                    WHEN 2 THEN 'changed mind' ELSE 'not as described' END,
               l.quantity * l.unit_price_cents, o.placed_ts + 5 * 86400,
               (SELECT category FROM skus WHERE sku = l.sku)
           FROM order_lines l JOIN orders o USING (order_id)
           WHERE (o.rowid * 7 + l.line_no) % 20 = 0 AND o.placed_ts + 5 * 86400 <= ?""",
        (int(END.timestamp()),),
    )
    db.execute(
        """INSERT INTO category_returns_hourly
           SELECT k.category, r.channel, r.received_ts / 3600, SUM(r.quantity)
           FROM returns r JOIN skus k USING (sku) GROUP BY 1, 2, 3"""
    )
    db.execute(
        """INSERT INTO inbound SELECT 'PO-' || sku || location_id, sku, location_id, 50,
               ? + (CAST(substr(sku, 4) AS INTEGER) % 14) * 86400, 'open', ? FROM stock
           WHERE (CAST(substr(sku, 4) AS INTEGER) + CAST(substr(location_id, 2) AS INTEGER))
                 % 250 = 0""",
        (int(END.timestamp()), start),
    )
    db.execute(
        """INSERT INTO listings SELECT 'marketplace', sku, location_id,
               CASE WHEN CAST(substr(sku, 4) AS INTEGER) % 100 = 0 THEN on_hand + 5
                    ELSE MAX(on_hand - 2, 0) END, ?
           FROM stock WHERE location_id IN ('L00', 'L01', 'L02')
             AND CAST(substr(sku, 4) AS INTEGER) % 5 = 0""",
        (start,),
    )
    db.execute(
        """INSERT INTO feed_state (feed, last_event_ts, events) VALUES
           ('webshop', ?, 1), ('pos', ?, 1), ('marketplace', ?, 1)""",
        (cutoff, cutoff, cutoff),
    )
    db.execute("COMMIT")
    print(f"built in {time.perf_counter() - t0:.0f} s; building risk flags ...")
    t1 = time.perf_counter()
    rebuild_risk_flags(db, int(END.timestamp()), MetricParams())
    print(f"risk flags in {time.perf_counter() - t1:.0f} s")
    db.execute("ANALYZE")
    db.close()


def main() -> None:
    """Build (or reuse) the large store and time full refreshes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--out", type=Path, default=Path("bench-out/panels.db"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    shape = {k: getattr(args, k) for k in ("skus", "locations", "days", "orders")}
    schema = hashlib.sha256("".join(MIGRATIONS).encode()).hexdigest()[:12]
    meta = args.out.with_suffix(".json")
    wanted = {**shape, "schema": schema}
    if not (args.out.exists() and meta.exists() and json.loads(meta.read_text()) == wanted):
        args.out.parent.mkdir(parents=True, exist_ok=True)
        build(args.out, **shape)
        meta.write_text(json.dumps(wanted))
    db = open_reader(args.out)
    counts = {
        table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("stock", "orders", "order_lines", "returns", "sales_hourly")
    }
    print("store:", counts, f"{args.out.stat().st_size / 2**20:.0f} MiB")
    params = MetricParams()
    times = []
    for _ in range(args.runs):
        started = time.perf_counter()
        snaps = compute_snapshots(db, END, params)
        times.append((time.perf_counter() - started) * 1000)
    print(
        f"full refresh: median {statistics.median(times):.0f} ms, "
        f"min {min(times):.0f} ms, max {max(times):.0f} ms over {args.runs} runs"
    )
    print(
        f"rows: fulfilment {len(snaps.fulfillment.rows)}, stock at risk "
        f"{snaps.stockout.total_at_risk} out {snaps.stockout.total_out} "
        f"oversell {snaps.stockout.total_oversell}, return rows {len(snaps.returns.rows)}"
    )
    for name, fn in _parts():
        started = time.perf_counter()
        db.execute("BEGIN")
        fn(db, int(END.timestamp()), params)
        db.execute("COMMIT")
        print(f"  {name}: {(time.perf_counter() - started) * 1000:.0f} ms")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (includes building the store if it did): {rss:.0f} MiB")
    print(f"console under Pilot, 3 refreshes at 200x60: {console_rss(args.out):.0f} MiB peak RSS")


def console_rss(db: Path) -> float:
    """Peak RSS of a fresh process running the real console app on ``db`` (headless)."""
    import subprocess
    import sys

    code = f"""
import asyncio, resource
from datetime import UTC, datetime
from zoneinfo import ZoneInfo
from console.cli import build_console
from store.clock import FixedClock
from store.risk import MetricParams
async def main():
    app, close = build_console(
        {str(db)!r}, FixedClock(datetime(2026, 11, 18, 17, tzinfo=UTC)), MetricParams(), 60.0,
        tz=ZoneInfo('UTC'), rules_path={str(db.parent / "rules.toml")!r})
    async with app.run_test(size=(200, 60)) as pilot:
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
            await pilot.press('r')
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.snapshots is not None
    close()
asyncio.run(main())
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (it would report the parent's)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(int(hwm) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _parts():  # type: ignore[no-untyped-def]
    from store import metrics

    return [
        ("headline", metrics.compute_headline),
        ("fulfilment", metrics.compute_fulfillment),
        ("stockout", metrics.compute_stockout),
        ("returns", metrics.compute_returns),
    ]


if __name__ == "__main__":
    main()
