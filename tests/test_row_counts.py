"""The stocked-pair count the triggers keep is exact (migration 15, issue 15).

The stockout panel shows how many SKU × location pairs the store knows; counting the stock
table reads every one of its rows on each refresh, so migration 15 keeps the number in
``row_counts`` with triggers on insert and delete.  Here it must equal ``COUNT(*)`` after
every way stock is written: pairs created by a count and by an adjustment, upserts that
update a known pair (the triggers must not fire), upserts whose update is skipped, deletes,
inserts ignored on conflict, a rolled-back transaction, and the migration's seed on a store
that had stock before the migration.  Nothing may write stock with ``INSERT OR REPLACE``:
without ``recursive_triggers`` its delete fires no trigger and the count would drift.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from store.metrics import compute_snapshots, open_reader
from store.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from tests.builders import T0, adjust, at, order, snapshot
from tests.conftest import write
from tests.test_metrics import P

ROOT = Path(__file__).resolve().parent.parent


def counts(db_path: Path) -> tuple[int, int]:
    """(kept count, actual count) of the stock table."""
    db = sqlite3.connect(db_path)
    try:
        kept = db.execute("SELECT n FROM row_counts WHERE name = 'stock'").fetchone()[0]
        actual = db.execute("SELECT COUNT(*) FROM stock").fetchone()[0]
    finally:
        db.close()
    return int(kept), int(actual)


async def test_the_writers_inserts_and_upserts(db_path: Path) -> None:
    await write(db_path, [snapshot("A", "S1", 5, at(-3)), snapshot("B", "S1", 5, at(-3))])
    assert counts(db_path) == (2, 2)
    # A newer and an older count of a known pair (the update, and the update skipped), an
    # adjustment to a known pair, and pairs first seen by an adjustment and by a sale.
    await write(
        db_path,
        [
            snapshot("A", "S1", 9, at(-1)),
            snapshot("B", "S1", 1, at(-5)),
            adjust("A", "S1", -2, at(-0.5)),
            adjust("C", "S2", 4, at(-0.5)),
            adjust("C", "S2", 1, at(-0.4)),
            snapshot("C", "S2", 7, at(-0.3)),
            order("o1", at(-0.2), [("D", 1)], loc="S3"),
        ],
    )
    kept, actual = counts(db_path)
    assert kept == actual >= 3
    # The panel's total is the kept count.
    reader = open_reader(db_path)
    try:
        assert compute_snapshots(reader, T0, P).stockout.total_pairs == actual
    finally:
        reader.close()


async def test_deletes_ignores_and_rollbacks(db_path: Path) -> None:
    await write(db_path, [snapshot(code, "S1", 5, at(-3)) for code in "ABCDE"])
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        stock = (
            "INSERT {} INTO stock (sku, location_id, on_hand, reserved, as_of_ts, source_system,"
            " risk) VALUES (?, 'S1', 1, 0, 1, 'test', 0)"
        )
        db.execute("DELETE FROM stock WHERE sku IN ('A', 'B')")
        db.execute("DELETE FROM stock WHERE sku = 'nothing'")
        db.execute(stock.format("OR IGNORE"), ("C",))  # a conflict: ignored
        db.execute(stock.format("OR IGNORE"), ("F",))  # new
        db.execute(stock.format("") + " ON CONFLICT DO NOTHING", ("D",))
        db.execute(stock.format("") + " ON CONFLICT DO UPDATE SET on_hand = 3", ("E",))
        db.execute(stock.format("") + " ON CONFLICT DO UPDATE SET on_hand = 3", ("G",))
        db.execute("BEGIN")
        db.execute(stock.format(""), ("H",))
        db.execute("DELETE FROM stock WHERE sku = 'C'")
        db.execute("ROLLBACK")
        db.execute("UPDATE stock SET risk = 1, on_hand = 0")  # updates leave the count
    finally:
        db.close()
    assert counts(db_path) == (5, 5)  # C D E F G


def test_the_migration_seeds_an_existing_store(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for version, script in enumerate(MIGRATIONS[:13]):
            db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version + 1};\nCOMMIT;")
        db.execute(
            """WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
               INSERT INTO stock SELECT printf('SKU%03d', i), printf('L%d', i % 7), i, 0, 1,
                   'old', 0 FROM n"""
        )
        assert migrate(db) == 13
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        db.close()
    assert counts(path) == (1000, 1000)


def test_an_empty_store_counts_zero(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    migrate(db)
    db.close()
    assert counts(path) == (0, 0)


def test_nothing_replaces_stock_rows() -> None:
    """``INSERT OR REPLACE`` / ``REPLACE INTO`` on stock would skip the delete trigger."""
    pattern = re.compile(r"\bREPLACE\s+INTO\s+stock\b", re.I)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("store", "feeds", "rules", "console")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []
