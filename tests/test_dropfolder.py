"""The watched drop folder and the order-history importer, on real files and a real store."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feeds.dropfolder import DropFolder
from feeds.runtime.ingest import import_history
from store.writer import StoreWriter
from tests.builders import T0, rows, snapshot

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "fixtures" / "payloads" / "online_retail" / "online_retail_first400.csv"

POS = """order_id,placed_at,store_id,region,sku,quantity,unit_price,discount
BKN-1,2026-11-18 10:05:00,S-BKN,NE,APP-1,2,19.99,0
BKN-1,2026-11-18 10:05:00,S-BKN,NE,APP-2,1,5.00,1.00
BKN-2,2026-11-18 10:30:00,S-BKN,NE,APP-1,x,19.99,0
BKN-2,2026-11-18 10:30:00,S-BKN,NE,APP-3,1,7.50,0
BKN-3,2026-11-18T11:00:00-05:00,S-BKN,NE,APP-3,3,7.50,0
"""

COUNTS = """sku,location_id,on_hand,reserved,counted_at
APP-1,S-BKN,12,1,2026-11-18 06:00:00
APP-2,S-BKN,4,,2026-11-18 06:00:00
"""


def drop(folder: Path, name: str, text: str) -> Path:
    """Write under a temporary name, then rename: how producers must drop files."""
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text, encoding="utf-8")
    target = folder / name
    tmp.rename(target)
    return target


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[StoreWriter]:
    async with StoreWriter(tmp_path / "store.db", batch_wait=0.002) as w:
        yield w


async def test_watched_folder_processes_each_file_once(tmp_path: Path, writer: StoreWriter) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    drop(folder, "counts.csv", COUNTS)  # already there at start
    watcher = DropFolder(folder, writer, tz="America/New_York")
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop=stop))
    first = await asyncio.wait_for(watcher.processed.get(), 10)
    assert first.name == "counts.csv" and first.ok and first.kind == "stock count"
    assert (folder / "done" / "counts.csv").exists()

    drop(folder, "pos-2026-11-18.csv", POS)
    report = await asyncio.wait_for(watcher.processed.get(), 10)
    jsonl = snapshot("APP-9", "S-BKN", 3, T0).model_dump_json()
    drop(folder, "wms.jsonl", jsonl + "\n" + jsonl + "\n")
    third = await asyncio.wait_for(watcher.processed.get(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)

    # The POS file had a bad row: quarantined with file:line, the rest still stored.
    assert not report.ok and report.moved_to == folder / "failed" / "pos-2026-11-18.csv"
    reason = (folder / "failed" / "pos-2026-11-18.csv.reason.txt").read_text(encoding="utf-8")
    assert "pos-2026-11-18.csv:4: quantity: expected a whole number, got 'x'" in reason
    assert "The rest of the file was processed" in reason
    assert "4 events applied" in reason and "2 rows quarantined" in reason
    db = tmp_path / "store.db"
    await writer.close()
    assert rows(
        db,
        "SELECT order_id, channel, method, location_id, units, gross_cents,"
        " discount_cents, picked_up_ts IS NOT NULL FROM orders ORDER BY order_id",
    ) == [
        ("BKN-1", "pos", "bopis", "S-BKN", 3, 4498, 100, 1),
        ("BKN-3", "pos", "bopis", "S-BKN", 3, 2250, 0, 1),
    ]
    placed = rows(db, "SELECT placed_ts FROM orders WHERE order_id = 'BKN-1'")[0][0]
    assert placed == int(datetime(2026, 11, 18, 15, 5, tzinfo=UTC).timestamp())  # 10:05 EST
    errors = [e for (e,) in rows(db, "SELECT error FROM quarantine ORDER BY id")]
    assert errors[0] == "pos-2026-11-18.csv:4: quantity: expected a whole number, got 'x'"
    assert errors[1].startswith("pos-2026-11-18.csv:5: order 'BKN-2' held back by")
    assert rows(
        db, "SELECT sku, on_hand, reserved FROM stock WHERE location_id = 'S-BKN' ORDER BY sku"
    ) == [("APP-1", 12, 1), ("APP-2", 4, 0), ("APP-9", 3, 0)]
    assert third.ok and third.outcomes == {"applied": 1, "duplicate": 1, "quarantined": 0}
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == []


async def test_unreadable_file_goes_to_failed_with_nothing_stored(
    tmp_path: Path, writer: StoreWriter
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    watcher = DropFolder(folder, writer)
    path = drop(folder, "mystery.csv", "a,b,c\n1,2,3\n")
    report = await watcher.process(path)
    assert report.error is not None and "unknown CSV columns a, b, c" in report.error
    reason = (folder / "failed" / "mystery.csv.reason.txt").read_text(encoding="utf-8")
    assert "nothing was stored" in reason
    (folder / "latin1.csv").write_bytes(
        "sku,location_id,on_hand,counted_at\nÄ,1,2,3\n".encode("latin-1")
    )
    report = await watcher.process(folder / "latin1.csv")
    assert report.error is not None and "not UTF-8" in report.error
    await writer.close()
    assert rows(tmp_path / "store.db", "SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_import_history_of_online_retail_sample(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    report = await import_history(RETAIL, db, "webshop", "WH-UK", "Europe/London")
    # Hand count of the 400-row slice: 389 sale lines in 37 invoices, 8 return lines
    # (invoices C536383 and C536391), 3 non-product rows (2 POST, 1 D).
    assert (report.rows, report.orders, report.lines, report.returns) == (400, 37, 389, 8)
    assert dict(report.skipped) == {"POST": 2, "D": 1}
    assert report.quarantined == 0 and report.applied == 37 * 2 + 8
    assert rows(db, "SELECT COUNT(*), SUM(units), SUM(gross_cents) FROM orders") == [
        (37, 7314, 1504124)
    ]
    assert rows(db, "SELECT SUM(quantity), COUNT(*) FROM returns") == [(133, 8)]
    first = rows(
        db, "SELECT placed_ts, destination_region, shipped_ts FROM orders WHERE order_id = '536365'"
    )
    ts = int(datetime(2010, 12, 1, 8, 26, tzinfo=UTC).timestamp())  # GMT in December
    assert first == [(ts, "United Kingdom", ts)]
    bodies = " ".join(b for (b,) in rows(db, "SELECT body FROM event_log"))
    assert "17850" not in bodies and "HEART" not in bodies  # CustomerID, Description
    again = await import_history(RETAIL, db, "webshop", "WH-UK", "Europe/London")
    assert again.applied == 0 and again.duplicate == 37 * 2 + 8


async def test_history_bad_row_holds_back_its_invoice(tmp_path: Path) -> None:
    lines = RETAIL.read_text(encoding="utf-8").splitlines()[:10]
    assert lines[3].startswith("536365,84406B")
    lines[3] = lines[3].replace(",8,2010", ",eight,2010")
    bad = tmp_path / "history.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(bad, folder / "history.csv")
    async with StoreWriter(tmp_path / "store.db") as writer:
        report = await DropFolder(folder, writer, history_location="WH-UK").process(
            folder / "history.csv"
        )
    assert report.kind == "order history" and not report.ok
    assert report.outcomes["quarantined"] == 7  # the invoice 536365 has 7 lines
    errors = [e for (e,) in rows(tmp_path / "store.db", "SELECT error FROM quarantine")]
    assert "history.csv:4: Quantity: expected a whole number, got 'eight'" in errors
    assert rows(tmp_path / "store.db", "SELECT order_id FROM orders") == [("536366",)]
    raw = rows(tmp_path / "store.db", "SELECT raw FROM quarantine")[0][0]
    assert "CustomerID" not in raw and "17850" not in raw


HOSTILE_POS = """order_id,placed_at,store_id,region,sku,quantity,unit_price,discount
OK-1,2026-11-18 10:05:00,S-BKN,NE,APP-1,2,19.99,0
XTRA-1,2026-11-18 10:05:00,S-BKN,NE,APP-1,2,19.99,0,surprise
BIG-1,2026-11-18 10:05:00,S-BKN,NE,APP-1,2,1e999,0
OLD-1,0001-01-01T00:00:00+05:00,S-BKN,NE,APP-1,2,19.99,0
"""

HOSTILE_COUNTS = """sku,location_id,on_hand,reserved,counted_at
APP-1,S-BKN,12,1,2026-11-18 06:00:00
APP-2,S-BKN,4,0,2026-11-18 06:00:00,extra
APP-3,S-BKN,4,0,9999-12-31T23:59:59-05:00
"""


@pytest.mark.parametrize(
    ("name", "text", "good", "reasons"),
    [
        (
            "pos.csv",
            HOSTILE_POS,
            {"pos:OK-1:placed", "pos:OK-1:picked_up"},
            [
                "pos.csv:3: 1 cell(s) more than the header has columns",
                "pos.csv:4: unit_price: more than 1,000,000,000,000 is not a price",
                "pos.csv:5: placed_at: a time from 1900 to 8999",
            ],
        ),
        (
            "counts.csv",
            HOSTILE_COUNTS,
            {"wms:count:S-BKN:APP-1:20261118T110000Z"},
            [
                "counts.csv:3: 1 cell(s) more than the header has columns",
                "counts.csv:4: counted_at: a time from 1900 to 8999",
            ],
        ),
    ],
)
def test_hostile_rows_are_quarantined_by_name_and_the_rest_read(
    tmp_path: Path, name: str, text: str, good: set[str], reasons: list[str]
) -> None:
    """Extra cells, an amount past any price, a time at the calendar's edge: each once
    crashed the whole file (AttributeError, InvalidOperation, OverflowError)."""
    from feeds.dropfolder import read_dropped
    from store.model import Quarantined

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    items = read_dropped(path, tz="America/New_York")
    held = [i.error for i in items if isinstance(i, Quarantined)]
    for reason in reasons:
        assert any(h.startswith(reason) for h in held), (reason, held)
    assert len(held) == len(reasons)
    assert {i.id for i in items if not isinstance(i, Quarantined)} == good


async def test_a_reader_bug_sends_the_file_to_failed_and_the_watch_goes_on(
    tmp_path: Path, writer: StoreWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception no reader expects (a bug, like the three above once were) fails that
    file, kept whole in failed/ with the reason, and the next file is read as usual."""
    import feeds.dropfolder as dropfolder

    real = dropfolder.read_dropped

    def buggy(path: Path, **kw: object) -> object:
        if path.name == "first.csv":
            raise ArithmeticError("a reader bug")
        return real(path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dropfolder, "read_dropped", buggy)
    folder = tmp_path / "drop"
    folder.mkdir()
    watcher = DropFolder(folder, writer, tz="America/New_York")
    first = await watcher.process(drop(folder, "first.csv", COUNTS))
    assert first.error == "first.csv: could not be read (ArithmeticError: a reader bug)"
    assert (folder / "failed" / "first.csv").read_text(encoding="utf-8") == COUNTS
    assert "could not be read" in (folder / "failed" / "first.csv.reason.txt").read_text()
    second = await watcher.process(drop(folder, "second.csv", COUNTS))
    assert second.ok and (folder / "done" / "second.csv").exists()
