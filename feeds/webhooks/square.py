"""Square webhooks → canonical events.

Square notifications are thin: ``order.created`` / ``order.updated`` carry the order's id,
state, version and location, not its lines, and ``refund.*`` carry an amount, not the
returned items.  So (ids: ``S`` is the Square order id, the canonical order id is
``square-S``):

* ``inventory.count.updated`` → one ``stock.snapshot`` per ``IN_STOCK`` count (id
  ``square:<event_id>:<n>``, ``ts`` = ``calculated_at``), keyed by ``catalog_object_id``
  and ``location_id`` through ``square.catalog_objects`` and ``square.locations``; an
  unmapped id quarantines that count (``unmapped Square catalog_object_id ...``), the
  others are still stored.  Counts in other states (SOLD, WASTE, ...) are not stock on
  hand and are listed as ignored.
* ``order.created`` / ``order.updated``: state ``CANCELED`` → ``order.cancelled`` (id
  ``square:order:S:cancelled``).  When the payload carries the full order (a relay that
  enriches the notification with the Orders API's ``Order`` under ``data.object.order``),
  it also becomes ``order.placed`` (id ``square:order:S:placed``): lines by
  ``catalog_object_id``, prices from ``base_price_money`` (cents), method ``bopis`` for a
  PICKUP fulfillment and ``ship`` otherwise, ``promised_by`` the pickup time or
  ``created_at`` + ``square.sla_hours``.  A bare notification has no lines: here it is
  reported as ignored; ``serve`` keeps it and fetches the order (below).
* ``order.fulfillment.updated``: each ``fulfillment_update`` new state → a fulfillment
  step (id ``square:fulfillment:<uid>:<state>``, ``ts`` = ``updated_at``): RESERVED →
  ``released``; PREPARED → ``ready_for_pickup`` (``packed`` for a shipment); COMPLETED →
  ``picked_up`` (``shipped``); FAILED → ``exception``.  The update does not say which
  kind of fulfillment it is: the placed order's method does (``serve`` reads it from the
  store: ``bopis`` a pickup, ``ship`` a shipment), and ``square.fulfillment`` for an order
  the store does not hold yet.
* ``refund.created`` / ``refund.updated``: not mapped (no SKU or quantity in the payload);
  reported as ignored.

``serve`` fetches what the notification lacks (:mod:`feeds.webhooks.square_api`) and maps
the API's answers here:

* :func:`map_square_order`: an ``Order`` from ``GET /v2/orders/{id}`` → ``order.placed``
  (``square:order:S:placed``, the same id as a relay-enriched notification, so the
  placement is stored once whichever arrives and however often the order is re-fetched)
  and, for state ``CANCELED``, ``order.cancelled``.  A line's SKU comes from its
  ``catalog_object_id`` (the item variation) through ``square.catalog_objects``; its unit
  price is ``gross_sales_money`` / quantity (the variation's price plus its modifiers, before
  discounts; ``base_price_money`` when that does not divide), its discount
  ``total_discount_money`` (order-level discounts apportioned by Square), all in cents →
  two-place decimals; a line with tax (``total_tax_money``) is priced from its
  ``total_money`` less that tax instead (see :func:`_price_and_discount`: outside the US,
  Canada and Japan an inclusive tax is inside ``gross_sales_money``), so net sales never
  count tax.  Ad-hoc lines (no ``catalog_object_id``, a custom amount) and gift
  cards are not stock: skipped and listed as ignored; an order with no other line places
  nothing.  ``location_id`` → node through ``square.locations`` (unmapped: no node, the
  router decides).  ``DRAFT`` orders are not placed yet (their ``order.updated`` is).
  Tenders are checked and listed (type and amount) in the ignored notes: the canonical
  order has no payment field.
* :func:`edit_of`: the ``order.edited`` of a fetched order whose lines are not the ones
  the store holds for it (``serve`` compares them, :mod:`feeds.webhooks.square_api`): id
  ``square:order:S:edited:v<version>`` (a re-fetch of the same version is a duplicate),
  ``ts`` = ``updated_at``, the lines mapped as for the placement.  None for a ``CANCELED``
  order.  A relay-enriched notification (the order inside it) maps its placement only:
  without the store's lines there is nothing to compare its lines with.
* :func:`map_square_refund`: a ``PaymentRefund`` from ``GET /v2/refunds/{id}`` and the
  order it names → one ``return.received`` per itemised return line of that order
  (``square:refund:R:<uid>``; SKU and location mapped as above, ``refund`` = the line's
  ``total_money``); a refund of an amount only (no return lines), or one ``REJECTED`` or
  ``FAILED``, returns no items and is listed as ignored.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from feeds.webhooks import (
    JsonObject,
    Mapped,
    PayloadError,
    arr,
    ident,
    integer,
    join,
    obj,
    opt_ident,
    opt_obj,
    opt_text,
    opt_when,
    priced_to_net,
    text,
    when,
)
from feeds.webhooks.mapping import SquareMapping
from feeds.webhooks.redact import redact_json
from store.model import (
    FulfillmentBody,
    FulfillmentStatus,
    FulfillmentUpdated,
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

SOURCE = "square"

TYPES = (
    "inventory.count.updated",
    "order.created",
    "order.updated",
    "order.fulfillment.updated",
    "refund.created",
    "refund.updated",
)


def fulfilled_order(payload: object) -> str | None:
    """The canonical order id an ``order.fulfillment.updated`` names, else None.

    ``serve`` reads the order's method by it before mapping (see :func:`map_square`); a
    payload that cannot be read is None here and refused by :func:`map_square`.
    """
    if not isinstance(payload, dict) or payload.get("type") != "order.fulfillment.updated":
        return None
    data = payload.get("data")
    body = data.get("object") if isinstance(data, dict) else None
    update = body.get("order_fulfillment_updated") if isinstance(body, dict) else None
    square_id = update.get("order_id") if isinstance(update, dict) else None
    if not isinstance(square_id, str) or not square_id or len(square_id) > 255:
        return None
    return f"square-{square_id}"


def map_square(
    payload: JsonObject, mapping: SquareMapping, *, method: Method | None = None
) -> Mapped:
    """Turn one verified Square notification into canonical events.

    ``method`` is how the order an ``order.fulfillment.updated`` names was placed, when the
    store holds it (:func:`fulfilled_order`): a ``ship`` order's states are a shipment's,
    a ``bopis`` order's a pickup's, whatever ``square.fulfillment`` says (that key is for
    an order the store does not hold yet).

    Raises :class:`~feeds.webhooks.PayloadError` naming the field when it cannot be read.
    """
    if not isinstance(payload, dict):
        raise PayloadError("(body)", "expected a JSON object")
    kind = text(payload, "type")
    event_id = ident(payload, "event_id")
    data = obj(payload, "data")
    body = obj(data, "object", "data")
    if kind == "inventory.count.updated":
        return _counts(event_id, body, mapping)
    if kind in ("order.created", "order.updated"):
        return _order(kind, body, mapping)
    if kind == "order.fulfillment.updated":
        return _fulfillment(body, mapping, method)
    if kind in ("refund.created", "refund.updated"):
        refund = opt_obj(body, "refund", "data.object") or {}
        return Mapped(
            ignored=[f"{kind} {refund.get('id', '')}: Square refunds carry no SKU or quantity"]
        )
    return Mapped(
        items=[
            Quarantined(
                source=SOURCE,
                raw=redact_json(payload),
                error=f"unsupported Square event type {kind!r} (mapped: {', '.join(TYPES)})",
            )
        ]
    )


def _counts(event_id: str, body: JsonObject, mapping: SquareMapping) -> Mapped:
    out = Mapped()
    for i, count in enumerate(arr(body, "inventory_counts", "data.object")):
        path = join("data.object.inventory_counts", i)
        if not isinstance(count, dict):
            raise PayloadError(path, "expected an object")
        try:
            catalog = ident(count, "catalog_object_id", path)
            loc_ext = ident(count, "location_id", path)
            state = opt_text(count, "state", path) or ""
            quantity = integer(count, "quantity", path)
            calculated = when(count, "calculated_at", path)
        except PayloadError as exc:  # this count alone: the others are still stored
            out.items.append(
                Quarantined(source=SOURCE, raw=redact_json(count), error=f"event {event_id} {exc}")
            )
            continue
        if state != "IN_STOCK":
            out.ignored.append(f"{path}: state {state!r} is not stock on hand")
            continue
        sku = mapping.catalog_objects.get(catalog)
        location = mapping.locations.get(loc_ext)
        if _held_unmapped(out, count, f"event {event_id} {path}", catalog, sku, loc_ext, location):
            continue
        assert sku is not None and location is not None
        out.items.append(
            StockSnapshot(
                id=f"square:{event_id}:{i}",
                type="stock.snapshot",
                ts=calculated,
                source=SOURCE,
                body=StockSnapshotBody(
                    sku=sku, location_id=location, on_hand=quantity, source_system="square"
                ),
            )
        )
    return out


def _held_unmapped(
    out: Mapped,
    item: JsonObject,
    where: str,
    catalog: str,
    sku: str | None,
    loc_ext: str | None,
    location: str | None,
) -> bool:
    """Quarantine ``item`` (and note its ids) when its catalog object or location is unmapped.

    Returns True when it was quarantined, so the caller skips it.
    """
    problems = []
    if sku is None:
        problems.append(f"unmapped Square catalog_object_id {catalog}")
        out.note_unmapped("catalog_object_id", catalog)
    if location is None:
        problems.append(f"unmapped Square location_id {loc_ext}")
        out.note_unmapped("location_id", loc_ext)
    if not problems:
        return False
    out.items.append(
        Quarantined(source=SOURCE, raw=redact_json(item), error=f"{where}: " + "; ".join(problems))
    )
    return True


def _cancelled(order: JsonObject, square_id: str, path: str) -> OrderCancelled:
    """The cancellation of a ``CANCELED`` Square order, at its last update."""
    ts = opt_when(order, "updated_at", path) or when(order, "created_at", path)
    return OrderCancelled(
        id=f"square:order:{square_id}:cancelled",
        type="order.cancelled",
        ts=ts,
        source=SOURCE,
        body=OrderCancelledBody(order_id=f"square-{square_id}", reason="Square order canceled"),
    )


_ZERO_DECIMAL = ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX"]
_ZERO_DECIMAL += ["UYI", "VND", "VUV", "XAF", "XOF", "XPF"]
MINOR_UNITS = dict.fromkeys(_ZERO_DECIMAL, 0) | dict.fromkeys(
    ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3
)
"""ISO 4217 currencies whose minor unit is not the cent (Square's ``Money.amount`` is in
the smallest unit: 100 JPY is ¥100, 1000 KWD is 1.000 KD); every other currency has 2."""

_CENT = Decimal("0.01")


def _minor(amount: int, currency: str | None) -> Decimal:
    """``amount`` of ``currency``'s smallest unit as a two-place decimal (half-even)."""
    places = MINOR_UNITS.get((currency or "").upper(), 2)
    return (Decimal(amount).scaleb(-places)).quantize(_CENT)


def _cents(money_obj: JsonObject | None, path: str) -> Decimal:
    if money_obj is None:
        return Decimal("0.00")
    return _minor(integer(money_obj, "amount", path), opt_text(money_obj, "currency", path))


def _order(kind: str, body: JsonObject, mapping: SquareMapping) -> Mapped:
    out = Mapped()
    full = opt_obj(body, "order", "data.object")
    summary_key = "order_created" if kind == "order.created" else "order_updated"
    # The full order (a relay's, or the one serve fetched) is the authority when present.
    summary = full or opt_obj(body, summary_key, "data.object")
    if summary is None:
        raise PayloadError(f"data.object.{summary_key}", "required field is missing")
    where = f"data.object.{summary_key}" if full is None else "data.object.order"
    square_id = ident(summary, "order_id" if full is None else "id", where)
    state = opt_text(summary, "state", where) or ""
    if full is not None:
        skipped: list[str] = []
        placed = _placed(square_id, full, mapping, skipped=skipped)
        if placed is not None:
            out.items.append(placed)
            if isinstance(placed, OrderPlaced):
                handover = _handover(placed, full, where)
                if handover is not None:
                    out.items.append(handover)
        out.ignored.extend(skipped)
        _note_unmapped(full, mapping, out)
    else:
        out.ignored.append(
            f"{kind} {square_id}: notification without line items"
            " (serve fetches the order from Square's Orders API)"
        )
    if state == "CANCELED":
        out.items.append(_cancelled(summary, square_id, where))
    return out


def _note_unmapped(order: JsonObject, mapping: SquareMapping, out: Mapped) -> None:
    """Record the order's location and catalog ids the mapping file does not know."""
    loc_ext = order.get("location_id")
    if isinstance(loc_ext, str) and loc_ext not in mapping.locations:
        out.note_unmapped("location_id", loc_ext)
    for line in order.get("line_items") or ():
        catalog = line.get("catalog_object_id") if isinstance(line, dict) else None
        if isinstance(catalog, str) and catalog not in mapping.catalog_objects:
            out.note_unmapped("catalog_object_id", catalog)


def _placed(
    square_id: str,
    order: JsonObject,
    mapping: SquareMapping,
    path: str = "data.object.order",
    skipped: list[str] | None = None,
) -> OrderPlaced | Quarantined | None:
    """The order's placement; None when it has no stock line (ad-hoc lines only)."""
    created = when(order, "created_at", path)
    loc_ext = opt_ident(order, "location_id", path)
    location = mapping.locations.get(loc_ext) if loc_ext else None
    lines: list[OrderLine] = []
    problems: list[str] = []
    for i, line in enumerate(arr(order, "line_items", path, required=False)):
        lpath = join(join(path, "line_items"), i)
        if not isinstance(line, dict):
            raise PayloadError(lpath, "expected an object")
        catalog = opt_ident(line, "catalog_object_id", lpath)
        if catalog is None or line.get("item_type") == "GIFT_CARD":
            if skipped is not None:
                what = "gift card" if catalog else "ad-hoc line"
                name = opt_text(line, "name", lpath) or opt_text(line, "uid", lpath) or "?"
                skipped.append(f"{lpath}: {what} {name!r} is not stock (skipped)")
            continue
        sku = mapping.catalog_objects.get(catalog)
        if sku is None:
            problems.append(f"{lpath}: unmapped Square catalog_object_id {catalog}")
            continue
        measured = _measured(line, lpath)
        if measured is not None:
            if skipped is not None:
                skipped.append(measured)
            continue
        quantity = integer(line, "quantity", lpath)
        unit_price, discount = _price_and_discount(line, quantity, lpath)
        lines.append(
            OrderLine(sku=sku, quantity=quantity, unit_price=unit_price, discount=discount)
        )
    if problems:
        return Quarantined(
            source=SOURCE,
            raw=redact_json(order),
            error=f"order square-{square_id} not placed: " + "; ".join(problems),
        )
    if not lines:
        return None
    method: Method = "ship"
    promised = created + timedelta(hours=mapping.sla_hours)
    region = mapping.default_region
    handed = _handed_over_at(order, path)
    if handed is not None:  # a till sale: taken at the counter (the project's POS shape)
        method, promised = "bopis", handed
    for i, f in enumerate(arr(order, "fulfillments", path, required=False)):
        fpath = join(join(path, "fulfillments"), i)
        if not isinstance(f, dict):
            raise PayloadError(fpath, "expected an object")
        if f.get("type") == "PICKUP":
            method = "bopis"
            pickup = opt_obj(f, "pickup_details", fpath) or {}
            promised = opt_when(pickup, "pickup_at", f"{fpath}.pickup_details") or promised
        shipment = opt_obj(f, "shipment_details", fpath) or {}
        recipient = opt_obj(shipment, "recipient", f"{fpath}.shipment_details") or {}
        address = opt_obj(recipient, "address", f"{fpath}.shipment_details.recipient") or {}
        country = opt_text(address, "country")
        state = opt_text(address, "administrative_district_level_1")
        if country:
            region = f"{country}-{state}" if state else country
        break
    return OrderPlaced(
        id=f"square:order:{square_id}:placed",
        type="order.placed",
        ts=created,
        source=SOURCE,
        body=OrderPlacedBody(
            order_id=f"square-{square_id}",
            channel=mapping.channel,
            method=method,
            destination_region=region,
            location_id=location,
            promised_by=promised,
            lines=lines,
        ),
    )


def _measured(line: JsonObject, path: str) -> str | None:
    """Why a line sold by measure (``quantity`` ``"1.5"`` lb) is skipped; None otherwise.

    The canonical model counts whole units, so such a line cannot be stored; the rest of
    the order still is (refusing the order would lose every other line with it).  A
    quantity that is no number at all is still refused, by :func:`integer`.
    """
    raw = line.get("quantity")
    if not isinstance(raw, str):
        return None
    try:
        number = Decimal(raw.strip())
    except ArithmeticError:
        return None
    if not number.is_finite() or number <= 0 or number == number.to_integral_value():
        return None
    unit = opt_obj(line, "quantity_unit", path) or {}
    measure = unit.get("measurement_unit")
    what = f" ({measure})" if isinstance(measure, (str, dict)) and measure else ""
    name = opt_text(line, "name", path) or opt_text(line, "uid", path) or "?"
    return (
        f"{join(path, 'quantity')}: {name!r} sold by measure, {raw}{what}: the store counts"
        " whole units, line not stored (skipped)"
    )


def _handed_over_at(order: JsonObject, path: str) -> datetime | None:
    """When a ``COMPLETED`` order with no fulfillment was handed over (a till sale), or None.

    Square closes a counter sale at once and gives it no fulfillment: it is a sale taken
    away at the store, not an open order to ship (``closed_at``, else ``updated_at``).
    """
    if (opt_text(order, "state", path) or "") != "COMPLETED":
        return None
    if arr(order, "fulfillments", path, required=False):
        return None
    return (
        opt_when(order, "closed_at", path)
        or opt_when(order, "updated_at", path)
        or when(order, "created_at", path)
    )


def _handover(placed: OrderPlaced, order: JsonObject, path: str) -> FulfillmentUpdated | None:
    """The ``picked_up`` step of a till sale (see :func:`_handed_over_at`), or None."""
    handed = _handed_over_at(order, path)
    if handed is None:
        return None
    square_id = placed.body.order_id.removeprefix("square-")
    return FulfillmentUpdated(
        id=f"square:order:{square_id}:handed_over",
        type="fulfillment.updated",
        ts=max(handed, placed.ts),
        source=SOURCE,
        body=FulfillmentBody(
            order_id=placed.body.order_id,
            status="picked_up",
            location_id=placed.body.location_id,
            detail="Square sale completed at the counter",
        ),
    )


def _price_and_discount(line: JsonObject, quantity: int, path: str) -> tuple[Decimal, Decimal]:
    """A line's unit price and discount, both without tax.

    With tax on the line (``total_tax_money``) its net is ``total_money`` less the tax
    and any ``total_service_charge_money``: that holds for additive and inclusive taxes
    alike, whereas ``gross_sales_money`` holds an inclusive tax outside the US, Canada and
    Japan.  The unit price is (net + discount) / quantity rounded up to the cent, and the
    discount what makes the line's net exact (``total_discount_money`` when it divides).
    Without tax: :func:`_unit_price` and ``total_discount_money``.
    """
    discount = _cents(opt_obj(line, "total_discount_money", path), path)
    tax = _cents(opt_obj(line, "total_tax_money", path), path)
    total = opt_obj(line, "total_money", path)
    if tax > 0 and total is not None and quantity > 0:
        charge = _cents(opt_obj(line, "total_service_charge_money", path), path)
        net = _cents(total, path) - tax - charge
        if net >= 0:
            return priced_to_net(net + discount, quantity, net)
    return _unit_price(line, quantity, path), discount


def _unit_price(line: JsonObject, quantity: int, path: str) -> Decimal:
    """``gross_sales_money`` / quantity when it divides (modifiers included), else base price."""
    gross = opt_obj(line, "gross_sales_money", path)
    if gross is not None and quantity > 0:
        gpath = join(path, "gross_sales_money")
        cents = integer(gross, "amount", gpath)
        if cents % quantity == 0:
            return _minor(cents // quantity, opt_text(gross, "currency", gpath))
    return _cents(opt_obj(line, "base_price_money", path), path)


def _refund_of(line: JsonObject, path: str) -> Decimal:
    """A return line's refund without tax: ``total_money`` less ``total_tax_money``."""
    total = _cents(opt_obj(line, "total_money", path), path)
    return max(total - _cents(opt_obj(line, "total_tax_money", path), path), Decimal("0.00"))


def _tenders(order: JsonObject, path: str) -> str | None:
    """``tenders CARD 10.00 + CASH 5.00 USD`` (checked, not stored), or None without tenders."""
    parts: list[str] = []
    currency = ""
    for i, tender in enumerate(arr(order, "tenders", path, required=False)):
        tpath = join(join(path, "tenders"), i)
        if not isinstance(tender, dict):
            raise PayloadError(tpath, "expected an object")
        amount = opt_obj(tender, "amount_money", tpath)
        currency = (opt_text(amount, "currency") if amount else None) or currency
        parts.append(f"{opt_text(tender, 'type', tpath) or '?'} {_cents(amount, tpath)}")
    if not parts:
        return None
    return "tenders " + " + ".join(parts) + (f" {currency}" if currency else "")


def map_square_order(order: JsonObject, mapping: SquareMapping) -> Mapped:
    """Canonical events of an ``Order`` fetched from the Orders API (``RetrieveOrder``).

    Raises :class:`~feeds.webhooks.PayloadError` naming the field when it cannot be read.
    """
    path = "order"
    if not isinstance(order, dict):
        raise PayloadError(path, "expected an object")
    square_id = ident(order, "id", path)
    state = opt_text(order, "state", path) or ""
    out = Mapped()
    if state == "DRAFT":
        out.ignored.append(f"order {square_id}: DRAFT (placed when it is opened)")
        return out
    skipped: list[str] = []
    placed = _placed(square_id, order, mapping, path, skipped)
    _note_unmapped(order, mapping, out)
    out.ignored.extend(skipped)
    if placed is None:
        out.ignored.append(f"order {square_id}: no line with a catalog_object_id, nothing placed")
    else:
        out.items.append(placed)
        if isinstance(placed, OrderPlaced):
            handover = _handover(placed, order, path)
            if handover is not None:
                out.items.append(handover)
    tenders = _tenders(order, path)
    if tenders is not None:
        out.ignored.append(f"order {square_id}: {tenders} (payments are not stored)")
    if state == "CANCELED":
        out.items.append(_cancelled(order, square_id, path))
    return out


def edit_of(order: JsonObject, placed: OrderPlaced) -> OrderEdited | None:
    """The ``order.edited`` of a fetched ``order`` whose lines are ``placed``'s.

    Id ``square:order:S:edited:v<version>`` (``updated_at`` in epoch seconds without a
    version), ``ts`` = ``updated_at``: a re-fetch of the same version is a duplicate.  None
    for a cancelled order (its cancellation says it).  The caller decides that the lines
    differ from the stored ones (:class:`feeds.webhooks.square_api.SquareOrders`).
    """
    path = "order"
    if (opt_text(order, "state", path) or "") == "CANCELED":
        return None
    square_id = ident(order, "id", path)
    updated = opt_when(order, "updated_at", path) or when(order, "created_at", path)
    version = order.get("version")
    tag = f"v{version}" if isinstance(version, int) else str(int(updated.timestamp()))
    return OrderEdited(
        id=f"square:order:{square_id}:edited:{tag}",
        type="order.edited",
        ts=updated,
        source=SOURCE,
        body=OrderEditedBody(order_id=placed.body.order_id, lines=placed.body.lines),
    )


def map_square_refund(
    refund: JsonObject, order: JsonObject | None, mapping: SquareMapping
) -> Mapped:
    """Canonical returns of a ``PaymentRefund`` and the order it names (its return lines)."""
    path = "refund"
    if not isinstance(refund, dict):
        raise PayloadError(path, "expected an object")
    refund_id = ident(refund, "id", path)
    status = opt_text(refund, "status", path) or ""
    amount = _cents(opt_obj(refund, "amount_money", path), path)
    out = Mapped()
    if status in ("REJECTED", "FAILED"):
        out.ignored.append(f"refund {refund_id}: {status}, nothing returned")
        return out
    ts = when(refund, "created_at", path)
    loc_ext = opt_ident(refund, "location_id", path) or (
        opt_ident(order, "location_id", "order") if order else None
    )
    location = mapping.locations.get(loc_ext) if loc_ext else None
    reason = (opt_text(refund, "reason", path) or "refund")[:80]
    lines = 0
    for r, ret in enumerate(arr(order or {}, "returns", "order", required=False)):
        rpath = join("order.returns", r)
        if not isinstance(ret, dict):
            raise PayloadError(rpath, "expected an object")
        source_order = opt_ident(ret, "source_order_id", rpath)
        for i, line in enumerate(arr(ret, "return_line_items", rpath, required=False)):
            lpath = join(join(rpath, "return_line_items"), i)
            if not isinstance(line, dict):
                raise PayloadError(lpath, "expected an object")
            lines += 1
            catalog = opt_ident(line, "catalog_object_id", lpath)
            if catalog is None:
                out.ignored.append(f"{lpath}: ad-hoc line is not stock (skipped)")
                continue
            sku = mapping.catalog_objects.get(catalog)
            where = f"refund {refund_id} {lpath}"
            if _held_unmapped(out, line, where, catalog, sku, loc_ext, location):
                continue
            assert sku is not None and location is not None
            uid = opt_ident(line, "uid", lpath) or str(lines)
            out.items.append(
                ReturnReceived(
                    id=f"square:refund:{refund_id}:{uid}",
                    type="return.received",
                    ts=ts,
                    source=SOURCE,
                    body=ReturnBody(
                        return_id=f"square-refund-{refund_id}-{uid}",
                        order_id=f"square-{source_order}" if source_order else None,
                        sku=sku,
                        location_id=location,
                        channel=mapping.channel,
                        quantity=integer(line, "quantity", lpath),
                        reason=reason,
                        refund=_refund_of(line, lpath),
                    ),
                )
            )
    if lines == 0:
        out.ignored.append(
            f"refund {refund_id} of {amount}: no itemised return lines, no stock came back"
        )
    return out


FULFILLMENT_STATES: dict[str, dict[str, FulfillmentStatus]] = {
    "pickup": {
        "RESERVED": "released",
        "PREPARED": "ready_for_pickup",
        "COMPLETED": "picked_up",
        "FAILED": "exception",
    },
    "shipment": {
        "RESERVED": "released",
        "PREPARED": "packed",
        "COMPLETED": "shipped",
        "FAILED": "exception",
    },
}


def fulfillment_states(
    mapping: SquareMapping, method: Method | None
) -> dict[str, FulfillmentStatus]:
    """The step each Square fulfillment state is, for an order placed with ``method``.

    A PICKUP fulfillment made the order ``bopis``, a SHIPMENT or DELIVERY one ``ship``
    (:func:`map_square_order`), so the order's method says which fulfillment the update is
    of; an order not held yet (or a ``ship_from_store`` one) reads ``square.fulfillment``.
    """
    if method == "bopis":
        return FULFILLMENT_STATES["pickup"]
    if method == "ship":
        return FULFILLMENT_STATES["shipment"]
    return FULFILLMENT_STATES[mapping.fulfillment]


def _fulfillment(body: JsonObject, mapping: SquareMapping, method: Method | None) -> Mapped:
    out = Mapped()
    where = "data.object.order_fulfillment_updated"
    update = obj(body, "order_fulfillment_updated", "data.object")
    square_id = ident(update, "order_id", where)
    ts = opt_when(update, "updated_at", where) or when(update, "created_at", where)
    loc_ext = opt_ident(update, "location_id", where)
    location = mapping.locations.get(loc_ext) if loc_ext else None
    table = fulfillment_states(mapping, method)
    for i, change in enumerate(arr(update, "fulfillment_update", where)):
        path = join(join(where, "fulfillment_update"), i)
        if not isinstance(change, dict):
            raise PayloadError(path, "expected an object")
        uid = ident(change, "fulfillment_uid", path)
        new_state = opt_text(change, "new_state", path) or ""
        step = table.get(new_state)
        if step is None:
            out.ignored.append(f"fulfillment {uid}: state {new_state!r} not mapped")
            continue
        out.items.append(
            FulfillmentUpdated(
                id=f"square:fulfillment:{uid}:{new_state}",
                type="fulfillment.updated",
                ts=ts,
                source=SOURCE,
                body=FulfillmentBody(
                    order_id=f"square-{square_id}",
                    status=step,
                    location_id=location,
                    detail="Square fulfillment failed" if step == "exception" else "",
                ),
            )
        )
    return out
