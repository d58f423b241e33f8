"""Real shops' payload variants the documented samples do not show (issue: real shops).

Each case starts from a vendor sample in ``fixtures/payloads`` (sources in their
``SOURCES.md``) and changes only the fields the vendor documents for the variant:

* Square: a refund with several return lines (one return each), zero- and three-decimal
  currencies (Square's ``Money.amount`` is in the currency's smallest unit), a line sold
  by weight (``quantity "1.5"``), an unreadable count beside good ones in one
  ``inventory.count.updated``, and a completed counter sale (no fulfillment);
* Shopify: custom-item and tip lines (no variant), test orders, and an order whose every
  line was removed (Shopify sets no ``cancelled_at`` for that);
* Shopify: a ``no_restock`` refund line (Shopify gives it no location);
* tax: a Shopify shop whose prices include tax (``taxes_included``, its orders and
  refunds) and a Square line whose tax is inside ``gross_sales_money``;
* EasyPost: a tracker delivered back to the sender after ``return_to_sender``, and one
  waiting at a carrier's counter (``available_for_pickup``).

Store effects are checked on a real SQLite store through the writer's apply path.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from feeds.webhooks import PayloadError
from feeds.webhooks.easypost import map_tracker, parse_tracker
from feeds.webhooks.mapping import parse_mapping
from feeds.webhooks.shopify import map_shopify
from feeds.webhooks.square import map_square, map_square_order, map_square_refund
from store.apply import apply_batch
from store.model import (
    Event,
    FulfillmentUpdated,
    OrderCancelled,
    OrderPlaced,
    Quarantined,
    ReturnReceived,
    StockSnapshot,
)
from store.order_lines import ORDER_FOR_TRACKING
from store.schema import migrate
from store.writer import configure_connection

PAYLOADS = Path(__file__).resolve().parent.parent / "fixtures" / "payloads"
RECEIVED = datetime(2026, 12, 3, 12, tzinfo=UTC)

MAPPING = parse_mapping(
    """
[square]
channel = "pos"
[square.locations]
"057P5VYJ4A5X1" = "S-BKN"
"YYQR03DGCTXA4" = "S-NYC"
[square.catalog_objects]
"BEMYCSMIJL46OCDV4KYIKXIB" = "APP-0001"
"FGQ5JJWT2PYTHF35CKZ2DSKP" = "MUG-0001"
"MEAT-VAR" = "MEAT-001"
[shopify]
[shopify.locations]
"655441491" = "WH-NJ"
"""
)


def sample(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def square_order() -> dict[str, Any]:
    """Square's documented ``CreateOrder`` answer: an ad-hoc line and a catalog line."""
    order: dict[str, Any] = sample("square/api_CreateOrderResponse.json")["order"]
    return order


def store(tmp_path: Path, items: list[Event | Quarantined]) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    configure_connection(db)
    migrate(db)
    apply_batch(db, items, RECEIVED, sweep=True)
    return db


# --- Square ---------------------------------------------------------------------------


def test_a_square_refund_of_several_lines_returns_each_line(tmp_path: Path) -> None:
    order = square_order()
    order["returns"] = [
        {
            "source_order_id": order["id"],
            "return_line_items": [
                {
                    "uid": "rli1",
                    "catalog_object_id": "BEMYCSMIJL46OCDV4KYIKXIB",
                    "quantity": "1",
                    "total_money": {"amount": 2115, "currency": "USD"},
                },
                {
                    "uid": "rli2",
                    "catalog_object_id": "MEAT-VAR",
                    "quantity": "2",
                    "total_money": {"amount": 1600, "currency": "USD"},
                },
            ],
        }
    ]
    refund = dict(sample("square/api_GetPaymentRefundResponse.json")["refund"])
    refund["location_id"] = "057P5VYJ4A5X1"
    items = map_square_refund(refund, order, MAPPING.square).items
    returns = [i for i in items if isinstance(i, ReturnReceived)]
    assert len({r.body.return_id for r in returns}) == 2, [r.body.return_id for r in returns]
    db = store(tmp_path, list(items))
    rows = db.execute("SELECT sku, quantity FROM returns ORDER BY sku").fetchall()
    assert rows == [("APP-0001", 1), ("MEAT-001", 2)]  # 3 units, not the first line's 1


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [("USD", 1599, "15.99"), ("JPY", 1500, "1500.00"), ("KRW", 12000, "12000.00")],
)
def test_square_money_is_read_in_the_currencys_own_minor_unit(
    currency: str, amount: int, expected: str
) -> None:
    # Square: "JPY | Yen (amount 100 in the Money object indicates ¥ 100)".
    order = square_order()
    line = order["line_items"][1]
    for key in ("base_price_money", "gross_sales_money", "total_discount_money", "total_money"):
        line.pop(key, None)
    line["base_price_money"] = {"amount": amount, "currency": currency}
    line["total_discount_money"] = {"amount": amount // 10, "currency": currency}
    (placed,) = [i for i in map_square_order(order, MAPPING.square).items]
    assert isinstance(placed, OrderPlaced)
    (stored,) = placed.body.lines
    assert stored.unit_price == Decimal(expected)
    assert stored.discount == (Decimal(amount // 10) * stored.unit_price / amount).quantize(
        Decimal("0.01")
    )


def test_a_three_decimal_currency_is_kept_to_the_cent() -> None:
    order = square_order()
    line = order["line_items"][1]
    line.pop("gross_sales_money", None)
    line.pop("total_money", None)  # priced from the base price, not the net of tax
    line["base_price_money"] = {"amount": 12345, "currency": "KWD"}  # 12.345 KD
    (placed,) = map_square_order(order, MAPPING.square).items
    assert isinstance(placed, OrderPlaced)
    assert placed.body.lines[0].unit_price == Decimal("12.34")  # half-even, the model's cents


def test_a_line_sold_by_weight_is_skipped_and_the_order_placed() -> None:
    order = square_order()
    weighed = copy.deepcopy(order["line_items"][1])
    weighed.update(
        uid="w1",
        name="Ground beef",
        catalog_object_id="MEAT-VAR",
        quantity="1.5",
        quantity_unit={"measurement_unit": {"weight_unit": "IMPERIAL_POUND"}, "precision": 1},
    )
    order["line_items"].append(weighed)
    mapped = map_square_order(order, MAPPING.square)
    (placed,) = mapped.items
    assert isinstance(placed, OrderPlaced)
    assert [line.sku for line in placed.body.lines] == ["APP-0001"]
    assert any("'Ground beef' sold by measure, 1.5" in note for note in mapped.ignored), (
        mapped.ignored
    )
    # A quantity that is no number at all is still refused, naming the field.
    weighed["quantity"] = "lots"
    with pytest.raises(ValueError, match=r"line_items\[2\]\.quantity"):
        map_square_order(order, MAPPING.square)


def test_an_unreadable_count_is_held_alone_and_the_others_stored() -> None:
    payload = sample("square/inventory.count.updated.json")
    good = payload["data"]["object"]["inventory_counts"][0]
    bad = dict(good, catalog_object_id="MEAT-VAR", quantity="12.5")
    payload["data"]["object"]["inventory_counts"] = [good, bad]
    mapped = map_square(payload, MAPPING.square)
    snapshot, held = mapped.items
    assert isinstance(snapshot, StockSnapshot)
    assert (snapshot.body.sku, snapshot.body.on_hand) == ("MUG-0001", 10)
    assert isinstance(held, Quarantined)
    assert "inventory_counts[1].quantity: expected a whole number, got '12.5'" in held.error


def test_a_completed_counter_sale_is_taken_at_the_till(tmp_path: Path) -> None:
    order = square_order()
    order.update(state="COMPLETED", closed_at="2026-12-02T15:04:05Z")
    order["created_at"] = "2026-12-02T15:03:00Z"
    mapped = map_square_order(order, MAPPING.square)
    placed, handover = mapped.items
    assert isinstance(placed, OrderPlaced) and isinstance(handover, FulfillmentUpdated)
    assert placed.body.method == "bopis" and placed.body.location_id == "S-BKN"
    assert (handover.body.status, handover.ts) == (
        "picked_up",
        datetime(2026, 12, 2, 15, 4, 5, tzinfo=UTC),
    )
    db = store(tmp_path, list(mapped.items))
    (done,) = db.execute("SELECT done_ts FROM orders").fetchall()
    assert done[0] is not None  # not an open order going late
    # An open order, or one with a fulfillment, is not a counter sale.
    order.update(state="OPEN")
    assert [type(i) for i in map_square_order(order, MAPPING.square).items] == [OrderPlaced]
    order.update(state="COMPLETED", fulfillments=[{"uid": "f1", "type": "SHIPMENT"}])
    assert [type(i) for i in map_square_order(order, MAPPING.square).items] == [OrderPlaced]


# --- Shopify --------------------------------------------------------------------------


def shopify_order() -> dict[str, Any]:
    """Shopify's REST 2024-04 order, as placed (no refunds, fulfillments or removals)."""
    order: dict[str, Any] = sample("shopify/rest-2024-04_order.json")
    order.update(refunds=[], fulfillments=[], cancelled_at=None, test=False)
    for line in order["line_items"]:
        line["current_quantity"] = line["quantity"]
    return order


def test_custom_items_and_tips_are_not_stock_and_the_order_is_placed() -> None:
    order = shopify_order()
    first = order["line_items"][0]
    custom = dict(first, id=1, title="Gift wrapping", variant_id=None, product_id=None, sku=None)
    tip = dict(first, id=2, title="Tip", variant_id=None, product_id=None, sku="")
    tip["tip_payment_gateway"] = "shopify_payments"
    order["line_items"] += [custom, tip]
    mapped = map_shopify("orders/create", "d1", order, MAPPING.shopify)
    (placed,) = [i for i in mapped.items if not isinstance(i, FulfillmentUpdated)]
    assert isinstance(placed, OrderPlaced), placed
    assert [line.sku for line in placed.body.lines] == [
        "IPOD2008GREEN",
        "IPOD2008RED",
        "IPOD2008BLACK",
    ]
    assert any("custom item 'Gift wrapping'" in n for n in mapped.ignored), mapped.ignored
    assert any("tip 'Tip'" in n for n in mapped.ignored), mapped.ignored
    # A line of a variant the mapping does not know, without a sku, is still held.
    order["line_items"].append(dict(first, id=3, variant_id=777, sku=None))
    (held,) = map_shopify("orders/create", "d2", order, MAPPING.shopify).items
    assert isinstance(held, Quarantined) and "unmapped Shopify variant_id 777" in held.error


def test_test_orders_are_left_out_unless_kept() -> None:
    order = shopify_order()
    order["test"] = True
    mapped = map_shopify("orders/create", "d1", order, MAPPING.shopify)
    assert mapped.items == []
    assert any("test order" in n for n in mapped.ignored), mapped.ignored
    keep = parse_mapping('[shopify]\ntest_orders = "keep"\n').shopify
    assert [type(i) for i in map_shopify("orders/create", "d1", order, keep).items] == [OrderPlaced]


def test_an_order_with_every_line_removed_is_cancelled(tmp_path: Path) -> None:
    order = shopify_order()
    placed = map_shopify("orders/create", "d1", order, MAPPING.shopify).items
    removed = copy.deepcopy(order)
    for line in removed["line_items"]:
        line["current_quantity"] = 0  # refunded with restock_type "cancel": Shopify's removal
    removed["updated_at"] = "2026-12-02T10:00:00-05:00"
    mapped = map_shopify("orders/updated", "d2", removed, MAPPING.shopify)
    cancels = [i for i in mapped.items if isinstance(i, OrderCancelled)]
    assert [(c.id, c.ts, c.body.reason) for c in cancels] == [
        (
            f"shopify:order:{order['id']}:cancelled",
            datetime(2026, 12, 2, 15, tzinfo=UTC),
            "every line removed",
        )
    ]
    db = store(tmp_path, [*placed, *mapped.items])
    (cancelled,) = db.execute("SELECT cancelled_ts FROM orders").fetchone()
    assert cancelled is not None
    # One line left is an edit, not a cancellation.
    removed["line_items"][0]["current_quantity"] = 1
    kinds = {i.type for i in map_shopify("orders/updated", "d3", removed, MAPPING.shopify).items}
    assert "order.cancelled" not in kinds and "order.edited" in kinds


def line_nets(placed: OrderPlaced) -> list[Decimal]:
    """Each line's net as net sales counts it: quantity × unit price − discount."""
    return [line.quantity * line.unit_price - line.discount for line in placed.body.lines]


def test_a_tax_inclusive_shops_lines_are_counted_without_their_tax() -> None:
    order = shopify_order()
    order["taxes_included"] = True  # the sample's figures, as a VAT shop would state them
    mapped = map_shopify("orders/create", "d1", order, MAPPING.shopify)
    (placed,) = mapped.items
    assert isinstance(placed, OrderPlaced)
    # By hand: 199.00 − 3.34 discount − 3.98 tax = 191.68; 199.00 − 3.33 − 3.98 = 191.69.
    assert line_nets(placed) == [Decimal("191.68"), Decimal("191.69"), Decimal("191.69")]
    first = placed.body.lines[0]
    # 199.00 × 191.68 / 195.66 = 194.952… → 194.96, and 194.96 − 191.68 = 3.28 discount.
    assert (first.unit_price, first.discount) == (Decimal("194.96"), Decimal("3.28"))
    assert any("shopify.taxes_included = true" in n for n in mapped.ignored), mapped.ignored
    # The same order from a shop whose prices are before tax keeps its prices.
    order["taxes_included"] = False
    (before,) = map_shopify("orders/create", "d1", order, MAPPING.shopify).items
    assert isinstance(before, OrderPlaced)
    assert line_nets(before) == [Decimal("195.66"), Decimal("195.67"), Decimal("195.67")]


def test_vat_inside_a_price_that_divides_leaves_no_discount() -> None:
    order = shopify_order()
    order["taxes_included"] = True
    line = order["line_items"][0]
    line.update(price="12.00", quantity=3, current_quantity=3, discount_allocations=[])
    line["tax_lines"] = [{"price": "6.00", "rate": 0.2, "title": "VAT"}]  # 20 % of 30.00
    order["line_items"] = [line]
    (placed,) = map_shopify("orders/create", "d1", order, MAPPING.shopify).items
    assert isinstance(placed, OrderPlaced)
    (stored,) = placed.body.lines
    assert (stored.unit_price, stored.discount) == (Decimal("10.00"), Decimal("0.00"))
    # A tax larger than what the line charged is named, not stored.
    line["tax_lines"] = [{"price": "40.00"}]
    with pytest.raises(PayloadError, match=r"line_items\[0\]\.tax_lines: tax 40\.00"):
        map_shopify("orders/create", "d2", order, MAPPING.shopify)


def test_a_tax_inclusive_order_redelivered_maps_no_edit() -> None:
    order = shopify_order()
    order["taxes_included"] = True
    (placed,) = map_shopify("orders/create", "d1", order, MAPPING.shopify).items
    assert isinstance(placed, OrderPlaced)
    order["updated_at"] = "2026-12-02T10:00:00-05:00"
    kinds = [i.type for i in map_shopify("orders/updated", "d2", order, MAPPING.shopify).items]
    assert "order.edited" not in kinds, kinds


def test_a_tax_inclusive_shops_refunds_are_net_of_tax() -> None:
    refund = sample("shopify/rest-2024-04_refund.json")
    vat = parse_mapping(
        '[shopify]\ntaxes_included = true\n[shopify.locations]\n"487838322" = "WH-NJ"\n'
    ).shopify
    before = vat.model_copy(update={"taxes_included": False})
    nets = [
        i.body.refund
        for i in map_shopify("refunds/create", "d1", refund, vat).items
        if isinstance(i, ReturnReceived)
    ]
    assert nets == [Decimal("191.68"), Decimal("191.69")]  # 195.66 − 3.98, 195.67 − 3.98
    gross = [
        i.body.refund
        for i in map_shopify("refunds/create", "d1", refund, before).items
        if isinstance(i, ReturnReceived)
    ]
    assert gross == [Decimal("195.66"), Decimal("195.67")]


def test_a_square_line_with_tax_inside_its_gross_is_counted_without_it() -> None:
    # Outside the US, Canada and Japan Square's gross_sales_money holds an inclusive tax.
    order = square_order()
    line = order["line_items"][1]
    for key, cents in (
        ("gross_sales_money", 1200),
        ("total_discount_money", 0),
        ("total_tax_money", 200),  # 20 % VAT inside 12.00
        ("total_money", 1200),
    ):
        line[key] = {"amount": cents, "currency": "GBP"}
    line["quantity"] = "1"
    (placed,) = [i for i in map_square_order(order, MAPPING.square).items]
    assert isinstance(placed, OrderPlaced)
    (stored,) = placed.body.lines
    assert (stored.unit_price, stored.discount) == (Decimal("10.00"), Decimal("0.00"))
    # Its return refunds the line's total less its tax.
    order["returns"] = [
        {
            "source_order_id": order["id"],
            "return_line_items": [
                {
                    "uid": "r1",
                    "catalog_object_id": "BEMYCSMIJL46OCDV4KYIKXIB",
                    "quantity": "1",
                    "total_money": {"amount": 1200, "currency": "GBP"},
                    "total_tax_money": {"amount": 200, "currency": "GBP"},
                }
            ],
        }
    ]
    refund = dict(sample("square/api_GetPaymentRefundResponse.json")["refund"])
    refund["location_id"] = "057P5VYJ4A5X1"
    returns = map_square_refund(refund, order, MAPPING.square).items
    assert [r.body.refund for r in returns if isinstance(r, ReturnReceived)] == [Decimal("10.00")]
    # Square's documented US order (additive tax) keeps gross / quantity: 4500 / 2.
    (us,) = [i for i in map_square_order(square_order(), MAPPING.square).items]
    assert isinstance(us, OrderPlaced)
    assert (us.body.lines[0].unit_price, us.body.lines[0].discount) == (
        Decimal("22.50"),
        Decimal("3.46"),
    )


# --- EasyPost -------------------------------------------------------------------------


def test_a_parcel_delivered_back_to_the_sender_is_no_delivery() -> None:
    event = sample("easypost/tracker.updated.event-body.json")
    result = event["result"]
    scans = [
        ("in_transit", "2026-12-02T10:00:00Z"),
        ("return_to_sender", "2026-12-04T10:00:00Z"),
        ("delivered", "2026-12-08T10:00:00Z"),
    ]
    result["tracking_details"] = [{"status": s, "datetime": t} for s, t in scans]
    result["status"] = "delivered"
    items = map_tracker(parse_tracker(event), "shopify-1").items
    steps = [(i.body.status, i.ts) for i in items if isinstance(i, FulfillmentUpdated)]
    assert ("exception", datetime(2026, 12, 4, 10, tzinfo=UTC)) in steps
    assert all(status != "delivered" for status, _ in steps), steps
    # The same history without the return is a delivery.
    result["tracking_details"] = [
        d for d in result["tracking_details"] if "return" not in d["status"]
    ]
    items = map_tracker(parse_tracker(event), "shopify-1").items
    assert ("delivered", datetime(2026, 12, 8, 10, tzinfo=UTC)) in [
        (i.body.status, i.ts) for i in items if isinstance(i, FulfillmentUpdated)
    ]


def test_every_parcel_of_a_split_shipment_finds_its_order(tmp_path: Path) -> None:
    """A tracker of the first parcel as well as of the last (``orders.tracking`` is the last)."""
    order = shopify_order()
    parcels = []
    for n, code in enumerate(("1Z999AA10000000001", "1Z999AA10000000002")):
        parcel = copy.deepcopy(sample("shopify/rest-2024-04_order.json")["fulfillments"][0])
        parcel.update(id=9000 + n, status="success", tracking_number=code)
        parcel["created_at"] = f"2026-12-02T1{n}:00:00-05:00"
        parcels.append(parcel)
    order["fulfillments"] = parcels
    items = map_shopify("orders/fulfilled", "d1", order, MAPPING.shopify).items
    db = store(tmp_path, list(items))
    for code in ("1Z999AA10000000001", "1Z999AA10000000002"):
        assert db.execute(ORDER_FOR_TRACKING, (code,)).fetchall() == [
            (f"shopify-{order['id']}",)
        ], code
    assert db.execute(ORDER_FOR_TRACKING, ("1Z-UNKNOWN",)).fetchall() == []
    # A store from before the table: the migration fills it from the event log.
    db.execute("DROP TABLE order_tracking")
    db.execute("DROP TABLE carrier_reports")
    db.execute("DROP TABLE node_fulfilled")
    db.execute("ALTER TABLE stock DROP COLUMN as_of_us")
    db.execute("ALTER TABLE stock_counts DROP COLUMN us")
    db.execute("PRAGMA user_version = 18")
    migrate(db)
    assert len(db.execute("SELECT * FROM order_tracking").fetchall()) == 2


def test_a_refund_line_not_restocked_is_returned_at_no_location(tmp_path: Path) -> None:
    """Shopify documents ``no_restock`` lines without ``location_id``: not held for it."""
    refund = sample("shopify/rest-2024-04_refund.json")
    first = refund["refund_line_items"][0]
    first.update(restock_type="no_restock", location_id=None)
    refund["refund_line_items"] = [first]
    items = map_shopify("refunds/create", "d-r1", refund, MAPPING.shopify).items
    assert not [i for i in items if isinstance(i, Quarantined)], items
    db = store(tmp_path, list(items))
    got = db.execute(
        "SELECT location_id, quantity, refund_cents FROM returns WHERE return_id = ?",
        (f"shopify-{refund['id']}-{first['id']}",),
    ).fetchall()
    assert got == [("-", 1, 19566)]
    # A restocked line without a location is still held: it names no shelf and should.
    first.update(restock_type="return")
    items = map_shopify("refunds/create", "d-r2", refund, MAPPING.shopify).items
    held = [i for i in items if isinstance(i, Quarantined)]
    assert held and "default_return_location is not set" in held[0].error


def test_a_parcel_waiting_at_the_carriers_counter_is_in_transit() -> None:
    event = sample("easypost/tracker.updated.event-body.json")
    result = event["result"]
    result["tracking_details"] = [
        {"status": "in_transit", "datetime": "2026-12-02T10:00:00Z"},
        {"status": "available_for_pickup", "datetime": "2026-12-04T09:00:00Z"},
    ]
    result["status"] = "available_for_pickup"
    items = map_tracker(parse_tracker(event), "shopify-1").items
    steps = [(i.body.status, i.ts) for i in items if isinstance(i, FulfillmentUpdated)]
    assert steps == [("shipped", datetime(2026, 12, 2, 10, tzinfo=UTC))]
