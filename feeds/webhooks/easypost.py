"""EasyPost tracker webhooks → fulfillment steps.

A ``tracker.updated`` (or ``tracker.created``) event's ``result`` is a Tracker: carrier,
tracking code, status, the carrier's ``est_delivery_date`` and the scan history
(``tracking_details``).  EasyPost does not know our order ids, so the order is found by
its tracking number: the server looks the code up in the store (the ``shipped`` step of
the order's own channel recorded it; every parcel's number is kept, ``order_tracking``).
A tracker whose code matches no order yet is quarantined with that reason, never attached
to a guessed order.

Status → step (ids ``easypost:<tracker id>:<step>``, ``ts`` the first scan in that status,
else the tracker's ``updated_at``):

* ``pre_transit`` → ``packed`` (label created);
* ``in_transit`` / ``out_for_delivery`` / ``available_for_pickup`` (held at a carrier's
  counter or locker for the customer to collect: the carrier's normal last leg, not an
  exception; it stays in transit until collected) → ``shipped`` with ``est_delivery_date`` as the
  estimate; a changed estimate is a new fact (its id carries the estimate), so the store
  keeps the carrier's latest one;
* ``delivered`` → ``delivered`` (and ``shipped`` from the first in-transit scan), except
  after a ``return_to_sender`` scan: then the parcel reached the sender again, which stays
  the ``exception`` of the return (never a delivery to the customer);
* ``return_to_sender``, ``failure``, ``error`` → ``exception``;
* ``unknown`` and ``cancelled`` are not mapped (reported as ignored).

Shipping cost: the sum of the tracker's ``fees`` of type ``PostageFee`` (EasyPost's Fee
objects; a ``TrackerFee`` is EasyPost's own charge, not postage), when it has any, is the
shipment's ``shipping_cost`` on every step the event states (the store keeps the latest
report per tracking number).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from feeds.webhooks import (
    JsonObject,
    Mapped,
    PayloadError,
    arr,
    ident,
    join,
    money,
    obj,
    opt_text,
    opt_when,
    parse_time,
    text,
    when,
)
from feeds.webhooks.redact import redact_json
from store.model import Event, FulfillmentBody, FulfillmentStatus, FulfillmentUpdated, Quarantined

SOURCE = "easypost"

STATUS: dict[str, FulfillmentStatus] = {
    "pre_transit": "packed",
    "in_transit": "shipped",
    "out_for_delivery": "shipped",
    "delivered": "delivered",
    "available_for_pickup": "shipped",
    "return_to_sender": "exception",
    "failure": "exception",
    "error": "exception",
}


@dataclass(frozen=True)
class Tracker:
    """The parts of an EasyPost tracker event omniops uses."""

    event_id: str
    tracker_id: str
    tracking_code: str
    carrier: str | None
    status: str
    status_detail: str
    updated_at: datetime
    estimate: datetime | None
    first_scan: dict[str, datetime]
    """The earliest scan time of each status in the tracking history."""
    raw: JsonObject
    shipping_cost: Decimal | None = None
    """Postage paid for the shipment (``PostageFee`` fees), if the tracker says."""


def parse_tracker(payload: JsonObject) -> Tracker:
    """Read a tracker event; :class:`~feeds.webhooks.PayloadError` names a bad field."""
    if not isinstance(payload, dict):
        raise PayloadError("(body)", "expected a JSON object")
    description = text(payload, "description")
    if not description.startswith("tracker."):
        raise PayloadError("description", f"not a tracker event: {description!r}")
    result = obj(payload, "result")
    scans: dict[str, datetime] = {}
    for i, detail in enumerate(arr(result, "tracking_details", "result", required=False)):
        path = join("result.tracking_details", i)
        if not isinstance(detail, dict):
            raise PayloadError(path, "expected an object")
        status = opt_text(detail, "status", path)
        moment = detail.get("datetime")
        if status and moment:
            ts = parse_time(moment, join(path, "datetime"))
            scans[status] = min(ts, scans.get(status, ts))
    postage: Decimal | None = None
    for i, fee in enumerate(arr(result, "fees", "result", required=False)):
        path = join("result.fees", i)
        if not isinstance(fee, dict):
            raise PayloadError(path, "expected an object")
        if opt_text(fee, "type", path) == "PostageFee":
            postage = (postage or Decimal("0.00")) + money(fee, "amount", path)
    return Tracker(
        event_id=ident(payload, "id"),
        tracker_id=ident(result, "id", "result"),
        tracking_code=ident(result, "tracking_code", "result"),
        carrier=opt_text(result, "carrier", "result"),
        status=text(result, "status", "result"),
        status_detail=opt_text(result, "status_detail", "result") or "",
        updated_at=when(result, "updated_at", "result"),
        estimate=opt_when(result, "est_delivery_date", "result"),
        first_scan=scans,
        raw=payload,
        shipping_cost=postage,
    )


def _returned(tracker: Tracker) -> bool:
    """True when the history has a ``return_to_sender`` scan before (or without) delivery."""
    back = tracker.first_scan.get("return_to_sender")
    if back is None:
        return False
    delivered = tracker.first_scan.get("delivered")
    return delivered is None or back <= delivered


def map_tracker(tracker: Tracker, order_id: str | None) -> Mapped:
    """The steps a tracker states, for the order its tracking code belongs to."""
    out = Mapped()
    step = STATUS.get(tracker.status)
    if step is None:
        out.ignored.append(f"tracker {tracker.tracker_id}: status {tracker.status!r} not mapped")
        return out
    if order_id is None:
        out.items.append(
            Quarantined(
                source=SOURCE,
                raw=redact_json(tracker.raw),
                error=(
                    f"EasyPost tracker {tracker.tracker_id} ({tracker.carrier} "
                    f"{tracker.tracking_code}): no order with this tracking number in the store"
                ),
            )
        )
        return out

    def fact(status: FulfillmentStatus, ts: datetime, suffix: str, detail: str = "") -> Event:
        return FulfillmentUpdated(
            id=f"easypost:{tracker.tracker_id}:{suffix}",
            type="fulfillment.updated",
            ts=ts,
            source=SOURCE,
            body=FulfillmentBody(
                order_id=order_id,
                status=status,
                carrier=tracker.carrier,
                tracking=tracker.tracking_code,
                estimated_delivery=tracker.estimate if status == "shipped" else None,
                detail=detail,
                shipping_cost=tracker.shipping_cost,
            ),
        )

    scans = tracker.first_scan
    in_transit = next(
        (
            scans[s]
            for s in ("in_transit", "out_for_delivery", "available_for_pickup")
            if s in scans
        ),
        None,
    )
    if step == "shipped" or (step == "delivered" and in_transit is not None):
        estimate = tracker.estimate.isoformat() if tracker.estimate else "none"
        out.items.append(fact("shipped", in_transit or tracker.updated_at, f"shipped:{estimate}"))
    if step == "packed":
        out.items.append(
            fact("packed", tracker.first_scan.get("pre_transit", tracker.updated_at), "packed")
        )
    elif step == "delivered" and _returned(tracker):
        # Delivered after a return to sender: the parcel is back at the sender, which is
        # no delivery to the customer (the return_to_sender scan's exception says it).
        out.items.append(
            fact(
                "exception",
                tracker.first_scan["return_to_sender"],
                "exception:return_to_sender",
                detail="EasyPost return_to_sender (delivered back to the sender)",
            )
        )
    elif step == "delivered":
        out.items.append(
            fact("delivered", tracker.first_scan.get("delivered", tracker.updated_at), "delivered")
        )
    elif step == "exception":
        detail = f"{tracker.status} {tracker.status_detail}".strip()
        out.items.append(
            fact(
                "exception",
                tracker.first_scan.get(tracker.status, tracker.updated_at),
                f"exception:{tracker.status}",
                detail=f"EasyPost {detail}",
            )
        )
    return out
