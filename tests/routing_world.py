"""A small hand-made retailer for routing tests: nodes, catalogue, stock, orders.

Times are on 2026-11-18 (a Wednesday; New York is UTC−5, Chicago UTC−6, Denver UTC−7).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rules.routing.orders import Inventory, RouteLine, RouteOrder, StockLevel
from rules.whatif import ReplayInputs
from store.model import Event, LocationBody, OpeningHours, OrderPlacedBody, SkuBody
from tests.builders import ev, iso
from tests.conftest import write


def ny(hour: int, minute: int = 0, day: int = 18) -> datetime:
    """A New York wall-clock time on 2026-11-<day>, as UTC (EST, UTC−5)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC) + timedelta(hours=5)


def node(
    location_id: str,
    kind: str,
    region: str,
    lat: float,
    lon: float,
    tz: str,
    opens: str = "00:00",
    closes: str = "23:59",
    cutoff: str | None = None,
    buffer: int = 0,
) -> LocationBody:
    return LocationBody(
        location_id=location_id,
        kind=kind,  # type: ignore[arg-type]
        region=region,
        lat=lat,
        lon=lon,
        timezone=tz,
        hours=OpeningHours(opens=opens, closes=closes, cutoff=cutoff),
        safety_buffer=buffer,
    )


NY_TZ, CHI_TZ, DEN_TZ = "America/New_York", "America/Chicago", "America/Denver"

NODES: list[LocationBody] = [
    node("WH-NJ", "warehouse", "northeast", 40.7357, -74.1724, NY_TZ, "06:00", "23:00", "15:00"),
    node("WH-TX", "warehouse", "south", 32.7767, -96.7970, CHI_TZ, "06:00", "22:00", "15:00"),
    node("ST-NYC", "store", "northeast", 40.7506, -73.9880, NY_TZ, "09:00", "21:00", "20:00"),
    node("ST-BKN", "store", "northeast", 40.6782, -73.9442, NY_TZ, "10:00", "20:00"),
    node("ST-DEN", "store", "mountain", 39.7475, -104.9954, DEN_TZ, "09:00", "21:00", "19:00"),
    node("DS-OH", "dropship", "midwest", 39.9612, -82.9988, NY_TZ, "08:00", "18:00", "12:00"),
]


def sku(
    code: str,
    *,
    category: str = "apparel",
    product_type: str = "tee",
    hazmat: bool = False,
    weight: float = 0.5,
    price: str = "20.00",
) -> SkuBody:
    return SkuBody(
        sku=code,
        category=category,
        product_type=product_type,
        unit_cost=Decimal("5.00"),
        price=Decimal(price),
        hazmat=hazmat,
        weight_kg=weight,
    )


SKUS: dict[str, SkuBody] = {
    s.sku: s
    for s in (
        sku("TEE", category="apparel", product_type="tee"),
        sku("MUG", category="home", product_type="mug", weight=0.8),
        sku("SPRAY", category="home", product_type="aerosol", hazmat=True),
        sku("SOFA", category="furniture", product_type="sofa", weight=60.0, price="900.00"),
    )
}


def inventory(levels: dict[tuple[str, str], int | tuple[int, int]], **load: int) -> Inventory:
    """Stock as ``{(sku, node): on_hand or (on_hand, reserved)}``; load per node as kwargs."""
    out: dict[tuple[str, str], StockLevel] = {}
    for key, value in levels.items():
        on_hand, reserved = value if isinstance(value, tuple) else (value, 0)
        out[key] = StockLevel(on_hand, reserved)
    return Inventory(skus=SKUS, levels=out, load={k.replace("_", "-"): v for k, v in load.items()})


def order(
    *lines: tuple[str, int],
    method: str = "ship",
    region: str = "northeast",
    channel: str = "webshop",
    location: str | None = None,
    promised: datetime | None = None,
    order_id: str = "o-1",
    **extra: Any,
) -> RouteOrder:
    return RouteOrder(
        order_id=order_id,
        channel=channel,
        method=method,  # type: ignore[arg-type]
        destination_region=region,
        location_id=location,
        promised_by=promised,
        lines=[RouteLine(sku=s, quantity=q, **extra) for s, q in lines],
    )


# -- the fixture day, read straight from its files (no store) -------------------------------

FIXTURE_DAY = Path(__file__).resolve().parent.parent / "fixtures" / "day"


def _lines(path: Path, needle: str) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if needle in line:
                yield json.loads(line)


@functools.cache
def fixture_day_inputs(folder: Path = FIXTURE_DAY) -> ReplayInputs:
    """The fixture trading day's web and marketplace orders, with the day-start stock count.

    Nodes and SKUs from the catalogue, stock from the trading day's count (before which
    nothing is routed here), orders of that local day from the web shop and marketplace
    (point-of-sale orders are walk-in sales, never routed), each routed at its placement.

    Read once per session and shared (the router and the what-if work on copies of the
    stock and never change the inputs): read them, never change them.
    """
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    day = str(manifest["day"])
    start = datetime.fromisoformat(str(manifest["day_start_utc"]).replace("Z", "+00:00"))
    end = datetime.fromisoformat(str(manifest["day_end_utc"]).replace("Z", "+00:00"))
    nodes: list[LocationBody] = []
    skus: dict[str, SkuBody] = {}
    for event in _lines(folder / "catalog.jsonl.gz", "upserted"):
        if event["type"] == "location.upserted":
            nodes.append(LocationBody.model_validate(event["body"]))
        elif event["type"] == "sku.upserted":
            body = SkuBody.model_validate(event["body"])
            skus[body.sku] = body
    levels: dict[tuple[str, str], StockLevel] = {}
    for event in _lines(folder / "inventory.jsonl.gz", '"stock.snapshot"'):
        if event["ts"].startswith(day):
            b = event["body"]
            levels[(b["sku"], b["location_id"])] = StockLevel(b["on_hand"], b["reserved"])
    orders: list[tuple[RouteOrder, datetime]] = []
    for feed in ("webshop", "marketplace"):
        for event in _lines(folder / f"{feed}.jsonl.gz", '"order.placed"'):
            ts = datetime.fromisoformat(event["ts"].replace("Z", "+00:00"))
            if start <= ts < end:
                placed = OrderPlacedBody.model_validate(event["body"])
                orders.append((RouteOrder.from_placed(placed), ts))
    orders.sort(key=lambda t: (t[1], t[0].order_id))
    return ReplayInputs(
        orders=tuple(orders),
        inventory=Inventory(skus=skus, levels=levels, load={}),
        nodes=tuple(nodes),
    )


# -- the same retailer in a real store ------------------------------------------------------------


def catalogue() -> list[Event]:
    t = ny(0, day=1)
    events: list[Event] = [
        ev("location.upserted", t, n.model_dump(mode="json"), source="catalog") for n in NODES
    ]
    events += [
        ev("sku.upserted", t, s.model_dump(mode="json"), source="catalog") for s in SKUS.values()
    ]
    return events


def stock(sku: str, loc: str, on_hand: int, reserved: int = 0) -> Event:
    body = {"sku": sku, "location_id": loc, "on_hand": on_hand, "reserved": reserved}
    return ev("stock.snapshot", ny(5), body, source="inventory")


def placed(
    order_id: str,
    at: datetime,
    lines: list[tuple[str, int]],
    *,
    method: str = "ship",
    region: str = "northeast",
    location: str | None = None,
) -> Event:
    body: dict[str, Any] = {
        "order_id": order_id,
        "channel": "webshop",
        "method": method,
        "destination_region": region,
        "location_id": location,
        "promised_by": iso(at + timedelta(hours=6)),
        "lines": [{"sku": s, "quantity": q, "unit_price": "20.00"} for s, q in lines],
    }
    return ev("order.placed", at, body, source="webshop")


async def seed(db_path: Path, orders: list[Event]) -> None:
    await write(
        db_path,
        [
            *catalogue(),
            stock("TEE", "WH-NJ", 5),
            stock("TEE", "WH-TX", 50),
            stock("TEE", "ST-NYC", 4, reserved=1),
            *orders,
        ],
    )


DAY = [
    placed("o1", ny(9), [("TEE", 3)]),  # WH-NJ (same market), 2 left there
    placed("o2", ny(10), [("TEE", 3)]),  # WH-NJ short: WH-TX
    placed("o3", ny(11), [("TEE", 2)], method="bopis"),  # no store chosen: nearest, 4 − 1 reserved
    placed("o4", ny(12), [("TEE", 2)]),  # WH-NJ's last 2
    placed("o5", ny(13), [("TEE", 1)], location="ST-BKN"),  # channel-assigned: not routed
    placed("o6", ny(14), [("MUG", 1)]),  # no stock anywhere
]
