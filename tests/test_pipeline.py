"""The pipeline end to end: files → validation → writer → store → report, and replay."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from feeds.base import pump
from feeds.replay import ReplayFeed
from feeds.runtime.ingest import ingest_paths
from store.clock import ReplayClock
from store.model import dump_event
from store.writer import StoreWriter
from tests.builders import T0, adjust, at, location, order, ret, sku, snapshot, step

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "day"


def write_jsonl(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    data = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def dump(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every state table, sorted: two stores with the same facts dump the same."""
    conn = sqlite3.connect(db)
    tables = [
        "skus",
        "locations",
        "stock",
        "orders",
        "order_lines",
        "sales_hourly",
        "returns",
        "category_hourly",
        "category_returns_hourly",
        "sku_hourly",
        "inbound",
        "listings",
        "stock_adjustments",
    ]
    out = {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}
    conn.close()
    return out


def small_feed(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "catalog.jsonl", [dump_event(e) for e in (sku("A"), location("S1"))])
    write_jsonl(
        folder / "pos.jsonl.gz",
        [
            dump_event(order("o1", at(-1), [("A", 2)], loc="S1", channel="pos", method="bopis")),
            dump_event(order("o2", at(0.5), [("A", 1)], loc="S1", channel="pos", method="bopis")),
        ],
        gz=True,
    )
    write_jsonl(
        folder / "inventory.jsonl",
        [
            dump_event(snapshot("A", "S1", 10, at(-2))),
            dump_event(adjust("A", "S1", -2, at(-1))),
            dump_event(adjust("A", "S1", -1, at(0.5))),
        ],
    )
    write_jsonl(folder / "wms.jsonl", [dump_event(step("o1", "picked_up", at(-0.9)))])
    write_jsonl(folder / "returns.jsonl", [dump_event(ret("A", 1, at(0.6), loc="S1"))])
    return folder


async def test_ingest_reports_counts_and_quarantines_bad_lines(tmp_path: Path) -> None:
    folder = small_feed(tmp_path / "feed")
    good = json.loads(dump_event(sku("B")))
    bad_type = {**good, "id": "bad-1", "body": {**good["body"], "price": "-3"}}
    write_jsonl(folder / "extra.jsonl", [json.dumps(bad_type), "{not json", json.dumps(good)])
    db = tmp_path / "s.db"
    counts = await ingest_paths([folder], db)
    assert counts == {"applied": 10, "duplicate": 0, "quarantined": 2}
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT source, error, raw FROM quarantine ORDER BY id").fetchall()
    assert rows[0][0] == "test"  # the payload names its feed
    assert "extra.jsonl:1" in rows[0][1] and "body.price" in rows[0][1]
    assert rows[1][0] == "extra" and "extra.jsonl:2" in rows[1][1]
    assert rows[1][2] == "{not json"  # the raw line, byte for byte
    again = await ingest_paths([folder], db)
    assert again == {"applied": 0, "duplicate": 10, "quarantined": 2}


async def test_replay_delivers_history_then_follows_the_clock(tmp_path: Path) -> None:
    folder = small_feed(tmp_path / "feed")
    db = tmp_path / "s.db"
    clock = ReplayClock(T0, speed=3600 * 4)  # four simulated hours per wall second
    async with StoreWriter(db) as writer:
        await pump(ReplayFeed([folder], clock), writer)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT on_hand FROM stock").fetchone() == (7,)
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (2,)
    cursor = conn.execute("SELECT cursor FROM feed_state WHERE feed='replay'").fetchone()
    assert cursor == ("9",)


async def test_replay_is_deterministic_and_order_independent(tmp_path: Path) -> None:
    folder = small_feed(tmp_path / "feed")
    stores = []
    for n in range(2):
        db = tmp_path / f"r{n}.db"
        clock = ReplayClock(T0 + timedelta(days=1))  # everything is history: no waiting
        async with StoreWriter(db) as writer:
            await pump(ReplayFeed([folder], clock), writer)
        stores.append(dump(db))
    # and the same files ingested file by file (a different arrival order)
    db = tmp_path / "ingest.db"
    await ingest_paths(sorted(folder.iterdir(), reverse=True), db)
    stores.append(dump(db))
    assert stores[0] == stores[1] == stores[2]


def test_replay_since_and_until_split_history_from_the_day(tmp_path: Path) -> None:
    folder = small_feed(tmp_path / "feed")
    clock = ReplayClock(T0, speed=1e9)

    async def collect(**kw: object) -> list[str]:
        feed = ReplayFeed([folder], clock, **kw)  # type: ignore[arg-type]
        return [item.id async for item in feed.items()]  # type: ignore[union-attr]

    before = asyncio.run(collect(until=T0))
    after = asyncio.run(collect(since=T0))
    everything = asyncio.run(collect())
    assert len(before) == 6 and len(after) == 3
    assert before + after == everything


TAIL_LINES = 6000
"""Lines kept from the end of every fixture feed: the trading day and the hours before it."""


def fixture_tail(folder: Path) -> Path:
    """The last :data:`TAIL_LINES` of every fixture feed, gzipped, in ``folder``."""
    folder.mkdir()
    for path in sorted(FIXTURES.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as source:
            lines = source.readlines()[-TAIL_LINES:]
        with gzip.open(folder / path.name, "wt") as out:
            out.writelines(lines)
    return folder


def test_cli_ingest_twice_on_the_fixture_day_applies_nothing_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the end of the fixture day (every feed's last lines): the same CLI path, a tenth the events
    from console.cli import main

    db = tmp_path / "fixtures.db"
    day = fixture_tail(tmp_path / "day")
    monkeypatch.chdir(ROOT)

    def omniops(*args: str) -> str:
        # the command's own entry point, in this process (four interpreters cost seconds)
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    first = omniops("ingest", str(day), "--db", str(db))
    assert first.startswith("applied ") and ", quarantined 0" in first
    report_args = (
        "report",
        "--db",
        str(db),
        "--json",
        "--at",
        "2026-11-18T21:00:00Z",
        "--timezone",
        "America/New_York",
    )
    report1 = omniops(*report_args)
    second = omniops("ingest", str(day), "--db", str(db))
    applied = int(first.split()[1].rstrip(","))
    assert second == f"applied 0, duplicate {applied}, quarantined 0\n"
    report2 = json.loads(omniops(*report_args))
    data = json.loads(report1)
    # every panel and the headline are unchanged; only the store's counters saw duplicates
    assert report2.pop("counts") == {**data.pop("counts"), "duplicates": applied}
    assert report2 == data
    assert {"headline", "fulfillment", "stockout", "returns", "as_of"} <= set(data)


def test_same_seed_regenerates_the_committed_fixture_day(tmp_path: Path) -> None:
    from tests.conftest import background_result

    done = background_result("regen")  # started with the session, on the other core
    if done is not None:
        out = done[0]
    else:
        out = tmp_path / "day"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "fixtures" / "generate.py"),
                "--seed",
                "7",
                "--out",
                str(out),
                "--no-check",
            ],
            check=True,
            capture_output=True,
        )
    committed = sorted(p.name for p in FIXTURES.iterdir())
    assert sorted(p.name for p in out.iterdir()) == committed
    for name in committed:
        assert (out / name).read_bytes() == (FIXTURES / name).read_bytes(), name


def test_replay_refuses_a_file_out_of_time_order_instead_of_losing_events(tmp_path: Path) -> None:
    import pytest

    folder = tmp_path / "feed"
    folder.mkdir()
    write_jsonl(
        folder / "inventory.jsonl",
        [dump_event(snapshot("A", "S1", 5, at(2))), dump_event(adjust("A", "S1", -1, at(-1)))],
    )
    feed = ReplayFeed([folder], ReplayClock(T0, speed=1e9), since=T0)

    async def drain() -> None:
        async for _ in feed.items():
            pass

    with pytest.raises(ValueError, match=r"inventory.jsonl:2: not in time order"):
        asyncio.run(drain())


def test_cli_ingest_of_a_folder_without_event_files_fails_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from console.cli import main

    db = tmp_path / "store.db"
    assert main(["ingest", str(ROOT / "fixtures"), "--db", str(db)]) == 2  # events are in day/
    out, err = capsys.readouterr()
    assert out == ""
    assert "no event files" in err and "fixtures" in err
    assert not db.exists()
