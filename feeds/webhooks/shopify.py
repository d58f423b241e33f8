"""Shopify webhooks → canonical events.

Topics and what they become (``O`` is the Shopify order id; the canonical order id is
``shopify-O``):

* ``orders/create``, ``orders/updated``, ``orders/cancelled`` (and ``orders/paid``,
  ``orders/fulfilled``, ``orders/partially_fulfilled``, which carry the same order object):
  the order is reduced to the facts it states, each under an id of its own, so any
  delivery of any of these topics, in any order and any number of times, stores each
  fact once:

  - ``order.placed`` (id ``shopify:order:O:placed``, ``ts`` = ``created_at``): channel
    ``shopify.channel`` (``shopify.pos_channel`` when ``source_name`` is ``pos``);
    method: ``bopis`` for Shopify POS orders and for orders whose shipping line code or
    title names a pickup (``shopify.pickup_markers``), ``ship_from_store`` when a
    fulfillment leaves from one of ``shopify.store_locations``, else ``ship``; location:
    the mapped location of that fulfillment, else of the order's ``location_id``; when it
    is unmapped (or absent) the order is left to the fulfillment rules like any order
    without a node (never guessed from the id), and the id is recorded for
    ``omniops mapping suggest`` and ``omniops quarantine replay``; destination region
    ``<country_code>-<province_code>`` of the shipping address (``shopify.default_region``
    without one);
    ``promised_by`` = ``created_at`` + ``shopify.sla_hours``; lines: the SKU from
    ``shopify.variants`` by ``variant_id``, else the line's own ``sku``; a line with an
    unmapped variant and no ``sku`` sends the placement to quarantine; gift-card lines and
    lines of no variant and no ``sku`` (custom items, tips) are skipped (not stock) and
    listed as ignored; an order marked ``test: true`` maps nothing unless
    ``shopify.test_orders = "keep"``;
    the discount of a line is the sum of its ``discount_allocations``; in a shop whose
    prices include tax (the order's ``taxes_included``, else ``shopify.taxes_included``)
    the tax in each line (the sum of its ``tax_lines`` ``price``) is taken off it: the
    line's net is its price × quantity − discount − tax, its unit price that net share
    of the price rounded up to the cent, its discount the rest (so net sales never count
    VAT, and the line's net is exact to the cent);
    ``shipping_charged`` = ``total_shipping_price_set.shop_money.amount`` (shipping the
    customer paid, kept apart from net sales).
  - ``order.cancelled`` (``shopify:order:O:cancelled``) when ``cancelled_at`` is set.
  - ``order.edited`` (id ``shopify:order:O:edited:<updated_at, epoch seconds>``, ``ts`` =
    ``updated_at``), from ``orders/updated`` only (Shopify sends one after every committed
    edit), when the order's lines as they stand differ from the lines the store holds for
    it (``held``: its placement's or its latest edit's, which ``serve`` reads with
    :func:`store.order_lines.held_lines` before mapping, see :func:`edited_order`), or,
    when the store does not hold the order (not placed yet, or the caller has no store:
    a replay, Kafka), from its lines as ordered.  The lines are compared by SKU,
    quantity, unit price and discount, in any order, so against the store a line *added*
    by an edit (in the REST order it is a line item like the ordered ones) and a line
    whose ``price`` is not the held one are edits too.  A line's quantity now is its
    ``current_quantity`` (the quantity after removals, REST 2024-01 and later; a payload
    without it maps no edit) plus the units refunded on it with any restock type but
    ``cancel`` (those refunds are returns, ``refunds/create`` maps them: taking them off
    the order too would count them twice), at most its ``quantity``; its discount is
    apportioned to that quantity (to the cent, half up); lines with nothing left are left
    out.  No edit for a cancelled order (the cancellation says it); when nothing is left
    (every line removed or refunded with restock type ``cancel``, for which Shopify sets
    no ``cancelled_at``) the update is the order's ``order.cancelled`` (the same id as
    above, ``ts`` = ``updated_at``, reason ``every line removed``).  An ordinary
    ``orders/updated`` (paid, tagged, fulfilled) maps no edit and
    quarantines nothing; nor does a redelivery of an edit the store holds already (its
    lines are the held ones; without the store it is a duplicate, same ``updated_at``);
    an older one arriving late never wins (the store applies the latest edit by time).
  - each embedded fulfillment, as for ``fulfillments/create``.

  Shopify does not deliver in order.  Last-write-wins on ``updated_at`` holds because
  every fact keeps its own time and id: a stale delivery (older ``updated_at``) can only
  repeat facts already stored, which the store drops as duplicates, and the store keeps
  the *first* placement of an order.  **Not mapped** from order payloads: without the
  store's lines (a replay, Kafka) a line *added* by an edit on its own and a changed
  ``price`` (both look like lines as ordered), a changed shipping address, payment and
  financial status, tags, and the embedded ``refunds`` as returns (use the
  ``refunds/create`` topic: mapping them from every ``orders/updated`` would quarantine
  an unmappable refund line once per delivery).
* ``orders/edited``: acknowledged and mapped to nothing (listed as ignored): it names the
  edited line items by id with deltas, not SKUs, and the ``orders/updated`` Shopify sends
  with it carries the lines.
* ``fulfillments/create``, ``fulfillments/update`` (id ``shopify:fulfillment:F:<step>``):
  status ``pending``/``open`` → ``released``; ``success`` → ``shipped`` (carrier
  ``tracking_company``, ``tracking_number``, mapped location) at ``created_at``;
  ``failure``/``error`` → ``exception``; ``cancelled`` is not mapped (the model has no
  un-ship).  ``shipment_status`` adds a step at ``updated_at``: ``label_printed``/
  ``label_purchased`` → ``packed``, ``confirmed``/``in_transit``/``out_for_delivery`` →
  ``shipped``, ``ready_for_pickup``, ``delivered``, ``attempted_delivery``/``failure`` →
  ``exception``.
* ``fulfillment_events/create`` (id ``shopify:fulfillment_event:E``): the same status
  table at ``happened_at``, with ``estimated_delivery_at`` as the carrier's estimate;
  ``picked_up`` → ``picked_up``.
* ``refunds/create`` (id ``shopify:refund:R:<refund line id>``): one ``return.received``
  per refund line, except lines with ``restock_type`` ``cancel`` (a cancellation, which
  ``order.cancelled`` covers); location: the line's mapped ``location_id``, else
  ``shopify.default_return_location``, else (a ``no_restock`` line, which Shopify gives no
  location: the unit went back to no shelf) ``-``, else the line is quarantined; the units
  and the refund count as returned either way (a refund line is how a shop without
  Shopify's returns records a return, and a unit refunded unrestocked, damaged or kept,
  is the return rate's signal all the same); reason: the refund's
  note, scrubbed of e-mail addresses and phone numbers, at most 80 characters; refund:
  the line's ``subtotal``, less its ``total_tax`` when ``shopify.taxes_included`` is true
  (the refund payload does not say whether the shop's prices include tax).
* ``inventory_levels/update`` (id ``shopify:<X-Shopify-Event-Id>``): keyed by
  ``inventory_item_id`` and ``location_id`` through ``shopify.inventory_items`` and
  ``shopify.locations``; unmapped ids are quarantined (``unmapped Shopify
  inventory_item_id 808950810``); ``available`` becomes a ``stock.snapshot`` (on_hand =
  available) or, with ``inventory_as = "listing"``, a ``listing.updated``.

Any other topic is quarantined with the reason, so a subscription nobody maps is seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from feeds.webhooks import (
    JsonObject,
    Mapped,
    PayloadError,
    arr,
    ident,
    integer,
    join,
    money,
    opt_ident,
    opt_obj,
    opt_text,
    opt_when,
    priced_to_net,
    when,
)
from feeds.webhooks.mapping import ShopifyMapping
from feeds.webhooks.redact import redact_json, scrub_text
from store.model import (
    Event,
    FulfillmentBody,
    FulfillmentStatus,
    FulfillmentUpdated,
    ListingBody,
    ListingUpdated,
    Method,
    OrderCancelled,
    OrderCancelledBody,
    OrderEdited,
    OrderEditedBody,
    OrderLine,
    OrderPlaced,
    OrderPlacedBody,
    Quarantined,
    ReturnBody,
    ReturnReceived,
    StockSnapshot,
    StockSnapshotBody,
)
from store.order_lines import HeldLine, held_line

SOURCE = "shopify"

ORDER_TOPICS = frozenset(
    {
        "orders/create",
        "orders/updated",
        "orders/cancelled",
        "orders/paid",
        "orders/fulfilled",
        "orders/partially_fulfilled",
    }
)
FULFILLMENT_TOPICS = frozenset({"fulfillments/create", "fulfillments/update"})
TOPICS = (
    ORDER_TOPICS
    | FULFILLMENT_TOPICS
    | {
        "fulfillment_events/create",
        "refunds/create",
        "inventory_levels/update",
        "orders/edited",
    }
)
"""Every topic this adapter maps (``orders/edited`` to nothing, see the module docstring)."""

ENVELOPES = {
    "orders": "order",
    "fulfillments": "fulfillment",
    "fulfillment_events": "fulfillment_event",
    "refunds": "refund",
    "inventory_levels": "inventory_level",
}
"""A REST-style ``{"order": {...}}`` envelope is unwrapped (real webhooks send the bare
resource; exports and some relays wrap it)."""

FULFILLMENT_STATUS: dict[str, FulfillmentStatus] = {
    "pending": "released",
    "open": "released",
    "success": "shipped",
    "failure": "exception",
    "error": "exception",
}
SHIPMENT_STATUS: dict[str, FulfillmentStatus] = {
    "label_printed": "packed",
    "label_purchased": "packed",
    "confirmed": "shipped",
    "carrier_picked_up": "shipped",
    "in_transit": "shipped",
    "out_for_delivery": "shipped",
    "ready_for_pickup": "ready_for_pickup",
    "picked_up": "picked_up",
    "delivered": "delivered",
    "attempted_delivery": "exception",
    "failure": "exception",
}


def order_id(shopify_id: str) -> str:
    """The canonical order id of a Shopify order id."""
    return f"shopify-{shopify_id}"


def _unwrap(topic: str, payload: JsonObject) -> JsonObject:
    resource = ENVELOPES.get(topic.split("/", 1)[0])
    if resource and isinstance(payload.get(resource), dict) and len(payload) == 1:
        return payload[resource]  # type: ignore[no-any-return]
    return payload


def edited_order(topic: str, payload: object) -> str | None:
    """The canonical order whose held lines an ``orders/updated`` is compared with.

    None for any other topic, or when the payload names no readable order id (mapping it
    then says what is wrong).  The caller reads the lines (``store.order_lines``) and
    passes them to :func:`map_shopify` as ``held``.
    """
    if topic != "orders/updated" or not isinstance(payload, dict):
        return None
    raw = _unwrap(topic, payload).get("id")
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    shop_id = str(raw).strip()
    return order_id(shop_id) if shop_id else None


def map_shopify(
    topic: str,
    delivery_id: str,
    payload: JsonObject,
    mapping: ShopifyMapping,
    *,
    held: Sequence[HeldLine] | None = None,
) -> Mapped:
    """Turn one verified Shopify delivery into canonical events.

    ``delivery_id`` is ``X-Shopify-Event-Id`` (or ``X-Shopify-Webhook-Id``); it is the id
    of facts that have no identity of their own (inventory levels).  ``held``: for
    ``orders/updated``, the lines the store holds for the order (:func:`edited_order`
    names it), or None when the store does not hold it or was not asked; an edit is then
    the lines now against these, else against the lines as ordered.  Raises
    :class:`~feeds.webhooks.PayloadError` naming the field when the payload cannot be
    read.
    """
    if not isinstance(payload, dict):
        raise PayloadError("(body)", "expected a JSON object")
    payload = _unwrap(topic, payload)
    if topic in ORDER_TOPICS:
        return _order(payload, mapping, edits=topic == "orders/updated", held=held)
    if topic == "orders/edited":
        edit = opt_obj(payload, "order_edit")
        shop_order = opt_ident(edit, "order_id", "order_edit") if edit else None
        return Mapped(
            ignored=[
                f"orders/edited of order {shop_order}: mapped from the orders/updated that"
                " follows it (it names line items by id, not SKUs)"
            ]
        )
    if topic in FULFILLMENT_TOPICS:
        out = Mapped()
        _fulfillment(payload, "", mapping, out)
        return out
    if topic == "fulfillment_events/create":
        return _fulfillment_event(payload)
    if topic == "refunds/create":
        return _refund(payload, mapping)
    if topic == "inventory_levels/update":
        return _inventory(payload, delivery_id, mapping)
    known = ", ".join(sorted(TOPICS))
    return Mapped(
        items=[
            Quarantined(
                source=SOURCE,
                raw=redact_json(payload),
                error=f"unsupported Shopify topic {topic!r} (mapped topics: {known})",
            )
        ]
    )


def _quarantine(payload: JsonObject, error: str) -> Quarantined:
    return Quarantined(source=SOURCE, raw=redact_json(payload), error=error)


def _location(ext: str | None, mapping: ShopifyMapping) -> str | None:
    return None if ext is None else mapping.locations.get(ext)


def _region(order: JsonObject, mapping: ShopifyMapping) -> str:
    address = opt_obj(order, "shipping_address")
    if address is None:
        return mapping.default_region
    country = opt_text(address, "country_code", "shipping_address")
    province = opt_text(address, "province_code", "shipping_address")
    if country and province:
        return f"{country}-{province}"
    return country or mapping.default_region


def _is_pickup(order: JsonObject, mapping: ShopifyMapping) -> bool:
    for i, line in enumerate(arr(order, "shipping_lines", required=False)):
        if not isinstance(line, dict):
            raise PayloadError(join("shipping_lines", i), "expected an object")
        label = " ".join(
            filter(None, (opt_text(line, k, join("shipping_lines", i)) for k in ("code", "title")))
        ).lower()
        if any(marker in label for marker in mapping.pickup_markers):
            return True
    return False


def _shipping_charged(order: JsonObject) -> Decimal | None:
    """Shipping charged to the customer: ``total_shipping_price_set.shop_money.amount``."""
    total = opt_obj(order, "total_shipping_price_set")
    shop = None if total is None else opt_obj(total, "shop_money", "total_shipping_price_set")
    if shop is None:
        return None
    return money(shop, "amount", "total_shipping_price_set.shop_money")


def _line_sku(line: JsonObject, path: str, mapping: ShopifyMapping) -> str | None:
    variant = opt_ident(line, "variant_id", path)
    if variant is not None and variant in mapping.variants:
        return mapping.variants[variant]
    return opt_text(line, "sku", path)


def _order(
    order: JsonObject,
    mapping: ShopifyMapping,
    *,
    edits: bool = False,
    held: Sequence[HeldLine] | None = None,
) -> Mapped:
    out = Mapped()
    shop_id = ident(order, "id")
    oid = order_id(shop_id)
    created = when(order, "created_at")
    if order.get("test") is True and mapping.test_orders == "skip":
        out.ignored.append(
            f"order {oid}: a Shopify test order (test: true), not a sale"
            ' (shopify.test_orders = "keep" stores them)'
        )
        return out
    pos = order.get("source_name") == "pos"
    fulfillments = arr(order, "fulfillments", required=False)
    stated = order.get("taxes_included")
    taxes_included = stated if isinstance(stated, bool) else mapping.taxes_included
    if stated is True and not mapping.taxes_included:
        out.ignored.append(
            f"order {oid}: its prices include tax (taxes_included), taken off its lines;"
            " set shopify.taxes_included = true so refunds are counted net of tax too"
        )

    lines: list[OrderLine] = []
    ordered: list[tuple[JsonObject, str]] = []  # the line item of each of lines
    problems: list[str] = []
    for i, line in enumerate(arr(order, "line_items")):
        path = join("line_items", i)
        if not isinstance(line, dict):
            raise PayloadError(path, "expected an object")
        if line.get("gift_card") is True:
            out.ignored.append(f"order {oid} {path}: gift card (not stock)")
            continue
        quantity = integer(line, "quantity", path)
        price = money(line, "price", path)
        discount = sum(
            (
                money(alloc, "amount", join(join(path, "discount_allocations"), j))
                for j, alloc in enumerate(arr(line, "discount_allocations", path, required=False))
            ),
            Decimal("0.00"),
        )
        sku = _line_sku(line, path, mapping)
        if sku is None and opt_ident(line, "variant_id", path) is None:
            # A custom item (gift wrapping, a service) or a tip: a line of no product.
            what = "tip" if "tip_payment_gateway" in line else "custom item"
            name = opt_text(line, "title", path) or opt_text(line, "name", path) or "?"
            out.ignored.append(f"order {oid} {path}: {what} {name!r}, no variant (not stock)")
            continue
        if sku is None:
            variant = opt_ident(line, "variant_id", path)
            problems.append(f"{path}: no sku and unmapped Shopify variant_id {variant}")
            out.note_unmapped("variant_id", variant)
            continue
        if quantity <= 0:
            raise PayloadError(join(path, "quantity"), f"must be positive, got {quantity}")
        if taxes_included:
            price, discount = _net_of_tax(line, path, quantity, price, discount)
        lines.append(OrderLine(sku=sku, quantity=quantity, unit_price=price, discount=discount))
        ordered.append((line, path))

    method: Method = "ship"
    location_ext = opt_ident(order, "location_id")
    if pos or _is_pickup(order, mapping):
        method = "bopis"
    for i, f in enumerate(fulfillments):
        if not isinstance(f, dict):
            raise PayloadError(join("fulfillments", i), "expected an object")
        f_loc = opt_ident(f, "location_id", join("fulfillments", i))
        if f_loc is not None:
            if method == "ship" and f_loc in mapping.store_locations:
                method = "ship_from_store"
            location_ext = location_ext if method == "bopis" and location_ext else f_loc
            break
    location = _location(location_ext, mapping)
    if location_ext is not None and location is None:
        out.note_unmapped("location_id", location_ext)
        out.ignored.append(
            f"order {oid}: unmapped Shopify location_id {location_ext}"
            " (routed by the fulfillment rules; replay after mapping it)"
        )

    if problems:
        out.items.append(_quarantine(order, f"order {oid} not placed: " + "; ".join(problems)))
    elif not lines:
        out.ignored.append(f"order {oid}: no stock lines (gift cards, tips, custom items)")
    else:
        out.items.append(
            OrderPlaced(
                id=f"shopify:order:{shop_id}:placed",
                type="order.placed",
                ts=created,
                source=SOURCE,
                body=OrderPlacedBody(
                    order_id=oid,
                    channel=mapping.pos_channel if pos else mapping.channel,
                    method=method,
                    destination_region=_region(order, mapping),
                    location_id=location,
                    promised_by=created + timedelta(hours=mapping.sla_hours),
                    lines=lines,
                    shipping_charged=_shipping_charged(order),
                ),
            )
        )

    cancelled = opt_when(order, "cancelled_at")
    if edits and lines and not problems and cancelled is None:
        edited = _edited(order, shop_id, lines, ordered, out, held)
        if isinstance(edited, datetime):  # every line removed: the order is off
            out.items.append(
                OrderCancelled(
                    id=f"shopify:order:{shop_id}:cancelled",
                    type="order.cancelled",
                    ts=edited,
                    source=SOURCE,
                    body=OrderCancelledBody(order_id=oid, reason="every line removed"),
                )
            )
        elif edited is not None:
            out.items.append(edited)
    if cancelled is not None:
        out.items.append(
            OrderCancelled(
                id=f"shopify:order:{shop_id}:cancelled",
                type="order.cancelled",
                ts=cancelled,
                source=SOURCE,
                body=OrderCancelledBody(
                    order_id=oid, reason=opt_text(order, "cancel_reason") or ""
                ),
            )
        )
    for i, f in enumerate(fulfillments):
        _fulfillment(f, join("fulfillments", i), mapping, out, shop_order=shop_id)
    return out


def _kept_refunds(order: JsonObject) -> dict[str, int]:
    """Units refunded per line item that ``refunds/create`` maps as returns.

    Every restock type but ``cancel`` (a removal, which the edit counts): their refund is
    a ``return.received``, so taking them off the order too would count them twice.
    """
    out: dict[str, int] = {}
    for i, refund in enumerate(arr(order, "refunds", required=False)):
        if not isinstance(refund, dict):
            raise PayloadError(join("refunds", i), "expected an object")
        path = join(join("refunds", i), "refund_line_items")
        for j, rli in enumerate(
            arr(refund, "refund_line_items", join("refunds", i), required=False)
        ):
            if not isinstance(rli, dict):
                raise PayloadError(join(path, j), "expected an object")
            if rli.get("restock_type") == "cancel":
                continue
            line_id = opt_ident(rli, "line_item_id", join(path, j))
            if line_id is not None:
                out[line_id] = out.get(line_id, 0) + integer(rli, "quantity", join(path, j))
    return out


def _net_of_tax(
    line: JsonObject, path: str, quantity: int, price: Decimal, discount: Decimal
) -> tuple[Decimal, Decimal]:
    """A tax-inclusive line's unit price and discount without the tax in them.

    The tax is the sum of the line's ``tax_lines`` ``price`` (Shopify's tax on the whole
    line after its discounts).  The net (price × quantity − discount − tax) is exact; the
    unit price is the net's share of the price rounded up to the cent and the discount
    what makes quantity × unit price − discount the net, so it is never negative.
    """
    tax = sum(
        (
            money(t, "price", join(join(path, "tax_lines"), j))
            for j, t in enumerate(arr(line, "tax_lines", path, required=False))
        ),
        Decimal("0.00"),
    )
    if tax == 0:
        return price, discount
    charged = price * quantity - discount
    if tax < 0 or tax > charged:
        raise PayloadError(
            join(path, "tax_lines"),
            f"tax {tax} is not within the line's price less its discounts ({charged})",
        )
    net = charged - tax
    return priced_to_net(price * quantity * net / charged, quantity, net)


def _edited(
    order: JsonObject,
    shop_id: str,
    lines: list[OrderLine],
    ordered: list[tuple[JsonObject, str]],
    out: Mapped,
    held: Sequence[HeldLine] | None = None,
) -> OrderEdited | datetime | None:
    """The order's lines as they stand now, when an edit made them differ.

    A line's quantity now is its ``current_quantity`` (after removals, REST 2024-01 and
    later) plus its units refunded as returns (:func:`_kept_refunds`); its discount is
    apportioned to that quantity.  None when they are the ``held`` lines (in any order),
    or, without them, the ordered lines, and when a line has no ``current_quantity``
    (older API versions).  When nothing is left (every line removed, or refunded with
    restock type ``cancel``, and Shopify sets no ``cancelled_at`` for that) the answer is
    ``updated_at``: the moment the order was called off, mapped as its cancellation.
    """
    updated = opt_when(order, "updated_at")
    if updated is None:
        return None
    refunded = _kept_refunds(order)
    now: list[OrderLine] = []
    for placed, (item, path) in zip(lines, ordered, strict=True):
        if item.get("current_quantity") is None:
            out.ignored.append(
                f"order {order_id(shop_id)} {path}: no current_quantity (edits are read from"
                " REST 2024-01 and later)"
            )
            return None
        line_id = opt_ident(item, "id", path)
        current = integer(item, "current_quantity", path)
        quantity = min(placed.quantity, max(0, current) + refunded.get(line_id or "", 0))
        if quantity <= 0:
            continue
        discount = placed.discount
        if quantity != placed.quantity:
            discount = (discount * quantity / placed.quantity).quantize(
                Decimal("0.01"), rounding=ROUND_HALF_UP
            )
        now.append(placed.model_copy(update={"quantity": quantity, "discount": discount}))
    if not now:
        return updated
    if held is None:
        if now == lines:
            return None
    elif sorted(map(held_line, now)) == sorted(held):
        return None  # what the store holds already: a tag, a payment, a redelivery
    return OrderEdited(
        id=f"shopify:order:{shop_id}:edited:{int(updated.timestamp())}",
        type="order.edited",
        ts=updated,
        source=SOURCE,
        body=OrderEditedBody(order_id=order_id(shop_id), lines=now),
    )


def _step(
    event_id: str,
    oid: str,
    status: FulfillmentStatus,
    ts: datetime,
    *,
    location: str | None = None,
    carrier: str | None = None,
    tracking: str | None = None,
    estimate: datetime | None = None,
    detail: str = "",
) -> FulfillmentUpdated:
    return FulfillmentUpdated(
        id=event_id,
        type="fulfillment.updated",
        ts=ts,
        source=SOURCE,
        body=FulfillmentBody(
            order_id=oid,
            status=status,
            location_id=location,
            carrier=carrier,
            tracking=tracking,
            estimated_delivery=estimate,
            detail=detail,
        ),
    )


def _fulfillment(
    f: JsonObject,
    path: str,
    mapping: ShopifyMapping,
    out: Mapped,
    *,
    shop_order: str | None = None,
) -> None:
    if not isinstance(f, dict):
        raise PayloadError(path or "(body)", "expected an object")
    fid = ident(f, "id", path)
    oid = order_id(shop_order or ident(f, "order_id", path))
    status = opt_text(f, "status", path) or ""
    created = when(f, "created_at", path)
    updated = opt_when(f, "updated_at", path) or created
    location = _location(opt_ident(f, "location_id", path), mapping)
    carrier = opt_text(f, "tracking_company", path)
    tracking = opt_text(f, "tracking_number", path)
    if tracking is None:
        numbers = arr(f, "tracking_numbers", path, required=False)
        tracking = next((n for n in numbers if isinstance(n, str) and n), None)
    step = FULFILLMENT_STATUS.get(status)
    if step is None:
        out.ignored.append(f"fulfillment {fid}: status {status!r} not mapped")
    else:
        out.items.append(
            _step(
                f"shopify:fulfillment:{fid}:{step}",
                oid,
                step,
                created if step in ("released", "shipped") else updated,
                location=location,
                carrier=carrier,
                tracking=tracking,
                detail=f"Shopify fulfillment {status}" if step == "exception" else "",
            )
        )
    shipment = opt_text(f, "shipment_status", path)
    if shipment:
        ship_step = SHIPMENT_STATUS.get(shipment)
        if ship_step is None:
            out.ignored.append(f"fulfillment {fid}: shipment_status {shipment!r} not mapped")
        elif ship_step != step:
            out.items.append(
                _step(
                    f"shopify:fulfillment:{fid}:{ship_step}",
                    oid,
                    ship_step,
                    updated,
                    location=location,
                    carrier=carrier,
                    tracking=tracking,
                    detail=f"Shopify shipment {shipment}" if ship_step == "exception" else "",
                )
            )


def _fulfillment_event(payload: JsonObject) -> Mapped:
    out = Mapped()
    eid = ident(payload, "id")
    oid = order_id(ident(payload, "order_id"))
    status = opt_text(payload, "status") or ""
    happened = opt_when(payload, "happened_at") or when(payload, "created_at")
    step = SHIPMENT_STATUS.get(status)
    if step is None:
        out.ignored.append(f"fulfillment event {eid}: status {status!r} not mapped")
        return out
    message = opt_text(payload, "message")
    detail = ""
    if step == "exception":
        detail = scrub_text(f"Shopify {status}" + (f": {message}" if message else ""), 200)
    out.items.append(
        _step(
            f"shopify:fulfillment_event:{eid}",
            oid,
            step,
            happened,
            estimate=opt_when(payload, "estimated_delivery_at"),
            detail=detail,
        )
    )
    return out


NOT_RESTOCKED = "-"
"""The location of a ``no_restock`` refund line that names none (the store's "no location")."""


def _refund(refund: JsonObject, mapping: ShopifyMapping) -> Mapped:
    out = Mapped()
    rid = ident(refund, "id")
    oid = order_id(ident(refund, "order_id"))
    created = when(refund, "created_at")
    note = opt_text(refund, "note")
    reason = scrub_text(note, 80) if note else "refund"
    for i, rli in enumerate(arr(refund, "refund_line_items")):
        path = join("refund_line_items", i)
        if not isinstance(rli, dict):
            raise PayloadError(path, "expected an object")
        line_id = ident(rli, "id", path)
        if rli.get("restock_type") == "cancel":
            out.ignored.append(f"refund {rid} {path}: restock_type cancel (a cancellation)")
            continue
        quantity = integer(rli, "quantity", path)
        if quantity <= 0:
            out.ignored.append(f"refund {rid} {path}: quantity {quantity}")
            continue
        line = opt_obj(rli, "line_item", path)
        sku = _line_sku(line, join(path, "line_item"), mapping) if line else None
        loc_ext = opt_ident(rli, "location_id", path)
        location = _location(loc_ext, mapping) if loc_ext else mapping.default_return_location
        if location is None and not loc_ext and rli.get("restock_type") == "no_restock":
            location = NOT_RESTOCKED
        if loc_ext and location is None:
            out.note_unmapped("location_id", loc_ext)
        problems = []
        if sku is None:
            problems.append(f"{path}: no SKU for the refunded line")
        if location is None:
            problems.append(
                f"{path}: unmapped Shopify location_id {loc_ext}"
                if loc_ext
                else f"{path}: no location_id and shopify.default_return_location is not set"
            )
        if problems:
            out.items.append(_quarantine(rli, f"refund {rid}: " + "; ".join(problems)))
            continue
        assert sku is not None and location is not None
        subtotal = money(rli, "subtotal", path) if rli.get("subtotal") is not None else None
        if subtotal is not None and mapping.taxes_included and rli.get("total_tax") is not None:
            subtotal -= money(rli, "total_tax", path)
        out.items.append(
            ReturnReceived(
                id=f"shopify:refund:{rid}:{line_id}",
                type="return.received",
                ts=created,
                source=SOURCE,
                body=ReturnBody(
                    return_id=f"shopify-{rid}-{line_id}",
                    order_id=oid,
                    sku=sku,
                    location_id=location,
                    channel=mapping.channel,
                    quantity=quantity,
                    reason=reason,
                    refund=max(subtotal, Decimal("0.00")) if subtotal is not None else Decimal(0),
                ),
            )
        )
    return out


def _inventory(level: JsonObject, delivery_id: str, mapping: ShopifyMapping) -> Mapped:
    out = Mapped()
    item = ident(level, "inventory_item_id")
    loc_ext = ident(level, "location_id")
    updated = when(level, "updated_at")
    if level.get("available") is None:
        out.ignored.append(f"inventory_item_id {item} at {loc_ext}: not tracked (available null)")
        return out
    available = integer(level, "available")
    sku = mapping.inventory_items.get(item)
    location = mapping.locations.get(loc_ext)
    problems = []
    if sku is None:
        problems.append(f"unmapped Shopify inventory_item_id {item}")
        out.note_unmapped("inventory_item_id", item)
    if location is None:
        problems.append(f"unmapped Shopify location_id {loc_ext}")
        out.note_unmapped("location_id", loc_ext)
    if problems:
        out.items.append(_quarantine(level, "; ".join(problems)))
        return out
    assert sku is not None and location is not None
    event: Event
    if mapping.inventory_as == "listing":
        event = ListingUpdated(
            id=f"shopify:{delivery_id}",
            type="listing.updated",
            ts=updated,
            source=SOURCE,
            body=ListingBody(
                channel=mapping.channel, sku=sku, location_id=location, advertised=max(available, 0)
            ),
        )
    else:
        event = StockSnapshot(
            id=f"shopify:{delivery_id}",
            type="stock.snapshot",
            ts=updated,
            source=SOURCE,
            body=StockSnapshotBody(
                sku=sku, location_id=location, on_hand=available, source_system="shopify"
            ),
        )
    out.items.append(event)
    return out
