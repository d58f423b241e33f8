"""Held items of the bulk ingress paths: ``omniops ingest`` (and the drop folder).

Real files, a real SQLite store through :class:`store.writer.StoreWriter`, and the real
commands (``omniops quarantine list | replay`` through :func:`console.cli.main`): a bad
item is quarantined and held with its reason, listed, placed by a replay once its cause
is fixed, and a second replay changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from feeds.runtime.ingest import ingest_paths
from store.model import TimeWindow, set_time_window
from tests.builders import at, order, rows


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


async def test_drop_folder_rows_that_failed_are_held_and_replayed(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main
    from feeds.dropfolder import DropFolder
    from store import model
    from store.writer import StoreWriter

    monkeypatch.setattr(model, "_window", model.time_window())  # the CLI sets it
    folder = tmp_path / "drop"
    folder.mkdir()
    old = at(-24 * 400).isoformat()
    new = at(-1).isoformat()
    counts = (
        "sku,location_id,on_hand,reserved,counted_at\n"
        f"APP-1,S-BKN,12,1,{new}\n"
        f"APP-2,S-BKN,4,,{old}\n"
        f"APP-3,S-BKN,x,,{new}\n"
    )
    pos = (
        "order_id,placed_at,store_id,region,sku,quantity,unit_price\n"
        f"P-1,{old},S-BKN,NE,APP-1,2,19.99\n"
        f"P-1,{old},S-BKN,NE,APP-2,1,5.00\n"
    )
    line = order("j1", at(-24 * 400), [("A", 1)]).model_dump_json()
    files = {"count.csv": counts, "pos.csv": pos, "events.jsonl": line + "\n"}
    db = tmp_path / "s.db"
    set_time_window(TimeWindow(past=timedelta(days=30)))
    async with StoreWriter(db, batch_wait=0.002) as writer:
        drops = DropFolder(folder, writer)
        for _ in range(2):  # the same files dropped twice: counted on the same rows
            for name, text in files.items():
                (folder / name).write_text(text, encoding="utf-8")
                report = await drops.process(folder / name)
                assert report.moved_to is not None and report.moved_to.parent.name == "failed"
    held = rows(db, "SELECT source, delivery_id, deliveries, reason FROM held ORDER BY id")
    assert [(s, d, n) for s, d, n, _ in held] == [
        ("dropfolder", "count.csv:3", 2),
        ("dropfolder", "count.csv:4", 2),
        ("dropfolder", "pos.csv: order P-1", 2),
        ("dropfolder", "events.jsonl:1", 2),
    ]
    assert "count.csv:3: " in held[0][3] and "on_hand" in held[1][3]
    assert "pos.csv:2: " in held[2][3] and "pos.csv:3: order 'P-1' held back" in held[2][3]
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(10,)]

    def cli(*args: str) -> tuple[int, str]:
        code = main([*args, "--db", str(db)])
        return code, capsys.readouterr().out

    capsys.readouterr()
    code, out = await asyncio.to_thread(cli, "quarantine", "list")
    assert code == 0 and "count.csv:3" in out and "order 'P-1'" in out
    monkeypatch.setenv("OMNIOPS_SERVE__MAX_PAST_DAYS", "30")
    code, out = await asyncio.to_thread(cli, "quarantine", "replay")
    assert code == 1 and "4 held: 0 placed, 4 still held" in out
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(5,)]  # each part once
    monkeypatch.delenv("OMNIOPS_SERVE__MAX_PAST_DAYS")  # the window, widened
    code, out = await asyncio.to_thread(cli, "quarantine", "replay")
    assert code == 1 and "4 held: 3 placed, 1 still held; events 4 applied" in out
    code, out = await asyncio.to_thread(cli, "quarantine", "replay")
    assert code == 1 and "1 held: 0 placed, 1 still held; events 0 applied" in out
    assert rows(db, "SELECT sku, on_hand FROM stock ORDER BY sku") == [("APP-1", 12), ("APP-2", 4)]
    assert rows(db, "SELECT order_id, location_id FROM orders ORDER BY 1") == [
        ("P-1", "S-BKN"),
        ("j1", "WH1"),
    ]
    assert rows(db, "SELECT COUNT(*) FROM order_lines WHERE order_id = 'P-1'") == [(2,)]
    ((error,),) = rows(db, "SELECT error FROM quarantine")
    assert error.startswith("count.csv:4: on_hand")


async def test_a_bulk_keep_links_every_quarantine_row_and_can_keep_only_the_linked(
    tmp_path: Path,
) -> None:
    """More quarantined lines than the webhook linking window, and a load that ended early."""
    from feeds.runtime.ingest import hold_line
    from feeds.runtime.quarantine import replay
    from feeds.webhooks.mapping import Mapping
    from store.held import LINK_WINDOW, quarantine_mark, record_held_many
    from store.model import Quarantined
    from store.writer import StoreWriter

    n = LINK_WINDOW + 200
    bad = [
        Quarantined(source="f", raw=f'{{"n": {i}}}', error=f"f.jsonl:{i}: id: missing")
        for i in range(n)
    ]
    held = [hold_line(q, q.raw, feed="f", where=f"f.jsonl:{i}") for i, q in enumerate(bad)]
    db = tmp_path / "s.db"
    async with StoreWriter(db) as writer:
        mark = await writer.run(quarantine_mark)
        await writer.write(bad)
        kept = await writer.run(lambda conn: record_held_many(conn, held, 0, after=mark))
        assert len(kept) == n
        unwritten = Quarantined(source="f", raw="{}", error="f.jsonl:9999: read, not written")
        ended = [hold_line(unwritten, "{}", feed="f", where="f.jsonl:9999")]
        none = await writer.run(
            lambda conn: record_held_many(conn, ended, 0, after=mark, linked_only=True)
        )
        assert none == []
        await replay(writer, Mapping())  # still invalid: each row's quarantine row replaced
    assert rows(db, "SELECT COUNT(*) FROM held") == [(n,)]
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(n,)]
