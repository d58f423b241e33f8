"""What ``POST /route`` caches between requests is never stale: the next answer after a change.

Real HTTP on 127.0.0.1 over a real store file, the real rules file watcher and a
controllable clock.  Each test asks once (filling the caches), changes one thing (a node's
hours through the writer, the rules file, the local day, a SKU, a stock count), and asks
again.  The last test sends every request through the handler's worker thread (what a
read that would wait does) and gets the answers the event loop's own read gives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from feeds.runtime.alerting import RulesRuntime
from feeds.runtime.route_api import make_app
from feeds.runtime.routing import StoreRoutingSource
from store.clock import FixedClock
from tests.builders import ev
from tests.conftest import write
from tests.routing_world import DAY, NODES, SKUS, ny, seed, stock

CART = {"location_id": "ST-NYC", "cart": [{"sku": "TEE", "quantity": 1}]}

RULES_TEXT = """alert = []

[fulfillment]
prep_minutes = {{ store = {prep} }}

[[fulfillment.rules]]
id = "pickup"
match = "method=bopis"
kinds = ["store"]
rank_by = ["distance"]
fallback = "next_pickup_window"
"""


@dataclass
class World:
    """The running endpoint and the handles a test changes."""

    url: str
    db: Path
    clock: FixedClock
    rules_path: Path
    rules: RulesRuntime


@pytest.fixture
async def world(db_path: Path, tmp_path: Path) -> AsyncIterator[World]:
    await seed(db_path, DAY)
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES_TEXT.format(prep=60))
    rules = RulesRuntime(rules_path, create=False)
    assert rules.current is not None, rules.watcher.error
    clock = FixedClock(ny(12))
    source = StoreRoutingSource(db_path)
    app = make_app(source=source, rules=rules.fulfillment, clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield World(str(server.make_url("")).rstrip("/"), db_path, clock, rules_path, rules)
    finally:
        await server.close()


async def ask(url: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.post(f"{url}/route", json=body) as resp,
    ):
        assert resp.status == status, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def test_an_edited_node_is_seen_by_the_next_answer(world: World) -> None:
    before = await ask(world.url, CART)
    assert before["pickup_window"] == ["2026-11-18T18:00:00Z", "2026-11-19T02:00:00Z"]
    nyc = next(n for n in NODES if n.location_id == "ST-NYC")
    edited = nyc.model_dump(mode="json")
    edited["hours"] = {"opens": "09:00", "closes": "19:00", "cutoff": "18:00"}
    await write(world.db, [ev("location.upserted", ny(11), edited, source="catalog")])
    after = await ask(world.url, CART)
    # Ready at noon plus an hour as before, but the window now ends at the new closing time.
    assert after["pickup_window"] == ["2026-11-18T18:00:00Z", "2026-11-19T00:00:00Z"]


async def test_a_node_changed_by_hand_in_sql_is_seen_too(world: World) -> None:
    await ask(world.url, CART)
    conn = sqlite3.connect(world.db, isolation_level=None)
    try:  # the counter is kept by trigger, so even an edit outside the writer counts
        conn.execute("UPDATE locations SET closes = '18:00' WHERE location_id = 'ST-NYC'")
    finally:
        conn.close()
    after = await ask(world.url, CART)
    assert after["pickup_window"] == ["2026-11-18T18:00:00Z", "2026-11-18T23:00:00Z"]


async def test_a_changed_rules_file_is_seen_by_the_next_answer(world: World) -> None:
    before = await ask(world.url, CART)
    assert before["pickup_window"][0] == "2026-11-18T18:00:00Z"  # noon + 60 min
    world.rules_path.write_text(RULES_TEXT.format(prep=150))
    assert await world.rules.watcher.check()
    after = await ask(world.url, CART)
    assert after["pickup_window"][0] == "2026-11-18T19:30:00Z"  # noon + 150 min
    assert after["trace"][0]["rule_id"] == "pickup"


async def test_a_new_local_day_is_seen_by_the_next_answer(world: World) -> None:
    world.clock.set(ny(20, 30))  # past ST-NYC's 20:00 cut-off: tomorrow's window
    late = await ask(world.url, CART)
    assert late["fallback"] == "next_pickup_window"
    assert late["pickup_window"] == ["2026-11-19T15:00:00Z", "2026-11-20T02:00:00Z"]
    world.clock.advance(timedelta(hours=13))  # 09:30 on the 19th: a new local day
    morning = await ask(world.url, CART)
    assert morning["fallback"] is None
    assert morning["pickup_window"] == ["2026-11-19T15:30:00Z", "2026-11-20T02:00:00Z"]
    world.clock.advance(timedelta(days=1))  # and the day after
    next_day = await ask(world.url, CART)
    assert next_day["pickup_window"] == ["2026-11-20T15:30:00Z", "2026-11-21T02:00:00Z"]


async def test_a_stock_count_is_seen_by_the_next_answer(world: World) -> None:
    before = await ask(world.url, CART)
    assert before["method"] == "bopis"
    assert before["shipments"][0]["location_id"] == "ST-NYC"  # 4 on hand, 1 reserved
    await write(world.db, [stock("TEE", "ST-NYC", 1, reserved=1)])
    after = await ask(world.url, CART)
    # Nothing free at ST-NYC any more (and ST-BKN has none): no store can take it.
    assert after["status"] == "held" and after["shipments"] == []
    nyc = [c for c in after["trace"][0]["candidates"] if c["location_id"] == "ST-NYC"]
    assert nyc[0]["reason"] == "no_stock"


async def test_a_stock_change_by_hand_after_repeated_answers_is_seen(world: World) -> None:
    # Asked twice, the second answer comes from what the first read (nothing committed in
    # between); a commit by any other connection, even outside the writer, ends that.
    first = await ask(world.url, CART)
    assert await ask(world.url, CART) == first
    assert first["shipments"][0]["location_id"] == "ST-NYC"
    conn = sqlite3.connect(world.db, isolation_level=None)
    try:
        conn.execute("UPDATE stock SET on_hand = 0 WHERE sku = 'TEE' AND location_id = 'ST-NYC'")
    finally:
        conn.close()
    after = await ask(world.url, CART)
    assert after["status"] == "held"
    nyc = [c for c in after["trace"][0]["candidates"] if c["location_id"] == "ST-NYC"]
    assert nyc[0]["reason"] == "no_stock" and "TEE 0 after buffer" in nyc[0]["detail"]
    conn = sqlite3.connect(world.db, isolation_level=None)
    try:  # and back: the next answer is the first one again
        conn.execute("UPDATE stock SET on_hand = 4 WHERE sku = 'TEE' AND location_id = 'ST-NYC'")
    finally:
        conn.close()
    assert await ask(world.url, CART) == first


async def test_a_sku_added_to_the_catalogue_is_seen_by_the_next_answer(world: World) -> None:
    cart = {"location_id": "ST-NYC", "cart": [{"sku": "CAP", "quantity": 1}]}
    unknown = await ask(world.url, cart, status=422)
    assert unknown["field"] == "cart.0.sku"
    cap = SKUS["TEE"].model_copy(update={"sku": "CAP"}).model_dump(mode="json")
    await write(
        world.db,
        [ev("sku.upserted", ny(11), cap, source="catalog"), stock("CAP", "ST-NYC", 9)],
    )
    known = await ask(world.url, cart)
    assert known["shipments"][0]["location_id"] == "ST-NYC"
    assert known["lines"] == [{"line_no": 0, "sku": "CAP", "quantity": 1, "location_id": "ST-NYC"}]


async def test_the_worker_path_answers_as_the_loop_does(world: World, db_path: Path) -> None:
    # load_ttl=0: today's load is always due, so every request goes to the worker thread.
    app = make_app(
        source=StoreRoutingSource(db_path, load_ttl=0),
        rules=world.rules.fulfillment,
        clock=world.clock,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        order = {"destination_region": "northeast", "lines": [{"sku": "TEE", "quantity": 2}]}
        for body in (CART, order):
            assert await ask(url, body) == await ask(world.url, body)
    finally:
        await server.close()


async def test_a_closed_day_in_the_rules_file_is_seen_by_the_next_answer(world: World) -> None:
    before = await ask(world.url, CART)
    assert before["pickup_window"] == ["2026-11-18T18:00:00Z", "2026-11-19T02:00:00Z"]
    world.rules_path.write_text(
        RULES_TEXT.format(prep=60) + "\n[fulfillment.nodes.ST-NYC]\nclosed_days = [2026-11-18]\n"
    )
    assert await world.rules.watcher.check()
    after = await ask(world.url, CART)
    nyc = next(c for c in after["trace"][0]["candidates"] if c["location_id"] == "ST-NYC")
    assert nyc["outcome"] == "rejected" and nyc["reason"] == "closed", nyc
    assert "closed all day Wed 18 Nov (closed_days)" in nyc["detail"]
    # Its next pickup is tomorrow at opening (09:00) plus the hour's preparation.
    assert "next pickup Thu 19 Nov 10:00" in nyc["detail"]
    assert after["pickup_window"] != before["pickup_window"]
