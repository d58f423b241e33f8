"""Panel refresh benchmark at retailer scale (a fixed workload, not a test).

``python -m tests.bench_panels [--skus 50000 --locations 50 --days 90 --orders 2000000
--young-days 7 --scale 1.0]``

Builds two stores of the same retailer directly in SQL (deterministic: no random numbers,
only multiplicative hashes), one ``--young-days`` old and one ``--days`` old, with the same
catalogue, the same orders per day and the same flagged pairs, so the only difference is
the length of their history.  Each has every SKU × location stocked (2 % of pairs out of
stock), about 2.5 lines per order with 30 % of the lines on the top 1 % of SKUs,
15 % of lines returned two to seven days after the sale (enough for the head SKUs to
reach the spike test's minimum count every day), a few head SKUs with a defect spike in
the last day, open purchase orders, channel listings (some overselling) and an event log
with one event per order and per return plus the inventory feed's snapshots (which stop
40 minutes before the end, so one feed is really stale).  The rollups are built the way
the writer leaves them, the risk flags by the writer's own rebuild, then ANALYZE.

Then it times full refreshes of each (every panel and the headline from one read
transaction), each panel on its own, and prints the young-to-old ratio: the refresh of a
store in its first week must not be slower than that of a mature one.  Wall time is what
the goal is about; CPU time is printed too because the machine is shared.  ``--scale``
multiplies SKUs and orders (locations stay) for machines where the full build is too slow.
Each store's ``snapshot digest`` hashes every figure of its last refresh (all but the
refresh's own timing): a change meant only to be faster must leave both digests as they were.
The stores are kept in ``--out`` and reused when their parameters match.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import resource
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams, rebuild_risk_flags
from store.schema import MIGRATIONS, migrate

END = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)  # noon in New York on the last day
PARAMS = MetricParams(
    stale_overrides={"returns": 120},
    expected_feeds=("webshop", "pos", "marketplace", "returns", "inventory", "carrier"),
)
"""The console's knobs, with the feeds a retailer expects (``carrier`` never delivers)."""


def build(path: Path, skus: int, locations: int, days: int, orders: int) -> None:
    """Create the store at ``path``: ``orders`` orders spread over ``days`` days to END."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    migrate(db)
    end = int(END.timestamp())
    start = int((END - timedelta(days=days)).timestamp())
    span = days * 86400 - 60
    head = max(1, skus // 100)
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
        """INSERT INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system, risk)
           SELECT s.sku, l.location_id,
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
    # Orders of the last six hours are still open (nothing after release); shipments of
    # the last two days are in transit.
    cutoff = end - 6 * 3600
    db.execute(
        """UPDATE orders SET picked_ts = NULL, packed_ts = NULL, shipped_ts = NULL,
               delivered_ts = NULL, fulfilled_ts = NULL, done_ts = NULL, carrier = NULL
           WHERE placed_ts > ?""",
        (cutoff,),
    )
    db.execute("UPDATE orders SET delivered_ts = NULL WHERE delivered_ts > ?", (end,))
    # 30 % of the lines go to the top 1 % of SKUs (the head a retailer lives on), the
    # rest to a long tail skewed towards low SKU numbers.
    db.execute(
        """INSERT INTO order_lines
           SELECT o.order_id, k.k,
               CASE WHEN ((o.rowid * 4 + k.k) * 2654435761 % 4294967296 >> 16) % 10 < 3
                    THEN printf('SKU%06d',
                                ((o.rowid * 4 + k.k) * 2246822519 % 4294967296 >> 8) % ?)
                    ELSE printf('SKU%06d', (abs(o.rowid * 2654435761 + k.k * 40503) % ?) *
                                           (abs(o.rowid * 97 + k.k * 13) % ?) / ?) END,
               1 + (o.rowid + k.k) % 2, 1999, 0, o.location_id, NULL
           FROM orders o JOIN (SELECT 0 AS k UNION ALL SELECT 1 UNION ALL SELECT 2) k
             ON k.k < 2 + (o.rowid % 2)""",
        (head, skus, skus, skus),
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
    # 15 % of lines come back 2 to 7 days later; of the head SKUs, one in 25 has a defect
    # and 60 % of its lines come back in the last day.
    db.execute(
        """INSERT INTO returns
           SELECT 'r' || order_id || '-' || line_no, order_id, sku, location_id, channel,
               quantity,
               CASE WHEN spike OR h % 4 = 0 THEN 'defective' WHEN h % 4 = 1 THEN 'too small'
                    WHEN h % 4 = 2 THEN 'changed mind' ELSE 'not as described' END,
               quantity * unit_price_cents, received,
               (SELECT category FROM skus WHERE sku = r.sku)
           FROM (SELECT o.order_id, l.line_no, l.sku, o.location_id, o.channel, l.quantity,
                        l.unit_price_cents,
                        ((o.rowid * 4 + l.line_no) * 3266489917 % 4294967296 >> 16) % 100 AS h,
                        o.placed_ts + (2 + (o.rowid + l.line_no) % 6) * 86400
                            + (o.rowid * 3607) % 3600 AS received,
                        CAST(substr(l.sku, 4) AS INTEGER) < ?
                            AND CAST(substr(l.sku, 4) AS INTEGER) % 25 = 3 AS spike
                 FROM order_lines l JOIN orders o USING (order_id)) r
           WHERE received <= ? AND (h < 15 OR (spike AND received > ? AND h < 60))""",
        (head, end, end - 86400),
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
        (end, start),
    )
    db.execute(
        """INSERT INTO listings SELECT 'marketplace', sku, location_id,
               CASE WHEN CAST(substr(sku, 4) AS INTEGER) % 100 = 0 THEN on_hand + 5
                    ELSE MAX(on_hand - 2, 0) END, ?
           FROM stock WHERE location_id IN ('L00', 'L01', 'L02')
             AND CAST(substr(sku, 4) AS INTEGER) % 5 = 0""",
        (start,),
    )
    # The event log: each order from its channel, each return, and the inventory feed's
    # snapshots every ten minutes until 40 minutes before the end.
    db.execute(
        """INSERT INTO event_log (event_id, type, ts, source, received_at, body)
           SELECT 'e-' || order_id, 'order.placed', placed_ts, channel, placed_ts + 1,
                  json_object('order_id', order_id) FROM orders ORDER BY placed_ts"""
    )
    db.execute(
        """INSERT INTO event_log (event_id, type, ts, source, received_at, body)
           SELECT 'e-' || return_id, 'return.received', received_ts, 'returns',
                  received_ts + 1, json_object('return_id', return_id)
           FROM returns ORDER BY received_ts"""
    )
    db.execute(
        """WITH RECURSIVE n(ts) AS (SELECT ? UNION ALL SELECT ts + 600 FROM n WHERE ts + 600 <= ?)
           INSERT INTO event_log (event_id, type, ts, source, received_at, body)
           SELECT 'inv-' || ts, 'stock.snapshot', ts, 'inventory', ts + 1, '{}' FROM n""",
        (start, end - 40 * 60),
    )
    db.execute(
        """INSERT INTO feed_state (feed, last_event_ts, last_received_at, events)
           SELECT source, MAX(ts), MAX(received_at), COUNT(*) FROM event_log GROUP BY source"""
    )
    db.execute("COMMIT")
    print(f"  built in {time.perf_counter() - t0:.0f} s; building risk flags ...", flush=True)
    t1 = time.perf_counter()
    rebuild_risk_flags(db, end, PARAMS)
    print(f"  risk flags in {time.perf_counter() - t1:.0f} s", flush=True)
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def ensure_store(out: Path, skus: int, locations: int, days: int, orders: int) -> Path:
    """The store for these parameters under ``out``, built unless a matching one is there."""
    path = out / f"panels-{skus}x{locations}-{days}d-{orders}.db"
    schema = hashlib.sha256("".join(MIGRATIONS).encode()).hexdigest()[:12]
    bench = hashlib.sha256(inspect.getsource(build).encode()).hexdigest()[:12]
    wanted = {"skus": skus, "locations": locations, "days": days, "orders": orders}
    wanted |= {"schema": schema, "bench": bench}
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists() and json.loads(meta.read_text()) == wanted):
        out.mkdir(parents=True, exist_ok=True)
        print(f"building {path.name} ...", flush=True)
        build(path, skus, locations, days, orders)
        meta.write_text(json.dumps(wanted))
    return path


Panel = Callable[[sqlite3.Connection, int, MetricParams], object]


def _panels() -> list[tuple[str, Panel]]:
    from store import metrics

    return [
        ("headline", metrics.compute_headline),
        ("fulfillment", metrics.compute_fulfillment),
        ("stockout", metrics.compute_stockout),
        ("returns", metrics.compute_returns),
        ("counts", lambda db, t, params: metrics.store_counts(db)),
    ]


def measure(path: Path, runs: int) -> dict[str, float]:
    """Median wall and CPU ms of full refreshes and of each panel on the store at ``path``."""
    db = open_reader(path)
    counts = {
        table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for table in ("stock", "orders", "order_lines", "returns", "sales_hourly", "event_log")
    }
    print(f"  store: {counts}, {path.stat().st_size / 2**20:.0f} MiB")
    compute_snapshots(db, END, PARAMS)  # warm the page cache: every run reads a warm store
    wall, cpu = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        snaps = compute_snapshots(db, END, PARAMS)
        wall.append((time.perf_counter() - w) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    figures = {"full": statistics.median(wall), "full_cpu": statistics.median(cpu)}
    print(
        f"  full refresh: median {figures['full']:.0f} ms wall ({figures['full_cpu']:.0f} ms "
        f"CPU), min {min(wall):.0f}, max {max(wall):.0f} over {runs} runs"
    )
    t = int(END.timestamp())
    for name, fn in _panels():
        times, cpu_times = [], []
        for _ in range(runs):
            started, cpu_started = time.perf_counter(), time.process_time()
            db.execute("BEGIN")
            fn(db, t, PARAMS)
            db.execute("COMMIT")
            times.append((time.perf_counter() - started) * 1000)
            cpu_times.append((time.process_time() - cpu_started) * 1000)
        figures[name] = statistics.median(times)
        figures[f"{name}_cpu"] = statistics.median(cpu_times)
        print(f"    {name}: {figures[name]:.0f} ms ({figures[f'{name}_cpu']:.0f} ms CPU)")
    stale = [f.feed for f in snaps.headline.feeds if f.stale]
    # Every figure of the snapshots but their own timing: equal digests, equal panels.
    digest = hashlib.sha256(repr(dataclasses.replace(snaps, computed_in_ms=0.0)).encode())
    print(f"  snapshot digest: {digest.hexdigest()[:16]}")
    print(
        f"  rows: fulfillment {len(snaps.fulfillment.rows)}; stock at risk "
        f"{snaps.stockout.total_at_risk}, out {snaps.stockout.total_out}, oversell "
        f"{snaps.stockout.total_oversell}; returns: {len(snaps.returns.rows)} SKUs at the "
        f"minimum count, {snaps.returns.spikes} spikes; feeds: {len(snaps.headline.feeds)}, "
        f"stale {stale}"
    )
    db.close()
    return figures


def main() -> None:
    """Build (or reuse) a young and an old store and time their refreshes side by side."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skus", type=int, default=50_000)
    parser.add_argument("--locations", type=int, default=50)
    parser.add_argument("--days", type=int, default=90, help="age of the old store")
    parser.add_argument("--orders", type=int, default=2_000_000, help="orders of the old store")
    parser.add_argument("--young-days", type=int, default=7, help="age of the young store")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies SKUs and orders")
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--no-console", action="store_true", help="skip the console's peak RSS (20 s or so)"
    )
    args = parser.parse_args()
    skus = max(1, round(args.skus * args.scale))
    orders = max(1, round(args.orders * args.scale))
    per_day = orders / args.days
    figures = {}
    for days in (args.young_days, args.days):
        n = round(per_day * days)
        print(f"{days}-day store: {skus} SKUs x {args.locations} locations, {n} orders")
        path = ensure_store(args.out, skus, args.locations, days, n)
        figures[days] = measure(path, args.runs)
    young, old = figures[args.young_days], figures[args.days]
    print(f"young ({args.young_days} d) / old ({args.days} d), scale {args.scale}:")
    panels = [name for name, _ in _panels()]
    for name in ("full", "full_cpu", *panels, *(f"{name}_cpu" for name in panels)):
        ratio = young[name] / old[name] if old[name] else float("nan")
        print(f"  {name}: {young[name]:.0f} ms / {old[name]:.0f} ms = {ratio:.2f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (includes building a store if it did): {rss:.0f} MiB")
    if not args.no_console:
        rss = console_rss(path)
        print(f"console under Pilot, 3 refreshes at 200x60: {rss:.0f} MiB peak RSS")


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


if __name__ == "__main__":
    main()
