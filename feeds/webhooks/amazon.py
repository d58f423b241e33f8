"""Amazon SP-API notifications (relayed from the seller's SQS queue) → canonical events.

The retailer's relay reads the SQS queue Amazon publishes to and POSTs each message body
(the notification JSON document, unchanged) to ``/webhooks/amazon`` with a bearer token.
Duplicates are normal (SQS is at-least-once): every event id derives from the
notification's ``NotificationMetadata.NotificationId`` or from the order's own id, so a
redelivery is dropped by the store.

* ``ORDER_CHANGE`` (``Payload.OrderChangeNotification``; ``A`` is ``AmazonOrderId``, also
  the canonical order id):

  - ``order.placed`` (id ``amazon:order:A:placed``, ``ts`` = ``Summary.PurchaseDate``)
    for any status but Canceled: channel ``amazon.channel``, method ``ship``,
    ``promised_by`` = ``Summary.LatestShipDate`` (Amazon's ship-by),
    ``delivery_promised_by`` = ``Summary.LatestDeliveryDate`` (promised to the buyer), location
    ``amazon.fba_location`` for AFN and ``amazon.mfn_location`` for MFN orders,
    destination region ``<marketplace country>-<first 3 characters of
    DestinationPostalCode>``, lines from ``OrderItems`` (``SellerSKU`` through
    ``amazon.skus``, default the same string).  The notification carries no prices: a
    line's ``unit_price`` is ``ItemPrice.Amount / Quantity`` when the relay adds the
    Orders API's ``ItemPrice``, else 0 (so Amazon sales count units, not value);
  - ``Summary.OrderStatus`` ``Canceled`` → ``order.cancelled`` (``amazon:order:A:cancelled``)
    at ``OrderChangeTrigger.TimeOfOrderChange``; ``Shipped`` → ``fulfillment.updated``
    ``shipped`` (``amazon:order:A:shipped``).  A buyer's cancel *request* is not a
    cancellation and is not mapped.
* ``FBA_INVENTORY_AVAILABILITY_CHANGES``: one ``stock.snapshot`` per marketplace mapped in
  ``amazon.marketplaces`` (id ``amazon:<NotificationId>:<MarketplaceId>``, ``ts`` =
  ``EventTime``): reserved = the sum of ``ReservedQuantityBreakdown``, on_hand =
  ``Fulfillable`` + reserved (so available is ``Fulfillable``).  Unmapped marketplaces
  are reported as ignored; with none mapped the notification is quarantined.

The sample in ``fixtures/payloads/amazon/`` is built from the public SP-API notification
schemas (there is no captured Amazon payload in this repository).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from feeds.webhooks import (
    JsonObject,
    Mapped,
    PayloadError,
    arr,
    ident,
    integer,
    join,
    money,
    obj,
    opt_obj,
    opt_text,
    opt_when,
    text,
    when,
)
from feeds.webhooks.mapping import AmazonMapping
from feeds.webhooks.redact import redact_json
from store.model import (
    Event,
    FulfillmentBody,
    FulfillmentUpdated,
    OrderCancelled,
    OrderCancelledBody,
    OrderLine,
    OrderPlaced,
    OrderPlacedBody,
    Quarantined,
    StockSnapshot,
    StockSnapshotBody,
)

SOURCE = "amazon"

MARKETPLACE_COUNTRY = {
    "ATVPDKIKX0DER": "US",
    "A2EUQ1WTGCTBG2": "CA",
    "A1AM78C64UM0Y8": "MX",
    "A2Q3Y263D00KWC": "BR",
    "A1F83G8C2ARO7P": "GB",
    "A1PA6795UKMFR9": "DE",
    "A13V1IB3VIYZZH": "FR",
    "APJ6JRA9NG5V4": "IT",
    "A1RKKUPIHCS9HS": "ES",
    "A1805IZSGTT6HS": "NL",
    "A2NODRKZP88ZB9": "SE",
    "A1C3SOZRARQ6R3": "PL",
    "A1VC38T7YXB528": "JP",
    "A39IBJ37TRP1C6": "AU",
}
"""Marketplace → country, for the destination region (Amazon's published ids)."""


def notification_id(payload: JsonObject) -> str:
    """``NotificationMetadata.NotificationId``, the dedupe key of a notification."""
    meta = obj(payload, "NotificationMetadata")
    return ident(meta, "NotificationId", "NotificationMetadata")


def map_amazon(payload: JsonObject, mapping: AmazonMapping) -> Mapped:
    """Turn one relayed SP-API notification into canonical events.

    Raises :class:`~feeds.webhooks.PayloadError` naming the field when it cannot be read.
    """
    if not isinstance(payload, dict):
        raise PayloadError("(body)", "expected a JSON object")
    kind = text(payload, "NotificationType")
    nid = notification_id(payload)
    body = obj(payload, "Payload")
    if kind == "ORDER_CHANGE":
        return _order_change(obj(body, "OrderChangeNotification", "Payload"), mapping)
    if kind == "FBA_INVENTORY_AVAILABILITY_CHANGES":
        return _fba_inventory(nid, when(payload, "EventTime"), body, payload, mapping)
    return Mapped(
        items=[
            Quarantined(
                source=SOURCE,
                raw=redact_json(payload),
                error=(
                    f"unsupported Amazon NotificationType {kind!r} "
                    "(mapped: ORDER_CHANGE, FBA_INVENTORY_AVAILABILITY_CHANGES)"
                ),
            )
        ]
    )


def _order_change(change: JsonObject, mapping: AmazonMapping) -> Mapped:
    out = Mapped()
    where = "Payload.OrderChangeNotification"
    amazon_id = ident(change, "AmazonOrderId", where)
    summary = obj(change, "Summary", where)
    spath = f"{where}.Summary"
    status = text(summary, "OrderStatus", spath)
    trigger = opt_obj(change, "OrderChangeTrigger", where) or {}
    changed_at = opt_when(trigger, "TimeOfOrderChange", f"{where}.OrderChangeTrigger")
    purchased = when(summary, "PurchaseDate", spath)
    changed = changed_at or purchased

    if status != "Canceled":
        out.items.append(_placed(amazon_id, summary, spath, purchased, mapping))
        for item in summary.get("OrderItems") or ():
            seller_sku = item.get("SellerSKU") if isinstance(item, dict) else None
            if isinstance(seller_sku, str) and seller_sku not in mapping.skus:
                out.note_unmapped("seller_sku", seller_sku)
    else:
        out.items.append(
            OrderCancelled(
                id=f"amazon:order:{amazon_id}:cancelled",
                type="order.cancelled",
                ts=changed,
                source=SOURCE,
                body=OrderCancelledBody(
                    order_id=amazon_id, reason=opt_text(trigger, "ChangeReason") or "Canceled"
                ),
            )
        )
    if status == "Shipped":
        out.items.append(
            FulfillmentUpdated(
                id=f"amazon:order:{amazon_id}:shipped",
                type="fulfillment.updated",
                ts=changed,
                source=SOURCE,
                body=FulfillmentBody(order_id=amazon_id, status="shipped"),
            )
        )
    return out


def _placed(
    amazon_id: str, summary: JsonObject, spath: str, purchased: datetime, mapping: AmazonMapping
) -> Event:
    lines: list[OrderLine] = []
    for i, item in enumerate(arr(summary, "OrderItems", spath)):
        path = join(f"{spath}.OrderItems", i)
        if not isinstance(item, dict):
            raise PayloadError(path, "expected an object")
        seller_sku = text(item, "SellerSKU", path)
        quantity = integer(item, "Quantity", path)
        if quantity <= 0:
            continue  # a fully cancelled item line
        price = Decimal("0.00")
        item_price = opt_obj(item, "ItemPrice", path)
        if item_price is not None:
            price = (money(item_price, "Amount", f"{path}.ItemPrice") / quantity).quantize(
                Decimal("0.01")
            )
        lines.append(
            OrderLine(
                sku=mapping.skus.get(seller_sku, seller_sku), quantity=quantity, unit_price=price
            )
        )
    if not lines:
        raise PayloadError(f"{spath}.OrderItems", "no item with a positive Quantity")
    marketplace = opt_text(summary, "MarketplaceId", spath) or ""
    country = MARKETPLACE_COUNTRY.get(marketplace, marketplace or "unknown")
    postal = opt_text(summary, "DestinationPostalCode", spath)
    region = f"{country}-{postal.strip()[:3]}" if postal else country
    fulfillment = opt_text(summary, "FulfillmentType", spath)
    location = mapping.fba_location if fulfillment == "AFN" else mapping.mfn_location
    return OrderPlaced(
        id=f"amazon:order:{amazon_id}:placed",
        type="order.placed",
        ts=purchased,
        source=SOURCE,
        body=OrderPlacedBody(
            order_id=amazon_id,
            channel=mapping.channel,
            method="ship",
            destination_region=region,
            location_id=location,
            promised_by=when(summary, "LatestShipDate", spath),
            delivery_promised_by=opt_when(summary, "LatestDeliveryDate", spath),
            lines=lines,
        ),
    )


def _fba_inventory(
    nid: str, at: datetime, body: JsonObject, payload: JsonObject, mapping: AmazonMapping
) -> Mapped:
    out = Mapped()
    seller_sku = text(body, "SKU", "Payload")
    sku = mapping.skus.get(seller_sku, seller_sku)
    if seller_sku not in mapping.skus:
        out.note_unmapped("seller_sku", seller_sku)
    for i, entry in enumerate(arr(body, "FulfillmentInventoryByMarketplace", "Payload")):
        path = join("Payload.FulfillmentInventoryByMarketplace", i)
        if not isinstance(entry, dict):
            raise PayloadError(path, "expected an object")
        marketplace = text(entry, "MarketplaceId", path)
        inventory = obj(entry, "FulfillmentInventory", path)
        ipath = f"{path}.FulfillmentInventory"
        fulfillable = integer(inventory, "Fulfillable", ipath)
        breakdown = opt_obj(inventory, "ReservedQuantityBreakdown", ipath) or {}
        reserved = sum(
            integer(breakdown, key, f"{ipath}.ReservedQuantityBreakdown") for key in breakdown
        )
        location = mapping.marketplaces.get(marketplace)
        if location is None:
            out.note_unmapped("marketplace", marketplace)
            out.ignored.append(f"{path}: marketplace {marketplace} not in amazon.marketplaces")
            continue
        out.items.append(
            StockSnapshot(
                id=f"amazon:{nid}:{marketplace}",
                type="stock.snapshot",
                ts=at,
                source=SOURCE,
                body=StockSnapshotBody(
                    sku=sku,
                    location_id=location,
                    on_hand=fulfillable + reserved,
                    reserved=reserved,
                    source_system="amazon-fba",
                ),
            )
        )
    if not out.items:
        out.items.append(
            Quarantined(
                source=SOURCE,
                raw=redact_json(payload),
                error=f"FBA inventory of {seller_sku}: no marketplace in amazon.marketplaces",
            )
        )
    return out
