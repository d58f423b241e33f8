"""Kafka feed benchmark (a fixed workload, not a test): ``python -m tests.bench_kafka``.

Workload: the first ``--per-file`` lines of every file of the fixture day (``fixtures/day``,
about 38 000 events with the default 5 000), keyed as a producer should (by order id, by
``sku|location``) onto a 4-partition topic of a real broker (tansu, started here).

1. **anchor**: ``omniops ingest``'s path (:func:`feeds.runtime.ingest.ingest_paths`) of
   the same events as one JSON Lines file, into a fresh store;
2. **kafka**: ``serve`` (:class:`feeds.runtime.serve.Server`, in this process) consuming
   the topic into another fresh store, timed from start until every event is committed
   (durable), and also from the group's assignment on (without the join);

then the stores are compared (they must hold the same facts), and both rates and their
ratio are printed.  The goal is a ratio of at least 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from feeds.kafka.consumer import KafkaFeed
from feeds.runtime.ingest import ingest_paths
from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from tests.kafka_broker import Broker

ROOT = Path(__file__).resolve().parent.parent
DAY = ROOT / "fixtures" / "day"
PARTITIONS = 4


def workload(per_file: int) -> list[str]:
    """The first ``per_file`` lines of every feed file of the fixture day."""
    lines: list[str] = []
    for path in sorted(DAY.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines.extend(line.strip() for line in itertools.islice(handle, per_file))
    return lines


def key_of(line: str) -> bytes:
    """Partition key: per order, per SKU × location, else per event."""
    event = json.loads(line)
    body = event["body"]
    if body.get("order_id"):
        return str(body["order_id"]).encode()
    if "sku" in body and "location_id" in body:
        return f"{body['sku']}|{body['location_id']}".encode()
    return str(event["id"]).encode()


def facts(db: Path) -> tuple[int, int, int]:
    """Events, orders and stock rows: enough to see the two stores agree."""
    conn = sqlite3.connect(db)
    try:
        return (
            conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0],
            conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0],
            conn.execute("SELECT COALESCE(SUM(on_hand), 0) FROM stock").fetchone()[0],
        )
    finally:
        conn.close()


async def produce(broker: Broker, topic: str, lines: list[str]) -> float:
    """Send the workload; return the seconds it took."""
    started = time.perf_counter()
    await broker.produce(topic, [(key_of(line), line.encode(), []) for line in lines])
    return time.perf_counter() - started


async def consume(broker: Broker, topic: str, db: Path, total: int) -> tuple[float, float]:
    """``serve`` on the topic until ``total`` items are durable: (from start, from assign)."""
    config = ServeConfig(
        db=db,
        port=0,
        kafka=[
            {
                "name": "bench",
                "bootstrap_servers": broker.bootstrap,
                "topics": [topic],
                "group_id": "bench",
                "session_timeout_ms": 2000,
            }
        ],
    )
    started = time.perf_counter()
    async with Server(config) as server:
        feed = server.feeds[0]
        assert isinstance(feed, KafkaFeed)
        assigned_at: float | None = None
        stats = server.writer.stats
        deadline = started + 600
        while stats.applied + stats.duplicate + stats.quarantined < total:
            if assigned_at is None and feed.health.partitions:
                assigned_at = time.perf_counter()
            if time.perf_counter() > deadline:
                raise SystemExit(f"kafka: only {stats.applied} of {total} after 600 s")
            await asyncio.sleep(0.01)
        done = time.perf_counter()
    return done - started, done - (assigned_at or started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-file", type=int, default=5000, help="lines taken per feed file")
    args = parser.parse_args()
    lines = workload(args.per_file)
    total = len(lines)
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        broker = Broker(log=tmpdir / "tansu.log")
        broker.start()
        try:
            await broker.create_topic("bench", PARTITIONS)
            produced = await produce(broker, "bench", lines)
            src = tmpdir / "events.jsonl"
            src.write_text("\n".join(lines) + "\n", encoding="utf-8")
            started = time.perf_counter()
            await ingest_paths([src], tmpdir / "ingest.db")
            ingest_s = time.perf_counter() - started
            kafka_s, kafka_assigned_s = await consume(broker, "bench", tmpdir / "kafka.db", total)
        finally:
            broker.stop()
        same = facts(tmpdir / "ingest.db") == facts(tmpdir / "kafka.db")
    ingest_rate, kafka_rate = total / ingest_s, total / kafka_s
    print(
        f"workload: {total} fixture events ({args.per_file} per feed file), {PARTITIONS} partitions"
    )
    print(f"produce to the broker:      {total / produced:9.0f} events/s ({produced:.2f} s)")
    print(f"omniops ingest (anchor):    {ingest_rate:9.0f} events/s ({ingest_s:.2f} s)")
    print(
        f"serve from Kafka, durable:  {kafka_rate:9.0f} events/s ({kafka_s:.2f} s, with the join)"
    )
    print(
        f"  from the assignment on:   {total / kafka_assigned_s:9.0f} events/s"
        f" ({kafka_assigned_s:.2f} s)"
    )
    print(f"ratio kafka / ingest:       {kafka_rate / ingest_rate:9.2f}  (goal >= 0.5)")
    print(f"stores agree:               {same}")
    if not same:
        raise SystemExit("the Kafka store differs from the ingested one")


if __name__ == "__main__":
    asyncio.run(main())
