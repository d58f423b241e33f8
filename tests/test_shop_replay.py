"""Nothing is stuck forever: an unmapped shop id is suggested, mapped, and replayed once.

Real HTTP on 127.0.0.1 into a real ``serve`` (the ``shop`` fixture of
:mod:`tests.test_shops`) with a real SQLite store; the Shopify order is the vendor's
sample payload (``fixtures/payloads/shopify/rest-2024-04_order.json``, see
``fixtures/payloads/SOURCES.md``), signed.  ``omniops mapping suggest``, ``quarantine
replay`` and ``report --json`` run as the command line does (``console.cli.main``), against
the store the server is writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from console.cli import main
from feeds.webhooks.mapping import parse_mapping
from store.schema import SCHEMA_VERSION
from tests.test_shops import ORDER_ID, SHOP_LOCATION, SKUS, Shop, payload, shop

__all__ = ["shop"]  # the fixture, reused

ORDER_EVENT = "shopify:order:450789469:placed"
INVENTORY = {
    "inventory_item_id": 808950810,
    "location_id": 905684977,
    "available": 6,
    "updated_at": "2008-01-10T12:00:00-05:00",
}


@pytest.fixture(autouse=True)
def old_orders_are_plausible(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vendor's sample is dated 2008: the replay validates with serve's window too."""
    monkeypatch.setenv("OMNIOPS_MAX_PAST_DAYS", "36500")


async def omniops(*argv: str) -> tuple[int, str]:
    """Run the ``omniops`` command line in a thread; its exit code and standard output."""

    def run() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(list(argv))
        return code, out.getvalue()

    return await asyncio.to_thread(run)


async def health(shop: Shop) -> dict[str, Any]:
    async with shop.http.get("/health") as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def wait_for_health(shop: Shop, key: str, value: object) -> dict[str, Any]:
    for _ in range(100):
        body = await health(shop)
        if body.get(key) == value:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"/health never had {key} = {value!r}: {body}")


def add_mapping(shop: Shop, toml: str) -> None:
    text = shop.mapping.read_text(encoding="utf-8") + toml
    parse_mapping(text)  # what serve and the replay will read
    shop.mapping.write_text(text, encoding="utf-8")


def sales_by_location(shop: Shop) -> dict[str, tuple[int, int]]:
    return {
        loc: (int(units), int(net))
        for loc, units, net in shop.rows(
            "SELECT location_id, SUM(units), SUM(net_cents) FROM sales_hourly"
            " GROUP BY location_id HAVING SUM(units) != 0 OR SUM(net_cents) != 0"
        )
    }


async def report(shop: Shop) -> dict[str, Any]:
    code, out = await omniops(
        "report", "--db", str(shop.db), "--json", "--at", "2008-01-11T00:00:00Z"
    )
    assert code == 0
    data: dict[str, Any] = json.loads(out)
    return data


def location_rows(data: dict[str, Any]) -> dict[str, int]:
    return {
        row["key"]: row["open_orders"]
        for row in data["fulfillment"]["rows"]
        if row["scope"] == "location" and row["open_orders"]
    }


async def placed_at_the_router_node(shop: Shop) -> None:
    """The sample order, its location unmapped: stored without a node, routed to WH-A."""
    await shop.catalogue({"WH-A": 5, "WH-NJ": 0})
    status, answer = await shop.shopify("orders/create", payload("shopify/rest-2024-04_order.json"))
    assert status == 200, answer
    assert shop.rows("SELECT location_id, fulfil_location_id FROM orders") == [(None, "WH-A")]
    assert shop.rows("SELECT SUM(reserved) FROM stock WHERE location_id = 'WH-A'") == [(3,)]


async def test_suggest_map_replay_places_the_order_at_the_mapped_node_once(shop: Shop) -> None:
    await placed_at_the_router_node(shop)
    net = sales_by_location(shop)["WH-A"][1]
    assert sales_by_location(shop) == {"WH-A": (3, net)}
    body = await wait_for_health(shop, "held", 1)
    assert body["replayable"] == 0  # nothing the mapping in force would place

    code, out = await omniops("mapping", "suggest", "--db", str(shop.db))
    assert code == 0
    assert SHOP_LOCATION in out and "[shopify.locations]" in out
    code, out = await omniops("mapping", "suggest", "--db", str(shop.db), "--json")
    suggestion = json.loads(out)
    assert [
        (u["adapter"], u["kind"], u["external_id"], u["events"]) for u in suggestion["unmapped"]
    ] == [("shopify", "location_id", SHOP_LOCATION, 1)]
    stub = suggestion["toml"]
    assert parse_mapping(stub).shopify.locations == {SHOP_LOCATION: ""}  # the stub parses

    add_mapping(shop, stub.replace('= ""', '= "WH-NJ"'))
    # serve's hot reload offers the replay, and changes nothing by itself
    await wait_for_health(shop, "replayable", 1)
    assert shop.rows("SELECT location_id FROM orders") == [(None,)]
    async with shop.http.get("/metrics") as resp:
        assert "omniops_replayable_deliveries 1" in await resp.text()

    code, out = await omniops(
        "quarantine", "replay", "--db", str(shop.db), "--mapping", str(shop.mapping)
    )
    assert code == 0, out
    assert "1 placed, 0 still held" in out and "1 replaced a node-less version" in out

    assert shop.rows("SELECT location_id FROM orders WHERE order_id = ?", ORDER_ID) == [("WH-NJ",)]
    assert shop.rows("SELECT COUNT(*) FROM event_log WHERE event_id = ?", ORDER_EVENT) == [(1,)]
    assert sales_by_location(shop) == {"WH-NJ": (3, net)}  # moved, counted once
    assert shop.rows("SELECT COUNT(*) FROM routing_decisions") == [(0,)]
    assert shop.rows("SELECT SUM(reserved) FROM stock") == [(0,)]  # the router's hold released
    assert shop.rows("SELECT COUNT(*) FROM order_lines WHERE sales_location = 'WH-NJ'") == [(3,)]
    data = await report(shop)
    assert location_rows(data) == {"WH-NJ": 1}
    assert data["fulfillment"]["total_open"] == 1
    assert await wait_for_health(shop, "held", 0)

    code, out = await omniops("mapping", "suggest", "--db", str(shop.db))
    assert code == 1 and "every external id seen has a mapping" in out


async def test_replay_twice_and_a_redelivery_apply_it_once(shop: Shop) -> None:
    await placed_at_the_router_node(shop)
    add_mapping(shop, f'[shopify.locations]\n"{SHOP_LOCATION}" = "WH-NJ"\n')
    await wait_for_health(shop, "replayable", 1)  # serve maps with it too, from now on
    first = await omniops(
        "quarantine",
        "replay",
        "--db",
        str(shop.db),
        "--mapping",
        str(shop.mapping),
        "--source",
        "shopify",
    )
    assert first[0] == 0
    after_first = (sales_by_location(shop), await report(shop))
    events = shop.rows("SELECT events FROM feed_state WHERE feed = 'shopify'")

    code, out = await omniops(
        "quarantine", "replay", "--db", str(shop.db), "--mapping", str(shop.mapping)
    )
    assert code == 0 and "nothing to replay" in out
    # the shop re-sends the order: a duplicate of the replaced version, nothing moves
    status, answer = await shop.shopify(
        "orders/updated", payload("shopify/rest-2024-04_order.json")
    )
    assert status == 200 and {r["outcome"] for r in answer["results"]} == {"duplicate"}
    again = await report(shop)
    # the same panels; only the store's duplicate counter moved (the two facts re-sent)
    assert again.pop("counts")["duplicates"] == after_first[1].pop("counts")["duplicates"] + 2
    assert (sales_by_location(shop), again) == after_first
    assert shop.rows("SELECT events FROM feed_state WHERE feed = 'shopify'") == events
    assert sales_by_location(shop) == {"WH-NJ": (3, after_first[0]["WH-NJ"][1])}
    code, out = await omniops("quarantine", "list", "--db", str(shop.db))
    assert code == 0 and "nothing held" in out


async def test_a_replay_that_still_fails_stays_quarantined_with_its_new_reason(
    shop: Shop,
) -> None:
    status, answer = await shop.shopify("inventory_levels/update", INVENTORY, event_id="inv-1")
    assert status == 202, answer
    (reason,) = shop.rows("SELECT error FROM quarantine")[0]
    assert "inventory_item_id 808950810" in reason and "location_id 905684977" in reason
    code, out = await omniops("quarantine", "list", "--db", str(shop.db), "--json")
    (held,) = json.loads(out)
    assert held["source"] == "shopify" and held["topic"] == "inventory_levels/update"

    add_mapping(shop, '[shopify.locations]\n"905684977" = "WH-NJ"\n')  # half of what it needs
    code, out = await omniops(
        "quarantine",
        "replay",
        "--db",
        str(shop.db),
        "--mapping",
        str(shop.mapping),
        "--reason",
        "inventory_item_id",
    )
    assert code == 1, out
    assert "0 placed, 1 still held" in out
    ((error,),) = shop.rows("SELECT error FROM quarantine")
    assert error == "unmapped Shopify inventory_item_id 808950810"  # the new reason, alone
    ((state, held_reason, attempts),) = shop.rows("SELECT state, reason, attempts FROM held")
    assert (state, held_reason, attempts) == ("held", error, 1)
    code, out = await omniops("quarantine", "show", str(held["id"]), "--db", str(shop.db))
    assert code == 0 and json.loads(out)["raw"]["inventory_item_id"] == 808950810
    # the location is known now: only the item is still suggested
    code, out = await omniops("mapping", "suggest", "--db", str(shop.db), "--json")
    ids = [u["external_id"] for u in json.loads(out)["unmapped"]]
    assert ids == ["808950810"]

    add_mapping(shop, f'[shopify.inventory_items]\n"808950810" = "{SKUS[0]}"\n')
    code, out = await omniops(
        "quarantine", "replay", "--db", str(shop.db), "--mapping", str(shop.mapping)
    )
    assert code == 0 and "1 placed" in out
    assert shop.rows("SELECT sku, location_id, on_hand FROM stock") == [(SKUS[0], "WH-NJ", 6)]
    assert shop.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]
    assert (await health(shop))["store"]["schema_version"] == SCHEMA_VERSION


def test_the_sample_payload_is_attributed() -> None:
    sources = (Path(__file__).resolve().parent.parent / "fixtures/payloads/SOURCES.md").read_text()
    assert "shopify/rest-2024-04_" in sources


async def two_held_inventory_levels(db: Path) -> None:
    """Two Shopify inventory levels quarantined for an unmapped item at an unmapped place."""
    from store.held import HeldDelivery, record_held
    from store.model import Quarantined
    from store.writer import StoreWriter

    parts = [
        Quarantined(source="shopify", raw="{}", error=f"unmapped Shopify inventory_item_id {n}")
        for n in (11, 22)
    ]
    async with StoreWriter(db) as writer:
        await writer.write(parts)
        for n, part in zip((11, 22), parts, strict=True):
            kept = HeldDelivery(
                source="shopify",
                raw=json.dumps({"inventory_item_id": n}),
                reason=part.error,
                topic="inventory_levels/update",
                unmapped=(("inventory_item_id", str(n)), ("location_id", "905684977")),
                quarantined=((part.source, part.error, part.raw),),
            )
            await writer.run(lambda conn, kept=kept: record_held(conn, kept, 1_700_000_000))


def console_on(db: Path, tmp_path: Path, roles: Any = None) -> Any:
    from console.cli import build_console
    from store.clock import FixedClock
    from store.risk import MetricParams
    from tests.builders import T0

    return build_console(
        db,
        FixedClock(T0),
        MetricParams(),
        60.0,
        tz=ZoneInfo("UTC"),
        rules_path=tmp_path / "rules.toml",
        roles=roles,
    )


async def test_feeds_view_counts_unmapped_ids_and_quarantine_reasons(tmp_path: Path) -> None:
    from textual.widgets import DataTable, Static

    from console.screens import FeedsScreen
    from tests.test_console import settle

    db = tmp_path / "s.db"
    await two_held_inventory_levels(db)
    app, close = console_on(db, tmp_path)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("h")
            await pilot.pause()
            assert isinstance(app.screen, FeedsScreen)
            await app.screen.workers.wait_for_complete()
            await pilot.pause()
            unmapped = app.screen.query_one("#feed-unmapped", DataTable)
            assert [
                [str(c) for c in unmapped.get_row_at(i)] for i in range(unmapped.row_count)
            ] == [
                ["shopify", "3", "4"]  # 3 distinct ids; 2 deliveries carried 2 ids each
            ]
            title = str(app.screen.query_one("#unmapped-title", Static).render())
            assert "omniops mapping suggest" in title
            reasons = app.screen.query_one("#feed-quarantine", DataTable)
            assert [[str(c) for c in reasons.get_row_at(i)] for i in range(reasons.row_count)] == [
                ["2", "unmapped Shopify inventory_item_id #"]
            ]
            quarantine = str(app.screen.query_one("#quarantine-title", Static).render())
            assert "2 rows, 2 deliveries held" in quarantine
    finally:
        close()


@pytest.mark.parametrize("role", ["operator", "viewer"])
async def test_replay_from_the_feeds_view_is_for_operators_and_editors(
    tmp_path: Path, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.screens import FeedsScreen
    from rules.roles import Roles, current_user
    from tests.test_console import settle

    db = tmp_path / "s.db"
    await two_held_inventory_levels(db)
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[shopify.locations]\n"905684977" = "WH-NJ"\n', encoding="utf-8")
    monkeypatch.setenv("OMNIOPS_MAPPING_FILE", str(mapping))
    roles = Roles(operators=(current_user(),)) if role == "operator" else Roles()
    app, close = console_on(db, tmp_path, roles)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("h")
            await pilot.pause()
            assert isinstance(app.screen, FeedsScreen)
            await app.screen.workers.wait_for_complete()
            await pilot.press("p")
            await pilot.pause()
            await app.screen.workers.wait_for_complete()
            await pilot.pause()
    finally:
        close()
    conn = sqlite3.connect(db)
    try:
        held = conn.execute("SELECT attempts, reason FROM held ORDER BY id").fetchall()
        errors = [e for (e,) in conn.execute("SELECT error FROM quarantine ORDER BY id")]
    finally:
        conn.close()
    if role == "viewer":
        assert [a for a, _ in held] == [0, 0]  # refused: nothing replayed
    else:
        # replayed: still held (a bare level names no location), with the new reason, in
        # quarantine too
        assert [a for a, _ in held] == [1, 1]
        assert errors == [r for _, r in held]
        assert all(r == "shopify: location_id: required field is missing" for _, r in held)
