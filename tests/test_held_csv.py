"""Order-history CSV rows that fail are held (``import-history`` and the drop folder).

Real CSV files, a real drop folder, a real SQLite store, and the real commands through
:func:`console.cli.main`: a bad row is quarantined and held with ``file:line: Column``
in its reason, the good invoices beside it are stored, the held invoice is placed once
its cause is fixed (a widened window, or an edit), and nothing is stored twice.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feeds.dropfolder import DropFolder
from store import model
from store.model import TimeWindow, set_time_window
from store.writer import StoreWriter
from tests.builders import rows

ROOT = Path(__file__).resolve().parent.parent
RETAIL = ROOT / "fixtures" / "payloads" / "online_retail" / "online_retail_first400.csv"
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


@pytest.fixture(autouse=True)
def _window(monkeypatch: Any) -> None:
    """The quarantine commands set the process's window: put it back after each test."""
    monkeypatch.setattr(model, "_window", model.time_window())


def history(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join([HEADER, *lines]) + "\n", encoding="utf-8")
    return path


BAD_FILE = [
    # invoice 1001: a sale whose second row's date no format reads (line 3)
    "1001,85123A,HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom",
    "1001,71053,LANTERN,2,2010-13-45 08:26,3.39,17850.0,United Kingdom",
    # invoice 1002: fine
    "1002,22633,HAND WARMER,6,2010-12-01 08:28:00,1.85,17850.0,United Kingdom",
    # cancellation C1003: two returns of one SKU, the first with a bad quantity (line 5)
    "C1003,22632,HAND WARMER,-one,2010-12-01 09:00:00,1.85,17850.0,United Kingdom",
    "C1003,22632,HAND WARMER,-2,2010-12-01 09:00:00,1.85,17850.0,United Kingdom",
    # invoice 1004: a SKU no store can hold (over 200 characters): refused by validation
    f"1004,{'X' * 210},LONG,1,2010-12-01 10:00:00,1.00,17850.0,United Kingdom",
    "1005,22752,BOXES,2,2010-12-01 10:05:00,7.65,17850.0,United Kingdom",
]


def test_import_history_holds_bad_invoices_and_an_edit_places_them(
    tmp_path: Path, capsys: Any
) -> None:
    from console.cli import main

    csv = history(tmp_path / "o.csv", BAD_FILE)
    db = tmp_path / "s.db"
    imported = ["import-history", str(csv), "--db", str(db), "--location", "WH-UK"]
    assert main(imported) == 0
    # the good invoices beside the bad rows are stored
    assert rows(db, "SELECT order_id FROM orders ORDER BY 1") == [("1002",), ("1005",)]
    # the good return of C1003 keeps the number the bad row before it leaves free
    assert rows(db, "SELECT return_id, quantity FROM returns") == [("C1003-22632-2", 2)]
    held = rows(db, "SELECT source, delivery_id, state, reason FROM held ORDER BY id")
    assert [(s, d, st) for s, d, st, _ in held] == [
        ("history", "o.csv: invoice 1001", "held"),
        ("history", "o.csv: invoice C1003", "held"),
        ("history", "o.csv: invoice 1004", "held"),
    ]
    assert held[0][3] == "o.csv:3: InvoiceDate: expected a date and time, got '2010-13-45 08:26'"
    assert held[1][3] == "o.csv:5: Quantity: expected a whole number, got '-one'"
    assert held[2][3].startswith("o.csv:7: StockCode: String should have at most 200")
    raw = rows(db, "SELECT raw FROM held")[0][0]
    assert "CustomerID" not in raw and "17850" not in raw and "HOLDER" not in raw
    # importing the same file again counts on the same held rows, stores nothing twice
    assert main(imported) == 0
    assert rows(db, "SELECT deliveries FROM held") == [(2,), (2,), (2,)]
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(2,)]
    capsys.readouterr()
    assert main(["quarantine", "list", "--db", str(db), "--source", "history"]) == 0
    assert "o.csv:3: InvoiceDate" in capsys.readouterr().out
    # nothing in the file changed: a replay places nothing, and says why
    assert main(["quarantine", "replay", "--db", str(db)]) == 1
    assert "3 held: 0 placed, 3 still held" in capsys.readouterr().out
    # the rows are edited: each invoice placed, with every one of its lines
    edit = ["quarantine", "edit", "--db", str(db)]
    assert main([*edit, "1", "--set", "3.InvoiceDate=2010-12-01 08:26"]) == 0
    assert main([*edit, "2", "--set", "Quantity=-1"]) == 0
    assert main([*edit, "3", "--set", "7.StockCode=84406B"]) == 0
    out = capsys.readouterr().out
    assert 'line 3 InvoiceDate: "2010-13-45 08:26" -> "2010-12-01 08:26"' in out
    lines = rows(db, "SELECT order_id, sku, quantity FROM order_lines ORDER BY 1, 2")
    assert lines == [
        ("1001", "71053", 2),
        ("1001", "85123A", 6),
        ("1002", "22633", 6),
        ("1004", "84406B", 1),
        ("1005", "22752", 2),
    ]
    assert rows(db, "SELECT return_id, quantity FROM returns ORDER BY 1") == [
        ("C1003-22632-1", 1),
        ("C1003-22632-2", 2),
    ]
    assert rows(db, "SELECT state FROM held") == [("placed",)] * 3
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert main(["quarantine", "replay", "--db", str(db)]) == 0
    assert "nothing to replay" in capsys.readouterr().out
    # a re-import of the original file stores nothing twice
    assert main(imported) == 0
    assert rows(db, "SELECT COUNT(*) FROM order_lines") == [(5,)]
    assert rows(db, "SELECT COUNT(*) FROM returns") == [(2,)]


def test_a_history_file_dropped_outside_the_window_is_held_and_placed_once_widened(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    """The drop folder validates with serve's window (10 years): the 2010 sample is held
    whole; widening ``max_past_days`` and replaying places it, counted as an import."""
    from console.cli import main

    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(RETAIL, folder / "retail.csv")
    db = tmp_path / "s.db"

    async def drop() -> None:
        async with StoreWriter(db) as writer:
            report = await DropFolder(folder, writer, history_location="WH-UK").process(
                folder / "retail.csv"
            )
        assert report.kind == "order history" and not report.ok
        assert report.outcomes["applied"] == 0

    previous = set_time_window(TimeWindow(past=timedelta(days=3650)))
    try:
        asyncio.run(drop())
    finally:
        set_time_window(previous)
    assert rows(db, "SELECT COUNT(*) FROM orders") == [(0,)]
    held = rows(db, "SELECT source, topic, reason FROM held")
    assert held and {s for s, _, _ in held} == {"dropfolder"}
    assert all(json.loads(t)["kind"] == "history" for _, t, _ in held)
    assert "retail.csv:2: InvoiceDate: " in held[0][2] and "3650 days" in held[0][2]
    assert (folder / "failed" / "retail.csv").exists()
    capsys.readouterr()
    monkeypatch.setenv("OMNIOPS_MAX_PAST_DAYS", "36500")
    assert main(["quarantine", "replay", "--db", str(db)]) == 0
    assert f"{len(held)} held: {len(held)} placed, 0 still held" in capsys.readouterr().out
    # the same as importing the file into a fresh store
    fresh = tmp_path / "fresh.db"
    assert main(["import-history", str(RETAIL), "--db", str(fresh), "--location", "WH-UK"]) == 0
    count = "SELECT COUNT(*), SUM(quantity) FROM order_lines"
    assert rows(db, count) == rows(fresh, count)
    assert rows(db, "SELECT COUNT(*), SUM(quantity) FROM returns") == rows(
        fresh, "SELECT COUNT(*), SUM(quantity) FROM returns"
    )


def test_a_dropped_history_row_with_a_bad_date_is_held_and_an_edit_places_its_invoice(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main

    monkeypatch.setenv("OMNIOPS_MAX_PAST_DAYS", "36500")
    folder = tmp_path / "drop"
    folder.mkdir()
    history(folder / "h.csv", BAD_FILE[:3])
    db = tmp_path / "s.db"

    async def drop() -> None:
        async with StoreWriter(db) as writer:
            await DropFolder(folder, writer, history_location="WH-UK").process(folder / "h.csv")

    asyncio.run(drop())
    assert rows(db, "SELECT order_id FROM orders") == [("1002",)]
    ((held_id, reason),) = rows(db, "SELECT id, reason FROM held")
    assert reason == "h.csv:3: InvoiceDate: expected a date and time, got '2010-13-45 08:26'"
    # a wrong fix is refused, naming the field; the row is left as it was
    before = rows(db, "SELECT raw, state FROM held")
    edit = ["quarantine", "edit", str(held_id), "--db", str(db)]
    assert main([*edit, "--set", "3.InvoiceDate=2010-12-32 08:26"]) == 1
    err = capsys.readouterr().err
    assert "h.csv:3: InvoiceDate: expected a date and time, got '2010-12-32 08:26'" in err
    assert "nothing changed" in err
    assert rows(db, "SELECT raw, state FROM held") == before
    assert rows(db, "SELECT COUNT(*) FROM held_edits") == [(0,)]
    assert main([*edit, "--set", "3.InvoiceDate=12/01/2010 08:26", "--by", "ana"]) == 0
    assert rows(db, "SELECT order_id FROM orders ORDER BY 1") == [("1001",), ("1002",)]
    ((by, how, changes),) = rows(db, "SELECT by, how, changes FROM held_edits")
    assert (by, how) == ("ana", "set")
    assert json.loads(changes) == [
        {"field": "line 3 InvoiceDate", "before": "2010-13-45 08:26", "after": "12/01/2010 08:26"}
    ]
