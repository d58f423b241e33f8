"""The stockout panel's flagged pairs classified in SQL agree with the definition in Python.

:func:`store.risk.flagged_summary` counts and orders most flagged pairs in SQL and leaves
the ones with inbound, a listing or sales after the last closed hour to
:meth:`store.risk.PairInputs.assess`.  Here every flagged pair of a small bench store
(``tests.bench_panels.build``: stock outs, pairs under their reorder point, open purchase
orders, overselling listings) is assessed by the definition in Python instead, and the
panel must be the same: the same counts per status and the same rows in the same order.
The moment is mid-hour, so the hour's sales so far (read from the orders, not the roll-up)
change some pairs' velocity.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import sqlite3
from pathlib import Path

import pytest

from store.metrics import compute_stockout, open_reader
from store.risk import AT_RISK, pair_inputs
from tests.bench_panels import END, PARAMS, build


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 7-day bench store whose flags count from 40 minutes before its end."""
    path = tmp_path_factory.mktemp("flagged") / "store.db"
    build(path, 400, 6, 7, 400 * 7)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE meta SET value = ? WHERE key = 'risk_ts'", (int(END.timestamp()) - 2400,))
    db.close()
    return path


@pytest.mark.parametrize("minutes_before_end", [0, 20], ids=["on the hour", "mid-hour"])
@pytest.mark.parametrize("top_n", [5, 200, 10_000])
def test_sql_classification_is_the_definition(
    store: Path, minutes_before_end: int, top_n: int
) -> None:
    db = open_reader(store)
    t = int(END.timestamp()) - 60 * minutes_before_end
    params = dataclasses.replace(PARAMS, top_n=top_n)
    window = params.velocity_window_days
    db.execute("BEGIN")
    snap = compute_stockout(db, t, params)
    flagged = pair_inputs(db, "flagged", t, params)
    total = db.execute("SELECT COUNT(*) FROM stock").fetchone()[0]
    db.execute("COMMIT")
    db.close()
    rank = {status: i for i, status in enumerate(AT_RISK)}
    counts = dict.fromkeys(AT_RISK, 0)
    keyed = []
    for p in flagged:
        status, cover, velocity = p.assess(window, t, params)
        if status in rank:
            counts[status] += 1
            cover_key = math.inf if cover is None else cover
            keyed.append((rank[status], cover_key, -velocity, p.sku, p.location_id, p))
    expected = [k[5].row(window, t, params) for k in heapq.nsmallest(top_n, keyed)]
    # The store has work of every kind for both paths.
    assert counts["OUT"] and counts["AT RISK"] and counts["OVERSELL"]
    assert any(p.inbound for p in flagged) and any(p.velocity_per_day for p in expected)
    assert (snap.total_out, snap.total_oversell, snap.total_at_risk) == (
        counts["OUT"],
        counts["OVERSELL"],
        counts["AT RISK"],
    )
    assert snap.total_pairs == total
    assert list(snap.rows) == expected
