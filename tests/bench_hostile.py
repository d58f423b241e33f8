"""Benchmark: ``/health`` latency while serve processes the worst bodies of issue 10.

``python -m tests.bench_hostile`` starts ``serve`` on 127.0.0.1 with a temporary store,
measures ``/health`` latency idle (the anchor), then again while these are sent (each a
fixed number of times, two at a time): a 24 KB ``/events`` body with one long word, a
signed 1.9 MB EasyPost body of long words, 100k-deep nesting, a 300-event batch with
poison values, and an 8 KB phone-like text.  Prints p50 / p99 / max for both runs and the
ratio, and the time each worst body took to answer.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.hostile_world import (
    Hostile,
    deep_body,
    hostile_server,
    huge_easypost_body,
    long_word_events_body,
    stock_event,
    summary,
)

ROUNDS = 8


def _poison_batch() -> bytes:
    batch = [stock_event(n) for n in range(300)]
    batch.insert(150, stock_event(9001, on_hand=2**63))
    batch.insert(151, stock_event(9002, ts="9999-12-31T00:00:00Z"))
    batch.insert(152, stock_event(9003, body={"sku": "\ud800", "location_id": "L", "on_hand": 1}))
    return json.dumps(batch).encode()


async def _probe(served: Hostile, seconds: float | None, stop: asyncio.Event) -> list[float]:
    served.health_ms.clear()
    if seconds is not None:
        asyncio.get_running_loop().call_later(seconds, stop.set)
    await served.probe_health(stop, every=0.002)
    return list(served.health_ms)


async def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with hostile_server(Path(tmp)) as served:
            idle = await _probe(served, 2.0, asyncio.Event())
            easypost = huge_easypost_body()
            cases: list[tuple[str, Callable[[], Awaitable[tuple[int, object]]]]] = [
                ("events long word 24 KB", lambda: served.events(long_word_events_body())),
                ("easypost 1.9 MB long words", lambda: served.easypost(easypost)),
                ("events 100k-deep nesting", lambda: served.events(deep_body())),
                ("shopify 100k-deep nesting", lambda: served.shopify("orders/create", deep_body())),
                ("events 300 + 3 poison", lambda: served.events(_poison_batch())),
                ("events phone-like 8 KB text", lambda: served.events(b"(1-" * 2800)),
            ]
            timings: dict[str, list[float]] = {name: [] for name, _ in cases}
            stop = asyncio.Event()
            probe = asyncio.create_task(_probe(served, None, stop))
            for _ in range(ROUNDS):
                for name, send in cases:
                    started = time.perf_counter()
                    status, _ = await asyncio.gather(send(), send())
                    timings[name].append((time.perf_counter() - started) * 1000)
                    assert status[0] < 500, (name, status)
            stop.set()
            loaded = await probe
    base, load = summary(idle), summary(loaded)
    print("omniops bench_hostile: /health latency (ms)")
    for label, st in (("idle", base), ("hostile", load)):
        print(
            f"  {label:8s} n={st['n']:5.0f}  p50 {st['p50']:6.2f}  "
            f"p99 {st['p99']:6.2f}  max {st['max']:6.2f}"
        )
    ratio = load["p99"] / base["p99"] if base["p99"] else float("nan")
    verdict = "ok" if load["max"] < 50 else "OVER"
    print(f"  p99 ratio hostile/idle: {ratio:.2f}x; budget max < 50 ms: {verdict}")
    print("worst bodies, two at a time (ms to answer both, per round):")
    for name, values in timings.items():
        print(f"  {name:30s} " + "  ".join(f"{v:7.1f}" for v in values))


def main() -> None:
    """Run the benchmark."""
    asyncio.run(run())


if __name__ == "__main__":
    main()
