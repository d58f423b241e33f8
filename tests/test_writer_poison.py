"""A poison item (a value SQLite refuses) is quarantined alone; its neighbours commit.

The items below reach the writer the way a mapper or an older model could hand them
over (built with ``model_copy``, which does not re-validate), so the test keeps its
meaning whatever the model refuses at the edge.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store.model import Event, Quarantined, StockSnapshot
from store.writer import StoreWriter
from tests.builders import at, order, snapshot, step


def _poisoned(event: StockSnapshot, name: str, **body: object) -> Event:
    return event.model_copy(
        update={"id": f"{event.id}-{name}", "body": event.body.model_copy(update=body)}
    )


async def test_poison_items_are_quarantined_and_neighbours_commit(db_path: Path) -> None:
    good = [snapshot(f"SKU{n}", "WH-NJ", 10 + n, at(minutes=n)) for n in range(300)]
    base = snapshot("SKU-X", "WH-NJ", 5, at())
    assert isinstance(base, StockSnapshot)
    huge = _poisoned(base, "huge", on_hand=2**63)  # beyond SQLite's 64-bit integers
    surrogate = _poisoned(base, "surrogate", sku="SKU-\ud800")  # a lone surrogate: not UTF-8
    bad_raw = Quarantined(source="webshop", raw='{"note": "\udcff"}', error="body: bad")
    items: list[Event | Quarantined] = [*good[:100], huge, *good[100:200], surrogate, bad_raw]
    items += [
        *good[200:],
        order("o-1", at(), [("SKU1", 1)], loc="WH-NJ"),
        step("o-1", "picked", at(1)),
    ]
    async with StoreWriter(db_path, batch_wait=0.05) as writer:
        outcomes = await writer.write_many(items)
        single = await writer.submit(huge.model_copy(update={"id": "alone"}))
        assert await single == "quarantined"
        # the quarantined payload is made valid UTF-8 by the model, so it is no poison
        assert writer.stats.poison == 3
    by_id = {
        i.id: o for i, o in zip(items, outcomes, strict=True) if not isinstance(i, Quarantined)
    }
    assert by_id.pop(huge.id) == "quarantined"
    assert by_id.pop(surrogate.id) == "quarantined"
    assert set(by_id.values()) == {"applied"}, "a valid neighbour was refused"
    assert outcomes[items.index(bad_raw)] == "quarantined"  # the quarantined payload itself

    db = sqlite3.connect(db_path)
    assert db.execute("SELECT COUNT(*) FROM event_log").fetchone()[0] == 302
    assert db.execute("SELECT COUNT(*) FROM stock").fetchone()[0] == 300
    assert db.execute("SELECT picked_ts IS NOT NULL FROM orders WHERE order_id = 'o-1'").fetchone()[
        0
    ]
    reasons = [row[0] for row in db.execute("SELECT error FROM quarantine ORDER BY id")]
    assert len(reasons) == 4
    assert sum("OverflowError" in r for r in reasons) == 2, reasons
    # the reason is cut in the middle to its column's length; its end names the cause
    assert any(r.endswith("surrogates not allowed") for r in reasons), reasons
    assert "body: bad" in reasons  # stored as it came: its own reason, nothing refused
    raws = [row[0] for row in db.execute("SELECT raw FROM quarantine")]
    assert any("9223372036854775808" in raw for raw in raws)
    assert any("\\udcff" in raw for raw in raws)  # kept, escaped
    feeds = dict(
        (
            (feed, (events, quarantined))
            for feed, events, quarantined in db.execute(
                "SELECT feed, events, quarantined FROM feed_state"
            )
        )
    )
    assert feeds == {"inventory": (300, 3), "webshop": (1, 1), "wms": (1, 0)}
    db.close()


async def test_store_unavailable_fails_the_batch_and_the_writer_goes_on(db_path: Path) -> None:
    async with StoreWriter(db_path, batch_wait=0.01) as writer:
        await writer.write_many([snapshot("A", "WH-NJ", 1, at())])
        await writer._run(lambda db: db.execute("PRAGMA query_only = ON"))
        failed = await writer.submit(snapshot("B", "WH-NJ", 1, at()))
        try:
            await failed
        except sqlite3.OperationalError as exc:
            assert "readonly" in str(exc)
        else:  # pragma: no cover - the assertion below explains
            raise AssertionError("a write to a read-only store must fail, not be quarantined")
        await writer._run(lambda db: db.execute("PRAGMA query_only = OFF"))
        assert await writer.write_many([snapshot("B", "WH-NJ", 1, at())]) == ["applied"]
    db = sqlite3.connect(db_path)
    assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 0
    db.close()
