"""``POST /route`` and ``GET /route/{order_id}`` over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import sqlite3
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from feeds.runtime.route_api import make_app
from feeds.runtime.routing import StoreRoutingSource, route_pending_orders
from rules.routing.config import FulfillmentRouting
from rules.routing.orders import Decision
from rules.routing.router import route_sequence
from store.clock import FixedClock
from tests.routing_world import DAY, FIXTURE_DAY, fixture_day_inputs, ny, seed

RULES = FulfillmentRouting.model_validate(
    {
        "rules": [
            {
                "id": "pickup",
                "match": "method=bopis",
                "kinds": ["store"],
                "rank_by": ["distance"],
                "fallback": "next_pickup_window",
            },
            {"id": "ship", "match": "method=ship", "kinds": ["warehouse"], "window": "any"},
        ]
    }
)


@pytest.fixture
async def base_url(db_path: Path) -> AsyncIterator[str]:
    await seed(db_path, DAY)
    conn = sqlite3.connect(db_path, isolation_level=None)
    route_pending_orders(conn, RULES, decided_at=ny(15))
    conn.close()
    source = StoreRoutingSource(db_path)
    app = make_app(source=source, rules=lambda: RULES, clock=FixedClock(ny(12)))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def post(url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        async with session.post(f"{url}/route", **kwargs) as resp:
            return resp.status, await resp.json()


def reserved(db_path: Path) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT sku, location_id, reserved FROM stock ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


async def test_route_an_order_without_reserving(base_url: str, db_path: Path) -> None:
    before = reserved(db_path)
    status, body = await post(
        base_url,
        {
            "order_id": "web-1",
            "destination_region": "south",
            "lines": [{"sku": "TEE", "quantity": 2}],
        },
    )
    assert status == 200
    assert body["status"] == "routed" and body["reserved"] is False
    assert [s["location_id"] for s in body["shipments"]] == ["WH-TX"]
    assert body["rule_id"] == "ship" and body["carrier"] == "ground"
    assert body["decided_for"] == "2026-11-18T17:00:00Z"  # the server clock's now
    chosen = body["trace"][-1]["candidates"]
    assert {c["location_id"]: c["outcome"] for c in chosen}["WH-TX"] == "chosen"
    assert reserved(db_path) == before


async def test_bopis_availability_check(base_url: str) -> None:
    status, body = await post(
        base_url,
        {
            "location_id": "ST-NYC",
            "cart": [{"sku": "TEE", "quantity": 1}],
            "at": "2026-11-19T01:30:00Z",  # 20:30 in New York: past the store's cut-off
        },
    )
    assert status == 200
    assert (body["status"], body["method"], body["fallback"]) == (
        "routed",
        "bopis",
        "next_pickup_window",
    )
    assert body["pickup_window"] == ["2026-11-19T15:00:00Z", "2026-11-20T02:00:00Z"]


async def test_bopis_check_without_stock_offers_ship_to_home(base_url: str) -> None:
    status, body = await post(
        base_url, {"location_id": "ST-BKN", "cart": [{"sku": "TEE", "quantity": 20}]}
    )
    assert status == 200
    assert (body["method"], body["fallback"]) == ("ship", "ship_to_home")
    assert body["shipments"][0]["location_id"] == "WH-TX"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"lines": [{"sku": "TEE", "quantity": 1}]}, 400, "destination_region"),
        ({"destination_region": "south", "lines": []}, 400, "lines"),
        (
            {"destination_region": "south", "lines": [{"sku": "TEE", "quantity": 0}]},
            400,
            "lines.0.quantity",
        ),
        (
            {"destination_region": "south", "method": "drone", "lines": [{"sku": "TEE"}]},
            400,
            "method",
        ),
        (
            {"destination_region": "x", "lines": [{"sku": "TEE", "quantity": 1}], "at": "noon"},
            400,
            "at",
        ),
        (
            {"destination_region": "x", "lines": [{"sku": "TEE", "quantity": 1}], "colour": 1},
            400,
            "colour",
        ),
        ([1, 2], 400, "body"),
        (
            {
                "destination_region": "south",
                "lines": [{"sku": "TEE", "quantity": 1}, {"sku": "NOPE", "quantity": 1}],
            },
            422,
            "lines.1.sku",
        ),
        ({"location_id": "ST-NYC", "cart": [{"sku": "NOPE", "quantity": 1}]}, 422, "cart.0.sku"),
        ({"location_id": "ST-XXX", "cart": [{"sku": "TEE", "quantity": 1}]}, 422, "location_id"),
        ({"location_id": "WH-NJ", "cart": [{"sku": "TEE", "quantity": 1}]}, 422, "location_id"),
        (
            {"location_id": "ST-NYC", "cart": [{"sku": "TEE", "quantity": -1}]},
            400,
            "cart.0.quantity",
        ),
    ],
)
async def test_bad_input_names_the_field(base_url: str, body: Any, status: int, field: str) -> None:
    got, answer = await post(base_url, body)
    assert (got, answer["field"]) == (status, field)
    assert answer["error"]


async def test_body_that_is_not_json(base_url: str) -> None:
    status, body = await post(base_url, None, raw=b"{not json")
    assert status == 400 and body["field"] == "body"
    assert body["error"].startswith("body is not valid JSON")


async def test_unknown_sku_names_it(base_url: str) -> None:
    status, body = await post(
        base_url, {"destination_region": "south", "lines": [{"sku": "NOPE", "quantity": 1}]}
    )
    assert (status, body["error"], body["sku"]) == (422, "unknown SKU 'NOPE'", "NOPE")


async def test_stored_decision_and_concurrent_checks(base_url: str) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{base_url}/route/o2") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["shipments"][0]["location_id"] == "WH-TX"
        async with session.get(f"{base_url}/route/missing") as resp:
            assert resp.status == 404
            assert (await resp.json())["field"] == "order_id"

        async def one(n: int) -> int:
            order = {
                "order_id": f"c{n}",
                "destination_region": "northeast",
                "lines": [{"sku": "TEE", "quantity": 1}],
            }
            async with session.post(f"{base_url}/route", json=order) as resp:
                await resp.read()
                return resp.status

        assert await asyncio.gather(*(one(n) for n in range(25))) == [200] * 25


@pytest.mark.parametrize("rules_name", ["builtin", "demo"])
def test_decisions_built_unvalidated_are_what_validation_gives(rules_name: str) -> None:
    # The router builds its output models without validating them (trusted); each must be
    # exactly the validated model of the same values: equal, and serialised byte for byte.
    if not (FIXTURE_DAY / "manifest.json").exists():
        pytest.skip("no fixtures/day")
    rules = FulfillmentRouting()
    if rules_name == "demo":
        demo = Path(__file__).resolve().parent.parent / "fixtures" / "demo-fulfillment.toml"
        rules = FulfillmentRouting.model_validate(tomllib.loads(demo.read_text())["fulfillment"])
    inputs = fixture_day_inputs()
    decisions = route_sequence(inputs.orders[:400], inputs.inventory, inputs.nodes, rules)
    assert {d.status for d in decisions} >= {"routed"}
    assert any(d.trace and d.trace[0].candidates for d in decisions)
    serialise = Decision.__pydantic_serializer__.to_json
    for d in decisions:
        validated = Decision.model_validate(d.model_dump())
        assert validated == d
        assert serialise(validated) == serialise(d)
