"""Held items of the bulk ingress paths: ``omniops ingest`` (and the drop folder).

Real files, a real SQLite store through :class:`store.writer.StoreWriter`, and the real
commands (``omniops quarantine list | replay`` through :func:`console.cli.main`): a bad
item is quarantined and held with its reason, listed, placed by a replay once its cause
is fixed, and a second replay changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from feeds.runtime.ingest import ingest_paths
from store.model import TimeWindow, set_time_window
from tests.builders import at, order


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_an_ingested_line_that_failed_is_held_and_replayed(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main

    folder = tmp_path / "feed"
    folder.mkdir()
    old = order("old", at(-24 * 400), [("A", 1)]).model_dump_json()  # outside the window
    good = order("new", at(-1), [("A", 1)]).model_dump_json()
    (folder / "webshop.jsonl").write_text(f"{good}\n{old}\n{{not json\n", encoding="utf-8")
    db = tmp_path / "s.db"
    previous = set_time_window(TimeWindow(past=timedelta(days=30)))
    try:
        assert asyncio.run(ingest_paths([folder], db)) == {
            "applied": 1,
            "duplicate": 0,
            "quarantined": 2,
        }
        again = asyncio.run(ingest_paths([folder], db))  # counted again, one row each
        assert again == {"applied": 0, "duplicate": 1, "quarantined": 2}
        held = rows(db, "SELECT source, topic, delivery_id, state, reason, deliveries FROM held")
        assert [(s, t, d, st, n) for s, t, d, st, _, n in held] == [
            ("ingest", "webshop", "webshop.jsonl:2", "held", 2),
            ("ingest", "webshop", "webshop.jsonl:3", "held", 2),
        ]
        assert "webshop.jsonl:2" in held[0][4]
        assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(4,)]
        capsys.readouterr()
        assert main(["quarantine", "list", "--db", str(db)]) == 0
        listed = capsys.readouterr().out
        assert "webshop.jsonl:2" in listed and "webshop.jsonl:3" in listed
        assert main(["quarantine", "list", "--db", str(db), "--json"]) == 0
        entries = json.loads(capsys.readouterr().out)
        assert {e["source"] for e in entries} == {"ingest"}
        # Still outside the window: a replay keeps both, and their quarantine rows once.
        monkeypatch.setenv("OMNIOPS_SERVE__MAX_PAST_DAYS", "30")
        assert main(["quarantine", "replay", "--db", str(db)]) == 1
        assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(2,)]
        monkeypatch.delenv("OMNIOPS_SERVE__MAX_PAST_DAYS")  # the cause, fixed (10 years)
        capsys.readouterr()
        assert main(["quarantine", "replay", "--db", str(db)]) == 1  # {not json stays
        out = capsys.readouterr().out
        assert "2 held: 1 placed, 1 still held; events 1 applied" in out
        assert main(["quarantine", "replay", "--db", str(db)]) == 1
        out = capsys.readouterr().out
        assert "1 held: 0 placed, 1 still held; events 0 applied" in out
    finally:
        set_time_window(previous)
    assert rows(db, "SELECT order_id FROM orders ORDER BY 1") == [("new",), ("old",)]
    assert rows(db, "SELECT state FROM held ORDER BY id") == [("placed",), ("held",)]
    (error,) = rows(db, "SELECT error FROM quarantine")
    assert "webshop.jsonl:3" in error[0]


async def test_kafka_debezium_and_canonical_records_are_held_and_replayed(tmp_path: Path) -> None:
    """The Kafka feed's hold path on a real store, for the formats without a broker test."""
    from feeds.kafka.consumer import store_holder
    from feeds.kafka.formats import Record, decode
    from feeds.kafka.held import hold_record
    from feeds.runtime.quarantine import replay
    from feeds.webhooks.mapping import Mapping, parse_mapping
    from store.writer import StoreWriter
    from tests.test_kafka import DEBEZIUM, MAGENTO

    change = (DEBEZIUM / "magento_stock_item_update.json").read_bytes()
    old = order("old", at(-24 * 400), [("A", 1)]).model_dump_json()
    good = order("new", at(-1), [("A", 1)]).model_dump_json()
    cases = [
        ("debezium", Record("cdc", 0, 7, change)),
        ("canonical", Record("events", 2, 40, f"{good}\n{old}\n".encode())),
    ]
    db = tmp_path / "s.db"
    previous = set_time_window(TimeWindow(past=timedelta(days=30)))
    try:
        async with StoreWriter(db) as writer:
            keep = store_holder(writer)
            for fmt, record in cases * 2:  # each record delivered twice
                items = await decode(record, fmt, feed="kafka:x", mapping=Mapping())  # type: ignore[arg-type]
                await writer.write(items)
                kept = hold_record(record, fmt, items, feed="kafka:x")  # type: ignore[arg-type]
                assert kept is not None
                await keep([kept])
            held = rows(db, "SELECT source, reason, deliveries FROM held ORDER BY id")
            assert [(s, n) for s, _, n in held] == [("kafka", 2), ("kafka", 2)]
            assert held[0][1].startswith("kafka cdc/0@7: ")
            assert held[1][1].startswith("kafka events/2@40 line 2: ")
            still = await replay(writer, Mapping())
            assert (still.placed, still.still_held) == (0, 2)
            set_time_window(TimeWindow(past=timedelta(days=3650)))
            done = await replay(writer, parse_mapping(MAGENTO))
            again = await replay(writer, parse_mapping(MAGENTO))
    finally:
        set_time_window(previous)
    assert (done.placed, done.applied, done.duplicates) == (2, 2, 1)  # "new" was stored
    assert again.held == 0
    assert rows(db, "SELECT order_id FROM orders ORDER BY 1") == [("new",), ("old",)]
    assert rows(db, "SELECT on_hand FROM stock") == [(7,)]
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]
