"""Real order shapes land instead of being refused (issue 12), each with a hand-computed case."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.runtime.ingest import import_history
from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.amazon import map_amazon
from feeds.webhooks.easypost import map_tracker, parse_tracker
from feeds.webhooks.mapping import AmazonMapping, ShopifyMapping
from feeds.webhooks.shopify import map_shopify
from store.apply import epoch
from store.catalog import uncategorised_sku_ids, uncategorised_skus
from store.metrics import MetricParams, compute_snapshots, open_reader
from store.model import UNCATEGORISED, FulfillmentUpdated, OrderPlaced
from store.snapshots import Snapshots, to_jsonable
from tests.builders import T0, at, ev, iso, order, ret, step
from tests.conftest import write

P = MetricParams(timezone="America/New_York")
PAYLOADS = Path(__file__).resolve().parent.parent / "fixtures" / "payloads"


def snap(db: Path, now: datetime, params: MetricParams = P) -> Snapshots:
    conn = open_reader(db)
    try:
        return compute_snapshots(conn, now, params)
    finally:
        conn.close()


def empty_order(order_id: str, ts: datetime, *, channel: str = "marketplace") -> object:
    """A marketplace order that was never available: no lines at all."""
    return ev(
        "order.placed",
        ts,
        {
            "order_id": order_id,
            "channel": channel,
            "method": "ship",
            "destination_region": "SP",
            "location_id": None,
            "promised_by": iso(ts),
            "lines": [],
        },
        source=channel,
    )


# --- an order with no lines ----------------------------------------------------------------


async def test_an_order_with_no_lines_is_placed_and_cancelled_not_quarantined(
    db_path: Path,
) -> None:
    # Today (New York) at 09:30 one web order of 2 x 10.00; at 09:45 an empty marketplace
    # order.  By hand at 10:00: net sales 20.00, 1 order in the last hour, 1 open order at
    # WH1, nothing open or late for the empty one, 1 unavailable order today.
    outcomes = await write(
        db_path,
        [
            order("web-1", at(-0.5), [("A", 2)], promised=at(-0.1)),
            empty_order("mp-1", at(-0.25)),
        ],
    )
    assert outcomes == ["applied", "applied"]
    s = snap(db_path, T0)
    assert s.counts["quarantined"] == 0
    assert s.headline.net_sales == 20.0
    assert s.headline.orders_per_hour == 1.0
    assert s.headline.orders_unavailable == 1
    assert [c.channel for c in s.headline.channels] == ["webshop"]
    assert (s.fulfillment.total_open, s.fulfillment.total_late) == (1, 1)
    assert {r.key for r in s.fulfillment.rows if r.scope == "channel"} == {"webshop"}
    db = sqlite3.connect(db_path)
    placed, cancelled, done = db.execute(
        "SELECT placed_ts, cancelled_ts, done_ts FROM orders WHERE order_id = 'mp-1'"
    ).fetchone()
    assert placed == cancelled == done == epoch(at(-0.25))
    db.close()
    # A later cancellation of it, and a step reported for it, change no figure.
    await write(
        db_path,
        [
            ev("order.cancelled", at(-0.2), {"order_id": "mp-1", "reason": "unavailable"}),
            step("mp-1", "shipped", at(-0.1), carrier="UPS"),
        ],
    )
    again = snap(db_path, T0)
    assert again.headline.net_sales == 20.0
    assert again.headline.orders_unavailable == 1
    assert again.fulfillment.total_open == 1
    wh = next(r for r in again.fulfillment.rows if r.scope == "location" and r.key == "WH1")
    assert wh.completed_24h == 0  # cancelled before it was "shipped": not a fulfillment
    # Yesterday's unavailable order is not today's.
    await write(db_path, [empty_order("mp-0", at(-24))])
    assert snap(db_path, T0).headline.orders_unavailable == 1


# --- a product with no category ------------------------------------------------------------


def product(code: str, category: object, ts: datetime) -> dict[str, object]:
    body: dict[str, object] = {
        "sku": code,
        "product_type": "tee",
        "unit_cost": "4.00",
        "price": "10.00",
    }
    if category is not ...:
        body["category"] = category
    return {
        "id": f"sku-{code}-{ts.timestamp():.0f}",
        "type": "sku.upserted",
        "ts": iso(ts),
        "source": "catalogue",
        "body": body,
    }


async def test_a_product_without_a_category_lands_in_uncategorised_with_a_count_on_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    config = ServeConfig(db=tmp_path / "store.db", port=0, events_token="tok", batch_wait_ms=2)
    day = at(-48)
    lines = [
        product("NOCAT", ..., day),  # the field absent
        product("NULLCAT", None, day),  # null
        product("BLANK", "  ", day),  # blank
        product("TEE", "apparel", day),
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    # Sold and returned before and after: counted under uncategorised like any category.
    events = [
        order("o-1", at(-1), [("NOCAT", 3)]),
        ret("NOCAT", 1, at(-0.5)),
    ]
    text += "\n" + "\n".join(e.model_dump_json() for e in events)
    headers = {"Authorization": "Bearer tok", "Content-Type": "application/x-ndjson"}
    async with (
        Server(config, feeds=[]) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
    ):
        async with http.post("/events", data=text.encode(), headers=headers) as resp:
            answer = await resp.json()
            assert resp.status == 200, answer
        assert [r["outcome"] for r in answer["results"]] == ["applied"] * 6
        async with http.get("/health") as resp:
            health = await resp.json()
        assert health["store"]["uncategorised_skus"] == 3
        assert health["store"]["quarantined"] == 0
        # The product gets its category later: the count follows the catalogue.
        later = json.dumps(product("BLANK", "home", at(-24)))
        async with http.post("/events", data=later.encode(), headers=headers) as resp:
            assert resp.status == 200
        async with http.get("/health") as resp:
            assert (await resp.json())["store"]["uncategorised_skus"] == 2
    db = sqlite3.connect(config.db)
    try:
        assert uncategorised_skus(db) == 2
        assert uncategorised_sku_ids(db) == ["NOCAT", "NULLCAT"]
        categories = dict(db.execute("SELECT sku, category FROM skus"))
        assert categories["NOCAT"] == UNCATEGORISED == "uncategorised"
        sold = db.execute(
            "SELECT SUM(units) FROM category_hourly WHERE category = 'uncategorised'"
        ).fetchone()[0]
        returned = db.execute(
            "SELECT SUM(units) FROM category_returns_hourly WHERE category = 'uncategorised'"
        ).fetchone()[0]
        assert (sold, returned) == (3, 1)
    finally:
        db.close()


# --- import-history: stock write-offs are not returns --------------------------------------

WRITE_OFFS = (
    Path(__file__).resolve().parent.parent
    / "fixtures"
    / "payloads"
    / "online_retail"
    / "online_retail_writeoffs.csv"
)


async def test_history_write_offs_are_stock_adjustments_not_returns(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    report = await import_history(WRITE_OFFS, db, "webshop", "WH-UK", "Europe/London")
    # By hand, the 7 real rows: invoice 536367 sells 4 x 7.95; POST and D are skipped;
    # C536383 returns 1 x 4.65; 536589, 536764 and 537032 write off 10, 38 and 30 units at
    # price 0 (no customer, no refund).  Applied: placed + shipped, 1 return, 3 write-offs.
    assert (report.rows, report.orders, report.lines, report.returns) == (7, 1, 1, 1)
    assert report.write_offs == 3
    assert dict(report.skipped) == {"POST": 1, "D": 1}
    assert (report.applied, report.quarantined) == (6, 0)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT sku, quantity, refund_cents FROM returns").fetchall() == [
            ("35004C", 1, 465)
        ]
        assert conn.execute(
            "SELECT sku, location_id, delta, reason FROM stock_adjustments ORDER BY ts"
        ).fetchall() == [
            ("21777", "WH-UK", -10, "write-off"),
            ("84952C", "WH-UK", -38, "write-off"),
            ("21275", "WH-UK", -30, "write-off"),
        ]
        # No count yet: on hand is the sum of the pair's adjustments.
        assert conn.execute(
            "SELECT on_hand FROM stock WHERE sku = '21777' AND location_id = 'WH-UK'"
        ).fetchone() == (-10,)
    finally:
        conn.close()
    again = await import_history(WRITE_OFFS, db, "webshop", "WH-UK", "Europe/London")
    assert (again.applied, again.duplicate) == (0, 6)


# --- two promises: delivered late against the customer's promise --------------------------


def promised_order(
    order_id: str,
    ts: datetime,
    *,
    loc: str = "WH1",
    channel: str = "webshop",
    region: str = "NE",
    delivery: datetime | None = None,
) -> object:
    """An order with a ship-by 8 h after placing and, if given, a customer delivery date."""
    body: dict[str, object] = {
        "order_id": order_id,
        "channel": channel,
        "method": "ship",
        "destination_region": region,
        "location_id": loc,
        "promised_by": iso(ts + timedelta(hours=8)),
        "lines": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
    }
    if delivery is not None:
        body["delivery_promised_by"] = iso(delivery)
    return ev("order.placed", ts, body, source=channel)


def shipped_and_delivered(
    order_id: str, shipped: datetime, delivered: datetime, carrier: str
) -> list[object]:
    return [
        step(order_id, "shipped", shipped, carrier=carrier),
        step(order_id, "delivered", delivered),
    ]


async def test_delivered_late_against_the_customers_promise(db_path: Path) -> None:
    # now = T0.  By hand, deliveries with a customer promise:
    #   d1 WH1 webshop UPS NE  promised -2 h, delivered -5 h: on time      (24 h, window)
    #   d2 WH1 webshop UPS NE  promised -10 h, delivered -3 h: late        (24 h, window)
    #   d5 WH1 webshop UPS NE  promised -1 h, delivered -1 h: on time (not after)
    #   d3 WH2 marketplace FedEx SP promised -72 h, delivered -48 h: late  (window only)
    # Not counted: d4 (no customer promise), d6 (delivered 8 days ago, outside 7 days),
    # d7 (cancelled before it was delivered).
    events = [
        promised_order("d1", at(-30), delivery=at(-2)),
        *shipped_and_delivered("d1", at(-28), at(-5), "UPS"),
        promised_order("d2", at(-30), delivery=at(-10)),
        *shipped_and_delivered("d2", at(-28), at(-3), "UPS"),
        promised_order("d5", at(-30), delivery=at(-1)),
        *shipped_and_delivered("d5", at(-28), at(-1), "UPS"),
        promised_order(
            "d3", at(-100), loc="WH2", channel="marketplace", region="SP", delivery=at(-72)
        ),
        *shipped_and_delivered("d3", at(-90), at(-48), "FedEx"),
        promised_order("d4", at(-30)),
        *shipped_and_delivered("d4", at(-28), at(-1), "UPS"),
        promised_order("d6", at(-24 * 10), delivery=at(-24 * 9)),
        *shipped_and_delivered("d6", at(-24 * 10 + 2), at(-24 * 8), "UPS"),
        promised_order("d7", at(-30), delivery=at(-30)),
        ev("order.cancelled", at(-20), {"order_id": "d7"}),
        step("d7", "delivered", at(-10)),
    ]
    await write(db_path, events)
    s = snap(db_path, T0)

    def figures(scope: str, key: str) -> tuple[object, ...]:
        row = next(r for r in s.fulfillment.rows if r.scope == scope and r.key == key)
        return (
            row.promised_delivered_24h,
            row.delivered_late_24h,
            row.promised_delivered_window,
            row.delivered_late_window,
        )

    assert figures("location", "WH1") == (3, 1, 3, 1)
    assert figures("location", "WH2") == (0, 0, 1, 1)
    assert figures("channel", "webshop") == (3, 1, 3, 1)
    assert figures("channel", "marketplace") == (0, 0, 1, 1)
    assert figures("carrier", "UPS") == (3, 1, 3, 1)
    assert figures("carrier", "FedEx") == (0, 0, 1, 1)
    assert figures("region", "NE") == (3, 1, 3, 1)
    assert figures("region", "SP") == (0, 0, 1, 1)
    wh1 = next(r for r in s.fulfillment.rows if r.scope == "location" and r.key == "WH1")
    assert wh1.delivered_late_rate_24h == pytest.approx(1 / 3)
    assert wh1.delivered_late_rate_window == pytest.approx(1 / 3)
    wh2 = next(r for r in s.fulfillment.rows if r.scope == "location" and r.key == "WH2")
    assert wh2.delivered_late_rate_24h is None and wh2.delivered_late_rate_window == 1.0
    # Next to the node's own ship-by: d1, d2, d5 shipped 28 h ago, outside today's 24 h.
    assert (s.fulfillment.delivered_late_24h, s.fulfillment.delivered_late_window) == (1, 2)
    assert s.fulfillment.delivery_window_days == 7.0
    # A chosen window of 1 day: the window figures are the 24 h ones; WH2 has none.
    one = snap(db_path, T0, MetricParams(timezone="America/New_York", delivery_window_days=1))
    assert (one.fulfillment.delivered_late_24h, one.fulfillment.delivered_late_window) == (1, 1)
    assert not any(r.key in ("WH2", "SP", "FedEx") for r in one.fulfillment.rows)
    # The report's JSON keeps every existing field and adds the new ones.
    data = to_jsonable(s)
    row = next(r for r in data["fulfillment"]["rows"] if r["key"] == "WH1")
    assert {"on_time_rate", "completed_24h", "late", "status"} <= set(row)
    assert row["delivered_late_24h"] == 1 and row["promised_delivered_window"] == 3


def test_amazon_maps_latest_delivery_date_as_the_customers_promise() -> None:
    change = json.loads((PAYLOADS / "amazon" / "ORDER_CHANGE.json").read_text(encoding="utf-8"))
    mapped = map_amazon(change, AmazonMapping(mfn_location="WH-NJ"))
    (placed,) = [i for i in mapped.items if isinstance(i, OrderPlaced)]
    # The real example: LatestShipDate is the node's ship-by, LatestDeliveryDate the buyer's.
    assert placed.body.delivery_promised_by == datetime(2022, 12, 7, 19, 42, 4, 284000, tzinfo=UTC)
    assert placed.body.promised_by is not None


# --- shipping charged and shipping cost, apart from net sales ------------------------------


def charged_order(order_id: str, ts: datetime, qty: int, shipping: str) -> object:
    return ev(
        "order.placed",
        ts,
        {
            "order_id": order_id,
            "channel": "webshop",
            "method": "ship",
            "destination_region": "NE",
            "location_id": "WH1",
            "promised_by": iso(ts + timedelta(hours=8)),
            "lines": [{"sku": "A", "quantity": qty, "unit_price": "10.00"}],
            "shipping_charged": shipping,
        },
        source="webshop",
    )


def cost(order_id: str, tracking: str, ts: datetime, amount: str) -> object:
    return step(order_id, "shipped", ts, carrier="UPS", tracking=tracking, shipping_cost=amount)


async def test_shipping_charged_and_cost_are_shown_apart_from_net_sales(db_path: Path) -> None:
    # now = T0 (10:00 New York; today began 5 h ago).  By hand:
    #   s1 today 1 x 10.00, shipping charged 4.99; shipment T1 cost 3.20, corrected to 3.50
    #      at -0.5 h (and to 4.00 after now: not yet);
    #   s2 today 2 x 10.00, charged 0.00, cancelled at -1 h (not sales, not charged); its
    #      shipment T2 cost 2.00 was paid all the same;
    #   s3 yesterday, charged 7.00; its shipment T3 first reported yesterday (5.00), again
    #      today (5.00): yesterday's cost.
    # Net sales 10.00 (unchanged definition), shipping charged 4.99, cost 3.50 + 2.00.
    await write(
        db_path,
        [
            charged_order("s1", at(-2), 1, "4.99"),
            cost("s1", "T1", at(-1), "3.20"),
            cost("s1", "T1", at(-0.5), "3.50"),
            cost("s1", "T1", at(1), "4.00"),
            charged_order("s2", at(-3), 2, "0.00"),
            cost("s2", "T2", at(-2.5), "2.00"),
            ev("order.cancelled", at(-1), {"order_id": "s2"}),
            charged_order("s3", at(-24), 1, "7.00"),
            cost("s3", "T3", at(-23), "5.00"),
            cost("s3", "T3", at(-1), "5.00"),
        ],
    )
    h = snap(db_path, T0).headline
    assert (h.net_sales, h.gross_sales) == (10.0, 10.0)
    assert (h.shipping_charged, h.shipping_cost) == (4.99, 5.5)
    earlier = snap(db_path, at(-0.75)).headline  # before the correction
    assert (earlier.shipping_charged, earlier.shipping_cost) == (4.99, pytest.approx(5.2))
    data = to_jsonable(snap(db_path, T0))["headline"]
    assert {"net_sales", "gross_sales", "discounts", "returns_value"} <= set(data)
    assert (data["shipping_charged"], data["shipping_cost"]) == (4.99, 5.5)


def test_shopify_and_easypost_payloads_carry_shipping() -> None:
    order_payload = json.loads(
        (PAYLOADS / "shopify" / "rest-2024-04_order.json").read_text(encoding="utf-8")
    )
    mapped = map_shopify("orders/create", "d-1", order_payload, ShopifyMapping())
    (placed,) = [i for i in mapped.items if isinstance(i, OrderPlaced)]
    assert placed.body.shipping_charged == Decimal("0.00")  # the real order's free shipping
    tracker_payload = json.loads(
        (PAYLOADS / "easypost" / "tracker.updated.event-body.json").read_text(encoding="utf-8")
    )
    assert parse_tracker(tracker_payload).shipping_cost is None  # the real one has no fees
    # The same tracker as EasyPost sends it for a purchased label: Fee objects.
    tracker_payload["result"]["fees"] = [
        {"object": "Fee", "type": "TrackerFee", "amount": "0.02000", "charged": True},
        {"object": "Fee", "type": "PostageFee", "amount": "7.58000", "charged": True},
    ]
    steps = map_tracker(parse_tracker(tracker_payload), "W-1").items
    assert steps and all(
        isinstance(s, FulfillmentUpdated) and s.body.shipping_cost == Decimal("7.58") for s in steps
    )


# --- an order whose lines are fulfilled from different nodes -------------------------------


def split_order(order_id: str, ts: datetime, promised: datetime) -> object:
    """Two sellers: A x1 from WH1, B x2 from WH2; no node for the order as a whole."""
    return ev(
        "order.placed",
        ts,
        {
            "order_id": order_id,
            "channel": "marketplace",
            "method": "ship",
            "destination_region": "SP",
            "location_id": None,
            "promised_by": iso(promised),
            "lines": [
                {"sku": "A", "quantity": 1, "unit_price": "10.00", "location_id": "WH1"},
                {"sku": "B", "quantity": 2, "unit_price": "5.00", "location_id": "WH2"},
            ],
        },
        source="marketplace",
    )


async def test_a_multi_node_order_counts_at_each_lines_node(db_path: Path) -> None:
    # now = T0.  By hand:
    #   m1 (A@WH1, B@WH2) placed -3 h, ship-by -1 h: open and late at WH1 and at WH2;
    #   w1 at WH1, placed -2 h, ship-by +5 h: open, healthy;
    #   m2 (A@WH1, B@WH2) placed -4 h, ship-by +1 h, shipped -0.5 h: on time at both.
    # WH1: open 2, late 1, completed 1 (on time); WH2: open 1, late 1, completed 1;
    # channel marketplace: open 1 (m1 once), late 1; the totals count orders: open 2, late 1.
    # Sales: A 2 units at WH1 (m1, m2) + w1's A 1; B 4 units at WH2; none unassigned.
    await write(
        db_path,
        [
            split_order("m1", at(-3), at(-1)),
            order("w1", at(-2), [("A", 1)], promised=at(5)),
            split_order("m2", at(-4), at(1)),
            step("m2", "shipped", at(-0.5), carrier="UPS"),
        ],
    )
    s = snap(db_path, T0)

    def row(scope: str, key: str) -> tuple[int, int, int, float | None]:
        r = next(r for r in s.fulfillment.rows if r.scope == scope and r.key == key)
        return (r.open_orders, r.late, r.completed_24h, r.on_time_rate)

    assert row("location", "WH1") == (2, 1, 1, 1.0)
    assert row("location", "WH2") == (1, 1, 1, 1.0)
    assert row("channel", "marketplace") == (1, 1, 1, 1.0)
    assert not any(r.scope == "location" and r.key == "-" for r in s.fulfillment.rows)
    assert (s.fulfillment.total_open, s.fulfillment.total_late) == (2, 1)
    db = sqlite3.connect(db_path)
    try:
        sales = db.execute(
            "SELECT sku, location_id, SUM(units) FROM sales_hourly GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert sales == [("A", "WH1", 3), ("B", "WH2", 4)]
        # Placed (its lines' nodes known), so the router leaves it alone.
        assert db.execute("SELECT location_id FROM orders WHERE order_id = 'm1'").fetchone() == (
            "WH1",
        )
    finally:
        db.close()
    # Cancelling m1 takes its sales back from both nodes.
    await write(db_path, [ev("order.cancelled", at(-0.2), {"order_id": "m1"})])
    db = sqlite3.connect(db_path)
    try:
        sales = db.execute(
            "SELECT sku, location_id, SUM(units) FROM sales_hourly GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        assert sales == [("A", "WH1", 2), ("B", "WH2", 2)]
    finally:
        db.close()
    after = snap(db_path, T0)
    assert (after.fulfillment.total_open, after.fulfillment.total_late) == (1, 0)


# --- the new shapes apply the same one at a time and in batches ----------------------------


def test_new_shapes_give_the_same_store_one_at_a_time_and_in_batches(tmp_path: Path) -> None:
    import random

    from store.model import parse_event
    from tests.test_bulk_apply import build, dump

    items: list[Any] = [
        empty_order("mp-1", at(-0.25)),
        ev("order.cancelled", at(-0.5), {"order_id": "mp-2"}),
        empty_order("mp-2", at(-1)),
        parse_event(product("NOCAT", ..., at(-48))),
        parse_event(product("NOCAT", "toys", at(-2))),
        parse_event(product("BLANK", " ", at(-48))),
        split_order("m1", at(-3), at(-1)),
        split_order("m2", at(-4), at(1)),
        step("m2", "shipped", at(-0.5), carrier="UPS"),
        ev("order.cancelled", at(-0.2), {"order_id": "m1"}),
        promised_order("d1", at(-30), delivery=at(-2)),
        *shipped_and_delivered("d1", at(-28), at(-5), "UPS"),
        charged_order("s1", at(-2), 1, "4.99"),
        cost("s1", "T1", at(-1), "3.20"),
        cost("s1", "T1", at(-0.5), "3.50"),
        cost("s1", "T1", at(-0.5), "3.60"),  # stamped alike: the later arrival stands
        cost("s2", "T2", at(-2.5), "2.00"),  # before its order
        charged_order("s2", at(-3), 2, "0.00"),
    ]
    rng = random.Random(5)
    for _ in range(3):
        rng.shuffle(items)
        mixed = items + rng.sample(items, 5)  # duplicates
        end = epoch(T0)
        single = dump(build(tmp_path / "single.db", mixed, 1), end)
        assert single["shipment_costs"] and single["orders"]
        for batch in (4, 1000):
            bulk = dump(build(tmp_path / f"bulk-{batch}.db", mixed, batch), end)
            for table, rows in single.items():
                assert bulk[table] == rows, f"{table} differs with batches of {batch}"
        for path in tmp_path.glob("*.db*"):
            path.unlink()
