"""A JSON Lines line that is not UTF-8 is quarantined with its byte offset, never a crash.

Real exports carry such lines (a Latin-1 product name pasted into a UTF-8 feed); the lines
around it must be stored as usual, and the bad one kept, its bytes escaped, for replay.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from feeds.dropfolder import FileReport, read_dropped
from feeds.jsonl import NotUtf8, read_lines
from feeds.runtime.ingest import ingest_paths
from store.model import Quarantined
from tests.builders import rows


def line(n: int, name: str = "Mug") -> bytes:
    event = {
        "id": f"sku-{n}",
        "type": "sku.upserted",
        "ts": "2026-11-01T10:00:00Z",
        "source": "catalog",
        "body": {
            "sku": f"S{n}",
            "name": name,
            "category": "kitchen",
            "product_type": "mug",
            "unit_cost": "3.10",
            "price": "9.99",
        },
    }
    return json.dumps(event, ensure_ascii=False).encode()


def feed(path: Path) -> Path:
    # Line 2 holds a Latin-1 "é" (0xE9) where UTF-8 needs two bytes.
    body = b"\n".join([line(1), line(2, "Caf\u00e9").replace(b"\xc3\xa9", b"\xe9"), line(3)])
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(body + b"\n"))
    else:
        path.write_bytes(body + b"\n")
    return path


@pytest.mark.parametrize("name", ["catalog.jsonl", "catalog.jsonl.gz"])
async def test_ingest_quarantines_the_line_and_stores_its_neighbours(
    tmp_path: Path, name: str
) -> None:
    db = tmp_path / "s.db"
    counts = await ingest_paths([feed(tmp_path / name)], db)
    assert (counts["applied"], counts["quarantined"]) == (2, 1)
    assert rows(db, "SELECT sku FROM skus ORDER BY sku") == [("S1",), ("S3",)]
    [(error, raw)] = rows(db, "SELECT error, raw FROM quarantine")
    offset = line(2, "Caf\u00e9").index(b"\xc3\xa9")
    assert error == f"{name}:2: not UTF-8 text (byte {offset} of the line; kept with \\xNN escapes)"
    assert "Caf\\xe9" in raw  # the byte, escaped: nothing lost


def test_read_lines_marks_only_the_bad_line(tmp_path: Path) -> None:
    lines = list(read_lines(feed(tmp_path / "catalog.jsonl")))
    assert [type(t) is NotUtf8 for _, t in lines] == [False, True, False]
    # A valid non-ASCII line is read as text, unmarked.
    good = tmp_path / "good.jsonl"
    good.write_bytes(line(4, "Caf\u00e9") + b"\n")
    [(_, text)] = read_lines(good)
    assert type(text) is str and "Café" in text


def test_the_drop_folder_keeps_the_file_and_quarantines_the_line(tmp_path: Path) -> None:
    report = FileReport("catalog.jsonl")
    items = read_dropped(feed(tmp_path / "catalog.jsonl"), report=report)
    assert [isinstance(i, Quarantined) for i in items] == [False, True, False]
    assert "catalog.jsonl:2: not UTF-8 text" in report.problems[0]
