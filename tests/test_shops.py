"""Connecting a real shop: unmapped ids routed, suggested, and replayed once mapped.

Real HTTP on 127.0.0.1 into ``serve`` with a real SQLite store; the Shopify order is the
vendor's sample payload (``fixtures/payloads/shopify/rest-2024-04_order.json``), signed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.signatures import sign_shopify
from tests.builders import T0, location, sku, snapshot

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "fixtures" / "payloads"
SECRET = "shpss_shops_secret"
EVENTS_TOKEN = "events-token"
ORDER_ID = "shopify-450789469"
SHOP_LOCATION = "655441491"  # the location of the sample order's fulfillment
SKUS = ("IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK")


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


@dataclass
class Shop:
    server: Server
    http: aiohttp.ClientSession
    db: Path
    mapping: Path

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    async def shopify(
        self, topic: str, body: dict[str, Any], *, event_id: str = "evt-1"
    ) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode()
        headers = {
            "X-Shopify-Topic": topic,
            "X-Shopify-Event-Id": event_id,
            "X-Shopify-Hmac-Sha256": sign_shopify(SECRET, raw),
        }
        async with self.http.post("/webhooks/shopify", data=raw, headers=headers) as resp:
            answer = resp.status, await resp.json()
        await self.server.writer.flush()  # the routing after the commit is done too
        return answer

    async def events(self, items: list[Any]) -> None:
        body = "\n".join(e.model_dump_json() for e in items)
        headers = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
        async with self.http.post("/events", data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()

    async def catalogue(self, stock_at: dict[str, int]) -> None:
        """The sample order's SKUs, and stock of each at the given warehouses."""
        items: list[Any] = [sku(s) for s in SKUS]
        for node, units in stock_at.items():
            items.append(location(node, kind="warehouse"))
            items.extend(snapshot(s, node, units, T0) for s in SKUS)
        await self.events(items)


@pytest.fixture
async def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Shop]:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    mapping = tmp_path / "mapping.toml"
    mapping.write_text("[shopify]\nsla_hours = 24\n", encoding="utf-8")
    config = ServeConfig(
        db=tmp_path / "store.db",
        port=0,
        shopify_webhook_secret=SECRET,
        events_token=EVENTS_TOKEN,
        mapping_file=mapping,
        batch_wait_ms=2,
        max_past_days=36500,  # the vendor's sample order is dated 2008
    )
    async with Server(config, feeds=[]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(base_url=server.url) as http:
            yield Shop(server, http, config.db, mapping)


async def test_unmapped_location_is_routed_by_the_default_rules(shop: Shop) -> None:
    await shop.catalogue({"WH-A": 5})
    status, answer = await shop.shopify("orders/create", payload("shopify/rest-2024-04_order.json"))
    assert status == 200, answer
    assert any(SHOP_LOCATION in line and "fulfillment rules" in line for line in answer["ignored"])
    (row,) = shop.rows(
        "SELECT d.status, d.location_id, o.location_id, o.fulfil_location_id"
        " FROM routing_decisions d JOIN orders o USING (order_id) WHERE order_id = ?",
        ORDER_ID,
    )
    assert row == ("routed", "WH-A", None, "WH-A")


async def test_unmapped_location_without_any_node_says_why(shop: Shop) -> None:
    status, _ = await shop.shopify("orders/create", payload("shopify/rest-2024-04_order.json"))
    assert status == 200
    ((state, summary),) = shop.rows(
        "SELECT status, summary FROM routing_decisions WHERE order_id = ?", ORDER_ID
    )
    assert state in ("held", "unfulfillable")
    assert summary
