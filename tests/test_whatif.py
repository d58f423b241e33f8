"""Routing against a real store (decisions, reservations) and the what-if replay."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feeds.runtime.routing import (
    StoreRoutingSource,
    list_decisions,
    load_decision,
    load_replay,
    release_reservations,
    route_pending_orders,
    routing_after_batch,
    what_if_on_store,
)
from rules.routing.config import FulfillmentRouting, NodeSettings
from rules.routing.router import route_sequence
from rules.whatif import compare, replay, what_if
from store.writer import configure_connection
from tests.builders import ev
from tests.conftest import write
from tests.routing_world import DAY, FIXTURE_DAY, NODES, SKUS, fixture_day_inputs, ny, seed

RULES = FulfillmentRouting.model_validate(
    {
        "rules": [
            {
                "id": "pickup",
                "match": "method=bopis",
                "kinds": ["store"],
                "max_distance_km": 150,
                "rank_by": ["distance"],
            },
            {
                "id": "ship",
                "match": "method=ship",
                "kinds": ["warehouse"],
                "window": "any",
                "rank_by": ["same_market", "distance"],
            },
        ]
    }
)


@pytest.fixture
def db(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db_path, isolation_level=None)
    configure_connection(conn)
    yield conn
    conn.close()


async def test_pending_orders_are_routed_reserved_and_stored_once(
    db_path: Path, db: sqlite3.Connection
) -> None:
    await seed(db_path, DAY)
    decided = route_pending_orders(db, RULES, decided_at=ny(15))
    assert [(d.order_id, d.status, d.nodes) for d in decided] == [
        ("o1", "routed", ["WH-NJ"]),
        ("o2", "routed", ["WH-TX"]),
        ("o3", "routed", ["ST-NYC"]),
        ("o4", "routed", ["WH-NJ"]),
        ("o6", "unfulfillable", []),
    ]
    reserved = dict(
        ((sku, loc), r)
        for sku, loc, r in db.execute("SELECT sku, location_id, reserved FROM stock")
    )
    assert reserved == {("TEE", "WH-NJ"): 5, ("TEE", "WH-TX"): 3, ("TEE", "ST-NYC"): 3}
    # idempotent: nothing left to route
    assert route_pending_orders(db, RULES, decided_at=ny(16)) == []
    row = db.execute(
        "SELECT status, location_id, nodes, rule_id, method, late FROM routing_decisions"
        " WHERE order_id = 'o3'"
    ).fetchone()
    assert row == ("routed", "ST-NYC", '["ST-NYC"]', "pickup", "bopis", 0)
    why = load_decision(db, "o2")
    assert why is not None and why.trace[-1].outcome == "chosen"
    nj = next(c for c in why.trace[-1].candidates if c.location_id == "WH-NJ")
    assert (nj.outcome, nj.reason) == ("rejected", "no_stock")
    assert load_decision(db, "nope") is None
    exceptions = list_decisions(db, status=("held", "unfulfillable"))
    assert [(o, s) for o, s, _, _ in exceptions] == [("o6", "unfulfillable")]
    # shipping o1 gives its 3 units back, once
    assert release_reservations(db, ["o1"], ny(17)) == 3
    assert release_reservations(db, ["o1"], ny(17)) == 0
    assert db.execute(
        "SELECT reserved FROM stock WHERE sku = 'TEE' AND location_id = 'WH-NJ'"
    ).fetchone() == (2,)


async def test_routing_as_orders_arrive_equals_one_pass(db_path: Path, tmp_path: Path) -> None:
    """Routing batch by batch (as the writer would) gives the decisions of one pass."""
    await seed(db_path, [])
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for event in DAY:
            await write(db_path, [event])
            route_pending_orders(conn, RULES, decided_at=ny(15), order_ids=[event.body.order_id])  # type: ignore[union-attr]
        incremental = [load_decision(conn, o) for o in ("o1", "o2", "o3", "o4", "o6")]
    finally:
        conn.close()
    other = tmp_path / "other.db"
    await seed(other, DAY)
    conn = sqlite3.connect(other, isolation_level=None)
    try:
        one_pass = route_pending_orders(conn, RULES, decided_at=ny(15))
    finally:
        conn.close()
    assert incremental == one_pass


async def test_what_if_current_side_is_what_the_router_stored(
    db_path: Path, db: sqlite3.Connection
) -> None:
    await seed(db_path, DAY)
    stored = route_pending_orders(db, RULES, decided_at=ny(15))
    report = what_if_on_store(db, RULES, RULES, now=ny(23))
    assert list(report.current_decisions) == stored
    assert report.changed == () and report.orders == 5
    source = StoreRoutingSource(db_path)  # what the console's what-if calls
    try:
        assert source.what_if(RULES, RULES, ny(23)).current_decisions == report.current_decisions
    finally:
        source.close()


async def test_what_if_diff_when_a_warehouse_is_taken_out(
    db_path: Path, db: sqlite3.Connection
) -> None:
    await seed(db_path, DAY)
    route_pending_orders(db, RULES, decided_at=ny(15))
    draft = RULES.model_copy(update={"nodes": {"WH-TX": NodeSettings(enabled=False)}})
    report = what_if_on_store(db, RULES, draft, now=ny(23))
    # without WH-TX, o2 finds only 2 units at WH-NJ and is held; o4 still gets those 2
    assert [
        (c.order_id, c.current_nodes, c.draft_nodes, c.draft_status) for c in report.changed
    ] == [
        ("o2", ("WH-TX",), (), "held"),
    ]
    assert report.newly_held == ("o2",)
    assert report.newly_unfulfillable == ()
    assert report.load_change == {
        "ST-NYC": (1, 1),
        "WH-NJ": (2, 2),
        "WH-TX": (1, 0),
    }
    assert report.current.routed == 4 and report.draft.routed == 3
    assert report.current.unfulfillable == report.draft.unfulfillable == 1
    d = report.current.mean_distance_km
    assert d is not None and report.draft.mean_distance_km is not None
    assert report.draft.mean_distance_km < d  # the 2,000 km Dallas shipment is gone


async def test_replay_window_and_limit(db_path: Path, db: sqlite3.Connection) -> None:
    await seed(db_path, DAY)
    route_pending_orders(db, RULES, decided_at=ny(15))
    inputs = load_replay(db, since=ny(0), until=ny(23), limit=2)
    assert [o.order_id for o, _ in inputs.orders] == ["o4", "o6"]
    # the state before o4: o1..o3 still hold their reservations, o4's are given back
    assert inputs.inventory.levels[("TEE", "WH-NJ")].reserved == 3
    assert inputs.inventory.load == {"WH-NJ": 1, "WH-TX": 1, "ST-NYC": 1}
    everything = load_replay(db, since=ny(0), until=ny(23), include_assigned=True)
    assert [o.order_id for o, _ in everything.orders] == ["o1", "o2", "o3", "o4", "o5", "o6"]


def test_compare_refuses_different_orders() -> None:
    inputs = fixture_inputs_small()
    a = replay(inputs, RULES)
    with pytest.raises(ValueError, match="same orders"):
        compare(a, list(reversed(a)))


def fixture_inputs_small() -> Any:
    from rules.routing.orders import Inventory, RouteLine, RouteOrder, StockLevel
    from rules.whatif import ReplayInputs

    orders = [
        (
            RouteOrder(
                order_id=f"x{n}",
                destination_region="northeast",
                lines=[RouteLine(sku="TEE", quantity=1)],
            ),
            ny(9 + n),
        )
        for n in range(2)
    ]
    inv = Inventory(skus=SKUS, levels={("TEE", "WH-NJ"): StockLevel(5)})
    return ReplayInputs(orders=orders, inventory=inv, nodes=NODES)


@pytest.mark.skipif(not (FIXTURE_DAY / "manifest.json").exists(), reason="no fixture day")
def test_what_if_on_the_fixture_day_equals_rerunning_the_router() -> None:
    inputs = fixture_day_inputs()
    assert len(inputs.orders) > 1000
    draft = FulfillmentRouting.model_validate(
        {"nodes": {"WH-NJ": {"enabled": False}}, "buffers": {"store": 3}}
    )
    report = what_if(inputs, FulfillmentRouting(), draft)
    direct_current = route_sequence(
        inputs.orders, inputs.inventory, inputs.nodes, FulfillmentRouting()
    )
    direct_draft = route_sequence(inputs.orders, inputs.inventory, inputs.nodes, draft)
    assert list(report.current_decisions) == direct_current
    assert list(report.draft_decisions) == direct_draft
    assert report.orders == len(inputs.orders)
    # taking the biggest warehouse out moves its orders and lengthens distances
    assert report.current.load["WH-NJ"] > 0 and "WH-NJ" not in report.draft.load
    assert len(report.changed) >= report.current.load["WH-NJ"]
    assert report.draft.mean_distance_km is not None and report.current.mean_distance_km is not None
    assert report.draft.mean_distance_km > report.current.mean_distance_km
    assert json.dumps(report.load_change)  # plain data


async def test_writer_hook_routes_new_orders_and_releases_finished_ones(
    db_path: Path, db: sqlite3.Connection
) -> None:
    await seed(db_path, [])
    batch = [DAY[0], DAY[4]]  # o1 without a node, o5 assigned by its channel
    await write(db_path, batch)
    decided = routing_after_batch(db, batch, RULES, decided_at=ny(15))
    assert [d.order_id for d in decided] == ["o1"]
    assert routing_after_batch(db, batch, RULES, decided_at=ny(15)) == []  # a re-delivery
    shipped = ev("fulfillment.updated", ny(16), {"order_id": "o1", "status": "shipped"})
    await write(db_path, [shipped])
    assert routing_after_batch(db, [shipped], RULES, decided_at=ny(16)) == []
    assert db.execute(
        "SELECT reserved FROM stock WHERE sku = 'TEE' AND location_id = 'WH-NJ'"
    ).fetchone() == (0,)
    assert db.execute("SELECT released_at FROM routing_reservations").fetchall() == [
        (int(ny(16).timestamp()),)
    ]


async def test_what_if_replays_assigned_orders_when_none_was_the_routers(
    db_path: Path, db: sqlite3.Connection
) -> None:
    """A store whose every order came with its node (the demo day, a shop assigning them)."""
    assigned = [e for e in DAY if e.body.location_id is not None]  # type: ignore[union-attr]
    assert assigned, "the fixture needs an order placed with its node"
    await seed(db_path, assigned)
    same = what_if_on_store(db, RULES, RULES, now=ny(23))
    assert same.assigned_too and same.orders == len(assigned) and same.changed == ()
    (node,) = same.current.load  # routed anew: the rules' node, whatever the channel said
    draft = RULES.model_copy(update={"nodes": {node: NodeSettings(enabled=False)}})
    report = what_if_on_store(db, RULES, draft, now=ny(23))
    assert report.assigned_too and len(report.changed) == 1
    assert report.draft.load.get(node, 0) == 0
    # With an order that is the router's to decide, only those are replayed, as before.
    await write(db_path, [e for e in DAY if e.body.location_id is None][:1])  # type: ignore[union-attr]
    again = what_if_on_store(db, RULES, draft, now=ny(23))
    assert not again.assigned_too and again.orders == 1
