"""Webhook ingest benchmark (not a test): ``python -m tests.bench_webhooks``.

1. starts ``python -m feeds.runtime.serve`` on 127.0.0.1 (its own process, as in production)
   with a fresh store;
2. a local load generator (one aiohttp session, ``--concurrency`` connections) sends
   ``--requests`` signed Shopify ``inventory_levels/update`` webhooks (or single
   canonical events to ``POST /events`` with ``--mode events``, or ``--batch`` events a
   request as JSON Lines with ``--mode batch``), each answered only once its events are
   committed, and measures events per second and the latency to durable (request sent →
   2xx received) at p50 / p99;
3. stops the server, reads back the rows it stored in ``event_log`` and inserts the
   same rows with one plain ``sqlite3.executemany`` into an identical table of a fresh
   file with the same pragmas (WAL, synchronous=NORMAL), in one transaction;
4. prints both rates and their ratio;
5. sends the same requests to a bare aiohttp handler (its own process, any path: reads
   the body and answers 200) and prints events/s of both and the ratio (issue 17: batches
   of 100 against it; one webhook a request at >= 0.5 of it);
6. in ``--mode batch``, the same events written to a JSON Lines file and loaded with
   ``omniops ingest``'s path (:func:`feeds.runtime.ingest.ingest_paths`) into a fresh store,
   in this process: the ingest rate of the same events, and ``POST /events`` / ingest
   (issue 17's goal: >= 0.5).

Everything stays on this machine (loopback only) and the run is bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from feeds.runtime.ingest import ingest_paths
from feeds.settings import ServeConfig
from feeds.webhooks.signatures import sign_shopify
from store.writer import configure_connection

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
TOKEN = "bench-token"
MAPPING = """
[shopify.locations]
"655441491" = "WH-NJ"
[shopify.inventory_items]
"""


def shopify_request(n: int) -> tuple[str, bytes, dict[str, str]]:
    body = json.dumps(
        {
            "inventory_item_id": 800000000 + n % 500,
            "location_id": 655441491,
            "available": n % 97,
            "updated_at": f"2026-11-18T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}-05:00",
            "admin_graphql_api_id": f"gid://shopify/InventoryLevel/655441491?inventory_item_id={n}",
        }
    ).encode()
    headers = {
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Event-Id": f"bench-{n}",
        "X-Shopify-Hmac-Sha256": sign_shopify(SECRET, body),
        "Content-Type": "application/json",
    }
    return "/webhooks/shopify", body, headers


def events_request(n: int) -> tuple[str, bytes, dict[str, str]]:
    event = {
        "id": f"bench-{n}",
        "type": "stock.snapshot",
        "ts": f"2026-11-18T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
        "source": "wms",
        "body": {"sku": f"SKU{n % 500}", "location_id": "WH-NJ", "on_hand": n % 97},
    }
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return "/events", json.dumps(event).encode(), headers


BATCH = 100


def batch_request(n: int) -> tuple[str, bytes, dict[str, str]]:
    """Request ``n`` of ``--mode batch``: events ``n * BATCH`` to ``(n + 1) * BATCH - 1``."""
    lines = [events_request(n * BATCH + k)[1] for k in range(BATCH)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson"}
    return "/events", b"\n".join(lines), headers


def bare_server() -> None:
    """The anchor: an aiohttp app whose ``POST`` (any path) reads the body and answers 200."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"outcome": "applied"})

    async def run() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/{path:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        print(f"listening on http://127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


def start_bare() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.bench_webhooks", "--bare-server"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"listening on (\S+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("bare server did not start")
    return proc, match.group(1)


def start_server(
    db: Path, mapping: Path, batch_wait_ms: float, events_workers: int | None = None
) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIOPS_")}
    env.update(
        OMNIOPS_CONFIG=str(db.parent / "absent.toml"),
        OMNIOPS_SHOPIFY_WEBHOOK_SECRET=SECRET,
        OMNIOPS_EVENTS_TOKEN=TOKEN,
        OMNIOPS_BATCH_WAIT_MS=str(batch_wait_ms),
    )
    if events_workers is not None:
        env["OMNIOPS_EVENTS_WORKERS"] = str(events_workers)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "feeds.runtime.serve",
            "--db",
            str(db),
            "--port",
            "0",
            "--mapping",
            str(mapping),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    match = re.search(r"listening on (\S+)", proc.stdout.readline())
    if not match:
        proc.kill()
        raise SystemExit("serve did not start")
    return proc, match.group(1)


async def load(
    url: str, mode: str, first: int, count: int, concurrency: int
) -> tuple[float, list[float]]:
    make = {"shopify": shopify_request, "events": events_request, "batch": batch_request}[mode]
    requests = [make(n) for n in range(first, first + count)]
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[str, bytes, dict[str, str]]] = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        base_url=url, connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def worker() -> None:
            while not queue.empty():
                path, body, headers = queue.get_nowait()
                started = time.perf_counter()
                async with http.post(path, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"unexpected {resp.status}: {await resp.text()}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies


def raw_executemany(rows: list[tuple[object, ...]], path: Path) -> float:
    """Seconds to insert ``rows`` into an event_log-shaped table with one executemany."""
    conn = sqlite3.connect(path, isolation_level=None)
    configure_connection(conn)
    conn.execute(
        "CREATE TABLE event_log (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
        " type TEXT NOT NULL, ts INTEGER NOT NULL, source TEXT NOT NULL,"
        " received_at INTEGER NOT NULL, body TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX event_log_source_ts ON event_log (source, ts)")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO event_log (event_id, type, ts, source, received_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def ingest_same(requests: int, root: Path) -> float:
    """Seconds ``omniops ingest``'s path takes for the events of ``requests`` batch requests.

    The events are those the load sent (the same ids, times and bodies), one JSON Lines
    file, into a fresh store; the file is written before the clock starts.
    """
    lines = root / "same-events.jsonl"
    with lines.open("wb") as out:
        for n in range(requests):
            out.write(batch_request(n)[1] + b"\n")
    started = time.perf_counter()
    counts = asyncio.run(ingest_paths([lines], root / "ingest.db"))
    took = time.perf_counter() - started
    if counts.get("applied") != requests * BATCH:
        raise SystemExit(f"ingest of the same events did not apply them all: {counts}")
    return took


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--mode", choices=("shopify", "events", "batch"), default="shopify")
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=ServeConfig.model_fields["batch_wait_ms"].default,
        help="serve's batch_wait_ms (default: serve's own)",
    )
    parser.add_argument(
        "--events-workers", type=int, help="serve's events_workers (default: its own)"
    )
    parser.add_argument("--bare-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server()
        return
    per_request = BATCH if args.mode == "batch" else 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mapping = root / "mapping.toml"
        mapping.write_text(
            MAPPING + "".join(f'"{800000000 + i}" = "SKU{i}"\n' for i in range(500)),
            encoding="utf-8",
        )
        db = root / "store.db"
        proc, url = start_server(db, mapping, args.batch_wait_ms, args.events_workers)
        try:
            warm = min(200, args.requests)
            asyncio.run(load(url, args.mode, 10_000_000 // per_request, warm, args.concurrency))
            cpu_before = cpu_seconds(proc.pid)
            elapsed, latencies = asyncio.run(
                load(url, args.mode, 0, args.requests, args.concurrency)
            )
            cpu = cpu_seconds(proc.pid) - cpu_before
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        bare, bare_url = start_bare()  # the anchor, in every mode
        try:
            asyncio.run(load(bare_url, args.mode, 0, warm, args.concurrency))
            bare_before = cpu_seconds(bare.pid)
            bare_elapsed, _ = asyncio.run(
                load(bare_url, args.mode, 0, args.requests, args.concurrency)
            )
            bare_cpu = cpu_seconds(bare.pid) - bare_before
        finally:
            bare.kill()
            bare.wait(30)
        bare_rate = args.requests * per_request / bare_elapsed
        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT event_id, type, ts, source, received_at, body FROM event_log"
            " WHERE event_id NOT GLOB '*bench-1[0-9][0-9][0-9][0-9][0-9][0-9][0-9]'"
        ).fetchall()
        conn.close()
        raw_seconds = raw_executemany(rows, root / "raw.db")
        ingest_seconds = ingest_same(args.requests, root) if args.mode == "batch" else None

    rate = args.requests * per_request / elapsed
    raw_rate = len(rows) / raw_seconds
    print(f"webhook ingest ({args.mode}, {args.requests} requests, {args.concurrency} connections,")
    print(f"  writer batch wait {args.batch_wait_ms:g} ms, server in its own process):")
    p50, p99 = pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000
    print(
        f"  {rate:,.0f} events/s durable; latency to durable p50 {p50:.1f} ms,"
        f" p99 {p99:.1f} ms, max {max(latencies) * 1000:.1f} ms,"
        f" mean {statistics.fmean(latencies) * 1000:.1f} ms"
    )
    print(f"raw sqlite3 executemany of the same {len(rows)} rows (one transaction):")
    print(f"  {raw_rate:,.0f} rows/s")
    print(f"ratio raw / webhook: {raw_rate / rate:,.1f}x")
    print(f"bare aiohttp handler, same requests: {bare_rate:,.0f} events/s")
    print(f"ratio omniops / bare aiohttp: {rate / bare_rate:.2f}")
    if ingest_seconds is not None:
        ingest_rate = args.requests * per_request / ingest_seconds
        print(
            f"omniops ingest of the same events (one JSON Lines file): {ingest_rate:,.0f} events/s"
        )
        print(f"ratio POST /events / ingest: {rate / ingest_rate:.2f}")
    # Wall rates move with the neighbours' load (the bare handler's most); the servers' own
    # CPU a request is steadier: the ratio of CPU the two spend on the same requests.
    mine, theirs = cpu / args.requests * 1e6, bare_cpu / args.requests * 1e6
    print(
        f"server CPU a request: omniops {mine:.0f} us (all its threads), bare {theirs:.0f} us;"
        f" bare / omniops {theirs / mine:.2f}"
    )


if __name__ == "__main__":
    main()
