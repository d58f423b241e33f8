"""Order edits with reservations following them (a fixed workload, not a test).

``python -m tests.bench_edit_reservations [--orders 3000] [--rounds 3]``

A store with ``--orders`` routed orders (the routing test retailer, two warehouses, two
SKUs); then one edit of every order (a quantity changed, a line added or removed),
written in batches of 500 through the writer on a copy of that store, two ways, alternated
``--rounds`` times:

* *follow*: with the router hook (each edited order's reservations follow its lines);
* *anchor*: without a hook (the store applies the edits, nothing follows them; what an
  edit cost before reservations followed edits, whose hook returned at once).

Prints CPU seconds (every thread of the process) per run and per edit, and the ratio
follow / anchor.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from feeds.runtime.routing import router_hook
from rules.routing.config import FulfillmentRouting
from store.clock import FixedClock
from store.model import Event
from store.writer import StoreWriter
from tests.builders import ev
from tests.conftest import copy_store
from tests.routing_world import catalogue, ny, placed, stock

RULES = FulfillmentRouting.model_validate(
    {"rules": [{"id": "ship", "match": "method=ship", "kinds": ["warehouse"], "window": "any"}]}
)
BATCH = 500


def workload(orders: int) -> tuple[list[Event], list[Event]]:
    """The placements (with catalogue and stock) and one edit of each order."""
    rng = random.Random(3)
    base: list[Event] = [
        *catalogue(),
        *(stock(s, n, 10**6) for s in ("TEE", "MUG") for n in ("WH-NJ", "WH-TX")),
    ]
    edits: list[Event] = []
    for k in range(orders):
        t = ny(6) + (ny(7) - ny(6)) * k / orders
        base.append(placed(f"o{k}", t, [("TEE", rng.randint(1, 3))]))
        lines = [("TEE", rng.randint(1, 4))] + ([("MUG", 1)] if rng.random() < 0.5 else [])
        body = {
            "order_id": f"o{k}",
            "lines": [{"sku": s, "quantity": q, "unit_price": "20.00"} for s, q in lines],
        }
        edits.append(ev("order.edited", ny(8) + (ny(9) - ny(8)) * k / orders, body))
    return base, edits


async def _write(path: Path, events: list[Event], follow: bool) -> float:
    hook = router_hook(lambda: RULES) if follow else None
    async with StoreWriter(path, clock=FixedClock(ny(10)), after_commit=hook) as writer:
        started = time.process_time()
        for start in range(0, len(events), BATCH):
            await writer.write(events[start : start + BATCH])
        return time.process_time() - started


async def main(orders: int, rounds: int) -> None:
    """Build the base store once, then time both ways on fresh copies, alternated."""
    base, edits = workload(orders)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        async with StoreWriter(
            root / "base.db", clock=FixedClock(ny(7)), after_commit=router_hook(lambda: RULES)
        ) as writer:
            await writer.write(base)
        times: dict[str, list[float]] = {"follow": [], "anchor": []}
        for n in range(rounds):
            for name in ("anchor", "follow") if n % 2 else ("follow", "anchor"):
                path = copy_store(root / "base.db", root / f"{name}-{n}.db")
                times[name].append(await _write(path, edits, name == "follow"))
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name}: {shown} CPU-s; best {min(values) / orders * 1e6:.0f} µs per edit")
    ratios = [f / a for f, a in zip(times["follow"], times["anchor"], strict=True)]
    print("follow / anchor per round: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.orders, args.rounds))
