"""Shop order edits over real HTTP: signed Shopify webhooks and Square notifications whose
orders ``serve`` fetches, into a real store, become ``order.edited`` when the lines change.

The Shopify order is the vendor's sample (``fixtures/payloads/shopify/rest-2024-04_order.json``,
REST 2024-04: ``current_quantity`` on each line, and a refund of every line); the Square
order is the Orders API's documented ``Order`` (``api_CreateOrderResponse.json``).
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from store.apply import epoch
from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams
from tests.test_shops import SHOP_LOCATION, Shop, payload, shop  # noqa: F401
from tests.test_square_enrichment import ORDER as SQUARE_ORDER
from tests.test_square_enrichment import (  # noqa: F401 (world: the fixture)
    ORDER_ID,
    World,
    notification,
    post,
    serve,
    until,
    world,
)

P = MetricParams(timezone="America/New_York")
SHOPIFY_ORDER = "shopify-450789469"


def net_sales(db: Path, at: str) -> float:
    reader = open_reader(db)
    try:
        return compute_snapshots(reader, datetime.fromisoformat(at), P).headline.net_sales
    finally:
        reader.close()


def as_created() -> dict[str, Any]:
    """The sample order as Shopify sent it at creation: nothing removed or refunded yet."""
    order: dict[str, Any] = copy.deepcopy(payload("shopify/rest-2024-04_order.json"))
    order["refunds"] = []
    order["updated_at"] = order["created_at"]
    for line in order["line_items"]:
        line["current_quantity"] = line["quantity"]
        line["fulfillable_quantity"] = line["quantity"]
    return order


def edited(order: dict[str, Any], updated_at: str, removed: int) -> dict[str, Any]:
    """``order`` after an edit at ``updated_at`` removed line item ``removed``."""
    out = copy.deepcopy(order)
    out["updated_at"] = updated_at
    for line in out["line_items"]:
        if line["id"] == removed:
            line["current_quantity"] = 0
            line["fulfillable_quantity"] = 0
    return out


def ids(answer: dict[str, Any], outcome: str | None = None) -> list[str]:
    return [r["id"] for r in answer["results"] if outcome in (None, r["outcome"])]


async def test_shopify_orders_updated_with_a_removed_line_is_an_edit(shop: Shop) -> None:  # noqa: F811
    shop.mapping.write_text(
        f'[shopify]\nsla_hours = 24\n[shopify.locations]\n"{SHOP_LOCATION}" = "WH-NJ"\n',
        encoding="utf-8",
    )
    await shop.catalogue({"WH-NJ": 5})
    created = as_created()
    status, answer = await shop.shopify("orders/create", created, event_id="c-1")
    assert status == 200 and answer["outcome"] == "applied", answer
    # 3 × 199.00 less 3.34 + 3.33 + 3.33 of discounts
    assert net_sales(shop.db, "2008-01-10T11:30:00-05:00") == 587.0
    # An ordinary update that changes no line (paid, tagged): no edit, nothing held.
    paid = copy.deepcopy(created)
    paid["updated_at"] = "2008-01-10T11:10:00-05:00"
    status, answer = await shop.shopify("orders/updated", paid, event_id="u-0")
    assert status == 200 and not ids(answer, "applied") and not ids(answer, "quarantined")
    # The red iPod is out of stock: removed by an edit at 13:00.
    removal = edited(created, "2008-01-10T13:00:00-05:00", removed=518995019)
    status, answer = await shop.shopify("orders/updated", removal, event_id="u-1")
    edit_id = (
        f"shopify:order:450789469:edited:{epoch(datetime.fromisoformat(removal['updated_at']))}"
    )
    assert status == 200 and ids(answer, "applied") == [edit_id], answer
    status, answer = await shop.shopify("orders/updated", removal, event_id="u-1b")
    # a redelivery: its lines are the ones the store holds now, so no edit at all
    assert status == 200 and not ids(answer, "applied") and edit_id not in ids(answer), answer
    assert shop.rows(
        "SELECT sku, quantity FROM order_lines WHERE order_id = ? ORDER BY line_no", SHOPIFY_ORDER
    ) == [("IPOD2008GREEN", 1), ("IPOD2008BLACK", 1)]
    assert net_sales(shop.db, "2008-01-10T12:30:00-05:00") == 587.0  # as placed, then
    assert net_sales(shop.db, "2008-01-10T13:30:00-05:00") == 391.33  # 2 × 199 − 6.67
    # The sample itself (every line refunded, no restock, much later): the refunds are
    # returns (refunds/create), not removals, so the lines stand as edited; no new edit.
    # The red iPod's refund is its removal's (restock type cancel): the sample refunds it
    # as a return, which a line removed at 13:00 cannot be, and compared with the lines
    # the store holds such a return would put it back.
    sample = payload("shopify/rest-2024-04_order.json")
    for rli in sample["refunds"][0]["refund_line_items"]:
        if rli["line_item_id"] == 518995019:
            rli["restock_type"] = "cancel"
    status, answer = await shop.shopify("orders/updated", sample, event_id="u-2")
    assert status == 200 and not ids(answer, "quarantined")
    assert not [i for i in ids(answer) if ":edited:" in i]
    assert shop.rows("SELECT COUNT(*) FROM order_edits") == [(1,)]
    assert shop.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_shopify_an_edit_before_its_creation_and_an_older_edit_late(shop: Shop) -> None:  # noqa: F811
    await shop.catalogue({"WH-NJ": 5})
    created = as_created()
    first = edited(created, "2008-01-10T12:00:00-05:00", removed=518995019)
    second = edited(first, "2008-01-10T14:00:00-05:00", removed=703073504)
    for n, body in enumerate((second, first)):  # the newer edit first, then the older
        status, answer = await shop.shopify("orders/updated", body, event_id=f"u-{n}")
        assert status == 200 and not ids(answer, "quarantined"), answer
    # its placement came with the first delivery (the first placement stands: the lines as
    # ordered, every line item's quantity), the edits are kept by their time
    status, answer = await shop.shopify("orders/create", created, event_id="c-1")
    assert status == 200
    assert shop.rows("SELECT sku FROM order_lines WHERE order_id = ?", SHOPIFY_ORDER) == [
        ("IPOD2008GREEN",)
    ]
    assert net_sales(shop.db, "2008-01-10T11:30:00-05:00") == 587.0
    assert net_sales(shop.db, "2008-01-10T13:00:00-05:00") == 391.33
    assert net_sales(shop.db, "2008-01-10T15:00:00-05:00") == 195.66  # 199 − 3.34


async def test_shopify_orders_edited_is_acknowledged_not_held(shop: Shop) -> None:  # noqa: F811
    body = {
        "order_edit": {
            "id": 78912328,
            "app_id": None,
            "created_at": "2008-01-10T13:00:00-05:00",
            "committed_at": "2008-01-10T13:00:00-05:00",
            "notify_customer": False,
            "order_id": 450789469,
            "staff_note": "",
            "user_id": None,
            "line_items": {"additions": [], "removals": [{"id": 518995019, "delta": 1}]},
        }
    }
    status, answer = await shop.shopify("orders/edited", body, event_id="e-1")
    assert status == 200 and answer["results"] == []
    assert any("orders/updated" in note for note in answer["ignored"])
    assert shop.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


# --- Square: the fetched order's lines against the stored ones --------------------------------


async def test_square_order_updated_with_changed_lines_is_an_edit(world: World) -> None:  # noqa: F811
    created = SQUARE_ORDER["order"]["created_at"]
    start = datetime.fromisoformat(created.replace("Z", "+00:00"))
    later = copy.deepcopy(SQUARE_ORDER)
    order = later["order"]
    order["version"] = 2
    order["updated_at"] = (start + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    (line,) = [x for x in order["line_items"] if x.get("catalog_object_id")]
    line["quantity"] = "1"  # one of the two removed
    line["gross_sales_money"]["amount"] = 2250
    line["total_discount_money"]["amount"] = 173
    line["total_tax_money"]["amount"] = 187  # as Square restates them: 2250 − 173 + 187
    line["total_money"]["amount"] = 2264
    oid = f"square-{ORDER_ID}"
    async with serve(world) as server:
        status, _ = await post(server, notification(ORDER_ID))
        assert status == 200
        await until(lambda: world.rows("SELECT 1 FROM orders WHERE order_id = ?", oid), "placed")
        await until(lambda: world.pending().count == 0, "the first fetch done")
        # An order.updated whose order is unchanged (paid, fulfilled): no edit.
        status, _ = await post(server, notification(ORDER_ID, kind="order.updated", event_id="u0"))
        assert status == 200
        await until(lambda: world.pending().count == 0, "the second fetch done")
        assert world.rows("SELECT COUNT(*) FROM order_edits") == [(0,)]
        # The order is edited at Square: the next fetch finds other lines.
        world.fake.orders[ORDER_ID] = later
        for n in (1, 2):  # the second notification re-fetches the same version: a duplicate
            status, _ = await post(
                server, notification(ORDER_ID, kind="order.updated", event_id=f"u{n}")
            )
            assert status == 200
            await until(lambda: world.pending().count == 0, "the fetch done")
        assert world.rows(
            "SELECT sku, quantity, unit_price_cents, discount_cents FROM order_lines"
            " WHERE order_id = ?",
            oid,
        ) == [("APP-0001", 1, 2250, 173)]
        assert world.rows("SELECT COUNT(*) FROM order_edits") == [(1,)]
        assert world.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]
        assert world.rows(
            "SELECT COUNT(*) FROM event_log WHERE event_id = ?",
            f"square:order:{ORDER_ID}:edited:v2",
        ) == [(1,)]
    assert net_sales(world.db, (start + timedelta(hours=1)).isoformat()) == 41.54  # 45 − 3.46
    assert net_sales(world.db, (start + timedelta(hours=3)).isoformat()) == 20.77  # 22.5 − 1.73


def test_shopify_refunds_are_returns_and_cancel_refunds_are_removals() -> None:
    """The sample's refund (no restock: a return) leaves the lines; a ``cancel`` refund of
    the same line is a removal, apportioning the line's discount to what is left."""
    from feeds.webhooks.mapping import ShopifyMapping
    from feeds.webhooks.shopify import map_shopify
    from store.model import OrderEdited

    sample = payload("shopify/rest-2024-04_order.json")
    mapped = map_shopify("orders/updated", "d-1", sample, ShopifyMapping())
    assert not [i for i in mapped.items if isinstance(i, OrderEdited)]
    removed = copy.deepcopy(sample)
    for rli in removed["refunds"][0]["refund_line_items"]:
        if rli["line_item_id"] == 466157049:
            rli["restock_type"] = "cancel"
    removed["line_items"][1]["quantity"] = 2  # the red iPod: 2 ordered, 1 refunded, 0 left
    removed["line_items"][1]["current_quantity"] = 1
    mapped = map_shopify("orders/updated", "d-2", removed, ShopifyMapping())
    (edit,) = [i for i in mapped.items if isinstance(i, OrderEdited)]
    assert [(x.sku, x.quantity, str(x.discount)) for x in edit.body.lines] == [
        ("IPOD2008RED", 2, "3.33"),  # its refund (no restock) is a return: still 2
        ("IPOD2008BLACK", 1, "3.33"),
    ]  # the green one, refunded with restock type cancel, was removed
    # the same order on orders/paid maps no edit (orders/updated carries them)
    mapped = map_shopify("orders/paid", "d-3", removed, ShopifyMapping())
    assert not [i for i in mapped.items if isinstance(i, OrderEdited)]
