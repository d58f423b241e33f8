"""Replay benchmark (not a test): ``python -m tests.bench_replay [--orders N]``.

1. builds a fresh store with the sample order's SKUs and a warehouse, then writes ``N``
   Shopify orders (the vendor sample, ``fixtures/payloads/shopify/rest-2024-04_order.json``,
   with its id changed) whose location has no mapping, as ``serve`` does: the events go
   through the writer (routed by the default fulfillment rules, units reserved), and each
   delivery is kept (:func:`feeds.runtime.quarantine.hold_for`, :func:`store.held.record_held`);
2. times :func:`feeds.runtime.quarantine.preview` (what ``serve`` does after a mapping
   reload) with the location mapped;
3. times :func:`feeds.runtime.quarantine.replay`: every order replaces its node-less
   version, once; then a second replay (nothing to do);
4. prints orders per second of each step and checks every order is counted once, at the
   mapped node.

Everything stays on this machine; the store is a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from feeds.runtime.quarantine import hold_for, preview, replay
from feeds.runtime.routing import router_hook
from feeds.webhooks import shopify
from feeds.webhooks.mapping import Mapping, parse_mapping
from store.held import record_held
from store.metrics import open_reader
from store.model import TimeWindow, set_time_window
from store.writer import StoreWriter
from tests.builders import T0, location, sku, snapshot

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "fixtures" / "payloads" / "shopify" / "rest-2024-04_order.json"
SKUS = ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")


def order_body(base: dict[str, Any], n: int) -> dict[str, Any]:
    body = copy.deepcopy(base)
    body["id"] = 1_000_000 + n
    return body


async def build(db: Path, orders: int) -> None:
    base = json.loads(SAMPLE.read_text(encoding="utf-8"))
    empty = Mapping().shopify
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        catalogue: list[Any] = [sku(s) for s in SKUS] + [location("WH-A", kind="warehouse")]
        catalogue += [snapshot(s, "WH-A", orders * 2, T0) for s in SKUS]
        await writer.write(catalogue)
        for n in range(orders):
            body = order_body(base, n)
            mapped = shopify.map_shopify("orders/create", f"e{n}", body, empty)
            await writer.write(mapped.items)
            kept = hold_for(
                "shopify",
                mapped,
                json.dumps(body).encode(),
                topic="orders/create",
                delivery_id=f"e{n}",
            )
            assert kept is not None
            await writer.run(lambda conn, kept=kept: record_held(conn, kept, int(T0.timestamp())))


def check(db: Path, orders: int) -> None:
    conn = sqlite3.connect(db)
    try:
        sales = conn.execute(
            "SELECT location_id, SUM(units) FROM sales_hourly GROUP BY 1 HAVING SUM(units) != 0"
        ).fetchall()
        assert sales == [("WH-NJ", 3 * orders)], sales
        reserved = conn.execute("SELECT SUM(reserved) FROM stock").fetchone()[0]
        assert reserved == 0, reserved
        placed = conn.execute("SELECT COUNT(*) FROM event_log WHERE type = 'order.placed'")
        assert placed.fetchone()[0] == orders
    finally:
        conn.close()


async def run(orders: int) -> None:
    set_time_window(TimeWindow())  # the sample is dated 2008
    mapping = parse_mapping('[shopify.locations]\n"655441491" = "WH-NJ"\n')
    with tempfile.TemporaryDirectory(prefix="omniops-bench-replay-") as tmp:
        db = Path(tmp) / "store.db"
        began = time.perf_counter()
        await build(db, orders)
        built = time.perf_counter() - began

        reader = open_reader(db)
        began = time.perf_counter()
        held, replayable = preview(reader, mapping)
        previewed = time.perf_counter() - began
        reader.close()
        assert (held, replayable) == (orders, orders)

        async with StoreWriter(db, after_commit=router_hook()) as writer:
            began = time.perf_counter()
            first = await replay(writer, mapping)
            replayed = time.perf_counter() - began
            began = time.perf_counter()
            second = await replay(writer, mapping)
            again = time.perf_counter() - began
        assert (first.placed, first.replaced, second.held) == (orders, orders, 0)
        check(db, orders)
    print(f"orders held: {orders} (written and kept in {built:.2f} s)")
    print(f"preview (serve, after a reload): {previewed:.3f} s, {orders / previewed:,.0f} orders/s")
    print(
        f"replay (each replaces its node-less version): {replayed:.3f} s, "
        f"{orders / replayed:,.0f} orders/s"
    )
    print(f"replay again (nothing to do): {again * 1000:.1f} ms")
    print("checked: every order counted once, at the mapped node; no units left reserved")


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=500, help="held orders (default 500)")
    asyncio.run(run(parser.parse_args().orders))


if __name__ == "__main__":
    main()
