"""The bulk (set-wise) apply path gives the same store as applying events one at a time.

A slice of the fixture day (the first hours of every feed, so orders meet their steps,
cancellations and returns) is shuffled, salted with duplicates, re-sent orders under new
ids, cancellations, carrier estimates and adjustments (some before 1970) out of order,
then applied to real SQLite files: one event per transaction, in batches of 500 and of
2,000, and all in one.  Every table must come out identical, and so must a load with
node-less orders written with and without ``ingest``'s merged transactions (the router
runs after each commit).  Risk flags are an over-approximation that depends on when
pairs were scored, so both stores are compared after the console's own refresh of the
flagged pairs at the end time (which must then give exactly the pairs at risk).
"""

from __future__ import annotations

import gzip
import itertools
import random
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feeds.jsonl import parse_line, source_of
from store.apply import apply_batch
from store.model import (
    ChannelUpserted,
    Event,
    LocationUpserted,
    OrderPlaced,
    Quarantined,
    SkuUpserted,
    StockAdjusted,
    StockSnapshot,
    parse_event,
)
from store.risk import MetricParams, refresh_risk_flags
from store.schema import migrate
from store.writer import configure_connection

ROOT = Path(__file__).resolve().parent.parent
RECEIVED = 1_800_000_000
CATALOGUE = (SkuUpserted, LocationUpserted, ChannelUpserted)


def fixture_slice(lines_per_file: int) -> list[Event | Quarantined]:
    """The first lines of every fixture feed (the earliest events of each), validated."""
    items: list[Event | Quarantined] = []
    for path in sorted((ROOT / "fixtures" / "day").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(itertools.islice(handle, lines_per_file), 1):
                items.append(
                    parse_line(line, source=source_of(path), where=f"{path.name}:{number}")
                )
    return items


def salted(items: list[Event | Quarantined], seed: int) -> list[Event | Quarantined]:
    """``items`` shuffled, with duplicates, re-sent orders, cancellations and bad lines."""
    rng = random.Random(seed)
    events = [i for i in items if not isinstance(i, Quarantined)]
    orders = [e for e in events if isinstance(e, OrderPlaced)]
    snapshots = [e for e in events if isinstance(e, StockSnapshot)]
    skus = [e for e in events if isinstance(e, SkuUpserted)]
    extra: list[Event | Quarantined] = list(rng.sample(events, len(events) // 20))  # same ids
    for n, placed in enumerate(rng.sample(orders, len(orders) // 10)):
        data = placed.model_dump(mode="json")
        data["id"] = f"resent-{n}"
        extra.append(parse_event(data))
    for n, placed in enumerate(rng.sample(orders, len(orders) // 8)):
        extra.append(
            parse_event(
                {
                    "id": f"cancel-{n}",
                    "type": "order.cancelled",
                    "ts": _iso(placed.ts.timestamp() + rng.randrange(-600, 7200)),
                    "source": "webshop",
                    "body": {"order_id": placed.body.order_id, "reason": "test"},
                }
            )
        )
        for k, (status, hours) in enumerate((("shipped", 3), ("shipped", 5), ("delivered", 30))):
            moment = placed.ts.timestamp() + hours * 3600
            extra.append(
                parse_event(
                    {
                        "id": f"step-{n}-{k}",
                        "type": "fulfillment.updated",
                        "ts": _iso(moment),
                        "source": "carrier",
                        "body": {
                            "order_id": placed.body.order_id,
                            "status": status,
                            "carrier": rng.choice(["UPS", "FedEx", None]),
                            "estimated_delivery": _iso(moment + rng.randrange(1, 4) * 86400),
                        },
                    }
                )
            )
    for n, counted in enumerate(rng.sample(snapshots, len(snapshots) // 2)):
        for k in range(3):
            extra.append(
                parse_event(
                    {
                        "id": f"adjust-{n}-{k}",
                        "type": "stock.adjusted",
                        "ts": _iso(counted.ts.timestamp() + rng.randrange(-7200, 7200)),
                        "source": "inventory",
                        "body": {
                            "sku": counted.body.sku,
                            "location_id": f"{counted.body.location_id}" if k else f"NEW-{n % 7}",
                            "delta": rng.randrange(-5, 6),
                            "source_system": f"sys-{k}",
                        },
                    }
                )
            )
    # Adjustments stamped before 1970 (a history import may go back a century): a pair with
    # no count yet starts at as_of 0, which such an adjustment is not after.
    for n, counted in enumerate(rng.sample(snapshots, 6)):
        for k in range(2):
            extra.append(
                parse_event(
                    {
                        "id": f"old-adjust-{n}-{k}",
                        "type": "stock.adjusted",
                        "ts": _iso(-86400 * (n + 1) * (1 - k)),  # the second at 0
                        "source": "inventory",
                        "body": {
                            "sku": counted.body.sku,
                            "location_id": f"OLD-{n % 3}" if n % 2 else counted.body.location_id,
                            "delta": k + 1,
                        },
                    }
                )
            )
    # Stamped at their pair's count: not after it, so never added to it.
    for n, counted in enumerate(rng.sample(snapshots, 10)):
        data = {"sku": counted.body.sku, "location_id": counted.body.location_id, "delta": 4}
        extra.append(
            parse_event(
                {
                    "id": f"at-count-{n}",
                    "type": "stock.adjusted",
                    "ts": _iso(counted.ts.timestamp()),
                    "source": "inventory",
                    "body": data,
                }
            )
        )
    for n, record in enumerate(rng.sample(skus, 10)):
        data = record.model_dump(mode="json")
        data["id"] = f"recat-{n}"
        data["ts"] = _iso(record.ts.timestamp() + 86400)
        data["body"]["category"] = "moved"
        extra.append(parse_event(data))
    extra += [Quarantined(source="webshop", raw="{", error=f"bad {n}") for n in range(5)]
    # Catalogue first (as feeds deliver it), then everything else in any order, with a
    # few catalogue changes among it.
    catalogue = [i for i in items if isinstance(i, CATALOGUE)]
    rest = [i for i in items if not isinstance(i, CATALOGUE)] + extra
    rng.shuffle(catalogue)
    rng.shuffle(rest)
    late = catalogue[: len(catalogue) // 10]
    mixed = catalogue[len(late) :] + rest
    for item in late:
        mixed.insert(rng.randrange(len(mixed)), item)
    return mixed


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).isoformat().replace("+00:00", "Z")


def build(path: Path, items: Sequence[Event | Quarantined], batch: int) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    configure_connection(db)
    migrate(db)
    for start in range(0, len(items), batch):
        apply_batch(db, items[start : start + batch], RECEIVED, sweep=True)
    return db


def dump(db: sqlite3.Connection, at: int) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, sorted; flags as the console refreshes them at ``at``."""
    db.execute("BEGIN IMMEDIATE")
    refresh_risk_flags(db, "flagged", at, MetricParams())
    db.execute("COMMIT")
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    out: dict[str, list[tuple[object, ...]]] = {}
    for table in tables:
        rows = db.execute(f"SELECT * FROM {table}").fetchall()
        if table == "meta":  # sweeps are spaced in event time, per batch
            rows = [r for r in rows if r[0] != "risk_sweep_ts"]
        out[table] = sorted(rows, key=repr)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_bulk_and_single_paths_give_identical_stores(tmp_path: Path, seed: int) -> None:
    items = salted(fixture_slice(700), seed)
    assert len(items) > 6000
    end = max(int(i.ts.timestamp()) for i in items if not isinstance(i, Quarantined))
    single = dump(build(tmp_path / "single.db", items, 1), end)
    assert sum(len(rows) for rows in single.values()) > 10_000
    assert single["orders"] and single["sales_hourly"] and single["quarantine"]
    assert any(row[0] == "-" for row in single["category_hourly"]) or single["skus"]
    for batch in (500, 2000, len(items)):  # and the whole load in one (ingest's 20,000)
        bulk = dump(build(tmp_path / f"bulk-{batch}.db", items, batch), end)
        for table, rows in single.items():
            assert bulk[table] == rows, f"{table} differs with batches of {batch}"


def test_flags_after_refresh_are_exactly_the_pairs_at_risk(tmp_path: Path) -> None:
    items = salted(fixture_slice(400), 3)
    end = max(int(i.ts.timestamp()) for i in items if not isinstance(i, Quarantined))
    db = build(tmp_path / "bulk.db", items, 1000)
    flagged = {row[:2] for row in dump(db, end)["stock"] if row[6]}
    db.execute("BEGIN IMMEDIATE")
    refresh_risk_flags(db, "all", end, MetricParams())
    db.execute("COMMIT")
    truth = {r[:2] for r in db.execute("SELECT sku, location_id FROM stock WHERE risk = 1")}
    assert flagged == truth


def test_on_hand_is_the_newest_count_plus_the_adjustments_after_it(tmp_path: Path) -> None:
    """The stock rule itself, computed here from the events, on the store built in batches."""
    items = salted(fixture_slice(700), 4)
    seen: set[str] = set()
    counts: dict[tuple[str, str], list[tuple[int, int]]] = {}
    adjustments: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for item in items:
        if isinstance(item, Quarantined) or item.id in seen:
            continue
        seen.add(item.id)
        ts = int(item.ts.timestamp())
        if isinstance(item, StockSnapshot):
            key = (item.body.sku, item.body.location_id)
            counts.setdefault(key, []).append((ts, item.body.on_hand))
        elif isinstance(item, StockAdjusted):
            key = (item.body.sku, item.body.location_id)
            adjustments.setdefault(key, []).append((ts, item.body.delta))
    db = build(tmp_path / "bulk.db", items, 1000)
    stock = {(r[0], r[1]): r[2] for r in db.execute("SELECT sku, location_id, on_hand FROM stock")}
    checked = at_count = 0
    for key, taken in counts.items():
        newest = max(ts for ts, _ in taken)
        if len({n for ts, n in taken if ts == newest}) > 1:
            continue  # two counts stamped alike: the later arrival stands
        count = next(n for ts, n in taken if ts == newest)
        after = sum(delta for ts, delta in adjustments.get(key, ()) if ts > newest)
        assert stock[key] == count + after, key
        checked += 1
        at_count += any(ts == newest for ts, _ in adjustments.get(key, ()))
    assert checked > 100 and at_count  # some adjustments are stamped at their count


@pytest.mark.parametrize("seed", [5])
async def test_merged_transactions_route_orders_as_the_writers_own_batches(
    tmp_path: Path, seed: int
) -> None:
    """``ingest``'s merged transactions leave the router's decisions (and all else) as they were.

    Node-less orders (what the router routes) are spread over part of the load only, so
    some chunks merge into one transaction and others keep the writer's batches.
    """
    from feeds.runtime.ingest import write_stream
    from feeds.runtime.routing import router_hook
    from store.clock import FixedClock
    from store.writer import StoreWriter

    items = salted(fixture_slice(500), seed)
    placed = [i for i in items if isinstance(i, OrderPlaced)]
    unrouted: list[Event | Quarantined] = []
    for n, order in enumerate(placed[:60]):
        data = order.model_dump(mode="json")
        data["id"] = f"nodeless-{n}"
        data["body"]["order_id"] = f"NODELESS-{n}"
        data["body"]["location_id"] = None
        for line in data["body"]["lines"]:
            line.pop("location_id", None)
        unrouted.append(parse_event(data))
    middle = len(items) // 2
    load = items[:middle] + unrouted + items[middle:]
    end = max(int(i.ts.timestamp()) for i in load if not isinstance(i, Quarantined))
    stores = {}
    for merge in (1, 4):
        path = tmp_path / f"merge-{merge}.db"
        clock = FixedClock(datetime.fromtimestamp(end, UTC))
        async with StoreWriter(
            path, clock=clock, batch_size=100, bulk_batch_size=500, after_commit=router_hook()
        ) as writer:
            tally = await write_stream(writer, load, merge=merge)
        assert tally["applied"] > 5000
        db = sqlite3.connect(path)
        stores[merge] = dump(db, end)
        db.close()
    assert stores[1]["routing_decisions"] and stores[1]["routing_reservations"]
    for table, rows in stores[1].items():
        assert stores[4][table] == rows, f"{table} differs with merged transactions"
