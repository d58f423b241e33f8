"""Ingest benchmark (a fixed workload, not a test): ``python -m tests.bench_ingest``.

1. the committed fixture day (``fixtures/day``) through ``omniops ingest``'s path, timed
   against two anchors in the same run on the same lines:

   * raw ``sqlite3``: each event stored as one row (id, type, ts, source, body) of an
     indexed table, ``executemany`` per 1,000 in transactions, the store's pragmas;
   * validation alone: every line parsed and validated by the canonical model.

   Prints CPU seconds (every thread of the process) and wall seconds of each, and the
   ratios ``anchor / omniops`` (1.0 = as fast as the anchor);
2. a larger generated load (``--orders`` orders with their stock adjustments and
   fulfillment steps, written as canonical JSON Lines) through the same path;
3. that load's events, already validated, through the writer alone.

Prints events per second for each and the time of one full panel refresh on the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feeds.jsonl import feed_files, read_items, read_lines
from feeds.runtime.ingest import ingest_paths
from store.metrics import compute_snapshots, open_reader
from store.model import parse_event
from store.risk import MetricParams
from store.writer import StoreWriter, configure_connection

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2026, 11, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def generate(path: Path, orders: int, seed: int = 1) -> int:
    """Write a synthetic load; return the number of events."""
    rng = random.Random(seed)
    n = 0
    with path.open("w", encoding="utf-8") as out:

        def emit(type_: str, ts: datetime, source: str, body: dict[str, object]) -> None:
            nonlocal n
            n += 1
            out.write(
                json.dumps(
                    {"id": f"b-{n}", "type": type_, "ts": iso(ts), "source": source, "body": body}
                )
                + "\n"
            )

        for i in range(orders):
            ts = START + timedelta(seconds=i * 30)
            loc = f"S{rng.randrange(50)}"
            lines = [
                {
                    "sku": f"SKU{rng.randrange(5000)}",
                    "quantity": rng.randint(1, 3),
                    "unit_price": "19.99",
                    "discount": "0",
                }
                for _ in range(rng.randint(1, 3))
            ]
            emit(
                "order.placed",
                ts,
                "webshop",
                {
                    "order_id": f"o{i}",
                    "channel": "webshop",
                    "method": "ship",
                    "destination_region": "NE",
                    "location_id": loc,
                    "promised_by": iso(ts + timedelta(hours=8)),
                    "lines": lines,
                },
            )
            for line in lines:
                emit(
                    "stock.adjusted",
                    ts,
                    "inventory",
                    {
                        "sku": line["sku"],
                        "location_id": loc,
                        "delta": -int(line["quantity"]),  # type: ignore[call-overload]
                        "reason": "sale",
                    },
                )
            for k, status in enumerate(("released", "picked", "packed", "shipped")):
                emit(
                    "fulfillment.updated",
                    ts + timedelta(minutes=10 * (k + 1)),
                    "wms",
                    {"order_id": f"o{i}", "status": status, "carrier": "UPS"},
                )
    return n


def refresh_ms(db: Path, now: datetime) -> float:
    conn = open_reader(db)
    try:
        started = time.perf_counter()
        compute_snapshots(conn, now, MetricParams())
        return (time.perf_counter() - started) * 1000
    finally:
        conn.close()


def timed(fn: Callable[[], int]) -> tuple[int, float, float]:
    """``(count, CPU seconds, wall seconds)`` of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    count = fn()
    return count, time.process_time() - cpu, time.perf_counter() - wall


def raw_sqlite(folder: Path, path: Path) -> int:
    """Anchor: every line of ``folder`` as one indexed row, plain sqlite3; returns rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    configure_connection(conn)
    conn.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL, ts TEXT NOT NULL, source TEXT NOT NULL, body TEXT NOT NULL)"
    )
    insert = "INSERT INTO events (event_id, type, ts, source, body) VALUES (?, ?, ?, ?, ?)"
    n = 0
    rows: list[tuple[str, str, str, str, str]] = []
    for path_ in feed_files(folder):
        for _, text in read_lines(path_):
            d = json.loads(text)
            rows.append((d["id"], d["type"], d["ts"], d["source"], json.dumps(d["body"])))
            if len(rows) == 1000:
                n += _commit_rows(conn, insert, rows)
                rows = []
    n += _commit_rows(conn, insert, rows)
    conn.close()
    return n


def _commit_rows(conn: sqlite3.Connection, sql: str, rows: list[tuple[str, ...]]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows)
    conn.execute("COMMIT")
    return len(rows)


def validate_only(folder: Path) -> int:
    """Anchor: every line of ``folder`` parsed and validated by the canonical model."""
    n = 0
    for path in feed_files(folder):
        for _, text in read_lines(path):
            parse_event(text)
            n += 1
    return n


def compare_fixture_day(fixtures: Path, tmpdir: Path) -> None:
    """Section 1: the fixture day through ingest, and the two anchors, in this run."""
    raw_n, raw_cpu, raw_wall = timed(lambda: raw_sqlite(fixtures, tmpdir / "raw.db"))
    val_n, val_cpu, val_wall = timed(lambda: validate_only(fixtures))
    counts: dict[str, int] = {}

    def ingest() -> int:
        counts.update(asyncio.run(ingest_paths([fixtures], tmpdir / "fixtures.db")))
        return sum(counts.values())

    n, cpu, wall = timed(ingest)
    print(f"fixture day ({n:,} events, {counts}):")
    for label, count, c, w in (
        ("omniops ingest", n, cpu, wall),
        ("raw sqlite3, one indexed row an event", raw_n, raw_cpu, raw_wall),
        ("parse + validate alone", val_n, val_cpu, val_wall),
    ):
        print(f"  {label:40} {c:6.1f} CPU-s {w:6.1f} s wall = {count / w:9,.0f} events/s")
    print(
        f"  ratio to raw sqlite3: {raw_cpu / cpu:.2f} (CPU), {raw_wall / wall:.2f} (wall);"
        f" to validation alone: {val_cpu / cpu:.2f} (CPU), {val_wall / wall:.2f} (wall)"
    )
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=40_000, help="generated load (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        fixtures = ROOT / "fixtures" / "day"
        if fixtures.exists():
            await asyncio.to_thread(compare_fixture_day, fixtures, tmpdir)
        if not args.orders:
            return
        load = tmpdir / "load.jsonl"
        events = generate(load, args.orders)
        db = tmpdir / "load.db"
        started = time.perf_counter()
        await ingest_paths([load], db)
        took = time.perf_counter() - started
        print(
            f"generated (parse+validate+write): {events} events in {took:.2f} s = "
            f"{events / took:,.0f} events/s"
        )
        parsed = list(read_items(load))
        db2 = tmpdir / "writer.db"
        started = time.perf_counter()
        async with StoreWriter(db2) as writer:
            await writer.write(parsed)
        took = time.perf_counter() - started
        print(
            f"generated (writer only): {events} events in {took:.2f} s = "
            f"{events / took:,.0f} events/s"
        )
        end = START + timedelta(seconds=args.orders * 30)
        print(f"full refresh on the generated store: {refresh_ms(db, end):.0f} ms")
        print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
