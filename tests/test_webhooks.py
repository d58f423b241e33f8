"""Webhook endpoints over real HTTP on 127.0.0.1, into a real SQLite store.

Every request is signed the way the vendor signs it (real payloads from
``fixtures/payloads``), sent with a real ``aiohttp.ClientSession`` to ``serve``'s app
on a real socket, and checked in the store after the 2xx (which means committed).
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.runtime.quarantine import tracking_lookup
from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.redact import redact_raw
from feeds.webhooks.signatures import (
    sign_easypost,
    sign_shopify,
    sign_square,
    verify_bearer,
    verify_easypost,
    verify_shopify,
    verify_square,
)
from tests.builders import T0, order, step

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "fixtures" / "payloads"

SHOPIFY_SECRET = "shpss_current_secret"
SHOPIFY_OLD = "shpss_previous_secret"
SQUARE_KEY = "sq-signature-key"
SQUARE_URL = "https://ops.example.com/webhooks/square"
EASYPOST_SECRET = "ep-secret-ﬁ"  # a ligature: NFKD-normalised before signing
AMAZON_TOKEN = "amz-relay-token"
EVENTS_TOKEN = "events-token"

MAPPING = """
[shopify]
sla_hours = 24
default_return_location = "WH-NJ"
[shopify.locations]
"655441491" = "WH-NJ"
"487838322" = "S-NYC"
[shopify.inventory_items]
"39072856" = "IPOD2008GREEN"

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
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


@dataclass
class Served:
    server: Server
    http: aiohttp.ClientSession
    db: Path

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.db)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    async def shopify(
        self,
        topic: str,
        body: bytes | dict[str, Any],
        *,
        event_id: str = "evt-1",
        secret: str | None = SHOPIFY_SECRET,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = {"X-Shopify-Topic": topic, "X-Shopify-Event-Id": event_id}
        if secret is not None:
            sent["X-Shopify-Hmac-Sha256"] = sign_shopify(secret, raw)
        sent.update(headers or {})
        async with self.http.post("/webhooks/shopify", data=raw, headers=sent) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    config = ServeConfig(
        db=tmp_path / "store.db",
        port=0,
        shopify_webhook_secret=SHOPIFY_SECRET,
        shopify_webhook_secret_previous=SHOPIFY_OLD,
        square_signature_key=SQUARE_KEY,
        square_notification_url=SQUARE_URL,
        easypost_webhook_secret=EASYPOST_SECRET,
        amazon_relay_token=AMAZON_TOKEN,
        events_token=EVENTS_TOKEN,
        mapping_file=mapping,
        max_body_bytes=256 * 1024,
        batch_wait_ms=2,
        max_past_days=36500,  # the vendors' sample payloads are dated 2008 and 2014
    )
    async with Server(config, feeds=[]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession(base_url=server.url) as http:
            yield Served(server, http, config.db)


# --- signatures (pure) -----------------------------------------------------------------


def test_signature_schemes_match_vendor_definitions() -> None:
    body = b'{"a": 1}'
    assert verify_shopify(body, sign_shopify("s", body), ["other", "s"])
    assert not verify_shopify(body, sign_shopify("s", body), ["other"])
    assert not verify_shopify(body + b" ", sign_shopify("s", body), ["s"])
    assert not verify_shopify(body, None, ["s"])
    assert verify_square(body, sign_square("k", SQUARE_URL, body), "k", SQUARE_URL)
    assert not verify_square(body, sign_square("k", SQUARE_URL + "/", body), "k", SQUARE_URL)
    header = sign_easypost("ep-secret-ﬁ", body)
    assert header.startswith("hmac-sha256-hex=")
    assert verify_easypost(body, header, "ep-secret-fi")  # NFKD: the ligature is "fi"
    assert verify_bearer("Bearer tok", "tok") and verify_bearer("bearer tok", "tok")
    assert not verify_bearer("Bearer nope", "tok") and not verify_bearer(None, "tok")


def test_redaction_keeps_no_customer_data() -> None:
    raw = (PAYLOADS / "shopify" / "rest-2024-04_order.json").read_bytes()
    redacted = redact_raw(raw)
    for secret in (
        "bob.norman",
        "Bob",
        "Norman",
        "Chestnut",
        "+557734881234",
        "555-625-1199",
        "Happy Birthday",
        "40202",
        "Louisville",
        "0.0.0.0",
        "b1946ac92492d2347c6235b4d2611184",
    ):
        assert secret not in redacted, secret
    data = json.loads(redacted)
    assert data["shipping_address"]["province_code"] == "KY"
    assert data["shipping_address"]["zip"] == "402**"
    assert data["shipping_address"]["latitude"] == 45.4
    assert data["line_items"][0]["sku"] == "IPOD2008GREEN"
    assert "[redacted]" in redact_raw(b"not json: call +1 (502) 459-2181 or bob@example.com")


# --- Shopify -----------------------------------------------------------------------------


async def test_shopify_order_becomes_placement_and_steps(served: Served) -> None:
    status, answer = await served.shopify(
        "orders/create", payload("shopify/rest-2024-04_order.json")
    )
    assert status == 200, answer
    assert answer["outcome"] == "applied"
    assert [r["id"] for r in answer["results"]] == [
        "shopify:order:450789469:placed",
        "shopify:fulfillment:255858046:exception",
    ]
    (row,) = served.rows(
        "SELECT channel, method, destination_region, location_id, placed_ts, promised_ts,"
        " gross_cents, discount_cents, units, exception_ts, carrier, tracking FROM orders"
        " WHERE order_id = 'shopify-450789469'"
    )
    placed = datetime(2008, 1, 10, 16, 0, tzinfo=UTC)
    assert row == (
        "webshop",
        "ship",
        "US-KY",
        "WH-NJ",
        int(placed.timestamp()),
        int((placed + timedelta(hours=24)).timestamp()),
        3 * 19900,
        1000,  # 3.34 + 3.33 + 3.33 of the TENOFF code
        3,
        int(datetime(2024, 4, 2, 13, 59, 11, tzinfo=UTC).timestamp()),
        "USPS",
        "1Z2345",
    )
    bodies = " ".join(b for (b,) in served.rows("SELECT body FROM event_log"))
    for pii in ("Bob", "Norman", "bob.norman", "Chestnut", "Louisville", "40202", "+1(502)"):
        assert pii not in bodies


async def test_duplicate_delivery_is_answered_and_dropped(served: Served) -> None:
    body = payload("shopify/rest-2024-04_order.json")
    assert (await served.shopify("orders/create", body, event_id="e-42"))[0] == 200
    status, answer = await served.shopify("orders/create", body, event_id="e-42")
    assert status == 200
    assert answer["outcome"] == "duplicate"
    assert served.rows("SELECT COUNT(*) FROM event_log") == [(2,)]
    assert served.rows("SELECT duplicates FROM feed_state WHERE feed = 'shopify'") == [(2,)]


async def test_orders_updated_maps_cancellation_and_stale_delivery_changes_nothing(
    served: Served,
) -> None:
    created = payload("shopify/rest-2024-04_order.json")
    cancelled = copy.deepcopy(created)
    cancelled["cancelled_at"] = "2024-04-03T10:00:00-05:00"
    cancelled["cancel_reason"] = "customer"
    cancelled["updated_at"] = "2024-04-03T10:00:00-05:00"
    # The update arrives first (Shopify does not guarantee order), the create after it.
    status, answer = await served.shopify("orders/updated", cancelled, event_id="u-2")
    assert status == 200
    assert "shopify:order:450789469:cancelled" in [r["id"] for r in answer["results"]]
    status, answer = await served.shopify("orders/create", created, event_id="c-1")
    assert status == 200 and answer["outcome"] == "duplicate"
    (row,) = served.rows(
        "SELECT cancelled_ts, sales_reversed, units FROM orders"
        " WHERE order_id = 'shopify-450789469'"
    )
    assert row == (int(datetime(2024, 4, 3, 15, 0, tzinfo=UTC).timestamp()), 1, 3)
    assert served.rows("SELECT COALESCE(SUM(units), 0) FROM sales_hourly") == [(0,)]


async def test_shopify_bad_or_missing_signature_is_401_and_stores_nothing(served: Served) -> None:
    body = payload("shopify/rest-2024-04_order.json")
    status, answer = await served.shopify("orders/create", body, secret="wrong")
    assert status == 401 and "X-Shopify-Hmac-Sha256" in answer["error"]
    status, _ = await served.shopify("orders/create", body, secret=None)
    assert status == 401
    assert served.rows("SELECT COUNT(*) FROM event_log") == [(0,)]
    assert served.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]
    async with served.http.get("/metrics") as resp:
        text = await resp.text()
    assert 'omniops_webhook_rejected_total{reason="signature",source="shopify"} 2' in text
    # The previous secret still works during a rotation.
    status, _ = await served.shopify("orders/create", body, secret=SHOPIFY_OLD)
    assert status == 200


async def test_malformed_json_and_missing_headers_are_4xx_and_quarantined(
    served: Served,
) -> None:
    status, answer = await served.shopify("orders/create", b'{"id": 1, "email": "a@b.co",')
    assert status == 400
    assert answer["field"] == "(body)" and "not valid JSON" in answer["error"]
    status, answer = await served.shopify("", b"{}", headers={"X-Shopify-Topic": ""})
    assert status == 400 and answer["field"] == "X-Shopify-Topic"
    raw = json.dumps(payload("shopify/rest-2024-04_inventory_level.json")).encode()
    headers = {
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Hmac-Sha256": sign_shopify(SHOPIFY_SECRET, raw),
    }
    async with served.http.post("/webhooks/shopify", data=raw, headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["field"] == "X-Shopify-Event-Id"
    quarantined = served.rows("SELECT source, error, raw FROM quarantine ORDER BY id")
    assert len(quarantined) == 3
    assert all(source == "shopify" for source, _, _ in quarantined)
    assert "a@b.co" not in quarantined[0][2]
    assert "X-Shopify-Topic" in quarantined[1][1]


async def test_wrong_types_name_the_field_never_500(served: Served) -> None:
    body = payload("shopify/rest-2024-04_order.json")
    body["line_items"][1]["quantity"] = "three"
    status, answer = await served.shopify("orders/create", body)
    assert status == 422
    assert answer["field"] == "line_items[1].quantity"
    body = payload("shopify/rest-2024-04_order.json")
    body["created_at"] = 20080110
    status, answer = await served.shopify("orders/create", body)
    assert status == 422 and answer["field"] == "created_at"
    for junk in (b"[]", b"null", b'"text"', b'{"line_items": {"a": 1}}'):
        status, answer = await served.shopify("orders/updated", junk)
        assert 400 <= status < 500, (junk, answer)
    (quarantined,) = served.rows("SELECT COUNT(*) FROM quarantine")[0:1]
    assert quarantined[0] == 6
    assert served.rows("SELECT COUNT(*) FROM event_log") == [(0,)]


async def test_oversized_body_is_413(served: Served) -> None:
    big = b'{"pad": "' + b"x" * (300 * 1024) + b'"}'
    status, answer = await served.shopify("orders/create", big)
    assert status == 413 and "over" in answer["error"]

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * (40 * 1024)

    headers = {"X-Shopify-Topic": "orders/create", "X-Shopify-Hmac-Sha256": "x"}
    async with served.http.post("/webhooks/shopify", data=chunks(), headers=headers) as resp:
        assert resp.status == 413
    assert served.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_inventory_levels_mapped_and_unmapped(served: Served) -> None:
    level = payload("shopify/rest-2024-04_inventory_level.json")
    status, answer = await served.shopify("inventory_levels/update", level, event_id="inv-1")
    assert status == 202
    assert answer["results"] == [
        {"outcome": "quarantined", "reason": "unmapped Shopify inventory_item_id 808950810"}
    ]
    level["inventory_item_id"] = 39072856
    status, answer = await served.shopify("inventory_levels/update", level, event_id="inv-2")
    assert status == 200 and answer["results"][0]["id"] == "shopify:inv-2"
    assert served.rows("SELECT sku, location_id, on_hand, source_system FROM stock") == [
        ("IPOD2008GREEN", "WH-NJ", 42, "shopify")
    ]
    assert served.rows("SELECT error FROM quarantine") == [
        ("unmapped Shopify inventory_item_id 808950810",)
    ]


async def test_fulfillment_event_and_refund(served: Served) -> None:
    assert (await served.shopify("orders/create", payload("shopify/rest-2024-04_order.json")))[
        0
    ] == 200
    status, _ = await served.shopify(
        "fulfillment_events/create", payload("shopify/rest-2024-04_fulfillment_event.json")
    )
    assert status == 200
    status, answer = await served.shopify(
        "refunds/create", payload("shopify/rest-2024-04_refund.json")
    )
    assert status == 200, answer
    (shipped,) = served.rows("SELECT shipped_ts FROM orders WHERE order_id = 'shopify-450789469'")
    assert shipped == (int(datetime(2024, 4, 2, 14, 30, 58, tzinfo=UTC).timestamp()),)
    returns = served.rows(
        "SELECT sku, location_id, quantity, reason, refund_cents FROM returns ORDER BY sku"
    )
    assert returns == [
        ("IPOD2008BLACK", "S-NYC", 1, "it broke during shipping", 19566),
        ("IPOD2008GREEN", "S-NYC", 1, "it broke during shipping", 19567),
    ]


async def test_unsupported_topic_is_kept_in_quarantine(served: Served) -> None:
    status, answer = await served.shopify(
        "products/update", payload("shopify/rest-2024-04_location.json")
    )
    assert status == 202
    assert "unsupported Shopify topic 'products/update'" in answer["results"][0]["reason"]


# --- Square ------------------------------------------------------------------------------


async def post_square(
    served: Served, body: dict[str, Any], *, key: str = SQUARE_KEY
) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    headers = {"x-square-hmacsha256-signature": sign_square(key, SQUARE_URL, raw)}
    async with served.http.post("/webhooks/square", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_square_inventory_orders_and_signature(served: Served) -> None:
    status, answer = await post_square(served, payload("square/inventory.count.updated.json"))
    assert status == 200, answer
    assert served.rows("SELECT sku, location_id, on_hand FROM stock") == [("APP-0001", "S-BKN", 10)]
    status, _ = await post_square(served, payload("square/inventory.count.updated.json"), key="no")
    assert status == 401
    status, answer = await post_square(served, payload("square/order.created.json"))
    assert status == 200 and answer["outcome"] == "ignored" and answer["ignored"]
    cancelled = payload("square/order.updated.json")
    cancelled["data"]["object"]["order_updated"]["state"] = "CANCELED"
    status, answer = await post_square(served, cancelled)
    assert status == 200 and answer["results"][0]["id"].endswith(":cancelled")
    status, _ = await post_square(served, payload("square/order.fulfillment.updated.json"))
    assert status == 200
    unmapped = payload("square/inventory.count.updated.json")
    unmapped["data"]["object"]["inventory_counts"][0]["catalog_object_id"] = "NOPE"
    unmapped["event_id"] = "other"
    status, answer = await post_square(served, unmapped)
    assert (
        status == 202 and "unmapped Square catalog_object_id NOPE" in answer["results"][0]["reason"]
    )
    status, answer = await post_square(served, {"type": "inventory.count.updated", "event_id": "x"})
    assert status == 422 and answer["field"] == "data"


def square_fulfillment(order_id: str, uid: str, state: str, at: datetime) -> dict[str, Any]:
    """The real ``order.fulfillment.updated`` sample, for ``order_id`` moving to ``state``."""
    body = payload("square/order.fulfillment.updated.json")
    body["event_id"] = f"{order_id}-{uid}-{state}"
    update = body["data"]["object"]["order_fulfillment_updated"]
    update.update(order_id=order_id, updated_at=at.isoformat().replace("+00:00", "Z"))
    update["fulfillment_update"] = [
        {"fulfillment_uid": uid, "old_state": "RESERVED", "new_state": state}
    ]
    return body


async def test_square_fulfillment_states_read_by_the_orders_method(served: Served) -> None:
    """The update does not say pickup or shipment; the placed order's method does."""
    placed = datetime(2026, 12, 2, 15, tzinfo=UTC)
    lines = [
        order("square-SHIP1", placed, [("A", 1)], method="ship", id_="sq-ship").model_dump_json(),
        order("square-PICK1", placed, [("A", 1)], method="bopis", id_="sq-pick").model_dump_json(),
    ]
    assert (await post_events(served, "\n".join(lines)))[0] == 200
    for n, state in enumerate(("PREPARED", "COMPLETED"), start=1):
        for oid in ("SHIP1", "PICK1", "UNKNOWN1"):
            body = square_fulfillment(oid, f"f-{oid}", state, placed + timedelta(hours=n))
            status, answer = await post_square(served, body)
            assert status == 200, answer
    got = {
        str(row[0]): row[1:]
        for row in served.rows(
            "SELECT order_id, packed_ts IS NOT NULL, shipped_ts IS NOT NULL,"
            " ready_ts IS NOT NULL, picked_up_ts IS NOT NULL FROM orders"
        )
    }
    assert got["square-SHIP1"] == (1, 1, 0, 0)  # packed, shipped
    assert got["square-PICK1"] == (0, 0, 1, 1)  # ready for pickup, picked up
    # Not placed yet: square.fulfillment (default "pickup") reads the states.
    assert got["square-UNKNOWN1"] == (0, 0, 1, 1)
    # A held delivery replayed reads the method the same way.
    with sqlite3.connect(served.db) as db:
        lookup = tracking_lookup(db)
        assert [lookup.order_method(f"square-{o}") for o in ("SHIP1", "PICK1", "UNKNOWN1")] == [
            "ship",
            "bopis",
            None,
        ]


# --- EasyPost ----------------------------------------------------------------------------


async def post_easypost(
    served: Served, body: dict[str, Any], secret: str = EASYPOST_SECRET
) -> tuple[int, Any]:
    raw = json.dumps(body).encode()
    headers = {"X-Hmac-Signature": sign_easypost(secret, raw)}
    async with served.http.post("/webhooks/easypost", data=raw, headers=headers) as resp:
        return resp.status, await resp.json()


async def post_events(served: Served, text: str, token: str = EVENTS_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    async with served.http.post("/events", data=text.encode(), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_easypost_tracker_finds_order_by_tracking_number(served: Served) -> None:
    tracker = payload("easypost/tracker.updated.event-body.json")
    status, answer = await post_easypost(served, tracker)
    assert status == 202 and "no order with this tracking number" in answer["results"][0]["reason"]
    placed = datetime(2024, 7, 31, 12, tzinfo=UTC)
    lines = [
        order("W-1", placed, [("A", 1)], id_="o-w1").model_dump_json(),
        step(
            "W-1", "shipped", placed + timedelta(hours=3), carrier="FedEx", tracking="1"
        ).model_dump_json(),
    ]
    assert (await post_events(served, "\n".join(lines)))[0] == 200
    status, answer = await post_easypost(served, tracker)
    assert status == 200, answer
    (row,) = served.rows(
        "SELECT shipped_ts, estimated_delivery_ts FROM orders WHERE order_id='W-1'"
    )
    assert row == (
        int((placed + timedelta(hours=3)).timestamp()),
        int(datetime(2024, 8, 5, tzinfo=UTC).timestamp()),
    )
    assert (await post_easypost(served, tracker, secret="wrong"))[0] == 401


# --- Amazon ------------------------------------------------------------------------------


async def post_amazon(
    served: Served, body: dict[str, Any], token: str = AMAZON_TOKEN
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with served.http.post("/webhooks/amazon", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_amazon_order_change_and_fba_inventory(served: Served) -> None:
    change = payload("amazon/ORDER_CHANGE.json")
    status, answer = await post_amazon(served, change)
    assert status == 200, answer
    (row,) = served.rows(
        "SELECT channel, destination_region, location_id, promised_ts, units FROM orders"
        " WHERE order_id = '903-8868176-2219830'"
    )
    assert row == (
        "marketplace",
        "US-481",
        "WH-NJ",
        int(datetime(2022, 12, 7, 19, 42, 4, tzinfo=UTC).timestamp()),
        10,
    )
    status, answer = await post_amazon(served, change)
    assert answer["outcome"] == "duplicate"
    status, answer = await post_amazon(
        served, payload("amazon/FBA_INVENTORY_AVAILABILITY_CHANGES.json")
    )
    assert status == 200 and len(answer["ignored"]) == 1
    assert served.rows("SELECT sku, location_id, on_hand, reserved FROM stock") == [
        ("SELLERSKU-1", "FBA-US", 80, 30)
    ]
    assert (await post_amazon(served, change, token="nope"))[0] == 401


# --- POST /events ------------------------------------------------------------------------


async def test_events_batch_reports_each_line(served: Served) -> None:
    t = datetime(2026, 11, 18, 15, tzinfo=UTC)
    good = order("E-1", t, [("A", 2)], id_="ev-good").model_dump_json()
    bad = json.loads(order("E-2", t, [("A", 1)], id_="ev-bad").model_dump_json())
    bad["body"]["lines"][0]["quantity"] = 0
    text = "\n".join([good, json.dumps(bad), "{not json", good])
    status, answer = await post_events(served, text)
    assert status == 422
    outcomes = [(r["outcome"], r.get("reason", "")[:30]) for r in answer["results"]]
    assert [o for o, _ in outcomes] == ["applied", "quarantined", "quarantined", "duplicate"]
    assert "body.lines.0.quantity" in answer["results"][1]["reason"]
    assert "line 3" in answer["results"][2]["reason"]
    status, answer = await post_events(served, good)
    assert status == 200 and answer["outcome"] == "duplicate"
    assert (await post_events(served, good, token="wrong"))[0] == 401
    assert (await post_events(served, "   "))[0] == 400


async def test_events_a_line_not_utf8_is_quarantined_beside_good_ones(served: Served) -> None:
    t = datetime(2026, 11, 18, 15, tzinfo=UTC)
    good = [order(f"U-{n}", t, [("A", 1)], id_=f"ev-u{n}").model_dump_json() for n in (1, 2)]
    latin1 = order("U-3", t, [("A", 1)], id_="ev-u3").model_dump_json().encode()
    latin1 = latin1.replace(b'"U-3"', b'"U-3\xe9"')  # a Latin-1 byte inside a string
    body = b"\xef\xbb\xbf" + b"\n".join([good[0].encode(), latin1, good[1].encode()])
    headers = {"Authorization": f"Bearer {EVENTS_TOKEN}", "Content-Type": "application/x-ndjson"}
    async with served.http.post("/events", data=body, headers=headers) as resp:
        status, answer = resp.status, await resp.json()
    assert status == 422
    assert [r["outcome"] for r in answer["results"]] == ["applied", "quarantined", "applied"]
    offset = latin1.index(b"\xe9")
    assert (
        answer["results"][1]["reason"]
        == f"POST /events line 2: not UTF-8 (byte {offset} of the line)"
    )
    assert served.rows("SELECT order_id FROM orders ORDER BY 1") == [("U-1",), ("U-2",)]
    [(raw,)] = served.rows("SELECT raw FROM quarantine")
    assert "U-3\\xe9" in raw  # the byte kept, escaped
    # One document that is not UTF-8 is still refused whole, and a BOM alone is no error.
    async with served.http.post("/events", data=latin1, headers=headers) as resp:
        assert resp.status == 400
    async with served.http.post(
        "/events", data=b"\xef\xbb\xbf" + good[0].encode(), headers=headers
    ) as resp:
        assert resp.status == 200 and (await resp.json())["outcome"] == "duplicate"


# --- health, metrics, configuration ------------------------------------------------------


async def test_health_and_metrics(served: Served) -> None:
    assert (await served.shopify("orders/create", payload("shopify/rest-2024-04_order.json")))[
        0
    ] == 200
    async with served.http.get("/health") as resp:
        assert resp.status == 200
        health = await resp.json()
    shopify = health["feeds"]["webhook:shopify"]
    assert shopify["state"] == "connected"
    assert shopify["events"] == 2 and shopify["events_per_minute"] == 2
    assert health["writer"]["applied"] == 2
    assert health["store"]["events"] == 2
    async with served.http.get("/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    assert 'omniops_events_total{feed="shopify",outcome="applied"} 2' in text
    assert 'omniops_webhook_requests_total{source="shopify",status="200"} 1' in text
    assert 'omniops_webhook_durable_seconds_count{source="shopify"} 1' in text
    assert 'omniops_feed_state{feed="webhook:shopify",state="connected"} 1' in text
    assert "# TYPE omniops_events_total counter" in text
    async with served.http.get("/nowhere") as resp:
        assert resp.status == 404


async def test_unconfigured_endpoint_says_which_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    for var in ("OMNIOPS_SHOPIFY_WEBHOOK_SECRET", "OMNIOPS_EVENTS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    async with (
        Server(ServeConfig(db=tmp_path / "s.db", port=0), feeds=[]) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
        http.post("/webhooks/shopify", data=b"{}") as resp,
    ):
        assert resp.status == 503
        assert "OMNIOPS_SHOPIFY_WEBHOOK_SECRET" in (await resp.json())["error"]


async def test_mapping_file_reloads_and_a_bad_edit_keeps_the_last_good(served: Served) -> None:
    mapping = served.server.config.mapping_file
    assert mapping is not None
    level = payload("shopify/rest-2024-04_inventory_level.json")

    async def health() -> dict[str, Any]:
        async with served.http.get("/health") as resp:
            result: dict[str, Any] = await resp.json()
            return result

    async def until(check: Any) -> None:
        # watchfiles reports the edit after its debounce: poll /health with a deadline
        # generous enough for a loaded CI machine (20 s).
        for _ in range(800):
            if check(await health()):
                return
            await asyncio.sleep(0.025)
        raise AssertionError("mapping reload not seen")

    mapping.write_text("[shopify]\ninventory_as = 'sometimes'\n", encoding="utf-8")
    await until(lambda h: h["mapping_error"])
    assert "shopify.inventory_as" in (await health())["mapping_error"]
    status, _ = await served.shopify("inventory_levels/update", level, event_id="r-1")
    assert status == 202  # still the last good mapping: 808950810 unmapped there
    fixed = MAPPING.replace('"39072856"', '"808950810" = "IPOD-SILVER"\n"39072856"')
    mapping.write_text(fixed, encoding="utf-8")
    await until(lambda h: h["mapping_error"] is None)
    status, answer = await served.shopify("inventory_levels/update", level, event_id="r-2")
    assert status == 200, answer


async def test_serve_answers_route_checks_and_routes_shopify_orders(served: Served) -> None:
    """POST /route is mounted on serve; a webhook order without a node gets a decision."""
    from tests.builders import location, sku, snapshot

    stock = [sku("APP-1"), location("WH1", kind="warehouse"), snapshot("APP-1", "WH1", 9, T0)]
    body = "\n".join(e.model_dump_json() for e in stock)
    headers = {"Authorization": f"Bearer {EVENTS_TOKEN}"}
    async with served.http.post("/events", data=body, headers=headers) as resp:
        assert resp.status == 200
    order = {"destination_region": "NE", "lines": [{"sku": "APP-1", "quantity": 2}]}
    async with served.http.post("/route", json=order) as resp:
        decision = await resp.json()
        assert resp.status == 200, decision
    assert decision["status"] == "routed"
    assert [s["location_id"] for s in decision["shipments"]] == ["WH1"]
    async with served.http.post(
        "/route", json={"lines": [{"sku": "APP-1", "quantity": 0}]}
    ) as resp:
        assert resp.status == 400
        assert "field" in await resp.json()


async def test_serve_records_adapter_health_for_every_console(served: Served) -> None:
    from store.metrics import compute_snapshots, open_reader
    from store.risk import MetricParams

    deadline = asyncio.get_running_loop().time() + 10
    while True:
        reader = open_reader(served.db)
        try:
            snaps = compute_snapshots(reader, T0, MetricParams())
        finally:
            reader.close()
        adapters = {a.feed: a for a in snaps.headline.adapters}
        if "webhook:shopify" in adapters:
            break
        assert asyncio.get_running_loop().time() < deadline, "serve never reported its feeds"
        await asyncio.sleep(0.1)
    assert adapters["webhook:shopify"].kind == "webhook"


def test_a_json_lines_batch_reads_the_same_on_the_fast_path_and_the_general_one() -> None:
    """``POST /events`` reads an all-valid JSON Lines batch in one step a line: same items."""
    from feeds.runtime.http.handlers import _events, _valid_json_lines
    from feeds.webhooks.canonical import parse_events_body
    from store.model import dump_event

    events = [
        order("fast-1", T0, [("SKU-1", 2)], loc="WH-NJ", price="19.99"),
        step("fast-1", "shipped", T0 + timedelta(minutes=5), carrier="UPS"),
    ]
    lines = [dump_event(e) for e in events]
    # an offset timestamp and an amount given as a number read alike on both paths
    shifted = json.loads(lines[0])
    shifted["id"] = "fast-2"
    shifted["ts"] = "2026-11-18T10:00:00-05:00"
    shifted["body"]["order_id"] = "fast-2"
    shifted["body"]["lines"][0]["unit_price"] = 19.99  # a JSON number
    lines.append(json.dumps(shifted))
    body = ("\n".join(lines) + "\n\n").encode()
    general = [line.item for line in parse_events_body(body)]
    assert _valid_json_lines(body) == general
    assert _events(body).items == general
    # a bad line, one event, an array: the general path reads them (and quarantines)
    assert _valid_json_lines(body + b'{"id": "x"}\n') is None
    assert _valid_json_lines(lines[0].encode()) is None
    assert _valid_json_lines(f"[{lines[0]}, {lines[1]}]".encode()) is None
