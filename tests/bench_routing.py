"""Routing benchmark (a fixed workload, not a test): ``python -m tests.bench_routing``.

1. **Whole day, pure**: the fixture trading day's web and marketplace orders routed one
   after another by :func:`rules.routing.router.route_sequence` (the what-if's path), with the
   built-in rules; and a what-if (both sides) of a draft that disables WH-NJ.
2. **Whole day, through the store**: the same orders written into a store *without* a
   node, then :func:`feeds.runtime.routing.route_pending_orders` routes, stores and reserves all of
   them (the ingest path), and a batch of 100 at a time (as the writer would call it).
3. **POST /route latency on loopback**: the endpoint served by a separate process
   (``aiohttp`` AppRunner on 127.0.0.1, a port chosen by the OS) over the store from 2,
   hit by ``--clients`` concurrent clients sharing one ``ClientSession``, each sending
   orders and BOPIS cart checks drawn from the fixture day; p50 / p99 / max latency and
   throughput per concurrency level.

Needs ``fixtures/day`` (``python fixtures/generate.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from feeds.jsonl import read_items
from feeds.runtime.ingest import ingest_paths
from feeds.runtime.route_api import add_routes
from feeds.runtime.routing import StoreRoutingSource, route_pending_orders
from rules.routing.config import FulfillmentRouting
from rules.routing.router import route_sequence
from rules.whatif import what_if
from store.clock import FixedClock
from store.model import OrderPlaced, parse_event
from store.writer import StoreWriter
from tests.routing_world import FIXTURE_DAY, fixture_day_inputs

DRAFT = FulfillmentRouting.model_validate({"nodes": {"WH-NJ": {"enabled": False}}})
AT = datetime(2026, 11, 18, 17, 0, tzinfo=UTC)  # 12:00 in New York on the fixture day


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


def bench_pure() -> None:
    inputs = fixture_day_inputs()
    n = len(inputs.orders)
    started = time.perf_counter()
    decisions = route_sequence(inputs.orders, inputs.inventory, inputs.nodes, FulfillmentRouting())
    routed = time.perf_counter() - started
    started = time.perf_counter()
    report = what_if(inputs, FulfillmentRouting(), DRAFT)
    whatif = time.perf_counter() - started
    status = {
        s: sum(1 for d in decisions if d.status == s) for s in ("routed", "held", "unfulfillable")
    }
    print(
        f"pure: {n:,} orders of the fixture day routed in {routed * 1000:,.0f} ms "
        f"({routed / n * 1e6:,.0f} µs/order); {status}"
    )
    print(
        f"what-if (both sides, WH-NJ disabled): {whatif * 1000:,.0f} ms; "
        f"{len(report.changed):,} orders change node, mean distance "
        f"{report.current.mean_distance_km:,.0f} → {report.draft.mean_distance_km:,.0f} km"
    )


async def build_store(db: Path) -> int:
    """Catalogue and stock of the fixture day, plus its orders without a node; return orders."""
    started = time.perf_counter()
    await ingest_paths([FIXTURE_DAY / "catalog.jsonl.gz", FIXTURE_DAY / "inventory.jsonl.gz"], db)
    manifest_start = datetime(2026, 11, 18, 5, tzinfo=UTC)
    orders = []
    for feed in ("webshop", "marketplace"):
        for item in read_items(FIXTURE_DAY / f"{feed}.jsonl.gz"):
            if isinstance(item, OrderPlaced) and item.ts >= manifest_start:
                body = item.body.model_dump(mode="json")
                if body["method"] != "bopis":
                    body["location_id"] = None  # arrives without a node: the router decides
                raw = item.model_dump(mode="json")
                raw["body"] = body
                orders.append(parse_event(raw))
    async with StoreWriter(db) as writer:  # the benchmark routes them itself
        await writer.write(orders)
    print(
        f"store: fixture catalogue, stock and {len(orders):,} orders written in "
        f"{time.perf_counter() - started:,.1f} s"
    )
    return len(orders)


def bench_store(db: Path, orders: int) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        pending = [
            r[0]
            for r in conn.execute(
                "SELECT order_id FROM orders WHERE location_id IS NULL ORDER BY placed_ts"
            )
        ]
        started = time.perf_counter()
        for start in range(0, len(pending), 100):
            route_pending_orders(
                conn, FulfillmentRouting(), decided_at=AT, order_ids=pending[start : start + 100]
            )
        elapsed = time.perf_counter() - started
        stored = conn.execute("SELECT COUNT(*) FROM routing_decisions").fetchone()[0]
        print(
            f"store path: {stored:,} of {orders:,} orders (those without a node) routed, "
            f"stored and reserved in batches of 100 in {elapsed * 1000:,.0f} ms "
            f"({elapsed / max(1, stored) * 1e6:,.0f} µs/order)"
        )
        conn.execute("DELETE FROM routing_decisions")
        conn.execute("DELETE FROM routing_reservations")
        started = time.perf_counter()
        route_pending_orders(conn, FulfillmentRouting(), decided_at=AT)
        elapsed = time.perf_counter() - started
        print(f"store path, one pass: {elapsed * 1000:,.0f} ms")
    finally:
        conn.close()


def serve(db: str, port_out: Any) -> None:
    """The endpoint in its own process (a serve process would mount it the same way)."""

    async def main() -> None:
        app = web.Application()
        add_routes(
            app, source=StoreRoutingSource(Path(db)), rules=FulfillmentRouting, clock=FixedClock(AT)
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port_out.put(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


def bodies(n: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    inputs = fixture_day_inputs()
    stores = [node.location_id for node in inputs.nodes if node.kind == "store"]
    out: list[dict[str, Any]] = []
    for _ in range(n):
        order, _ = rng.choice(inputs.orders)
        lines = [{"sku": line.sku, "quantity": line.quantity} for line in order.lines]
        if rng.random() < 0.25:
            out.append({"location_id": rng.choice(stores), "cart": lines})
        else:
            out.append(
                {
                    "order_id": order.order_id,
                    "method": order.method,
                    "destination_region": order.destination_region,
                    "location_id": order.location_id,
                    "lines": lines,
                }
            )
    return out


async def hit(base: str, payloads: list[dict[str, Any]], clients: int) -> list[float]:
    latencies: list[float] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in payloads:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def client() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with session.post(f"{base}/route", json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{resp.status}: {await resp.text()}")
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def bench_http(db: Path, levels: list[int], requests: int) -> None:
    ctx = multiprocessing.get_context("spawn")
    port_q: Any = ctx.Queue()
    proc = ctx.Process(target=serve, args=(str(db), port_q), daemon=True)
    proc.start()
    try:
        port = port_q.get(timeout=30)
        base = f"http://127.0.0.1:{port}"
        payloads = bodies(requests)
        asyncio.run(hit(base, payloads[:200], 4))  # warm up
        for clients in levels:
            started = time.perf_counter()
            lat = asyncio.run(hit(base, payloads, clients))
            wall = time.perf_counter() - started
            ms = [x * 1000 for x in lat]
            print(
                f"POST /route, {clients:>3} concurrent clients, {len(ms):,} requests: "
                f"p50 {statistics.median(ms):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms, "
                f"max {max(ms):.1f} ms, {len(ms) / wall:,.0f} req/s"
            )
    finally:
        proc.terminate()
        proc.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--db", type=Path, default=None, help="keep the store here")
    args = parser.parse_args()
    if not (FIXTURE_DAY / "manifest.json").exists():
        raise SystemExit("no fixtures/day: run python fixtures/generate.py first")
    bench_pure()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        orders = asyncio.run(build_store(db))
        bench_store(db, orders)  # leaves the day's decisions in the store, as a live one has
        bench_http(db, args.clients, args.requests)


if __name__ == "__main__":
    main()
