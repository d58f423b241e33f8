"""Ingest benchmark (a fixed workload, not a test): ``python -m tests.bench_ingest``.

1. the committed fixture day (``fixtures/day``) through ``omniops ingest``'s path;
2. a larger generated load (``--orders`` orders with their stock adjustments and
   fulfilment steps, written as canonical JSON Lines) through the same path;
3. that load's events, already validated, through the writer alone.

Prints events per second for each and the time of one full panel refresh on the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from feeds.jsonl import read_items
from feeds.runtime.ingest import ingest_paths
from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams
from store.writer import StoreWriter

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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=40_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        fixtures = ROOT / "fixtures" / "day"
        if fixtures.exists():
            db = tmpdir / "fixtures.db"
            started = time.perf_counter()
            counts = await ingest_paths([fixtures], db)
            took = time.perf_counter() - started
            total = sum(counts.values())
            print(
                f"fixtures: {total} events in {took:.2f} s = {total / took:,.0f} events/s {counts}"
            )
        load = tmpdir / "load.jsonl"
        events = generate(load, args.orders)
        db = tmpdir / "load.db"
        started = time.perf_counter()
        counts = await ingest_paths([load], db)
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
