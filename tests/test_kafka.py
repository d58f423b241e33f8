"""The Kafka feed adapter against a real broker (tansu on 127.0.0.1), over real processes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition

from feeds.kafka.debezium import map_change
from feeds.runtime.ingest import ingest_paths
from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.mapping import DebeziumMapping, parse_mapping
from tests.kafka_broker import Broker
from tests.test_pipeline import dump
from tests.test_serve import LISTENING, child_env

ROOT = Path(__file__).resolve().parent.parent
DAY = ROOT / "fixtures" / "day"
DEBEZIUM = ROOT / "fixtures" / "payloads" / "debezium"
_names = itertools.count()


def fixture_events(per_file: int = 40) -> list[str]:
    """A small slice of the fixture day: the first lines of every feed file."""
    lines: list[str] = []
    for path in sorted(DAY.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines.extend(line.strip() for line in itertools.islice(handle, per_file))
    return lines


def key_of(line: str) -> bytes:
    """Partition key: per order, per SKU × location, else per event (keeps their order)."""
    body = json.loads(line)["body"]
    if body.get("order_id"):
        return str(body["order_id"]).encode()
    if "sku" in body and "location_id" in body:
        return f"{body['sku']}|{body['location_id']}".encode()
    return str(json.loads(line)["id"]).encode()


async def ingest_store(tmp_path: Path, lines: list[str]) -> Path:
    """The store ``omniops ingest`` builds from ``lines`` (its code, in this process: the
    command itself is tested in ``tests/test_pipeline.py``)."""
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "ingest.db"
    await ingest_paths([src], db)
    return db


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def write_config(path: Path, db: Path, broker: Broker, topic: str, group: str) -> Path:
    path.write_text(
        f"""
[serve]
db = "{db}"
port = 0
feed_health_seconds = 0.2
[[serve.kafka]]
name = "events"
bootstrap_servers = "{broker.bootstrap}"
topics = ["{topic}"]
group_id = "{group}"
session_timeout_ms = 2000
lag_every_seconds = 0.2
max_backoff_seconds = 0.5
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def serve(tmp_path: Path, config: Path, log: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = child_env(tmp_path)
    env["OMNIOPS_CONFIG"] = str(config)
    with log.open("a", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "feeds.runtime.serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = LISTENING.search(line)
        assert match, f"no listening line: {line!r}; log: {log.read_text()}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


async def health(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
        return dict(await resp.json())


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, bounded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def stored_ids(db: Path) -> set[str]:
    if not db.exists():
        return set()
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT event_id FROM event_log")}
    except sqlite3.Error:
        return set()
    finally:
        conn.close()


async def committed(broker: Broker, topic: str, group: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = -1 if offset is None else offset
        return out
    finally:
        await consumer.stop()


def records(lines: list[str]) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    return [(key_of(line), line.encode(), []) for line in lines]


async def test_serve_consumes_a_partitioned_topic_into_the_store_ingest_builds(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    lines = fixture_events(35)
    ids = {json.loads(line)["id"] for line in lines}
    topic, group = unique("events"), unique("group")
    await kafka_broker.create_topic(topic, 4)
    placed = await kafka_broker.produce(topic, records(lines))
    assert {p for p, _ in placed} == {0, 1, 2, 3}
    db = tmp_path / "serve.db"
    config = write_config(tmp_path / "config.toml", db, kafka_broker, topic, group)
    with serve(tmp_path, config, tmp_path / "serve.log") as (proc, url):
        await until(lambda: stored_ids(db) >= ids, "every event in the store")
        state = await until(lambda: _lag_zero(url), "lag 0 on every partition after the commits")
        feed = state["feeds"]["kafka:events"]
        assert feed["state"] == "connected"
        assert set(feed["partitions"]) == {f"{topic}/{p}" for p in range(4)}
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
            text = await resp.text()
        assert f'omniops_feed_partition_lag{{feed="kafka:events",partition="{topic}/0"}} 0' in text
        assert "omniops_feed_partition_last_record_age_seconds" in text
        # The feeds view reads the adapter's state from the store: lag is in its detail.
        await until(lambda: feed_detail(db).startswith("lag 0 over 4 partitions"), "feeds view")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert dump(db) == dump(await ingest_store(tmp_path, lines))


def feed_detail(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT detail FROM feed_health WHERE feed = 'kafka:events'").fetchone()
    finally:
        conn.close()
    return "" if row is None else str(row[0])


async def _lag_zero(url: str) -> dict[str, Any] | None:
    state = await health(url)
    parts = state["feeds"].get("kafka:events", {}).get("partitions", {})
    if len(parts) == 4 and all(p["lag"] == 0 for p in parts.values()):
        return state
    return None


async def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    lines = fixture_events(50)
    ids = [json.loads(line)["id"] for line in lines]
    topic, group = unique("crash"), unique("group")
    await kafka_broker.create_topic(topic, 4)
    db = tmp_path / "serve.db"
    config = write_config(tmp_path / "config.toml", db, kafka_broker, topic, group)
    log = tmp_path / "serve.log"
    half = len(lines) // 2
    with serve(tmp_path, config, log) as (proc, url):
        await until(lambda: _owns_all(url), "serve to join the group")
        placed = await kafka_broker.produce(topic, records(lines[:half]))
        await until(lambda: len(stored_ids(db)) >= len(ids) // 4, "a quarter stored")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # The stream goes on while serve is down.
    placed += await kafka_broker.produce(topic, records(lines[half:]))
    where = dict(zip(placed, ids, strict=True))
    have = stored_ids(db)
    assert len(have) < len(ids), "the kill came after the whole stream: nothing tested"
    offsets = await committed(kafka_broker, topic, group, 4)
    for (partition, offset), event_id in where.items():
        if offset < offsets[partition]:
            assert event_id in have, f"offset {partition}@{offset} committed before stored"
    with serve(tmp_path, config, log) as (proc, _url):
        await until(lambda: stored_ids(db) >= set(ids), "every event after the restart")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert dump(db) == dump(await ingest_store(tmp_path, lines))


async def test_two_serves_in_one_group_split_partitions_and_take_over(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    lines = fixture_events(40)
    first, second = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    topic, group = unique("split"), unique("group")
    await kafka_broker.create_topic(topic, 4)
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    configs = [
        write_config(tmp_path / f"{n}.toml", db, kafka_broker, topic, group)
        for n, db in zip("ab", dbs, strict=True)
    ]

    def union() -> set[str]:
        return stored_ids(dbs[0]) | stored_ids(dbs[1])

    async def owned(url: str) -> set[str]:
        return set((await health(url))["feeds"]["kafka:events"].get("partitions", {}))

    with (
        serve(tmp_path, configs[0], tmp_path / "a.log") as (proc_a, url_a),
        serve(tmp_path, configs[1], tmp_path / "b.log") as (proc_b, url_b),
    ):

        async def split() -> bool:
            a, b = await owned(url_a), await owned(url_b)
            return bool(a) and bool(b) and not (a & b) and len(a | b) == 4

        await until(split, "the group to split the partitions between the two")
        # The first half goes out once the split is settled: produced earlier, a serve that
        # joined alone (the other still starting, on a busy machine) could take it all.
        placed = await kafka_broker.produce(topic, records(first))
        assert {p for p, _ in placed} == {0, 1, 2, 3}  # a share for each serve
        ids_first = {json.loads(x)["id"] for x in first}
        await until(lambda: union() >= ids_first, "the first half in the two stores")
        await until(
            lambda: stored_ids(dbs[0]) and stored_ids(dbs[1]), "both serves to store a share"
        )
        b_parts = await owned(url_b)
        proc_b.send_signal(signal.SIGTERM)
        assert proc_b.wait(30) == 0
        await until(lambda: _owns_all(url_a), "serve A to take every partition", timeout=40)
        await kafka_broker.produce(topic, records(second))
        ids_second = {json.loads(x)["id"] for x in second}
        await until(lambda: stored_ids(dbs[0]) >= ids_second, "the second half in A")
        assert b_parts
        proc_a.send_signal(signal.SIGTERM)
        assert proc_a.wait(20) == 0
    # Taking over from B's committed offsets: A did not re-read B's first half.
    from_b_first = stored_ids(dbs[1]) & ids_first
    assert from_b_first and not (stored_ids(dbs[0]) & from_b_first)


async def _owns_all(url: str) -> bool:
    return len((await health(url))["feeds"]["kafka:events"].get("partitions", {})) == 4


MAGENTO = """
[debezium]
source = "magento"
[debezium.tables.cataloginventory_stock_item]
type = "stock.snapshot"
body = { sku = "{sku}", location_id = "WH-NJ", on_hand = "{qty}", source_system = "magento" }
[debezium.tables.sales_shipment_track]
type = "fulfillment.updated"
ts_column = "created_at"
[debezium.tables.sales_shipment_track.body]
order_id = "{order_increment_id}"
status = "shipped"
carrier = "{carrier_code}"
tracking = "{track_number}"
[debezium.tables.sales_order]
type = "order.cancelled"
when = { state = "canceled" }
body = { order_id = "{increment_id}", reason = "cancelled in Magento" }
"""


def debezium_payloads() -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(DEBEZIUM.glob("*.json"))}


def test_debezium_envelopes_with_and_without_schema_map_to_canonical_events() -> None:
    mapping = parse_mapping(MAGENTO).debezium
    payloads = debezium_payloads()
    stock = map_change(payloads["magento_stock_item_update"], mapping)
    assert [(e.type, e.body.model_dump()["on_hand"]) for e in stock] == [("stock.snapshot", 7)]
    track = map_change(payloads["magento_shipment_track_create"], mapping)
    assert track[0].type == "fulfillment.updated"
    assert track[0].ts.isoformat() == "2026-11-18T14:05:00+00:00"
    assert map_change(payloads["magento_order_cancel"], mapping)[0].type == "order.cancelled"
    # Debezium's documented MySQL examples: the schema wrapper and a delete are understood;
    # their table (inventory.customers) is not mapped.
    assert map_change(payloads["mysql_customers_delete"], mapping) == []
    assert map_change(None, mapping) == []
    customers = DebeziumMapping.model_validate(
        {
            "tables": {
                "customers": {
                    "type": "channel.upserted",
                    "body": {"channel_id": "c{id}", "kind": "web"},
                }
            }
        }
    )
    created = map_change(payloads["mysql_customers_create"], customers)
    assert created[0].body.model_dump()["channel_id"] == "c1004"
    # Same change, same id: a redelivered record is a duplicate.
    assert map_change(payloads["mysql_customers_create"], customers)[0].id == created[0].id


async def test_debezium_topic_maps_and_quarantines_with_offset(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topic, group = unique("cdc"), unique("group")
    await kafka_broker.create_topic(topic, 1)
    payloads = debezium_payloads()
    values = [
        json.dumps(payloads["magento_stock_item_update"]).encode(),
        b'{"before": null, "after": {"sku": "X"}',  # malformed JSON
        json.dumps(payloads["mysql_customers_create"]).encode(),  # table not mapped
        None,  # tombstone
        json.dumps(payloads["magento_shipment_track_create"]).encode(),
    ]
    placed = await kafka_broker.produce(topic, [(b"k", v, []) for v in values])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAGENTO, encoding="utf-8")
    config = ServeConfig(
        db=tmp_path / "cdc.db",
        port=0,
        mapping_file=mapping,
        kafka=[
            {
                "name": "magento",
                "bootstrap_servers": kafka_broker.bootstrap,
                "topics": [topic],
                "group_id": group,
                "format": "debezium",
                "session_timeout_ms": 2000,
                "lag_every_seconds": 0.2,
            }
        ],
    )
    async with Server(config) as server:
        assert server.state is not None
        monitor = server.state.monitors["kafka:magento"]
        await until(lambda: monitor.health.events + monitor.health.quarantined >= 4, "4 items")
        await until(
            lambda: (
                monitor.health.partitions.get(f"{topic}/0")
                and monitor.health.partitions[f"{topic}/0"].committed == len(values)
            ),
            "the offset of every record committed",
        )
    conn = sqlite3.connect(tmp_path / "cdc.db")
    reasons = [r[0] for r in conn.execute("SELECT error FROM quarantine ORDER BY id")]
    types = sorted(r[0] for r in conn.execute("SELECT type FROM event_log"))
    conn.close()
    assert types == ["fulfillment.updated", "stock.snapshot"]
    assert len(reasons) == 2
    assert reasons[0].startswith(f"kafka {topic}/0@{placed[1][1]}: (value): not valid JSON")
    assert reasons[1].startswith(f"kafka {topic}/0@{placed[2][1]}: source.table")


async def test_broker_outage_is_retrying_then_consuming_without_loss(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    lines = fixture_events(20)
    first, second = lines[:80], lines[80:]
    topic, group = unique("outage"), unique("group")
    await kafka_broker.create_topic(topic, 4)
    await kafka_broker.produce(topic, records(first))
    db = tmp_path / "outage.db"
    config = ServeConfig(
        db=db,
        port=0,
        kafka=[
            {
                "name": "events",
                "bootstrap_servers": kafka_broker.bootstrap,
                "topics": [topic],
                "group_id": group,
                "session_timeout_ms": 2000,
                "lag_every_seconds": 0.2,
                "probe_timeout_seconds": 1.0,
                "max_backoff_seconds": 0.5,
            }
        ],
    )
    async with Server(config) as server:
        assert server.state is not None
        monitor = server.state.monitors["kafka:events"]
        first_ids = {json.loads(x)["id"] for x in first}
        await until(lambda: stored_ids(db) >= first_ids, "the first batch")
        kafka_broker.pause()
        try:
            await until(lambda: monitor.health.state.value == "retrying", "retrying", 40)
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/health") as r:
                assert (await r.json())["feeds"]["kafka:events"]["state"] == "retrying"
        finally:
            kafka_broker.resume()
        await kafka_broker.produce(topic, records(second))
        all_ids = {json.loads(x)["id"] for x in lines}
        await until(lambda: stored_ids(db) >= all_ids, "every event after the outage", 60)
        await until(lambda: monitor.health.state.value == "connected", "connected again")
    assert dump(db) == dump(await ingest_store(tmp_path, lines))


async def test_kafka_check_reports_partitions_offsets_and_lag_without_consuming(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    topic, group = unique("check"), unique("group")
    await kafka_broker.create_topic(topic, 2)
    for n in range(3):  # one record per batch: tansu's ListOffsets is exact then
        await kafka_broker.produce(topic, [(None, f'{{"n": {n}}}'.encode(), [])])
    config = write_config(tmp_path / "config.toml", tmp_path / "x.db", kafka_broker, topic, group)
    env = child_env(tmp_path)
    env["OMNIOPS_CONFIG"] = str(config)
    result = subprocess.run(
        [sys.executable, "-m", "console.cli", "kafka", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "reachable, lag 3" in result.stdout
    assert f"{topic}/0: committed none" in result.stdout
    assert await committed(kafka_broker, topic, group, 2) == {0: -1, 1: -1}
    down = write_config(tmp_path / "down.toml", tmp_path / "y.db", Broker(), topic, group)
    env["OMNIOPS_CONFIG"] = str(down)
    result = subprocess.run(
        [sys.executable, "-m", "console.cli", "kafka", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "UNREACHABLE" in result.stdout


# -- decisions out ([serve.kafka_out]) ---------------------------------------------------------

LATE_RULES = """
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 0
for = "0s"
severity = "critical"
description = "Orders past their promise"

[notify.route]
receiver = "console"
group_by = ["alertname"]
group_wait = "0s"
group_interval = "0s"
"""


async def topic_records(
    broker: Broker, topic: str, enough: Callable[[list[Any]], bool], timeout: float = 20.0
) -> list[Any]:
    """Every record of ``topic`` (one partition) once ``enough`` of them are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not enough(seen):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{topic}: only {[(r.key, r.value) for r in seen]}")
            batch = await consumer.getmany(tp, timeout_ms=200)
            seen.extend(batch.get(tp, []))
        return seen
    finally:
        await consumer.stop()


def keys(records: list[Any]) -> set[str]:
    return {r.key.decode() for r in records}


def gauge(text: str, name: str, stream: str) -> float:
    prefix = f'{name}{{stream="{stream}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"no {prefix!r} in /metrics")


async def test_decisions_and_notifications_go_out_keyed_and_survive_a_broker_pause(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    from feeds.kafka.publish import KafkaPublisher
    from feeds.runtime.alerting import RulesRuntime, alert_loop
    from store.clock import FixedClock
    from store.risk import MetricParams
    from tests.builders import T0, at, location, order, sku, snapshot, step

    decisions, alerts = unique("decisions"), unique("alerts")
    await kafka_broker.create_topic(decisions, 1)
    await kafka_broker.create_topic(alerts, 1)
    config = ServeConfig(
        db=tmp_path / "out.db",
        port=0,
        events_token="t0ken",
        kafka_out={
            "bootstrap_servers": kafka_broker.bootstrap,
            "decisions_topic": decisions,
            "alerts_topic": alerts,
            "retry_initial_seconds": 0.2,
            "retry_max_seconds": 0.5,
            "send_timeout_seconds": 1.0,
        },
    )
    assert config.kafka_out is not None
    publisher = KafkaPublisher(config.kafka_out)
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(LATE_RULES, encoding="utf-8")
    runtime = RulesRuntime(rules_path)

    async def alerting(writer: Any) -> None:
        params = MetricParams(timezone="America/New_York")
        await alert_loop(writer.path, runtime, FixedClock(T0), params, 0.1, taps=publisher.taps)

    async def post(*events: Any) -> None:
        body = "\n".join(e.model_dump_json() for e in events)
        headers = {"Authorization": "Bearer t0ken"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{server.url}/events", data=body, headers=headers) as resp,
        ):
            assert resp.status == 200, await resp.text()

    async def metrics_text() -> str:
        async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as resp:
            return await resp.text()

    async with Server(config, publisher=publisher, background=[alerting]) as server:
        await post(
            sku("A"),
            location("WH1", kind="warehouse"),
            snapshot("A", "WH1", 50, at(-5)),
            order("web-1", at(-1), [("A", 1)], loc=None),
            order("web-2", at(-1), [("A", 2)], loc=None),
            order("late", at(-3), [("A", 1)], promised=at(-1)),
        )
        out = await topic_records(kafka_broker, decisions, lambda r: keys(r) >= {"web-1", "web-2"})
        for record in out:
            assert json.loads(record.value)["order_id"] == record.key.decode()

        def fired_alert() -> str | None:
            conn = sqlite3.connect(config.db)
            try:  # the alert loop evaluates every 0.1 s: it may not have fired yet
                row = conn.execute("SELECT fingerprint FROM alerts").fetchone()
            finally:
                conn.close()
            return None if row is None else str(row[0])

        fingerprint = await until(fired_alert, "the late-orders alert fired")
        fired = await topic_records(kafka_broker, alerts, lambda r: fingerprint in keys(r))
        assert keys(fired) == {fingerprint}
        assert json.loads(fired[0].value)["alert"]["status"] == "firing"

        kafka_broker.pause()
        try:
            # Committed while the cluster is unreachable: a new decision, and the late
            # order shipped (its alert resolves): both wait and are retried.
            await post(order("web-3", at(0), [("A", 1)], loc=None), step("late", "shipped", at(0)))

            async def failing() -> bool:
                text = await metrics_text()
                return all(
                    gauge(text, "omniops_kafka_out_failed_attempts", s) >= 1
                    and gauge(text, "omniops_kafka_out_pending", s) >= 1
                    for s in ("decisions", "alerts")
                )

            await until(failing, "both streams retrying while the broker is paused")
        finally:
            kafka_broker.resume()
        out = await topic_records(kafka_broker, decisions, lambda r: "web-3" in keys(r))
        resolved = await topic_records(
            kafka_broker,
            alerts,
            lambda r: any(json.loads(x.value)["alert"]["status"] == "resolved" for x in r),
        )
        assert keys(resolved) == {fingerprint}

        async def delivered() -> bool:
            text = await metrics_text()
            return (
                gauge(text, "omniops_kafka_out_pending", "decisions") == 0
                and gauge(text, "omniops_kafka_out_delivered", "decisions") >= 3
                and gauge(text, "omniops_kafka_out_delivered", "alerts") >= 2
                and gauge(text, "omniops_kafka_out_pending", "alerts") == 0
            )

        await until(delivered, "the counters to show the deliveries")
    await runtime.stop()
    conn = sqlite3.connect(config.db)
    stored = dict(conn.execute("SELECT receiver, delivered FROM receiver_status").fetchall())
    conn.close()
    assert stored["kafka_out"] >= 2


# -- a lagging feed is stale for the alerts ------------------------------------------------------


async def test_a_lagging_feed_makes_its_sources_stale_so_their_alerts_are_inhibited(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    from feeds.kafka.config import KafkaSubscription
    from feeds.kafka.consumer import KafkaFeed
    from feeds.kafka.staleness import lagging_sources
    from rules.engine import AlertEngine
    from store import alerts as alert_store
    from store.clock import FixedClock
    from tests.builders import at, order
    from tests.snapshot_factory import AS_OF
    from tests.test_alerts import BASE, FakeNotifier, rule, rules_file

    topic = unique("lag")
    await kafka_broker.create_topic(topic, 1)
    web = [order(f"w{n}", at(-1), [("A", 1)], channel="web").model_dump_json() for n in range(30)]
    await kafka_broker.produce(topic, [(None, line.encode(), []) for line in web])
    sub = KafkaSubscription(
        name="orders",
        bootstrap_servers=kafka_broker.bootstrap,
        topics=[topic],
        group_id=unique("group"),
        session_timeout_ms=2000,
        lag_every_seconds=0.2,
        stale_lag=5,
    )
    feed = KafkaFeed(sub, max_records=1)  # one record per poll: the lag is measured early
    adjust = lagging_sources([feed])
    assert adjust is not None
    lagged: dict[str, Any] = {}
    got = 0

    async def consume() -> None:
        nonlocal got
        async for _item in feed.items():
            got += 1
            await feed.durable(feed.cursor)  # what the pump does once the item is stored
            if got == 2:  # the first poll (1 of 30 records) has been measured
                lagged.update(state=feed.health.state.value, snapshots=adjust(BASE))

    task = asyncio.create_task(consume())
    try:
        await until(lambda: lagged, "two records consumed")
        assert lagged["state"] == "stale"
        await until(lambda: got == 30 and feed.lagging is None, "caught up: not stale any more")
        assert adjust(BASE) is BASE
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stale = {f.feed for f in lagged["snapshots"].headline.feeds if f.stale}
    assert stale == {"web", "marketplace", "kafka:orders"}  # marketplace is stale in BASE
    # The stock inhibition: a stale source mutes its channel's AOV alert.
    engine = AlertEngine(
        rules_file(
            rule(
                id="stale_feed",
                metric="feed.stale",
                matchers="",
                op=">=",
                threshold=1,
                clear=None,
                **{"for": "0s"},
            ),
            rule(
                id="aov_drop",
                metric="headline.aov_vs_rolling",
                matchers="",
                op="<",
                threshold=10,
                clear=None,
                **{"for": "0s"},
            ),
            inhibit=[
                {
                    "source_matchers": "alertname=stale_feed",
                    "target_matchers": "alertname=aov_drop",
                    "equal": ["channel"],
                }
            ],
        ),
        lambda: alert_store.connect(tmp_path / "alerts.db", create=True),
        FixedClock(AS_OF),
        notifier := FakeNotifier(),
        user="ops-bot",
    )
    engine.evaluate(lagged["snapshots"])
    firing = {(a.labels["alertname"], a.labels.get("channel")) for a in notifier.calls[-1][0]}
    assert ("stale_feed", "web") in firing and ("stale_feed", "kafka:orders") in firing
    assert ("aov_drop", "web") not in firing and ("aov_drop", "pos") in firing
    engine.close()


# -- scope, and a broker that is not there yet -------------------------------------------------


def kafka_config(
    db: Path, bootstrap: str, topic: str, *, mapping_file: Path | None = None, **extra: Any
) -> ServeConfig:
    return ServeConfig(
        db=db,
        port=0,
        **({} if mapping_file is None else {"mapping_file": mapping_file}),
        kafka=[
            {
                "name": "events",
                "bootstrap_servers": bootstrap,
                "topics": [topic],
                "group_id": unique("group"),
                "session_timeout_ms": 2000,
                "lag_every_seconds": 0.2,
                "probe_timeout_seconds": 1.0,
                "max_backoff_seconds": 0.5,
                **extra,
            }
        ],
    )


SCOPE = {"WH-NJ", "ST-NYC"}


def in_scope(line: str) -> bool:
    """The scope's rule, written out: at a listed node, or naming none (not a node-less order)."""
    event = json.loads(line)
    location = event["body"].get("location_id")
    if location is None:
        return bool(event["type"] != "order.placed")
    return location in SCOPE


async def test_a_location_scope_keeps_only_its_nodes_and_what_names_none(
    kafka_broker: Broker, tmp_path: Path
) -> None:
    lines = fixture_events(30)
    kept = [line for line in lines if in_scope(line)]
    assert 0 < len(kept) < len(lines)
    topic = unique("scope")
    await kafka_broker.create_topic(topic, 4)
    await kafka_broker.produce(topic, records(lines))
    db = tmp_path / "scope.db"
    config = kafka_config(db, kafka_broker.bootstrap, topic, locations=sorted(SCOPE))
    async with Server(config) as server:
        feed = server.feeds[0]
        await until(
            lambda: (
                stored_ids(db) >= {json.loads(x)["id"] for x in kept}
                and getattr(feed, "filtered", 0) == len(lines) - len(kept)
            ),
            "the scope's events stored, the others filtered",
        )
    assert stored_ids(db) == {json.loads(x)["id"] for x in kept}
    assert dump(db) == dump(await ingest_store(tmp_path, kept))


async def test_serve_started_before_the_broker_retries_until_it_is_there(tmp_path: Path) -> None:
    broker = Broker(log=tmp_path / "late-tansu.log")
    topic = unique("late")
    lines = fixture_events(5)
    db = tmp_path / "late.db"
    try:
        async with Server(kafka_config(db, broker.bootstrap, topic)) as server:
            monitor = server.state.monitors["kafka:events"] if server.state else None
            assert monitor is not None
            await until(lambda: monitor.health.state.value == "retrying", "retrying, no broker")
            async with aiohttp.ClientSession() as http, http.get(f"{server.url}/health") as resp:
                body = await resp.json()
            assert body["status"] == "degraded"
            assert "retrying in" in body["feeds"]["kafka:events"]["detail"]
            broker.start()
            await broker.create_topic(topic, 2)
            await broker.produce(topic, records(lines))
            ids = {json.loads(x)["id"] for x in lines}
            await until(lambda: stored_ids(db) >= ids, "every event once the broker is up")
            await until(lambda: monitor.health.state.value == "connected", "connected")
    finally:
        broker.stop()


async def test_kafka_out_gives_up_after_max_attempts_and_counts_it(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from feeds.kafka.config import KafkaOut
    from feeds.kafka.publish import KafkaPublisher
    from feeds.runtime.routing import router_hook
    from rules.receivers import Notification, NotifyAlert
    from store.writer import StoreWriter
    from tests.builders import at, location, order, sku, snapshot

    nobody = Broker()  # a free port nothing listens on: every send is refused
    publisher = KafkaPublisher(
        KafkaOut(
            bootstrap_servers=nobody.bootstrap,
            max_attempts=2,
            retry_initial_seconds=0.05,
            send_timeout_seconds=1.0,
        )
    )
    assert publisher.decisions is not None and publisher.alerts is not None
    await publisher.start()
    try:
        async with StoreWriter(tmp_path / "s.db", after_commit=publisher.wrap(router_hook())) as w:
            await w.write(
                [
                    sku("A"),
                    location("WH1", kind="warehouse"),
                    snapshot("A", "WH1", 9, at(-1)),
                    order("o1", at(0), [("A", 1)], loc=None),
                    order("o2", at(0), [("A", 1)], loc=None),
                ]
            )
        now = datetime.now(UTC)
        alert = NotifyAlert(
            "fp", "firing", "firing", {"alertname": "x"}, "d", "s", 1.0, 0, ">", now
        )
        publisher.alerts.enqueue(Notification("kafka_out", "g", {}, (alert,), now))
        await asyncio.wait_for(publisher.decisions.wait_idle(), 20)
        await asyncio.wait_for(publisher.alerts.wait_idle(), 20)
    finally:
        await publisher.stop()
    gauges = {(name, labels["stream"]): value for name, _, labels, value in publisher.gauges()}
    assert gauges[("omniops_kafka_out_failed_attempts", "decisions")] == 2
    assert gauges[("omniops_kafka_out_dropped", "decisions")] == 2  # o1 and o2
    assert gauges[("omniops_kafka_out_delivered", "decisions")] == 0
    assert gauges[("omniops_kafka_out_failed_attempts", "alerts")] == 2
    assert gauges[("omniops_kafka_out_dropped", "alerts")] == 1
    assert "gave up after 2 attempts" in (publisher.alerts.stats.last_error or "")


async def test_a_record_that_cannot_be_mapped_is_held_and_replayed_after_the_mapping(
    kafka_broker: Broker, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main
    from store import model

    # ``quarantine replay`` sets the process's time window from serve's: put it back after.
    monkeypatch.setattr(model, "_window", model.time_window())

    topic = unique("shop")
    await kafka_broker.create_topic(topic, 1)
    level = ROOT / "fixtures" / "payloads" / "shopify" / "rest-2024-04_inventory_level.json"
    value = level.read_bytes()
    headers = [("channel", b"shopify"), ("X-Shopify-Topic", b"inventory_levels/update")]
    # The same record twice: a producer's retry, at a new offset.
    placed = await kafka_broker.produce(topic, [(b"k", value, headers), (b"k", value, headers)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[shopify.locations]\n"655441491" = "WH-NJ"\n', encoding="utf-8")
    db = tmp_path / "shop.db"
    config = kafka_config(
        db, kafka_broker.bootstrap, topic, mapping_file=mapping, name="shop", format="channel"
    )
    async with Server(config) as server:
        assert server.state is not None
        monitor = server.state.monitors["kafka:shop"]
        await until(lambda: monitor.health.quarantined >= 2, "2 records quarantined")
        await until(
            lambda: (
                monitor.health.partitions.get(f"{topic}/0")
                and monitor.health.partitions[f"{topic}/0"].committed == 2
            ),
            "every offset committed, the quarantined records' too",
        )
    conn = sqlite3.connect(db)
    held = conn.execute("SELECT source, state, reason, deliveries, raw FROM held").fetchall()
    conn.close()
    assert len(held) == 1  # the retry counted on the same row
    source, state, reason, deliveries, raw = held[0]
    assert (source, state, deliveries) == ("kafka", "held", 2)
    assert f"kafka {topic}/0@{placed[0][1]}" in reason
    assert "unmapped Shopify inventory_item_id 808950810" in reason
    assert json.loads(raw)["inventory_item_id"] == 808950810
    assert await asyncio.to_thread(main, ["quarantine", "list", "--db", str(db)]) == 0
    assert "808950810" in capsys.readouterr().out
    assert (
        await asyncio.to_thread(
            main, ["quarantine", "replay", "--db", str(db), "--mapping", str(mapping)]
        )
        == 1
    )
    capsys.readouterr()
    mapping.write_text(
        '[shopify.locations]\n"655441491" = "WH-NJ"\n'
        '[shopify.inventory_items]\n"808950810" = "IPOD2008GREEN"\n',
        encoding="utf-8",
    )
    assert (
        await asyncio.to_thread(
            main, ["quarantine", "replay", "--db", str(db), "--mapping", str(mapping)]
        )
        == 0
    )
    assert "1 held: 1 placed, 0 still held; events 1 applied" in capsys.readouterr().out
    assert (
        await asyncio.to_thread(
            main, ["quarantine", "replay", "--db", str(db), "--mapping", str(mapping)]
        )
        == 0
    )
    assert "nothing to replay" in capsys.readouterr().out
    conn = sqlite3.connect(db)
    try:
        stock = conn.execute("SELECT sku, location_id, on_hand FROM stock").fetchall()
        assert ("IPOD2008GREEN", "WH-NJ", 42) in stock
        assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (0,)
        assert conn.execute("SELECT state FROM held").fetchall() == [("placed",)]
    finally:
        conn.close()


async def test_a_record_stored_with_an_unmapped_location_is_held_then_placed_at_its_node(
    kafka_broker: Broker, tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    """A Shopify order whose location has no mapping is stored without a node and held
    with its record; once the mapping knows the location, ``replay`` replaces it."""
    from console.cli import main
    from store import model

    monkeypatch.setattr(model, "_window", model.time_window())
    # The sample order is from 2008: serve and replay both take it with a wider window.
    monkeypatch.setenv("OMNIOPS_MAX_PAST_DAYS", "36500")
    topic = unique("orders")
    await kafka_broker.create_topic(topic, 1)
    order = ROOT / "fixtures" / "payloads" / "shopify" / "rest-2024-04_order.json"
    headers = [("channel", b"shopify"), ("X-Shopify-Topic", b"orders/create")]
    placed = await kafka_broker.produce(topic, [(b"k", order.read_bytes(), headers)])
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[shopify]\nchannel = "webshop"\n', encoding="utf-8")
    db = tmp_path / "shop.db"
    config = kafka_config(
        db, kafka_broker.bootstrap, topic, mapping_file=mapping, name="shop", format="channel"
    ).model_copy(update={"max_past_days": 36500.0})
    async with Server(config) as server:
        assert server.state is not None
        monitor = server.state.monitors["kafka:shop"]
        await until(
            lambda: (
                monitor.health.partitions.get(f"{topic}/0")
                and monitor.health.partitions[f"{topic}/0"].committed == 1
            ),
            "the record's offset committed",
        )
        await until(lambda: bool(rows_of(db, "SELECT id FROM held")), "the record held")
    assert rows_of(db, "SELECT location_id FROM orders") == [(None,)]  # stored, no node
    ((source, state, reason, unmapped, raw),) = rows_of(
        db, "SELECT source, state, reason, unmapped, raw FROM held"
    )
    assert (source, state) == ("kafka", "held")
    assert reason == (
        f"kafka {topic}/0@{placed[0][1]}: stored with unmapped Shopify location_id 655441491"
    )
    assert json.loads(unmapped) == [["location_id", "655441491"]]
    assert json.loads(raw)["id"] == 450789469  # the record itself, redacted
    assert "bob.norman@mail.example.com" not in raw
    # counted under Shopify, so `mapping suggest` stubs it in [shopify.locations]
    assert rows_of(db, "SELECT adapter, kind, external_id FROM unmapped_ids") == [
        ("shopify", "location_id", "655441491")
    ]
    assert await asyncio.to_thread(main, ["mapping", "suggest", "--db", str(db)]) == 0
    assert '[shopify.locations]\n"655441491" = ""' in capsys.readouterr().out
    replay = ["quarantine", "replay", "--db", str(db), "--mapping", str(mapping)]
    assert await asyncio.to_thread(main, replay) == 1  # still unmapped: still held
    assert "stored with unmapped Shopify location_id 655441491" in capsys.readouterr().out
    mapping.write_text('[shopify.locations]\n"655441491" = "WH-NJ"\n', encoding="utf-8")
    assert await asyncio.to_thread(main, replay) == 0
    out = capsys.readouterr().out
    assert "1 held: 1 placed, 0 still held" in out and "1 replaced a node-less version" in out
    assert rows_of(db, "SELECT location_id FROM orders") == [("WH-NJ",)]
    assert rows_of(db, "SELECT state FROM held") == [("placed",)]
    assert rows_of(db, "SELECT COUNT(*) FROM unmapped_ids") == [(0,)]
    # the order's units are counted once, at its node (the unassigned bucket is back to 0)
    units = rows_of(
        db, "SELECT location_id, SUM(units) FROM sales_hourly GROUP BY 1 HAVING SUM(units) != 0"
    )
    lines = json.loads(order.read_bytes())["line_items"]
    assert units == [("WH-NJ", sum(line["quantity"] for line in lines))]


def rows_of(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_hold_record_holds_hard_unmapped_ids_and_only_notes_soft_ones() -> None:
    """Without a broker: what the consumer keeps of a record that mapped with unknown ids."""
    from feeds.kafka.formats import Record, decode_now
    from feeds.kafka.held import SOFT_IDS, hold_record
    from feeds.runtime import quarantine

    assert SOFT_IDS == quarantine.SOFT_IDS  # one rule, written twice (no import cycle)

    payloads = ROOT / "fixtures" / "payloads"
    cases = [
        # a Shopify order whose location is unmapped: stored without a node, held
        ("shopify", "orders/create", payloads / "shopify" / "rest-2024-04_order.json", True),
        # an Amazon MFN order: only its SellerSKU is unknown (it maps to itself): noted
        ("amazon", "", payloads / "amazon" / "ORDER_CHANGE.json", False),
    ]
    mapping = parse_mapping('[amazon]\nmfn_location = "WH-NJ"\n')
    for channel, shopify_topic, path, hold in cases:
        headers = [("channel", channel.encode())]
        if shopify_topic:
            headers.append(("X-Shopify-Topic", shopify_topic.encode()))
        record = Record("t", 0, 7, path.read_bytes(), tuple(headers))
        unmapped: list[tuple[str, str]] = []
        items = decode_now(record, "channel", feed="f", mapping=mapping, unmapped=unmapped)
        assert items and unmapped, (channel, items)
        kept = hold_record(record, "channel", items, feed="f", unmapped=unmapped)
        assert kept is not None and kept.hold is hold and kept.adapter == channel
        assert kept.unmapped == tuple(unmapped)
        # nothing unmapped, nothing quarantined: nothing to keep
        assert hold_record(record, "channel", items, feed="f") is None


async def test_a_square_fulfillment_record_reads_its_states_by_the_orders_method() -> None:
    """Without a broker: the consumer's decode asks the store how the order was placed."""
    from feeds.kafka.formats import Record, decode

    update = json.loads(
        (ROOT / "fixtures/payloads/square/order.fulfillment.updated.json").read_text()
    )
    update["data"]["object"]["order_fulfillment_updated"]["fulfillment_update"][0]["new_state"] = (
        "COMPLETED"
    )
    record = Record("t", 0, 3, json.dumps(update).encode(), (("channel", b"square"),))
    square_id = update["data"]["object"]["order_fulfillment_updated"]["order_id"]
    asked: list[str] = []

    async def shipped(order_id: str) -> Any:
        asked.append(order_id)
        return "ship"

    mapping = parse_mapping("[square]\n")
    items = await decode(record, "channel", feed="f", mapping=mapping, order_method=shipped)
    assert asked == [f"square-{square_id}"]
    assert [i.body.status for i in items] == ["shipped"]  # type: ignore[union-attr]
    # No store to ask (or the order not placed yet): square.fulfillment ("pickup").
    items = await decode(record, "channel", feed="f", mapping=mapping)
    assert [i.body.status for i in items] == ["picked_up"]  # type: ignore[union-attr]
