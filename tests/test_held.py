"""Held deliveries on a real store: each adapter's unmapped ids, replay, and roll-ups.

The vendor payloads are the samples in ``fixtures/payloads/`` (see its ``SOURCES.md``);
writes go through a real :class:`store.writer.StoreWriter` on a SQLite file.  Sales are
checked against hand-computed figures: an order of 2 units at 10.00 is 2 units and 2000
cents, counted in exactly one place.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

from feeds.runtime.quarantine import hold_for, replay, suggest
from feeds.webhooks import Mapped, amazon, easypost, shopify, square
from feeds.webhooks.canonical import parse_events_body
from feeds.webhooks.mapping import Mapping, parse_mapping
from store.apply import apply_batch
from store.held import held_rows, reason_class, record_held, unplace
from store.model import Quarantined, TimeWindow, set_time_window
from store.writer import StoreWriter
from tests.builders import T0, at, ev, location, order, rows, step

PAYLOADS = Path(__file__).resolve().parent.parent / "fixtures" / "payloads"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


async def deliver(writer: StoreWriter, source: str, mapped: Mapped, body: Any) -> None:
    """What serve does with a delivery: write its items, then keep it if it must be."""
    await writer.write(mapped.items)
    kept = hold_for(source, mapped, json.dumps(body).encode())
    if kept is not None:
        await writer.run(lambda db: record_held(db, kept, int(T0.timestamp())))


def stub(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return suggest(conn).toml
    finally:
        conn.close()


async def test_square_and_amazon_ids_are_suggested_in_their_tables(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    counts = payload("square/inventory.count.updated.json")
    fba = payload("amazon/FBA_INVENTORY_AVAILABILITY_CHANGES.json")
    async with StoreWriter(db) as writer:
        await deliver(writer, "square", square.map_square(counts, Mapping().square), counts)
        await deliver(writer, "square", square.map_square(counts, Mapping().square), counts)
        await deliver(writer, "amazon", amazon.map_amazon(fba, Mapping().amazon), fba)
    text = stub(db)
    parsed = parse_mapping(text)  # the stub parses as it is
    assert parsed.square.catalog_objects == {"FGQ5JJWT2PYTHF35CKZ2DSKP": ""}
    assert parsed.square.locations == {"YYQR03DGCTXA4": ""}
    assert "ATVPDKIKX0DER" in parsed.amazon.marketplaces
    assert parsed.amazon.skus == {"SELLERSKU-1": "SELLERSKU-1"}  # a SellerSKU maps to itself
    # the same notification twice is one held delivery, counted once
    assert rows(db, "SELECT events FROM unmapped_ids WHERE kind = 'catalog_object_id'") == [(1,)]
    assert rows(db, "SELECT source, deliveries FROM held WHERE state = 'held' ORDER BY id") == [
        ("square", 2),
        ("amazon", 1),
    ]


async def test_a_tracker_before_its_order_is_replayed_once_the_order_exists(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    body = payload("easypost/tracker.updated.event-body.json")
    tracker = easypost.parse_tracker(body)
    mapped = easypost.map_tracker(tracker, None)  # no order with this tracking number yet
    assert isinstance(mapped.items[0], Quarantined)
    async with StoreWriter(db) as writer:
        await deliver(writer, "easypost", mapped, body)
        first = await replay(writer, Mapping())
        assert (first.placed, first.still_held) == (0, 1)
        placed = order("o1", at(-30), [("A", 1)])
        label = step("o1", "packed", at(-29), carrier="FedEx", tracking=tracker.tracking_code)
        await writer.write([placed, label])
        second = await replay(writer, Mapping())
        third = await replay(writer, Mapping())
    assert (second.placed, second.applied, second.still_held) == (1, 1, 0)
    assert third.held == 0
    ((shipped,),) = rows(db, "SELECT shipped_ts FROM orders WHERE order_id = 'o1'")
    assert shipped is not None
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_replacing_a_node_less_order_counts_it_once(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    nodeless = order("o1", at(-2), [("A", 2)], loc=None, id_="shop:o1:placed")
    mapped_now = order("o1", at(-2), [("A", 2)], loc="S1", id_="shop:o1:placed")
    other = order("o2", at(-2), [("A", 1)], loc=None, id_="shop:o2:placed")
    cancelled = order("o3", at(-2), [("A", 5)], loc=None, id_="shop:o3:placed")
    cancelled_now = order("o3", at(-2), [("A", 5)], loc="S1", id_="shop:o3:placed")
    cancel = ev(
        "order.cancelled",
        at(-1),
        {"order_id": "o3", "reason": "customer"},
        source="webshop",
        id_="shop:o3:cancelled",
    )
    async with StoreWriter(db) as writer:
        await writer.write([nodeless, other, cancelled, cancel])
        assert rows(db, "SELECT location_id, units, net_cents FROM sales_hourly") == [
            ("-", 3, 3000)  # o1 and o2 unassigned; o3 counted, then reversed
        ]
        outcomes = await writer.run(
            lambda conn: apply_batch(
                conn,
                [mapped_now, cancelled_now],
                int(T0.timestamp()),
                prepare=unplace([mapped_now.id, cancelled_now.id, "no-such-event"]),
            )
        )
    assert outcomes == ["applied", "applied"]
    sales = rows(db, "SELECT location_id, units, net_cents FROM sales_hourly ORDER BY 1")
    assert sales == [("-", 1, 1000), ("S1", 2, 2000)]  # o2 still unassigned, o1 at S1 once
    assert rows(db, "SELECT SUM(units) FROM sku_hourly") == [(3,)]
    assert rows(db, "SELECT SUM(units) FROM category_hourly") == [(3,)]
    assert rows(db, "SELECT COUNT(*) FROM event_log WHERE type = 'order.placed'") == [(3,)]
    assert rows(db, "SELECT events FROM feed_state WHERE feed = 'webshop'") == [(4,)]
    assert rows(db, "SELECT order_id, location_id, sales_reversed FROM orders ORDER BY 1") == [
        ("o1", "S1", 0),
        ("o2", None, 0),
        ("o3", "S1", 1),
    ]


def test_alike_reasons_group() -> None:
    a = reason_class("order shopify-1 not placed: line_items[0]: unmapped Shopify variant_id 7")
    b = reason_class("order shopify-22 not placed: line_items[3]: unmapped Shopify variant_id 9")
    assert a == b
    assert reason_class("refund 5: no SKU for the refunded line") != a


async def test_events_lines_outside_the_window_replay_when_it_widens(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    line = order("old", at(-24 * 400), [("A", 1)]).model_dump_json()
    previous = set_time_window(TimeWindow(past=timedelta(days=30)))
    try:
        mapped = Mapped(items=[item.item for item in parse_events_body(line.encode())])
        assert isinstance(mapped.items[0], Quarantined)
        async with StoreWriter(db) as writer:
            await deliver(writer, "events", mapped, None)
            still = await replay(writer, Mapping())
            set_time_window(TimeWindow(past=timedelta(days=3650)))
            done = await replay(writer, Mapping())
    finally:
        set_time_window(previous)
    assert (still.still_held, done.placed, done.applied) == (1, 1, 1)
    assert rows(db, "SELECT order_id FROM orders") == [("old",)]
    conn = sqlite3.connect(db)
    try:
        assert held_rows(conn) == []
    finally:
        conn.close()


def test_the_readme_mapping_example_maps_every_sample_payload() -> None:
    readme = (PAYLOADS.parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("A worked example over the vendor samples", 1)[1]
    toml = section.split("```toml\n", 1)[1].split("```", 1)[0]
    mapping = parse_mapping(toml, where="README")
    results = [
        shopify.map_shopify(
            "orders/create", "e1", payload("shopify/rest-2024-04_order.json"), mapping.shopify
        ),
        shopify.map_shopify(
            "inventory_levels/update",
            "e2",
            payload("shopify/rest-2024-04_inventory_level.json"),
            mapping.shopify,
        ),
        shopify.map_shopify(
            "refunds/create", "e3", payload("shopify/rest-2024-04_refund.json"), mapping.shopify
        ),
        square.map_square(payload("square/inventory.count.updated.json"), mapping.square),
        amazon.map_amazon(payload("amazon/ORDER_CHANGE.json"), mapping.amazon),
        amazon.map_amazon(
            payload("amazon/FBA_INVENTORY_AVAILABILITY_CHANGES.json"), mapping.amazon
        ),
    ]
    for mapped in results:
        assert mapped.unmapped == []
        assert not [i for i in mapped.items if isinstance(i, Quarantined)], mapped.items
        assert mapped.items
    (placed,) = [i for i in results[0].items if i.type == "order.placed"]
    assert placed.body.location_id == "WH-NJ"  # type: ignore[union-attr]


async def test_a_delivery_too_large_to_keep_whole_is_never_replayed(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    body = payload("shopify/rest-2024-04_order.json")
    body["note_attributes"] = [{"name": "filler", "value": "x" * 600_000}]
    mapped = shopify.map_shopify("orders/create", "e1", body, Mapping().shopify)
    assert mapped.unmapped == [("location_id", "655441491")]
    mapping = parse_mapping('[shopify.locations]\n"655441491" = "WH-NJ"\n')
    async with StoreWriter(db) as writer:
        await writer.write(mapped.items)
        kept = hold_for("shopify", mapped, json.dumps(body).encode(), topic="orders/create")
        assert kept is not None and len(kept.raw) < 1000
        await writer.run(lambda conn: record_held(conn, kept, int(T0.timestamp())))
        result = await replay(writer, mapping)
    assert (result.placed, result.still_held) == (0, 1)
    assert "cannot be replayed" in result.reasons[0][1]
    assert rows(db, "SELECT location_id FROM orders") == [(None,)]  # left as it was


async def test_the_commands_exit_codes(tmp_path: Path, capsys: Any) -> None:
    from console.cli import main

    db = tmp_path / "s.db"
    async with StoreWriter(db) as writer:
        await writer.write([location("WH-NJ", kind="warehouse")])
    assert main(["quarantine", "list", "--db", str(db)]) == 0
    assert "nothing held" in capsys.readouterr().out
    assert main(["quarantine", "show", "7", "--db", str(db)]) == 1
    assert main(["mapping", "suggest", "--db", str(db)]) == 1  # nothing unmapped
    assert main(["quarantine", "list", "--db", str(tmp_path / "nope" / "s.db")]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[shopify]\nno_such_key = 1\n", encoding="utf-8")
    assert main(["quarantine", "replay", "--db", str(db), "--mapping", str(bad)]) == 2
    assert "no_such_key" in capsys.readouterr().err
    capsys.readouterr()
    assert main(["mapping", "suggest", "--db", str(db), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["known_locations"] == ["WH-NJ"]
