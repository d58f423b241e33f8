"""A running ``serve`` for hostile-input tests and the benchmark: config, signing, probes.

Everything is real: the serve app on a 127.0.0.1 socket, a SQLite file, an aiohttp client.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.signatures import sign_easypost, sign_shopify, sign_square

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "fixtures" / "payloads"

SHOPIFY_SECRET = "shpss_hostile_secret_0123456789"
SQUARE_KEY = "sq-hostile-signature-key-0123456789"
SQUARE_URL = "https://ops.example.com/webhooks/square"
EASYPOST_SECRET = "ep-hostile-secret-0123456789"
AMAZON_TOKEN = "amz-hostile-relay-token-0123456789"
EVENTS_TOKEN = "events-hostile-token-0123456789"

MAPPING = """
[shopify.locations]
"655441491" = "WH-NJ"
"487838322" = "S-NYC"
[shopify.inventory_items]
"39072856" = "IPOD2008GREEN"
"808950810" = "IPOD2008GREEN"
[square.locations]
"YYQR03DGCTXA4" = "S-BKN"
[square.catalog_objects]
"FGQ5JJWT2PYTHF35CKZ2DSKP" = "APP-0001"
[amazon]
mfn_location = "WH-NJ"
[amazon.marketplaces]
"ATVPDKIKX0DER" = "FBA-US"
"""


def payload(name: str) -> Any:
    """A vendor sample payload from ``fixtures/payloads``."""
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def now_iso(offset: timedelta = timedelta(0)) -> str:
    """The wall clock (the server's clock) plus ``offset``, as ISO 8601 with ``Z``."""
    return (datetime.now(UTC) + offset).isoformat().replace("+00:00", "Z")


def stock_event(n: int, on_hand: Any = 5, **over: Any) -> dict[str, Any]:
    """A valid ``stock.snapshot`` (one hour ago) with ``over`` replacing top-level fields."""
    event: dict[str, Any] = {
        "id": f"stock-{n}",
        "type": "stock.snapshot",
        "ts": now_iso(timedelta(hours=-1)),
        "source": "wms",
        "body": {"sku": f"SKU-{n % 7}", "location_id": "WH-NJ", "on_hand": on_hand},
    }
    event.update(over)
    return event


@dataclass
class Hostile:
    """A served app and a client; helpers send signed requests and read the store."""

    server: Server
    http: aiohttp.ClientSession
    db: Path
    health_ms: list[float] = field(default_factory=list)

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of a query on the store file (a fresh connection)."""
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def quarantine(self) -> list[tuple[str, str, str]]:
        """``(source, error, raw)`` of every quarantine row, oldest first."""
        return [
            (str(s), str(e), str(r))
            for s, e, r in self.rows("SELECT source, error, raw FROM quarantine ORDER BY id")
        ]

    async def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        """POST and decode the JSON answer (every answer of serve is JSON)."""
        async with self.http.post(path, data=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def events(self, body: bytes, token: str = EVENTS_TOKEN) -> tuple[int, dict[str, Any]]:
        """``POST /events`` with the bearer token."""
        return await self.post("/events", body, {"Authorization": f"Bearer {token}"})

    async def shopify(
        self, topic: str, body: bytes, event_id: str = "evt-1", secret: str = SHOPIFY_SECRET
    ) -> tuple[int, dict[str, Any]]:
        """A Shopify delivery signed with ``secret``."""
        headers = {
            "X-Shopify-Topic": topic,
            "X-Shopify-Event-Id": event_id,
            "X-Shopify-Hmac-Sha256": sign_shopify(secret, body),
        }
        return await self.post("/webhooks/shopify", body, headers)

    async def square(self, body: bytes, key: str = SQUARE_KEY) -> tuple[int, dict[str, Any]]:
        """A Square notification signed with ``key`` over the registered URL."""
        headers = {"x-square-hmacsha256-signature": sign_square(key, SQUARE_URL, body)}
        return await self.post("/webhooks/square", body, headers)

    async def easypost(
        self, body: bytes, secret: str = EASYPOST_SECRET
    ) -> tuple[int, dict[str, Any]]:
        """An EasyPost event signed with ``secret``."""
        return await self.post(
            "/webhooks/easypost", body, {"X-Hmac-Signature": sign_easypost(secret, body)}
        )

    async def amazon(self, body: bytes, token: str = AMAZON_TOKEN) -> tuple[int, dict[str, Any]]:
        """An Amazon relay delivery with the bearer token."""
        return await self.post("/webhooks/amazon", body, {"Authorization": f"Bearer {token}"})

    async def probe_health(self, stop: asyncio.Event, every: float = 0.005) -> None:
        """GET /health until ``stop``, recording each answer's latency in ms (bounded)."""
        for _ in range(20_000):
            if stop.is_set():
                return
            started = time.perf_counter()
            async with self.http.get("/health") as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
            self.health_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(every)


def config_for(tmp: Path, **over: Any) -> ServeConfig:
    """Every endpoint enabled with long secrets, the mapping above, a 2 MB body limit."""
    mapping = tmp / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    values: dict[str, Any] = {
        "db": tmp / "store.db",
        "port": 0,
        "shopify_webhook_secret": SHOPIFY_SECRET,
        "square_signature_key": SQUARE_KEY,
        "square_notification_url": SQUARE_URL,
        "easypost_webhook_secret": EASYPOST_SECRET,
        "amazon_relay_token": AMAZON_TOKEN,
        "events_token": EVENTS_TOKEN,
        "mapping_file": mapping,
        "max_past_days": 36500,  # the vendors' sample payloads are dated 2008-2024
        "batch_wait_ms": 2,
    }
    values.update(over)
    return ServeConfig(**values)


@asynccontextmanager
async def hostile_server(tmp: Path, **over: Any) -> AsyncIterator[Hostile]:
    """``serve`` on 127.0.0.1 with :func:`config_for` and a client bound to it."""
    config = config_for(tmp, **over)
    async with Server(config, feeds=[]) as server:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(base_url=server.url, timeout=timeout) as http:
            yield Hostile(server, http, config.db)


def long_word_events_body(size: int = 24 * 1024) -> bytes:
    """An ``/events`` body (not a valid event) holding one long word: the quadratic case."""
    return json.dumps({"id": "x", "type": "nope", "note": "a" * size}).encode()


def huge_easypost_body(size: int = 1_900_000) -> bytes:
    """A signed-able EasyPost body of about ``size`` bytes: long words in every string."""
    body = payload("easypost/tracker.updated.event-body.json")
    details = body["result"].get("tracking_details") or []
    word = "w" * 4000
    filler = [{"message": word, "status": "in_transit", "datetime": "2024-07-31T12:00:00Z"}]
    body["result"]["tracking_details"] = details + filler * (size // 4100)
    return json.dumps(body).encode()


def deep_body(depth: int = 100_000) -> bytes:
    """``[[[[...]]]]`` nested ``depth`` levels."""
    return b"[" * depth + b"]" * depth


def summary(ms: list[float]) -> dict[str, float]:
    """p50, p99 and max of latencies in ms."""
    if not ms:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
    }
