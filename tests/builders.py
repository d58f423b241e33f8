"""Small builders for canonical events in tests (hand-made, readable scenarios)."""

from __future__ import annotations

import itertools
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from store.model import Event, parse_event

T0 = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
"""10:00 in New York on the fixture day."""

_ids = itertools.count(1)


def at(hours: float = 0.0, minutes: float = 0.0) -> datetime:
    """T0 shifted by hours and minutes."""
    return T0 + timedelta(hours=hours, minutes=minutes)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ev(
    type_: str, ts: datetime, body: dict[str, Any], *, source: str = "test", id_: str | None = None
) -> Event:
    return parse_event(
        {
            "id": id_ or f"ev-{next(_ids)}",
            "type": type_,
            "ts": iso(ts),
            "source": source,
            "body": body,
        }
    )


def sku(
    code: str,
    *,
    category: str = "apparel",
    reorder: int = 0,
    lead: float = 3.0,
    ts: datetime = T0 - timedelta(days=60),
) -> Event:
    return ev(
        "sku.upserted",
        ts,
        {
            "sku": code,
            "category": category,
            "product_type": "tee",
            "unit_cost": "4.00",
            "price": "10.00",
            "reorder_point": reorder,
            "lead_time_days": lead,
        },
    )


def location(
    loc: str, *, kind: str = "store", buffer: int = 0, ts: datetime = T0 - timedelta(days=60)
) -> Event:
    return ev(
        "location.upserted",
        ts,
        {
            "location_id": loc,
            "kind": kind,
            "region": "NE",
            "lat": 40.7,
            "lon": -74.0,
            "timezone": "America/New_York",
            "safety_buffer": buffer,
        },
    )


def order(
    order_id: str,
    ts: datetime,
    lines: list[tuple[str, int]],
    *,
    channel: str = "webshop",
    method: str = "ship",
    loc: str | None = "WH1",
    promised: datetime | None = None,
    price: str = "10.00",
    discount: str = "0",
    id_: str | None = None,
    line_locations: list[str | None] | None = None,
) -> Event:
    """An order; ``line_locations`` gives each line a node of its own (a split)."""
    nodes = line_locations or [None] * len(lines)
    return ev(
        "order.placed",
        ts,
        {
            "order_id": order_id,
            "channel": channel,
            "method": method,
            "destination_region": "NE",
            "location_id": loc,
            "promised_by": iso(promised or ts + timedelta(hours=8)),
            "lines": [
                {"sku": s, "quantity": q, "unit_price": price, "discount": discount}
                | ({} if node is None else {"location_id": node})
                for (s, q), node in zip(lines, nodes, strict=True)
            ],
        },
        source=channel,
        id_=id_,
    )


def step(order_id: str, status: str, ts: datetime, **extra: Any) -> Event:
    body: dict[str, Any] = {"order_id": order_id, "status": status}
    for key, value in extra.items():
        body[key] = iso(value) if isinstance(value, datetime) else value
    return ev("fulfillment.updated", ts, body, source="wms")


def snapshot(code: str, loc: str, on_hand: int, ts: datetime, reserved: int = 0) -> Event:
    return ev(
        "stock.snapshot",
        ts,
        {"sku": code, "location_id": loc, "on_hand": on_hand, "reserved": reserved},
        source="inventory",
    )


def adjust(code: str, loc: str, delta: int, ts: datetime) -> Event:
    return ev(
        "stock.adjusted",
        ts,
        {"sku": code, "location_id": loc, "delta": delta, "reason": "sale"},
        source="inventory",
    )


def ret(
    code: str,
    qty: int,
    ts: datetime,
    *,
    reason: str = "defective",
    loc: str = "WH1",
    refund: str = "0",
) -> Event:
    return ev(
        "return.received",
        ts,
        {
            "return_id": f"r-{next(_ids)}",
            "sku": code,
            "location_id": loc,
            "channel": "webshop",
            "quantity": qty,
            "reason": reason,
            "refund": refund,
        },
        source="returns",
    )


def inbound(po: str, code: str, loc: str, qty: int, eta: datetime, ts: datetime) -> Event:
    return ev(
        "inbound.updated",
        ts,
        {"po_id": po, "sku": code, "location_id": loc, "quantity": qty, "eta": iso(eta)},
        source="purchasing",
    )


def listing(channel: str, code: str, loc: str, qty: int, ts: datetime) -> Event:
    return ev(
        "listing.updated",
        ts,
        {"channel": channel, "sku": code, "location_id": loc, "advertised": qty},
        source=channel,
    )


def rows(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """The rows ``sql`` reads from the store file ``db`` (a connection of its own)."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
