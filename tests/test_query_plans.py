"""The refresh's query plans do not depend on the store's age (issue 15).

SQLite picks plans from ANALYZE statistics, and those change as a store ages: on a young
store the 7-day window is most of ``sales_hourly``, so a planner left free walks the
window through the hour index and looks the flagged pairs up from it (735 ms at 50k × 50),
where on an old store it looks the pairs up by key (74 ms).  These tests build a young
and an old store of the same retailer (``tests.bench_panels.build``, small), run ANALYZE
on both, record every statement a full refresh (and the detail views, and the writer's
risk re-evaluation) runs, and check each one's ``EXPLAIN QUERY PLAN``: no full ``SCAN``
of a roll-up or of a table that grows with history, no walk of a roll-up by its hour
index where the pairs should lead, and the hot reads by the keys they are pinned to.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from store import details
from store.metrics import compute_snapshots, open_reader
from store.risk import pair_inputs
from tests.bench_panels import END, PARAMS, build

ROLLUPS = frozenset({"sales_hourly", "sku_hourly", "category_hourly", "category_returns_hourly"})
"""Tables the writer rolls history up into: they grow with every hour the store lives."""
HISTORY = frozenset({"orders", "order_lines", "returns", "event_log", "stock_adjustments"})
"""Other tables that grow with the store's age."""
GROWING = ROLLUPS | HISTORY

AGES = (7, 90)
SKUS, LOCATIONS, ORDERS_PER_DAY = 1000, 10, 300
"""Small, with the big bench's shape (2 % of pairs flagged, head SKUs reaching the spike test)."""

_KEYWORDS = frozenset(
    {"where", "join", "on", "indexed", "not", "group", "order", "left", "cross", "inner"}
    | {"using", "union", "limit", "window", "as", "natural", "full", "right", "outer"}
)


class RecordingConnection:
    """A read connection that remembers every statement run through it, with parameters."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements: list[tuple[str, Sequence[Any]]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        self.statements.append((sql, params))
        return self.db.execute(sql, params)


def aliases(sql: str) -> dict[str, set[str]]:
    """Name in a plan (alias or table) -> the tables it may stand for in ``sql``."""
    names: dict[str, set[str]] = {}
    for m in re.finditer(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.I):
        table = m[1]
        names.setdefault(table, set()).add(table)
        alias = re.match(r"\s+(?:AS\s+)?(\w+)", sql[m.end() :], re.I)
        if alias and alias[1].lower() not in _KEYWORDS:
            names.setdefault(alias[1], set()).add(table)
    return names


def plan(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    """The ``EXPLAIN QUERY PLAN`` lines of one statement."""
    return [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def violations(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    """What is wrong with the plan of one statement (empty when it is fine)."""
    names = aliases(sql)
    bad = []
    for line in plan(db, sql, params):
        m = re.match(r"(SCAN|SEARCH) (\w+)", line)
        if not m:
            continue
        if m[2] == "CONSTANT":  # SCAN CONSTANT ROW
            continue
        tables = names.get(m[2])
        if tables is None:
            bad.append(f"{m[2]!r} is in the plan but not in the query's FROM: {line}")
            continue
        if m[1] == "SCAN" and tables & GROWING:
            bad.append(f"full scan of {sorted(tables & GROWING)}: {line}")
        if tables & ROLLUPS and "USING INDEX sales_hourly_hour" in line:
            bad.append(f"roll-up walked by the hour, not by key: {line}")
    return bad


def reads(statements: Sequence[tuple[str, Sequence[Any]]]) -> Iterator[tuple[str, Sequence[Any]]]:
    """The queries among recorded statements (not BEGIN / COMMIT / PRAGMA)."""
    for sql, params in statements:
        if sql.lstrip().upper().startswith(("SELECT", "WITH")):
            yield sql, params


def report(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> str:
    return " ".join(sql.split())[:300] + "\n    " + "\n    ".join(plan(db, sql, params))


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A 7-day and a 90-day store of the same retailer, flags built and ANALYZEd."""
    root = tmp_path_factory.mktemp("plans")
    out = {}
    for days in AGES:
        path = root / f"{days}d.db"
        build(path, SKUS, LOCATIONS, days, ORDERS_PER_DAY * days)
        out[days] = path
    return out


@pytest.fixture(params=AGES, ids=[f"{d}-day store" for d in AGES])
def store(request: pytest.FixtureRequest, stores: dict[int, Path]) -> Iterator[sqlite3.Connection]:
    db = open_reader(stores[request.param])
    yield db
    db.close()


def check(db: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
    problems = [
        f"{problem}\n  in {report(db, sql, params)}"
        for sql, params in reads(statements)
        for problem in violations(db, sql, params)
    ]
    assert not problems, "\n".join(problems)


def test_the_stores_differ_only_in_age(stores: dict[int, Path]) -> None:
    """The precondition of the trap: same flagged pairs, the window a different share."""
    found = {}
    for days, path in stores.items():
        db = sqlite3.connect(path)
        flagged = db.execute("SELECT COUNT(*) FROM stock WHERE risk = 1").fetchone()[0]
        hours = db.execute("SELECT COUNT(*) FROM sales_hourly").fetchone()[0]
        stat = db.execute("SELECT COUNT(*) FROM sqlite_stat1").fetchone()[0]
        found[days] = (flagged, hours, stat)
        db.close()
    assert found[7][0] == found[90][0] > 0
    assert found[90][1] > 8 * found[7][1]
    assert found[7][2] > 0 and found[90][2] > 0  # ANALYZE ran


def test_full_refresh_reads_nothing_whole(store: sqlite3.Connection) -> None:
    recorder = RecordingConnection(store)
    snaps = compute_snapshots(recorder, END, PARAMS)  # type: ignore[arg-type]
    assert snaps.stockout.total_out > 0 and snaps.returns.rows  # the panels have work
    assert len(list(reads(recorder.statements))) > 20
    check(store, recorder.statements)


def test_flagged_pairs_drive_their_sales(store: sqlite3.Connection) -> None:
    """The trap itself: flagged pairs' units sold are read by (sku, location, hour)."""
    recorder = RecordingConnection(store)
    pair_inputs(recorder, "flagged", int(END.timestamp()), PARAMS)  # type: ignore[arg-type]
    sales = [(s, p) for s, p in reads(recorder.statements) if "sales_hourly" in s]
    assert len(sales) == 1
    lines = plan(store, *sales[0])
    assert "SEARCH h USING PRIMARY KEY (sku=? AND location_id=? AND hour>? AND hour<?)" in lines
    assert any("stock_flagged" in line for line in lines)  # the pairs lead, from their index
    check(store, recorder.statements)


def test_return_rollups_walk_their_keys(store: sqlite3.Connection) -> None:
    recorder = RecordingConnection(store)
    compute_snapshots(recorder, END, PARAMS)  # type: ignore[arg-type]
    rollups = [(s, p) for s, p in reads(recorder.statements) if "category_" in s]
    assert len(rollups) == 2
    for sql, params in rollups:
        lines = plan(store, sql, params)
        by_key = "SEARCH h USING PRIMARY KEY (category=? AND channel=? AND hour>? AND hour<?)"
        assert by_key in lines, lines


def test_writer_pairs_and_every_pair(store: sqlite3.Connection) -> None:
    """The writer's re-evaluation of touched pairs by key; all pairs by the hour index."""
    t = int(END.timestamp())
    pairs = store.execute("SELECT sku, location_id FROM stock LIMIT 40").fetchall()
    recorder = RecordingConnection(store)
    assert len(pair_inputs(recorder, pairs, t, PARAMS)) == 40  # type: ignore[arg-type]
    check(store, recorder.statements)
    recorder = RecordingConnection(store)
    assert pair_inputs(recorder, "all", t, PARAMS)  # type: ignore[arg-type]
    window = [(s, p) for s, p in reads(recorder.statements) if "sales_hourly" in s]
    assert len(window) == 1
    lines = plan(store, *window[0])
    # One pass over the window (every pair needs it), never over the whole history.
    assert any("USING INDEX sales_hourly_hour (hour>? AND hour<?)" in line for line in lines)
    assert not any(line.startswith("SCAN") for line in lines), lines


def test_detail_views_by_key(store: sqlite3.Connection) -> None:
    recorder = RecordingConnection(store)
    now = datetime.fromtimestamp(int(END.timestamp()), UTC)
    sku, loc = store.execute("SELECT sku, location_id FROM stock WHERE risk = 1").fetchone()
    history = details.stock_history(recorder, sku, loc, now, "America/New_York")  # type: ignore[arg-type]
    assert len(history.sold) == 14
    details.late_orders(recorder, "L01", now)  # type: ignore[arg-type]
    check(store, [(s, p) for s, p in recorder.statements])


def test_the_check_catches_a_scan_and_the_hour_walk(store: sqlite3.Connection) -> None:
    """The checker itself: a scan of a roll-up, and the young store's bad plan, are caught."""
    first, last = 490000, 490200
    scan = "SELECT SUM(units) FROM sales_hourly NOT INDEXED WHERE hour BETWEEN ? AND ?"
    assert violations(store, scan, (first, last))
    walk = """WITH scope(sku, location_id) AS (SELECT sku, location_id FROM stock WHERE risk = 1)
              SELECT h.sku, h.location_id, SUM(h.units)
              FROM sales_hourly h INDEXED BY sales_hourly_hour CROSS JOIN scope
                ON h.sku = scope.sku AND h.location_id = scope.location_id
              WHERE h.hour BETWEEN ? AND ? GROUP BY h.sku, h.location_id"""
    assert violations(store, walk, (first, last))
    orders = "SELECT COUNT(*) FROM orders o WHERE o.shipped_ts > ?"
    assert violations(store, orders, (first,))


def test_live_refresh_neither_scans_stock_nor_undelivered_promises(
    store: sqlite3.Connection,
) -> None:
    """Migration 15: the pair count is kept, not counted; promises read by their own index.

    ``stock`` has a row per SKU × location (millions at retailer scale): a live refresh
    reads only the flagged pairs' index and the count the triggers keep.  Delivered late
    against the customer's promise walks only the delivered orders that carry a promise.
    """
    recorder = RecordingConnection(store)
    compute_snapshots(recorder, END, PARAMS)  # type: ignore[arg-type]
    statements = list(reads(recorder.statements))
    stock_scans = [
        report(store, sql, params)
        for sql, params in statements
        for line in plan(store, sql, params)
        if re.match(r"SCAN (stock|s)\b", line) and "stock" in aliases(sql).get(line.split()[1], ())
    ]
    assert not stock_scans, "\n".join(stock_scans)
    assert any("FROM row_counts" in sql for sql, _ in statements)
    promises = [(s, p) for s, p in statements if "delivery_promised_ts" in s]
    assert len(promises) == 1
    lines = plan(store, *promises[0])
    by_promise = "USING INDEX orders_delivery_promised (delivered_ts>? AND delivered_ts<?)"
    assert any(by_promise in line for line in lines), lines


def test_carrier_rows_and_returns_read_their_indexes_alone(store: sqlite3.Connection) -> None:
    """Migration 15: shipments in transit, deliveries against the carrier's estimate and
    the returns by receipt time are read from covering indexes, no row looked up."""
    recorder = RecordingConnection(store)
    compute_snapshots(recorder, END, PARAMS)  # type: ignore[arg-type]
    statements = list(reads(recorder.statements))
    wanted = {
        "orders_in_transit": "COVERING INDEX orders_in_transit (shipped_ts>? AND shipped_ts<?)",
        "orders_delivered_carrier": (
            "COVERING INDEX orders_delivered_carrier (delivered_ts>? AND delivered_ts<?)"
        ),
    }
    for index, expected in wanted.items():
        (found,) = [(s, p) for s, p in statements if f"INDEXED BY {index}" in s]
        assert any(expected in line for line in plan(store, *found)), plan(store, *found)
    returns = [
        (s, p)
        for s, p in statements
        if re.search(r"FROM returns\s+WHERE received_ts >= \?", s) and "category" not in s
    ]
    assert len(returns) >= 3  # the panel's window, the refunds of each day, refunds per hour
    for sql, params in returns:
        lines = plan(store, sql, params)
        assert any("COVERING INDEX returns_received (received_ts>? AND" in x for x in lines), (
            sql,
            lines,
        )
