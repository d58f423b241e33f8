"""An order edit after placement moves the router's reservations (``order.edited``).

Real store files written through the real writer with the router hook: a line reduced,
removed, added or increased holds what the order's lines now say at the node the order
was routed to; an older edit arriving after a newer one changes nothing; an order
already shipped or cancelled keeps its reservations released.  The reservations kept
incrementally equal those derived from the store's lines (``held_lines``), across
writer restarts, and the stock *as of* now agrees with ``stock.reserved``; a store whose
reservations missed edits (written by an omniops before this) is put right by the next
writer.  Over real HTTP on 127.0.0.1, ``POST /route`` after an edit sees the freed or
held stock.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from feeds.runtime.route_api import make_app
from feeds.runtime.routing import StoreRoutingSource
from rules.routing.config import FulfillmentRouting
from store.apply import epoch
from store.asof import stock_as_of
from store.clock import FixedClock
from store.model import Event
from store.reservations import held_lines, open_reservations
from tests.builders import ev
from tests.conftest import write
from tests.routing_world import catalogue, ny, placed, stock

RULES = FulfillmentRouting.model_validate(
    {"rules": [{"id": "ship", "match": "method=ship", "kinds": ["warehouse"], "window": "any"}]}
)
"""Ship from a warehouse: a northeast order goes to WH-NJ while it has stock, else WH-TX."""

STOCK = [
    stock("TEE", "WH-NJ", 10),
    stock("TEE", "WH-TX", 50),
    stock("MUG", "WH-NJ", 10),
    stock("MUG", "WH-TX", 50),
]


def rules() -> FulfillmentRouting:
    return RULES


def edited(order_id: str, at: datetime, lines: list[tuple[str, int]], **kw: Any) -> Event:
    body = {
        "order_id": order_id,
        "lines": [{"sku": s, "quantity": q, "unit_price": "20.00"} for s, q in lines],
    }
    return ev("order.edited", at, body, source="webshop", **kw)


def step(order_id: str, status: str, at: datetime) -> Event:
    return ev("fulfillment.updated", at, {"order_id": order_id, "status": status}, source="wms")


def cancelled(order_id: str, at: datetime) -> Event:
    return ev("order.cancelled", at, {"order_id": order_id, "reason": "customer"}, source="webshop")


class Store:
    """A store file written batch by batch, each by a new writer (a restart) with the router."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = FixedClock(ny(12))

    async def write(self, *events: Event, routing: bool = True) -> None:
        self.clock.advance(timedelta(minutes=7))
        await write(self.path, list(events), clock=self.clock, routing=rules if routing else None)

    def reserved(self) -> dict[tuple[str, str], int]:
        """``stock.reserved`` per (SKU, node), zeros left out."""
        with sqlite3.connect(self.path) as db:
            rows = db.execute("SELECT sku, location_id, reserved FROM stock").fetchall()
        return {(s, loc): r for s, loc, r in rows if r}

    def held(self, order_id: str) -> list[tuple[str, str, int]]:
        """The order's unreleased reservations, by line."""
        with sqlite3.connect(self.path) as db:
            return [v for _, v in sorted(open_reservations(db, [order_id]).items())]

    def check_rebuild(self) -> None:
        """Incremental = derived from the store's lines, and the stock as of now agrees."""
        with sqlite3.connect(self.path) as db:
            kept = open_reservations(db)
            assert kept == held_lines(db)
            expected: dict[tuple[str, str], int] = {}
            for sku, node, qty in kept.values():
                expected[(sku, node)] = expected.get((sku, node), 0) + qty
            now = stock_as_of(db, epoch(self.clock.now()))
        assert self.reserved() == expected  # the counts reserved nothing of their own
        assert {pair: r for pair, (_, r) in now.items() if r} == expected


@pytest.fixture
async def shop(db_path: Path) -> Store:
    store = Store(db_path)
    await store.write(*catalogue(), *STOCK)
    return store


async def test_a_line_reduced_gives_units_back(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 3)]))
    assert shop.reserved() == {("TEE", "WH-NJ"): 3}
    await shop.write(edited("o1", ny(10), [("TEE", 1)]))
    assert shop.held("o1") == [("TEE", "WH-NJ", 1)]
    assert shop.reserved() == {("TEE", "WH-NJ"): 1}
    shop.check_rebuild()


async def test_a_line_removed_holds_nothing(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 2), ("MUG", 1)]))
    assert shop.reserved() == {("TEE", "WH-NJ"): 2, ("MUG", "WH-NJ"): 1}
    await shop.write(edited("o1", ny(10), [("MUG", 1)]))
    assert shop.held("o1") == [("MUG", "WH-NJ", 1)]
    assert shop.reserved() == {("MUG", "WH-NJ"): 1}
    shop.check_rebuild()


async def test_a_line_added_is_held_at_the_routed_node(shop: Store) -> None:
    # WH-NJ is short of TEE: the order goes to WH-TX, and a MUG added is held there too
    # (WH-NJ has MUGs, but the order ships from where it was routed).
    await shop.write(placed("o1", ny(9), [("TEE", 12)]))
    assert shop.reserved() == {("TEE", "WH-TX"): 12}
    await shop.write(edited("o1", ny(10), [("TEE", 12), ("MUG", 2)]))
    assert shop.held("o1") == [("TEE", "WH-TX", 12), ("MUG", "WH-TX", 2)]
    assert shop.reserved() == {("TEE", "WH-TX"): 12, ("MUG", "WH-TX"): 2}
    shop.check_rebuild()


async def test_a_line_increased_holds_more(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 2)]))
    await shop.write(edited("o1", ny(10), [("TEE", 4)]))
    assert shop.held("o1") == [("TEE", "WH-NJ", 4)]
    assert shop.reserved() == {("TEE", "WH-NJ"): 4}
    shop.check_rebuild()


async def test_a_line_the_edit_names_a_node_for_is_held_there(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 2)]))
    body = {
        "order_id": "o1",
        "lines": [
            {"sku": "TEE", "quantity": 2, "unit_price": "20.00"},
            {"sku": "MUG", "quantity": 3, "unit_price": "20.00", "location_id": "WH-TX"},
        ],
    }
    await shop.write(ev("order.edited", ny(10), body, source="webshop"))
    assert shop.held("o1") == [("TEE", "WH-NJ", 2), ("MUG", "WH-TX", 3)]
    assert shop.reserved() == {("TEE", "WH-NJ"): 2, ("MUG", "WH-TX"): 3}
    shop.check_rebuild()


async def test_an_older_edit_arriving_late_changes_nothing(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 3)]))
    newer = edited("o1", ny(11), [("TEE", 1)])
    await shop.write(newer)
    assert shop.reserved() == {("TEE", "WH-NJ"): 1}
    await shop.write(edited("o1", ny(10), [("TEE", 5), ("MUG", 2)]))  # older, arrives later
    assert shop.held("o1") == [("TEE", "WH-NJ", 1)]
    assert shop.reserved() == {("TEE", "WH-NJ"): 1}
    await shop.write(newer)  # a redelivery: a duplicate
    assert shop.reserved() == {("TEE", "WH-NJ"): 1}
    shop.check_rebuild()


@pytest.mark.parametrize("done", ["shipped", "ready_for_pickup", "cancelled"])
async def test_an_edit_after_fulfilment_keeps_reservations_released(shop: Store, done: str) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 3)]), placed("o2", ny(9, 5), [("TEE", 2)]))
    assert shop.reserved() == {("TEE", "WH-NJ"): 5}
    finish = cancelled("o1", ny(10)) if done == "cancelled" else step("o1", done, ny(10))
    await shop.write(finish)
    assert shop.reserved() == {("TEE", "WH-NJ"): 2}
    await shop.write(edited("o1", ny(11), [("TEE", 6), ("MUG", 1)]))
    assert shop.held("o1") == []
    assert shop.reserved() == {("TEE", "WH-NJ"): 2}
    shop.check_rebuild()


async def test_an_edit_and_a_shipment_in_one_batch(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 3)]))
    await shop.write(edited("o1", ny(10), [("TEE", 5)]), step("o1", "shipped", ny(10, 30)))
    assert shop.held("o1") == []
    assert shop.reserved() == {}
    shop.check_rebuild()


async def test_an_edit_before_its_placement_is_routed_as_edited(shop: Store) -> None:
    await shop.write(edited("o1", ny(10), [("TEE", 2), ("MUG", 1)]))
    await shop.write(placed("o1", ny(9), [("TEE", 3)]))
    assert shop.reserved() == {("TEE", "WH-NJ"): 2, ("MUG", "WH-NJ"): 1}
    shop.check_rebuild()


async def test_reservations_kept_across_restarts_equal_those_the_lines_give(
    shop: Store,
) -> None:
    """A generated stream: placements, edits (late, older, twice, before the placement),
    shipments and cancellations, in random batches, each by a new writer.  After every
    batch the kept reservations equal those derived from the store's lines."""
    rng = random.Random(7)
    events: list[Event] = []
    skus = ["TEE", "MUG"]
    for n in range(24):
        order_id = f"g{n}"
        t = ny(8) + timedelta(minutes=10 * n)
        lines = [(sku, rng.randint(1, 4)) for sku in rng.sample(skus, rng.randint(1, 2))]
        events.append(placed(order_id, t, lines))
        for k in range(rng.randint(0, 3)):
            new = [(sku, rng.randint(1, 5)) for sku in rng.sample(skus, rng.randint(1, 2))]
            edit = edited(order_id, t + timedelta(minutes=20 + 5 * k), new)
            events.append(edit)
            if rng.random() < 0.3:
                events.append(edit)  # redelivered
        end = rng.random()
        if end < 0.25:
            events.append(step(order_id, "shipped", t + timedelta(minutes=30)))
        elif end < 0.35:
            events.append(cancelled(order_id, t + timedelta(minutes=25)))
    # Mostly in order, with some events held back and delivered late.
    late = [e for e in events if rng.random() < 0.2]
    stream = [e for e in events if all(e is not x for x in late)] + late
    start = 0
    while start < len(stream):
        size = rng.randint(1, 6)
        await shop.write(*stream[start : start + size])
        shop.check_rebuild()
        start += size
    assert shop.reserved()  # something is still held


async def test_a_writer_puts_right_reservations_that_missed_edits(shop: Store) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 3)]), placed("o2", ny(9, 5), [("MUG", 2)]))
    # Edits written by a writer without the router (as an omniops before this did with
    # every edit): the lines changed, the reservations did not.
    await shop.write(
        edited("o1", ny(10), [("TEE", 1), ("MUG", 1)]),
        edited("o2", ny(10), [("MUG", 5)]),
        routing=False,
    )
    assert shop.reserved() == {("TEE", "WH-NJ"): 3, ("MUG", "WH-NJ"): 2}
    # The next writer with the router, whatever its first batch holds, puts them right.
    await shop.write(stock("TEE", "WH-TX", 50))
    assert shop.reserved() == {("TEE", "WH-NJ"): 1, ("MUG", "WH-NJ"): 6}
    shop.check_rebuild()


# -- POST /route after an edit, over real HTTP -----------------------------------------------


@pytest.fixture
async def route_url(shop: Store) -> AsyncIterator[str]:
    source = StoreRoutingSource(shop.path)
    app = make_app(source=source, rules=rules, clock=FixedClock(ny(12)))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        source.close()


async def route(url: str, quantity: int) -> str:
    """The node ``POST /route`` picks for ``quantity`` TEEs to the northeast."""
    body = {
        "order_id": "check",
        "destination_region": "northeast",
        "lines": [{"sku": "TEE", "quantity": quantity}],
    }
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(f"{url}/route", json=body) as resp,
    ):
        assert resp.status == 200
        answer = await resp.json()
    assert answer["status"] == "routed"
    return str(answer["shipments"][0]["location_id"])


async def test_route_after_an_edit_sees_freed_and_held_stock(shop: Store, route_url: str) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 8)]))  # WH-NJ: 10 on hand, 8 held
    assert await route(route_url, 4) == "WH-TX"
    await shop.write(edited("o1", ny(10), [("TEE", 2)]))  # 6 given back at WH-NJ
    assert await route(route_url, 4) == "WH-NJ"
    await shop.write(edited("o1", ny(11), [("TEE", 9)]))  # now 9 held: 1 left
    assert await route(route_url, 4) == "WH-TX"
    assert await route(route_url, 1) == "WH-NJ"


async def stored(url: str, order_id: str) -> dict[str, Any]:
    """``GET /route/{order_id}``'s answer."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/route/{order_id}") as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


async def test_the_stored_decision_shows_the_lines_as_edited(shop: Store, route_url: str) -> None:
    await shop.write(placed("o1", ny(9), [("TEE", 12)]), placed("o2", ny(9), [("TEE", 1)]))
    before = await stored(route_url, "o1")
    assert "current_lines" not in before and "edited_at" not in before  # never edited
    await shop.write(edited("o1", ny(10), [("TEE", 12), ("MUG", 2)]))
    await shop.write(edited("o1", ny(10, 30), [("MUG", 3)]))
    after = await stored(route_url, "o1")
    # As decided (one TEE line to WH-TX), and the lines as they stand, where they are held.
    assert after["lines"] == before["lines"]
    assert [(s["location_id"], s["line_nos"]) for s in after["shipments"]] == [("WH-TX", [0])]
    assert after["edited_at"] == "2026-11-18T15:30:00Z"
    assert after["current_lines"] == [
        {"line_no": 0, "sku": "MUG", "quantity": 3, "location_id": "WH-TX"}
    ]
    assert [(s, n, q) for s, n, q in shop.held("o1")] == [("MUG", "WH-TX", 3)]
    assert "current_lines" not in await stored(route_url, "o2")
