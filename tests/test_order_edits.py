"""Order edits after placement (``order.edited``): the store applies the latest edit by time,
whatever order edits arrive in, and every number follows it *as of* its moment.

* hand-computed cases: net sales, AOV, orders per hour and velocity before and after an
  edit (``report --at`` either side of it), an edit that arrives before its placement, a
  duplicate, an older edit arriving after a newer one, an edit of a cancelled order;
* a generated day (a slice of the fixture day with edits of one order in eight, some
  arriving before their placement, some late, newer before older, some twice): ``report
  --at T`` on the full store equals ``report`` on a store fed only the events stamped at
  or before T, at many random moments;
* the bulk (set-wise) apply path gives the same store as one event at a time with edits.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from store.apply import apply_batch, epoch
from store.metrics import compute_snapshots, open_reader
from store.model import Event, OrderPlaced, Quarantined, parse_event
from store.risk import MetricParams, pair_inputs
from store.schema import migrate
from store.writer import StoreWriter, configure_connection
from tests.test_asof import comparable, diff, slice_events
from tests.test_bulk_apply import RECEIVED, _iso, build, dump, fixture_slice, salted

P = MetricParams(timezone="America/New_York", top_n=10_000)
DAY = "2026-11-18"


def ev(kind: str, event_id: str, ts: str, body: dict[str, Any], source: str = "webshop") -> Event:
    return parse_event({"id": event_id, "type": kind, "ts": ts, "source": source, "body": body})


def catalogue() -> list[Event]:
    """One channel, one warehouse (in New York time), two SKUs with stock."""
    out = [
        ev("channel.upserted", "c1", f"{DAY}T05:00:00Z", {"channel_id": "web", "kind": "web"}),
        ev(
            "location.upserted",
            "l1",
            f"{DAY}T05:00:00Z",
            {
                "location_id": "WH",
                "name": "WH",
                "kind": "warehouse",
                "region": "US-NJ",
                "lat": 40.0,
                "lon": -74.0,
                "timezone": "America/New_York",
                "hours": {"opens": "00:00", "closes": "23:59"},
            },
        ),
    ]
    for sku, price in (("A", "10.00"), ("B", "5.00"), ("C", "7.00")):
        out.append(
            ev(
                "sku.upserted",
                f"s-{sku}",
                f"{DAY}T05:00:00Z",
                {
                    "sku": sku,
                    "name": sku,
                    "category": "cat",
                    "product_type": "t",
                    "unit_cost": "1.00",
                    "price": price,
                    "reorder_point": 2,
                    "lead_time_days": 3,
                },
            )
        )
        out.append(
            ev(
                "stock.snapshot",
                f"n-{sku}",
                f"{DAY}T05:00:00Z",
                {"sku": sku, "location_id": "WH", "on_hand": 100, "source_system": "wms"},
            )
        )
    return out


def placed(order_id: str, ts: str, lines: list[dict[str, Any]], eid: str | None = None) -> Event:
    body = {
        "order_id": order_id,
        "channel": "web",
        "method": "ship",
        "destination_region": "US-NJ",
        "location_id": "WH",
        "lines": lines,
    }
    return ev("order.placed", eid or f"p-{order_id}", ts, body)


def edited(order_id: str, eid: str, ts: str, lines: list[dict[str, Any]]) -> Event:
    return ev("order.edited", eid, ts, {"order_id": order_id, "lines": lines})


def line(sku: str, qty: int, price: str, discount: str = "0") -> dict[str, Any]:
    return {"sku": sku, "quantity": qty, "unit_price": price, "discount": discount}


PLACED = [line("A", 2, "10.00", "1.00"), line("B", 1, "5.00")]
"""Net 2 × 10 − 1 + 5 = 24.00, 3 units."""
EDIT_1 = [line("A", 1, "10.00", "1.00")]
"""B removed (out of stock), A down to one: net 9.00, 1 unit."""
EDIT_2 = [line("A", 1, "10.00"), line("C", 3, "7.00", "2.00")]
"""A's discount dropped, C added: net 10 + 21 − 2 = 29.00, 4 units."""


def store(path: Path, items: list[Event | Quarantined], batch: int = 1) -> Path:
    db = build(path, items, batch)
    db.close()
    return path


def report(path: Path, at: str) -> Any:
    reader = open_reader(path)
    try:
        return compute_snapshots(reader, datetime.fromisoformat(at), P)
    finally:
        reader.close()


def velocity(path: Path, at: str, sku: str) -> float:
    """The stockout definition's velocity of ``sku`` at WH as of ``at`` (units per day)."""
    reader = open_reader(path)
    try:
        t = epoch(datetime.fromisoformat(at))
        pairs = pair_inputs(reader, [(sku, "WH")], t, P, past=True)
        (pair,) = [p for p in pairs if (p.sku, p.location_id) == (sku, "WH")]
        return pair.assess(P.velocity_window_days, t, P)[2]
    finally:
        reader.close()


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    reader = open_reader(path)
    try:
        return reader.execute(sql).fetchall()
    finally:
        reader.close()


def test_numbers_before_and_after_edits_by_hand(tmp_path: Path) -> None:
    # 14:00 UTC = 09:00 New York; edits at 15:30 and 17:10 UTC.
    events: list[Event | Quarantined] = [
        *catalogue(),
        placed("o1", f"{DAY}T14:00:00Z", PLACED),
        edited("o1", "e2", f"{DAY}T17:10:00Z", EDIT_2),
        edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_1),  # older, arrives after the newer
        edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_1),  # a redelivery
    ]
    path = store(tmp_path / "s.db", events)
    before_at = f"{DAY}T14:30:00Z"
    before = report(path, before_at)
    assert before.headline.net_sales == 24.0
    assert before.headline.channels[0].aov == 24.0
    assert before.headline.orders_per_hour == 1.0
    # velocity: units in the 7-day window ÷ 7 days (as of 14:30 the order holds 2 A, 1 B)
    window = P.velocity_window_days
    assert abs(velocity(path, before_at, "A") - 2 / window) < 1e-9
    assert abs(velocity(path, before_at, "B") - 1 / window) < 1e-9
    middle_at = f"{DAY}T16:00:00Z"
    middle = report(path, middle_at)
    assert middle.headline.net_sales == 9.0
    assert middle.headline.channels[0].aov == 9.0
    assert abs(velocity(path, middle_at, "A") - 1 / window) < 1e-9
    assert velocity(path, middle_at, "B") == 0.0
    after_at = f"{DAY}T18:00:00Z"
    after = report(path, after_at)
    assert after.headline.net_sales == 29.0
    assert after.headline.gross_sales == 31.0 and after.headline.discounts == 2.0
    assert after.headline.channels[0].aov == 29.0
    assert abs(velocity(path, after_at, "C") - 3 / window) < 1e-9
    # the net sales of the order's placement hour moved with the edits
    assert after.headline.hourly_net_sales[9] == 29.0
    assert before.headline.hourly_net_sales[9] == 24.0
    # the roll-ups hold the latest edit, in the placement hour
    hour = epoch(datetime.fromisoformat(f"{DAY}T14:00:00Z")) // 3600
    held = rows(path, f"SELECT sku, units, net_cents FROM sales_hourly WHERE hour = {hour}")
    assert sorted(held) == [("A", 1, 1000), ("B", 0, 0), ("C", 3, 1900)]
    dupes = rows(path, "SELECT duplicates FROM feed_state WHERE feed = 'webshop'")
    assert dupes == [(1,)]


def test_an_edit_before_its_placement_waits_for_it(tmp_path: Path) -> None:
    early = store(
        tmp_path / "early.db",
        [
            *catalogue(),
            edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_1),
            placed("o1", f"{DAY}T14:00:00Z", PLACED),
        ],
    )
    in_order = store(
        tmp_path / "in-order.db",
        [
            *catalogue(),
            placed("o1", f"{DAY}T14:00:00Z", PLACED),
            edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_1),
        ],
    )
    for at in ("T14:30:00Z", "T16:00:00Z"):
        a, b = report(early, DAY + at), report(in_order, DAY + at)
        assert a.headline == b.headline and a.stockout == b.stockout
    assert report(early, f"{DAY}T14:30:00Z").headline.net_sales == 24.0
    assert report(early, f"{DAY}T16:00:00Z").headline.net_sales == 9.0
    # An edit with no placement at all counts nowhere.
    alone = store(
        tmp_path / "alone.db", [*catalogue(), edited("o9", "e9", f"{DAY}T15:30:00Z", EDIT_1)]
    )
    assert report(alone, f"{DAY}T16:00:00Z").headline.net_sales == 0.0
    assert rows(alone, "SELECT COUNT(*) FROM order_lines") == [(0,)]


def test_a_cancelled_order_stays_cancelled(tmp_path: Path) -> None:
    for name, order in (
        ("edit-first", ["edit", "cancel"]),
        ("cancel-first", ["cancel", "edit"]),
    ):
        tail: dict[str, Event] = {
            "edit": edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_2),
            "cancel": ev("order.cancelled", "x1", f"{DAY}T16:30:00Z", {"order_id": "o1"}),
        }
        path = store(
            tmp_path / f"{name}.db",
            [*catalogue(), placed("o1", f"{DAY}T14:00:00Z", PLACED), *(tail[k] for k in order)],
        )
        assert report(path, f"{DAY}T15:00:00Z").headline.net_sales == 24.0
        assert report(path, f"{DAY}T16:00:00Z").headline.net_sales == 29.0
        late_at = f"{DAY}T17:00:00Z"
        late = report(path, late_at)
        assert late.headline.net_sales == 0.0 and late.headline.orders_per_hour == 0.0
        assert velocity(path, late_at, "C") == 0.0
        assert sorted(rows(path, "SELECT sku, units FROM sales_hourly WHERE units != 0")) == []


# --- a generated day with edits -------------------------------------------------------------

SLICE_END = "2026-10-21T22:00:00Z"
MOMENTS = 40


def mutated(
    rng: random.Random, lines: list[dict[str, Any]], skus: list[str]
) -> list[dict[str, Any]]:
    """A random edit of ``lines``: a line removed, a quantity, price or discount changed, a
    line added (never leaving none)."""
    out = [dict(x) for x in lines]
    for _ in range(rng.randint(1, 2)):
        op = rng.choice(["remove", "quantity", "price", "discount", "add"])
        target = rng.randrange(len(out))
        if op == "remove" and len(out) > 1:
            del out[target]
        elif op == "quantity":
            out[target]["quantity"] = rng.randint(1, 4)
        elif op == "price":
            price = Decimal(str(out[target]["unit_price"]))
            out[target]["unit_price"] = str((price * Decimal("0.9")).quantize(Decimal("0.01")))
        elif op == "discount":
            out[target]["discount"] = str(Decimal(rng.randint(0, 300)) / 100)
        else:
            out.append(
                {"sku": rng.choice(skus), "quantity": rng.randint(1, 3), "unit_price": "12.50"}
            )
    return out


def with_edits(events: list[Event], seed: int, share: int = 8) -> tuple[list[Event], list[Event]]:
    """(the day with edits in time order, the same as fed: out of order and redelivered)."""
    rng = random.Random(seed)
    orders = [e for e in events if isinstance(e, OrderPlaced) and e.body.lines]
    skus = sorted({line.sku for o in orders for line in o.body.lines})
    edits: list[Event] = []
    for n, order in enumerate(rng.sample(orders, len(orders) // share)):
        lines = [x.model_dump(mode="json") for x in order.body.lines]
        moment = epoch(order.ts)
        for k in range(rng.randint(1, 3)):
            moment += rng.randint(60, 4 * 3600)
            lines = mutated(rng, lines, skus)
            edits.append(
                parse_event(
                    {
                        "id": f"edit-{n}-{k}",
                        "type": "order.edited",
                        "ts": _iso(moment),
                        "source": order.source,
                        "body": {"order_id": order.body.order_id, "lines": lines},
                    }
                )
            )
    timeline = sorted([*events, *edits], key=lambda e: e.ts)
    fed: list[Event] = [e for e in events]
    for edit in reversed(edits):  # newer edits of an order before its older ones
        roll = rng.random()
        if roll < 0.3:
            fed.insert(rng.randrange(len(fed) // 4 + 1), edit)  # before its placement, often
        elif roll < 0.5:
            fed.append(edit)  # late
        else:
            at = (
                next(i for i, e in enumerate(fed) if e.ts > edit.ts)
                if fed[-1].ts > edit.ts
                else len(fed)
            )
            fed.insert(at, edit)
    fed += rng.sample(edits, len(edits) // 10)  # redeliveries
    return timeline, fed


def test_report_at_t_equals_report_of_the_events_up_to_t_with_edits(tmp_path: Path) -> None:
    day = [e for e in slice_events() if e.ts < datetime.fromisoformat(SLICE_END)]
    timeline, fed = with_edits(day, seed=5)
    edits = [e for e in timeline if e.type == "order.edited"]
    assert len(edits) > 100
    full = tmp_path / "full.db"
    prefix = tmp_path / "prefix.db"

    async def run() -> list[str]:
        async with StoreWriter(full) as writer:
            await writer.write_many(fed)
        first, last = epoch(timeline[0].ts), epoch(timeline[-1].ts)
        rng = random.Random(13)
        moments = sorted(rng.randint(first, last + 3600) for _ in range(MOMENTS))
        moments[MOMENTS // 2] = epoch(edits[len(edits) // 2].ts)  # exactly on an edit
        moments.sort()
        failures: list[str] = []
        done = 0
        async with StoreWriter(prefix) as writer:
            for t in moments:
                upto = done
                while upto < len(timeline) and epoch(timeline[upto].ts) <= t:
                    upto += 1
                if upto > done:
                    await writer.write_many(timeline[done:upto])
                    done = upto
                at = datetime.fromtimestamp(t, UTC)
                full_at, prefix_at = comparable(full, at), comparable(prefix, at)
                # redeliveries are a store total, not stamped (README: Metrics)
                assert full_at["counts"].pop("duplicates") >= prefix_at["counts"].pop("duplicates")
                differences = diff(full_at, prefix_at)
                if differences:
                    failures.append(f"T={at.isoformat()}: " + "; ".join(differences[:6]))
        return failures

    failures = asyncio.run(run())
    assert not failures, f"{len(failures)} of {MOMENTS} moments differ:\n" + "\n".join(failures[:8])
    # the edits moved numbers: the full store now is not the store without them
    plain = tmp_path / "plain.db"

    async def fill() -> None:
        async with StoreWriter(plain) as writer:
            await writer.write_many(day)

    asyncio.run(fill())
    now = datetime.fromisoformat(SLICE_END)
    assert comparable(full, now)["headline"] != comparable(plain, now)["headline"]


def test_bulk_and_single_paths_agree_with_edits(tmp_path: Path) -> None:
    items = salted(fixture_slice(300), 4)
    events = [i for i in items if not isinstance(i, Quarantined)]
    _, fed = with_edits(events, seed=6, share=4)
    mixed: list[Event | Quarantined] = [*fed, *(i for i in items if isinstance(i, Quarantined))]
    random.Random(7).shuffle(mixed)
    end = max(epoch(i.ts) for i in mixed if not isinstance(i, Quarantined))
    single = dump(build(tmp_path / "single.db", mixed, 1), end)
    assert single["order_edits"] and single["order_placed_lines"]
    for batch in (300, 5000):
        bulk = dump(build(tmp_path / f"bulk-{batch}.db", mixed, batch), end)
        for table, expected in single.items():
            assert bulk[table] == expected, f"{table} differs with batches of {batch}"


def test_the_schema_names_the_edit() -> None:
    import sqlite3

    from store.model import event_json_schema

    assert "order.edited" in event_json_schema()["discriminator"]["mapping"]
    db = sqlite3.connect(":memory:", isolation_level=None)
    configure_connection(db)
    migrate(db)
    apply_batch(db, [*catalogue(), edited("o1", "e1", f"{DAY}T15:30:00Z", EDIT_1)], RECEIVED)
    assert db.execute("SELECT order_id, units FROM order_edits").fetchall() == [("o1", 1)]
