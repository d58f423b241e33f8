"""Order-history CSVs as real exports write them: both UCI headers, Excel encodings, ``;``.

The rows are the committed real sample (``fixtures/payloads/online_retail``, first 400
rows of the UCI "Online Retail" set, see its SOURCES.md); each variant below is the same
rows written another way, and must give the same store as the original file.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from feeds.csv_import import (
    HistoryFileError,
    HistoryReport,
    RowError,
    canonical_header,
    parse_price,
    read_history,
    sniff,
)
from feeds.dropfolder import FileReport, read_dropped
from feeds.runtime.ingest import import_history
from store.model import Quarantined
from tests.builders import rows

SAMPLE = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "payloads"
    / "online_retail"
    / "online_retail_first400.csv"
)
II_HEADER = [
    "Invoice",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "Price",
    "Customer ID",
    "Country",
]
"""The header of UCI's "Online Retail II" (2009-2011) export."""

TABLES = (
    "SELECT order_id, channel, location_id, placed_ts, gross_cents FROM orders ORDER BY 1",
    "SELECT order_id, sku, quantity, unit_price_cents FROM order_lines ORDER BY 1, 2, 3",
    "SELECT return_id, sku, quantity, refund_cents FROM returns ORDER BY 1",
    "SELECT sku, location_id, ts, delta, reason FROM stock_adjustments ORDER BY 1, 3",
)


def sample_rows() -> tuple[list[str], list[list[str]]]:
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, list(reader)


def write(path: Path, header: list[str], body: list[list[str]], **kw: str) -> Path:
    encoding = kw.pop("encoding", "utf-8")
    with path.open("w", newline="", encoding=encoding) as handle:
        csv.writer(handle, **kw).writerows([header, *body])  # type: ignore[arg-type]
    return path


def store_of(db: Path) -> list[list[tuple[object, ...]]]:
    return [rows(db, sql) for sql in TABLES]


def variants(tmp: Path) -> dict[str, Path]:
    header, body = sample_rows()
    accented = [[*r[:2], r[2] + " CAFÉ", *r[3:]] for r in body]
    semi = [[*r[:5], r[5].replace(".", ","), *r[6:]] for r in body]
    order = [7, 0, 4, 3, 1, 5, 6, 2]
    return {
        "online retail II header": write(tmp / "ii.csv", II_HEADER, body),
        "windows-1252": write(tmp / "cp.csv", header, accented, encoding="cp1252"),
        "excel utf-8 with BOM, CRLF": write(
            tmp / "bom.csv", header, body, encoding="utf-8-sig", lineterminator="\r\n"
        ),
        "semicolons and decimal commas": write(tmp / "semi.csv", header, semi, delimiter=";"),
        "tabs": write(tmp / "tab.csv", header, body, delimiter="\t"),
        "columns reordered, lower case, spaced": write(
            tmp / "order.csv",
            [f" {header[i].lower()} " for i in order],
            [[r[i] for i in order] for r in body],
        ),
    }


async def test_every_export_shape_gives_the_store_of_the_original(tmp_path: Path) -> None:
    base = tmp_path / "base.db"
    first = await import_history(SAMPLE, base, "webshop", "WH-UK", "Europe/London")
    assert first.orders > 10 and first.quarantined == 0
    expected = store_of(base)
    assert all(expected[:2])
    for name, path in variants(tmp_path).items():
        db = tmp_path / f"{path.stem}.db"
        report = await import_history(path, db, "webshop", "WH-UK", "Europe/London")
        assert (report.orders, report.lines, report.returns, report.quarantined_rows) == (
            first.orders,
            first.lines,
            first.returns,
            0,
        ), name
        assert store_of(db) == expected, name


def test_sniff_reads_encoding_and_delimiter(tmp_path: Path) -> None:
    found = {name: sniff(path) for name, path in variants(tmp_path).items()}
    assert found["windows-1252"].encoding == "cp1252"
    assert found["excel utf-8 with BOM, CRLF"].encoding == "utf-8-sig"
    assert found["semicolons and decimal commas"].delimiter == ";"
    assert found["tabs"].delimiter == "\t"
    assert found["online retail II header"].delimiter == ","


def test_header_aliases_and_a_second_name_for_one_column() -> None:
    assert canonical_header(II_HEADER) == [
        "InvoiceNo",
        "StockCode",
        "Description",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "CustomerID",
        "Country",
    ]
    # Both a Price and a UnitPrice: the first is the price, the other keeps its name.
    assert canonical_header(["UnitPrice", "Price"]) == ["UnitPrice", "Price"]


def test_a_decimal_comma_is_read_and_a_thousands_comma_refused() -> None:
    assert str(parse_price("2,55", "UnitPrice")) == "2.55"
    assert str(parse_price("3,5", "UnitPrice")) == "3.50"
    with pytest.raises(RowError, match="UnitPrice"):
        parse_price("1,234", "UnitPrice")


def test_a_bad_row_in_a_semicolon_file_names_its_line(tmp_path: Path) -> None:
    header, body = sample_rows()
    body = [list(r) for r in body[:30]]
    body[9][3] = "six"  # file line 11 (header is line 1)
    path = write(tmp_path / "semi.csv", header, body, delimiter=";")
    report = HistoryReport()
    list(read_history(path, channel="pos", location_id="L", tz="UTC", report=report))
    assert report.problems[0].startswith("semi.csv:11: Quantity:"), report.problems


def test_a_file_that_is_no_history_names_its_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("order,sku\n1,A\n", encoding="utf-8")
    with pytest.raises(HistoryFileError, match=r"x\.csv: .*found order, sku"):
        list(read_history(path, channel="pos", location_id="L", tz="UTC"))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["{csv}", "--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'"),
        (["{dir}/nope.csv"], "does not exist"),
        (["{dir}"], "is a folder"),
        (["{bad}"], "not an order-history file"),
    ],
)
def test_the_command_says_one_line_for_a_wrong_file_or_zone(
    tmp_path: Path, args: list[str], said: str
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\x00\x9d\xffgarbage\x1b[2J\n1,2\n")
    argv = [a.format(csv=SAMPLE, dir=tmp_path, bad=bad) for a in args]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "console.cli",
            "import-history",
            *argv,
            "--db",
            str(tmp_path / "s.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], done.stderr
    assert "\x1b" not in done.stderr


def test_the_drop_folder_takes_a_windows_1252_semicolon_history_file(tmp_path: Path) -> None:
    header, body = sample_rows()
    accented = [[*r[:2], r[2] + " CAFÉ", *r[3:]] for r in body]
    path = write(tmp_path / "cp.csv", header, accented, encoding="cp1252", delimiter=";")
    report = FileReport(path.name)
    items = read_dropped(path, report=report)
    assert report.kind == "order history"
    # 37 invoices placed and shipped, 8 returns (the hand count of test_dropfolder).
    assert len(items) == 37 * 2 + 8
    assert not any(isinstance(i, Quarantined) for i in items)
