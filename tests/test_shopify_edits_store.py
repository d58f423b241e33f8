"""Shopify ``orders/updated`` against the lines the store holds, over real HTTP.

Signed webhooks into a real ``serve`` on 127.0.0.1 with a real SQLite store.  The order is
the vendor's sample (``fixtures/payloads/shopify/rest-2024-04_order.json``, REST 2024-04)
as it was at creation: three iPods at 199.00, 587.00 net of 10.00 of discounts, placed at
10:00 New York time on 2008-01-10.  An edit is what differs from the store's lines (an
added line, a changed price, a removal); an update that changes no line, or a redelivery
of an edit the store holds, adds nothing.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime
from typing import Any

from store.apply import epoch
from tests.builders import sku
from tests.test_order_edits_shops import SHOPIFY_ORDER, as_created, edited, ids, net_sales
from tests.test_shops import Shop, shop  # noqa: F401 (shop: the fixture)

PINK = "IPOD2008PINK"
ADDED_LINE = 1071823200  # the line item an edit adds


def edit_id(updated_at: str) -> str:
    return f"shopify:order:450789469:edited:{epoch(datetime.fromisoformat(updated_at))}"


def with_added_line(order: dict[str, Any], updated_at: str, quantity: int = 2) -> dict[str, Any]:
    """``order`` after an edit at ``updated_at`` added ``quantity`` pink iPods at 149.00.

    In the REST order an added line is a line item like the ordered ones (``quantity`` =
    ``current_quantity``), so only the store can tell it was not ordered.
    """
    out = copy.deepcopy(order)
    out["updated_at"] = updated_at
    line = copy.deepcopy(out["line_items"][0])
    line.update(
        id=ADDED_LINE,
        admin_graphql_api_id=f"gid://shopify/LineItem/{ADDED_LINE}",
        sku=PINK,
        variant_id=None,
        title="IPod Nano - 8gb",
        name="IPod Nano - 8gb - pink",
        variant_title="pink",
        quantity=quantity,
        current_quantity=quantity,
        fulfillable_quantity=quantity,
        price="149.00",
        discount_allocations=[],
        tax_lines=[],
    )
    out["line_items"].append(line)
    return out


def repriced(order: dict[str, Any], updated_at: str, line_id: int, price: str) -> dict[str, Any]:
    """``order`` after an edit at ``updated_at`` changed line item ``line_id``'s price."""
    out = copy.deepcopy(order)
    out["updated_at"] = updated_at
    for line in out["line_items"]:
        if line["id"] == line_id:
            line["price"] = price
    return out


def lines(shop: Shop) -> list[tuple[Any, ...]]:  # noqa: F811
    return shop.rows(
        "SELECT sku, quantity, unit_price_cents, discount_cents FROM order_lines"
        " WHERE order_id = ? ORDER BY line_no",
        SHOPIFY_ORDER,
    )


def edits(answer: dict[str, Any]) -> list[str]:
    return [i for i in ids(answer) if ":edited:" in i]


async def placed(shop: Shop) -> dict[str, Any]:  # noqa: F811
    """The catalogue (the pink iPod too), and the sample order placed by orders/create."""
    await shop.catalogue({"WH-NJ": 5})
    await shop.events([sku(PINK)])
    created = as_created()
    status, answer = await shop.shopify("orders/create", created, event_id="c-1")
    assert status == 200 and answer["outcome"] == "applied", answer
    assert net_sales(shop.db, "2008-01-10T11:30:00-05:00") == 587.0
    return created


async def test_a_line_added_alone_is_an_edit(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    added = with_added_line(created, "2008-01-10T13:00:00-05:00")
    status, answer = await shop.shopify("orders/updated", added, event_id="u-1")
    assert status == 200 and edits(answer) == [edit_id(added["updated_at"])], answer
    assert ids(answer, "applied") == [edit_id(added["updated_at"])]
    assert lines(shop) == [
        ("IPOD2008GREEN", 1, 19900, 334),
        ("IPOD2008RED", 1, 19900, 333),
        ("IPOD2008BLACK", 1, 19900, 333),
        (PINK, 2, 14900, 0),
    ]
    assert shop.rows("SELECT units, gross_cents FROM orders WHERE order_id = ?", SHOPIFY_ORDER) == [
        (5, 3 * 19900 + 2 * 14900)
    ]
    # the sales as of a moment: as placed before the edit, with the added line after it
    assert net_sales(shop.db, "2008-01-10T12:59:00-05:00") == 587.0
    assert net_sales(shop.db, "2008-01-10T13:00:01-05:00") == 885.0  # 587 + 2 × 149
    assert shop.rows("SELECT SUM(units) FROM sales_hourly WHERE sku = ?", PINK) == [
        (2,)
    ]  # the roll-up moved by the difference
    assert shop.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_a_price_changed_alone_is_an_edit(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    cheaper = repriced(created, "2008-01-10T13:00:00-05:00", line_id=703073504, price="179.00")
    status, answer = await shop.shopify("orders/updated", cheaper, event_id="u-1")
    assert status == 200 and ids(answer, "applied") == [edit_id(cheaper["updated_at"])], answer
    assert lines(shop)[2] == ("IPOD2008BLACK", 1, 17900, 333)
    assert net_sales(shop.db, "2008-01-10T12:59:00-05:00") == 587.0
    assert net_sales(shop.db, "2008-01-10T13:00:01-05:00") == 567.0  # the black one 20 less
    assert shop.rows("SELECT SUM(net_cents) FROM sales_hourly WHERE sku = 'IPOD2008BLACK'") == [
        (17900 - 333,)
    ]


async def test_an_update_that_changes_no_line_is_no_edit(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    tagged = copy.deepcopy(created)
    tagged.update(updated_at="2008-01-10T11:10:00-05:00", tags="vip", note="gift wrap")
    status, answer = await shop.shopify("orders/updated", tagged, event_id="u-0")
    assert status == 200 and not edits(answer) and not ids(answer, "applied"), answer
    # after an edit (a removal), a later update for a tag or a fulfilment: the lines are
    # the ones the store holds, so no other edit (not one per update Shopify sends)
    removal = edited(created, "2008-01-10T13:00:00-05:00", removed=518995019)
    status, answer = await shop.shopify("orders/updated", removal, event_id="u-1")
    assert status == 200 and edits(answer) == [edit_id(removal["updated_at"])], answer
    later = copy.deepcopy(removal)
    later.update(updated_at="2008-01-10T15:00:00-05:00", tags="vip, packed")
    later["fulfillment_status"] = "partial"
    status, answer = await shop.shopify("orders/updated", later, event_id="u-2")
    assert status == 200 and not edits(answer) and not ids(answer, "applied"), answer
    assert shop.rows("SELECT COUNT(*) FROM order_edits") == [(1,)]
    assert shop.rows("SELECT COUNT(*) FROM event_log WHERE type = 'order.edited'") == [(1,)]
    assert shop.rows("SELECT COUNT(*) FROM quarantine") == [(0,)]


async def test_a_repeated_edit_is_applied_once(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    added = with_added_line(created, "2008-01-10T13:00:00-05:00")
    # Shopify retries and does not wait: two deliveries at once, then one more
    answers = await asyncio.gather(
        shop.shopify("orders/updated", added, event_id="u-1"),
        shop.shopify("orders/updated", added, event_id="u-1b"),
    )
    assert all(status == 200 for status, _ in answers)
    status, answer = await shop.shopify("orders/updated", added, event_id="u-1c")
    assert status == 200 and not ids(answer, "applied"), answer
    assert shop.rows(
        "SELECT COUNT(*) FROM event_log WHERE event_id = ?", edit_id(added["updated_at"])
    ) == [(1,)]
    assert shop.rows("SELECT COUNT(*) FROM order_edits") == [(1,)]
    assert len(lines(shop)) == 4
    assert net_sales(shop.db, "2008-01-10T13:00:01-05:00") == 885.0  # counted once


async def test_a_removal_after_an_added_line_is_an_edit(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    added = with_added_line(created, "2008-01-10T13:00:00-05:00")
    status, answer = await shop.shopify("orders/updated", added, event_id="u-1")
    assert status == 200 and edits(answer) == [edit_id(added["updated_at"])]
    removal = edited(added, "2008-01-10T14:00:00-05:00", removed=518995019)  # the red one
    status, answer = await shop.shopify("orders/updated", removal, event_id="u-2")
    assert status == 200 and ids(answer, "applied") == [edit_id(removal["updated_at"])], answer
    assert [row[:2] for row in lines(shop)] == [
        ("IPOD2008GREEN", 1),
        ("IPOD2008BLACK", 1),
        (PINK, 2),
    ]
    assert net_sales(shop.db, "2008-01-10T13:30:00-05:00") == 885.0
    assert net_sales(shop.db, "2008-01-10T14:00:01-05:00") == 689.33  # 885 − (199 − 3.33)


async def test_a_stale_update_after_an_edit_never_wins(shop: Shop) -> None:  # noqa: F811
    created = await placed(shop)
    added = with_added_line(created, "2008-01-10T13:00:00-05:00")
    status, _ = await shop.shopify("orders/updated", added, event_id="u-1")
    assert status == 200
    # an update from before the edit (paid at 11:10) arrives late: the lines it states
    # are kept by their time, the order keeps the edit's
    paid = copy.deepcopy(created)
    paid["updated_at"] = "2008-01-10T11:10:00-05:00"
    status, answer = await shop.shopify("orders/updated", paid, event_id="u-0")
    assert status == 200 and not ids(answer, "quarantined"), answer
    assert len(lines(shop)) == 4
    assert net_sales(shop.db, "2008-01-10T12:00:00-05:00") == 587.0
    assert net_sales(shop.db, "2008-01-10T13:00:01-05:00") == 885.0


async def test_an_order_first_delivered_by_orders_updated_is_placed_as_it_stands(
    shop: Shop,  # noqa: F811
) -> None:
    await shop.catalogue({"WH-NJ": 5})
    await shop.events([sku(PINK)])
    # the first Shopify says of the order is an update after the line was added: it is
    # placed with it (a line as ordered, the REST order cannot tell); no edit
    added = with_added_line(as_created(), "2008-01-10T13:00:00-05:00")
    status, answer = await shop.shopify("orders/updated", added, event_id="u-1")
    assert status == 200 and not edits(answer), answer
    assert "shopify:order:450789469:placed" in ids(answer, "applied")
    assert len(lines(shop)) == 4
    status, answer = await shop.shopify("orders/create", as_created(), event_id="c-1")
    assert status == 200 and ids(answer, "applied") == [], answer  # the first one stands
    assert len(lines(shop)) == 4
    assert shop.rows("SELECT COUNT(*) FROM order_edits") == [(0,)]
