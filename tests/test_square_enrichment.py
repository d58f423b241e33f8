"""Square orders with their lines: ``serve`` fetches what a notification lacks.

A local aiohttp server on 127.0.0.1 plays Square's API, answering with the response bodies
Square documents (``fixtures/payloads/square/api_*.json``, see its ``SOURCES.md``);
``serve`` receives signed Square notifications over real HTTP and writes a real SQLite
store.  Square is then made unavailable (503 with ``Retry-After``, then connection
refused), ``serve`` is restarted, and the order must land once, with its lines, at the
mapped node.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.signatures import sign_square
from feeds.webhooks.square_api import FEED, SQUARE_VERSION, TOKEN_VARIABLE, retry_after_seconds
from rules.backoff import Backoff
from store.model import OrderPlaced, Quarantined, ReturnReceived
from store.pending import pending_summary
from store.schema import SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent.parent
SQUARE = ROOT / "fixtures" / "payloads" / "square"

KEY = "sq-signature-key-for-tests"
URL = "https://ops.example.com/webhooks/square"
TOKEN = "EAAA-test-access-token"

ORDER = json.loads((SQUARE / "api_CreateOrderResponse.json").read_text(encoding="utf-8"))
PAID = json.loads((SQUARE / "api_PayOrderResponse.json").read_text(encoding="utf-8"))
REFUND = json.loads((SQUARE / "api_GetPaymentRefundResponse.json").read_text(encoding="utf-8"))
ORDER_ID = ORDER["order"]["id"]

MAPPING = """
[square]
channel = "pos"
[square.locations]
"057P5VYJ4A5X1" = "S-BKN"
"P3CCK6HSNDAS7" = "S-NYC"
[square.catalog_objects]
"BEMYCSMIJL46OCDV4KYIKXIB" = "APP-0001"
"""


def notification(order_id: str, *, kind: str = "order.created", event_id: str = "evt-1") -> bytes:
    """Square's documented notification, naming ``order_id`` (the API body is unchanged)."""
    name = "order.created.json" if kind == "order.created" else "order.updated.json"
    body = json.loads((SQUARE / name).read_text(encoding="utf-8"))
    key = "order_created" if kind == "order.created" else "order_updated"
    body["data"]["id"] = order_id
    body["data"]["object"][key]["order_id"] = order_id
    body["event_id"] = event_id
    return json.dumps(body).encode()


@dataclass
class FakeSquare:
    """Square's Orders and Refunds APIs on loopback; ``mode`` decides the answers."""

    orders: dict[str, Any]
    refunds: dict[str, Any] = field(default_factory=dict)
    mode: str = "ok"
    """``ok``; ``busy``: 503 with ``Retry-After: 1``; ``closing``: 429, ``Retry-After: 3600``."""
    port: int = 0
    seen: list[tuple[float, str, dict[str, str]]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    async def _order(self, request: web.Request) -> web.Response:
        return self._answer(request, self.orders.get(request.match_info["order_id"]))

    async def _refund(self, request: web.Request) -> web.Response:
        return self._answer(request, self.refunds.get(request.match_info["refund_id"]))

    def _answer(self, request: web.Request, body: Any) -> web.Response:
        self.seen.append((time.monotonic(), request.path, dict(request.headers)))
        if self.mode in ("busy", "closing"):
            busy = self.mode == "busy"
            return web.json_response(
                {"errors": [{"category": "API_ERROR", "code": "SERVICE_UNAVAILABLE"}]},
                status=503 if busy else 429,
                headers={"Retry-After": "1" if busy else "3600"},
            )
        if self.mode == "unauthorized":
            errors = [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED"}]
            return web.json_response({"errors": errors}, status=401)
        if body is None:
            errors = [{"category": "INVALID_REQUEST_ERROR", "code": "NOT_FOUND", "detail": "nf"}]
            return web.json_response({"errors": errors}, status=404)
        return web.json_response(body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/orders/{order_id}", self._order)
        app.router.add_get("/v2/refunds/{refund_id}", self._refund)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Square unreachable: the port refuses connections."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, path: str) -> list[float]:
        return [t for t, p, _ in self.seen if p == path]


@dataclass
class World:
    tmp: Path
    fake: FakeSquare

    @property
    def db(self) -> Path:
        return self.tmp / "store.db"

    def config(self, *, token: str | None = TOKEN, mapping_text: str = MAPPING) -> ServeConfig:
        mapping = self.tmp / "mapping.toml"
        mapping.write_text(mapping_text, encoding="utf-8")
        return ServeConfig(
            db=self.db,
            port=0,
            square_signature_key=KEY,
            square_notification_url=URL,
            square_access_token=token,
            square_api_url=self.fake.url,
            mapping_file=mapping,
            feed_health_seconds=0.2,
        )

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def pending(self) -> Any:
        conn = sqlite3.connect(self.db)
        try:
            return pending_summary(conn)
        finally:
            conn.close()


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    fake = FakeSquare(orders={ORDER_ID: ORDER, PAID["order"]["id"]: PAID})
    fake.refunds[REFUND["refund"]["id"]] = REFUND
    await fake.start()
    yield World(tmp_path, fake)
    await fake.stop()


def serve(world: World, **config: Any) -> Server:
    return Server(world.config(**config), square_backoff=Backoff(base=1.0, cap=1.0, jitter=False))


async def post(server: Server, raw: bytes, *, key: str = KEY) -> tuple[int, Any]:
    headers = {"x-square-hmacsha256-signature": sign_square(key, URL, raw)}
    async with (
        aiohttp.ClientSession(base_url=server.url) as http,
        http.post("/webhooks/square", data=raw, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def health_feed(server: Server) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=server.url) as http, http.get("/health") as resp:
        feeds: dict[str, Any] = (await resp.json())["feeds"]
    return dict(feeds[FEED])


async def feed_until(
    server: Server, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The enrichment feed on ``/health`` once ``check`` holds (it follows the store)."""
    deadline = time.monotonic() + timeout
    while True:
        feed = await health_feed(server)
        if check(feed) or time.monotonic() > deadline:
            return feed
        await asyncio.sleep(0.05)


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def placed(world: World) -> list[tuple[Any, ...]]:
    return world.rows(
        "SELECT location_id, channel, gross_cents, discount_cents, units FROM orders"
        " WHERE order_id = ? AND has_order = 1",
        f"square-{ORDER_ID}",
    )


async def test_order_lands_with_its_lines_and_survives_square_down_and_restart(
    world: World,
) -> None:
    fake = world.fake
    fake.mode = "busy"
    path = f"/v2/orders/{ORDER_ID}"
    async with serve(world) as server:
        status, answer = await post(server, notification(ORDER_ID))
        assert status == 200, answer
        assert answer["pending"]["id"] == ORDER_ID
        # Durable before the 200: the store holds it (the version in tests is the last one).
        assert world.rows("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        assert world.pending().count == 1
        # 503 + Retry-After: 1 → the next attempt waits at least that second.
        await until(lambda: len(fake.requests_for(path)) >= 2, "a second 503")
        first, second = fake.requests_for(path)[:2]
        assert second - first >= 0.95
        await fake.stop()  # now the port refuses connections
        await until(lambda: "unreachable" in world.pending().last_error, "a refused attempt")
        summary = world.pending()
        assert summary.count == 1 and summary.attempts >= 3
        feed = await feed_until(server, lambda f: "unreachable" in f["detail"])
        assert feed["state"] == "retrying"
        assert "1 Square notification kept" in feed["detail"] and "unreachable" in feed["detail"]
        async with (
            aiohttp.ClientSession(base_url=server.url) as http,
            http.get("/metrics") as resp,
        ):
            exposition = await resp.text()
        assert 'omniops_pending_webhooks{source="square"} 1' in exposition
        # The console reads the same from the store (serve writes feed health every 0.2 s).
        await until(
            lambda: (
                world.rows(
                    "SELECT state FROM feed_health WHERE feed = ? AND detail LIKE '%kept%'", FEED
                )
                == [("retrying",)]
            ),
            "the feed health row",
        )
        assert placed(world) == []
        # Square is back but asks for an hour (429, Retry-After: 3600): honoured.
        fake.mode = "closing"
        await fake.start()
        asked = len(fake.requests_for(path))
        await until(lambda: len(fake.requests_for(path)) > asked, "the 429")
        await until(lambda: "429" in world.pending().last_error, "the 429 noted")
        (retry_at,) = world.rows("SELECT next_attempt_at FROM pending_webhooks")[0]
        assert retry_at >= time.time() + 3500
    # serve stopped with the notification still kept: nothing lost.
    assert world.pending().count == 1

    fake.mode = "ok"
    # Restarted, serve tries every kept notification at once (the hour is not waited out).
    async with serve(world) as server:
        await until(lambda: placed(world), "the order, after the restart")
        await until(lambda: world.pending().count == 0, "the kept row resolved")
        # 2 × (22.00 + a 0.50 modifier) = 45.00 gross, 3.46 of the order's discounts; the
        # ad-hoc line (no catalog_object_id) is not stock and is skipped.
        assert placed(world) == [("S-BKN", "pos", 4500, 346, 2)]
        assert world.rows(
            "SELECT sku, quantity, unit_price_cents, discount_cents FROM order_lines"
            " WHERE order_id = ?",
            f"square-{ORDER_ID}",
        ) == [("APP-0001", 2, 2250, 346)]
        line = ORDER["order"]["line_items"][1]
        net = 2250 * 2 - 346
        assert net + line["total_tax_money"]["amount"] == line["total_money"]["amount"]
        _, _, headers = fake.seen[-1]
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert headers["Square-Version"] == SQUARE_VERSION
        # Square delivers again (and an order.updated follows): both re-fetch, both duplicate.
        for raw in (
            notification(ORDER_ID),
            notification(ORDER_ID, kind="order.updated", event_id="evt-2"),
        ):
            status, answer = await post(server, raw)
            assert status == 200, answer
        await until(lambda: len(fake.requests_for(path)) >= 5, "the re-fetches")
        await until(lambda: world.pending().count == 0, "the re-fetches resolved")
        await server.writer.flush()
        feed = await feed_until(server, lambda f: f["detail"] == "")
        assert feed["state"] in ("connected", "stale")
        assert server.state is not None
        counted = server.state.metrics.get
        assert counted("omniops_events_total", feed="square", outcome="duplicate") >= 2
    assert world.rows(
        "SELECT COUNT(*) FROM event_log WHERE event_id = ?", f"square:order:{ORDER_ID}:placed"
    ) == [(1,)]
    assert placed(world) == [("S-BKN", "pos", 4500, 346, 2)]
    assert world.rows("SELECT COUNT(*) FROM order_lines") == [(1,)]
    # Net sales counted once, at the mapped node: 45.00 − 3.46 = 41.54.
    assert world.rows(
        "SELECT sku, location_id, channel, SUM(units), SUM(net_cents) FROM sales_hourly"
        " GROUP BY sku, location_id, channel"
    ) == [("APP-0001", "S-BKN", "pos", 2, 4154)]
    assert world.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_unknown_order_is_quarantined_not_retried(world: World) -> None:
    async with serve(world) as server:
        status, _ = await post(server, notification("NO-SUCH-ORDER", event_id="evt-404"))
        assert status == 200
        await until(lambda: world.rows("SELECT error FROM quarantine"), "the quarantine row")
        await until(lambda: world.pending().count == 0, "the kept row resolved")
        await asyncio.sleep(1.5)  # longer than the retry delay: no second attempt
    (reason,) = world.rows("SELECT error FROM quarantine")[0]
    assert "NO-SUCH-ORDER not found in Square (404)" in reason and "evt-404" in reason
    assert len(world.fake.requests_for("/v2/orders/NO-SUCH-ORDER")) == 1
    assert world.pending().count == 0
    assert world.rows("SELECT COUNT(*) FROM orders") == [(0,)]


async def test_missing_token_is_a_configuration_error_and_keeps_notifications(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="omniops.square")
    async with serve(world, token=None) as server:
        status, answer = await post(server, notification(ORDER_ID))
        assert status == 200 and answer["pending"]["id"] == ORDER_ID
        await until(lambda: TOKEN_VARIABLE in world.pending().last_error, "the noted error")
        feed = await feed_until(server, lambda f: "1 Square notification(s) kept" in f["detail"])
        assert feed["state"] == "failed" and TOKEN_VARIABLE in feed["detail"]
        assert "1 Square notification(s) kept" in feed["detail"]
    assert any(TOKEN_VARIABLE in r.getMessage() for r in caplog.records)
    assert world.pending().count == 1  # kept for the restart with the token
    assert world.fake.seen == []
    # Restarted with the token, the kept notification is fetched and placed.
    async with serve(world):
        await until(lambda: placed(world), "the order once the token is set")
        await until(lambda: world.pending().count == 0, "the kept row resolved")


async def test_tenders_and_refund_without_items(world: World) -> None:
    paid_id = PAID["order"]["id"]
    refund_body = json.loads((SQUARE / "refund.created.json").read_text(encoding="utf-8"))
    refund_id = REFUND["refund"]["id"]
    refund_body["data"]["id"] = refund_id
    refund_body["data"]["object"]["refund"]["id"] = refund_id
    async with serve(world) as server:
        # A paid order of ad-hoc lines only: nothing is stock, nothing placed, not retried.
        status, _ = await post(server, notification(paid_id, event_id="evt-paid"))
        assert status == 200
        status, answer = await post(server, json.dumps(refund_body).encode())
        assert status == 200 and answer["pending"]["kind"] == "refund.created"
        await until(lambda: world.pending().count == 0, "both resolved")
        await asyncio.sleep(0.3)
    assert len(world.fake.requests_for(f"/v2/orders/{paid_id}")) == 1
    assert len(world.fake.requests_for(f"/v2/refunds/{refund_id}")) == 1
    # The refund names an order Square does not document (404): an amount-only refund.
    order_of_refund = REFUND["refund"]["order_id"]
    assert len(world.fake.requests_for(f"/v2/orders/{order_of_refund}")) == 1
    assert world.rows("SELECT COUNT(*) FROM orders") == [(0,)]
    assert world.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_unmapped_catalog_id_is_quarantined_with_the_order_for_replay(world: World) -> None:
    from feeds.webhooks.mapping import parse_mapping
    from feeds.webhooks.square import map_square

    bare = MAPPING.replace('"BEMYCSMIJL46OCDV4KYIKXIB" = "APP-0001"', "")
    async with serve(world, mapping_text=bare) as server:
        status, _ = await post(server, notification(ORDER_ID))
        assert status == 200
        await until(lambda: world.rows("SELECT error, raw FROM quarantine"), "the quarantine")
        await until(lambda: world.pending().count == 0, "the kept row resolved")
    ((reason, raw),) = world.rows("SELECT error, raw FROM quarantine")
    assert "unmapped Square catalog_object_id BEMYCSMIJL46OCDV4KYIKXIB" in reason
    assert world.pending().count == 0 and placed(world) == []
    # The kept raw body is the notification with the fetched order inside: once the
    # mapping has the line, mapping it again places the order without another fetch.
    mapped = map_square(json.loads(raw), parse_mapping(MAPPING).square)
    (order,) = [e for e in mapped.items if isinstance(e, OrderPlaced)]
    assert order.body.lines[0].sku == "APP-0001"
    # serve held it like any webhook delivery, so `omniops quarantine replay` places it
    # once the mapping has the line, without asking Square again.
    assert world.rows("SELECT source, state FROM held") == [("square", "held")]
    from feeds.runtime.quarantine_cli import _replay

    fetched = len(world.fake.seen)
    await _replay(world.db, parse_mapping(MAPPING))
    ((location, *_),) = placed(world)  # placed once, at the mapped node
    assert location == "S-BKN"
    assert world.rows("SELECT state FROM held") == [("placed",)]
    assert len(world.fake.seen) == fetched


def test_square_mapping_of_documented_bodies() -> None:
    from feeds.webhooks.mapping import parse_mapping
    from feeds.webhooks.square import map_square_order, map_square_refund

    mapping = parse_mapping(MAPPING).square
    mapped = map_square_order(PAID["order"], mapping)
    assert mapped.items == []
    assert any("tenders CARD 10.00 + CARD 10.00 USD" in n for n in mapped.ignored)
    cancelled = copy.deepcopy(ORDER["order"])
    cancelled["state"] = "CANCELED"
    mapped = map_square_order(cancelled, mapping)
    assert [e.id for e in mapped.items if not isinstance(e, Quarantined)] == [
        f"square:order:{ORDER_ID}:placed",
        f"square:order:{ORDER_ID}:cancelled",
    ]
    # A refund whose order has an itemised return → a return.received at the mapped node.
    order = copy.deepcopy(ORDER["order"])
    order["location_id"] = "P3CCK6HSNDAS7"
    order["returns"] = [
        {
            "source_order_id": ORDER_ID,
            "return_line_items": [
                {
                    "uid": "r1",
                    "catalog_object_id": "BEMYCSMIJL46OCDV4KYIKXIB",
                    "quantity": "1",
                    "total_money": {"amount": 2077, "currency": "USD"},
                }
            ],
        }
    ]
    refund = dict(REFUND["refund"], location_id="P3CCK6HSNDAS7")
    (item,) = map_square_refund(refund, order, mapping).items
    assert isinstance(item, ReturnReceived)
    body = item.body
    assert (body.sku, body.location_id, body.quantity, str(body.refund)) == (
        "APP-0001",
        "S-NYC",
        1,
        "20.77",
    )
    assert body.order_id == f"square-{ORDER_ID}"


def test_token_and_api_url_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feeds.settings import load_serve_config

    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv(TOKEN_VARIABLE, TOKEN)
    monkeypatch.setenv("OMNIOPS_SQUARE_API_URL", "https://connect.squareupsandbox.com")
    config = load_serve_config()
    assert config.square_access_token is not None
    assert config.square_access_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(config) and TOKEN not in config.describe()
    assert config.square_api_url == "https://connect.squareupsandbox.com"
    monkeypatch.setenv("OMNIOPS_SQUARE_API_URL", "connect.squareup.com")
    with pytest.raises(ValueError, match="http"):
        load_serve_config()


def test_retry_after_forms() -> None:
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    later = (now + timedelta(seconds=30)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert retry_after_seconds(later, now) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_square_down_holds_every_kept_notification(world: World) -> None:
    """One 503 with Retry-After holds the others too: Square is not hammered."""
    world.fake.mode = "busy"
    async with serve(world) as server:
        for n in range(3):
            status, _ = await post(server, notification(f"ORD-{n}", event_id=f"evt-{n}"))
            assert status == 200
        await until(lambda: world.fake.seen, "the first 503")
        await asyncio.sleep(0.6)  # inside Retry-After: 1
        assert len(world.fake.seen) == 1
        assert world.pending().count == 3


async def test_a_refused_token_keeps_the_notification_until_square_accepts(world: World) -> None:
    world.fake.mode = "unauthorized"
    async with serve(world) as server:
        status, _ = await post(server, notification(ORDER_ID))
        assert status == 200
        await until(lambda: "401" in world.pending().last_error, "the refused token")
        assert TOKEN_VARIABLE in world.pending().last_error
        assert world.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]
        world.fake.mode = "ok"  # the token was given its permissions
        await until(lambda: placed(world), "the order once Square accepts the token")


async def test_feeds_view_says_square_notifications_are_kept(world: World) -> None:
    """The console's feeds view (``h``) shows the kept notifications and the reason."""
    from textual.widgets import DataTable

    from console.cli import build_console
    from console.screens import FeedsScreen
    from store.clock import SystemClock
    from store.risk import MetricParams
    from tests.test_console import settle

    async with serve(world, token=None) as server:
        status, _ = await post(server, notification(ORDER_ID))
        assert status == 200
        await until(
            lambda: world.rows(
                "SELECT 1 FROM feed_health WHERE feed = ? AND detail LIKE '%1 Square%'", FEED
            ),
            "the feed health row",
        )
    app, close = build_console(
        world.db,
        SystemClock(),
        MetricParams(),
        60.0,
        tz=UTC,
        rules_path=world.tmp / "rules.toml",
    )
    try:
        async with app.run_test(size=(200, 40)) as pilot:
            await settle(pilot)
            await pilot.press("h")
            await pilot.pause()
            assert isinstance(app.screen, FeedsScreen)
            table = app.screen.query_one("#feed-adapters", DataTable)
            cells = [str(c) for c in table.get_row(FEED)]
            assert "FAILED" in cells
            assert any(TOKEN_VARIABLE in c and "1 Square notification(s) kept" in c for c in cells)
    finally:
        close()
