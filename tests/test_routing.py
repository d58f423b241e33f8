"""Decision tables for the pure router: match criteria, rejections, buffers, windows, BOPIS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import tomlkit
from pydantic import ValidationError

from rules.geo import haversine_km, pickup_slot, ship_slot
from rules.routing.config import FulfillmentRouting, RoutingRule
from rules.routing.document import update_fulfillment_document
from rules.routing.orders import Decision
from rules.routing.router import route, route_sequence
from store.model import OpeningHours
from tests.routing_world import NODES, inventory, ny, order

NOON = ny(12)  # 12:00 in New York


def rules(*rule_dicts: dict[str, Any], **section: Any) -> FulfillmentRouting:
    return FulfillmentRouting.model_validate({"rules": list(rule_dicts), **section})


def candidates(decision: Decision, rule_id: str | None = None) -> dict[str, tuple[str, Any]]:
    """Outcome and reason per node under the last pass of ``rule_id`` (default: first rule)."""
    passes = [t for t in decision.trace if t.candidates and (rule_id in (None, t.rule_id))]
    last = passes[0] if rule_id is None else passes[-1]
    return {c.location_id: (c.outcome, c.reason) for c in last.candidates}


# -- rules model ----------------------------------------------------------------------------


def test_empty_section_is_valid_and_routes_with_the_default_rule() -> None:
    section = FulfillmentRouting()
    assert section.rules == []
    d = route(order(("TEE", 1)), inventory({("TEE", "WH-NJ"): 5}), NODES, section, NOON)
    assert (d.status, d.rule_id, d.nodes) == ("routed", "default-ship", ["WH-NJ"])
    cart = order(("TEE", 1), method="bopis", location="ST-NYC")
    stock = inventory({("TEE", "WH-NJ"): 5, ("TEE", "ST-NYC"): 5})
    d = route(cart, stock, NODES, section, NOON)
    assert (d.status, d.rule_id, d.nodes) == ("routed", "default-stores", ["ST-NYC"])


EXAMPLE_TOML = """
[fulfillment]
default_carrier = "UPS Ground"
bopis_service_km = 40
buffers = { store = 2 }
capacity = { store = 80 }

[fulfillment.regions."100"]   # a postal prefix: Manhattan
lat = 40.78
lon = -73.97
market = "northeast"

[fulfillment.nodes.ST-DEN]
enabled = true
capacity = 40
rank = 1

[[fulfillment.rules]]
id = "bopis"
description = "Pickup at the nearest store that can have it ready"
match = "method=bopis"
kinds = ["store"]
window = "promise"
rank_by = ["distance", "remaining_capacity"]
fallback = "next_pickup_window"

[[fulfillment.rules]]
id = "hazmat-ground"
match = "hazmat=true"
kinds = ["warehouse"]
window = "any"
fallback = "hold"

[[fulfillment.rules]]
id = "ship"
match = "method=~ship|ship_from_store"
max_splits = 1
rank_by = ["fewest_splits", "same_market", "distance"]

[[fulfillment.carriers]]
match = "market=northeast"
carrier = "FedEx 2Day"
air = true
transit_days = 2
"""


def test_the_documented_toml_example_loads() -> None:
    doc = tomlkit.parse(EXAMPLE_TOML).unwrap()
    section = FulfillmentRouting.model_validate(doc["fulfillment"])
    assert [r.id for r in section.rules] == ["bopis", "hazmat-ground", "ship"]
    assert section.nodes["ST-DEN"].capacity == 40
    # and it survives a round trip through its own dump
    again = FulfillmentRouting.model_validate(
        section.model_dump(mode="json", exclude_defaults=True)
    )
    assert again == section


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"id": "r", "match": "regoin=NE"}, "unknown label 'regoin'"),
        ({"id": "r", "match": "region=~("}, "bad regular expression"),
        ({"id": "r", "kinds": ["warehouse", "warehouse"]}, "listed twice"),
        ({"id": "r", "rank_by": ["distance", "nearest"]}, "rank_by.1"),
        ({"id": "r", "fallback": "retry"}, "fallback"),
        ({"id": "r", "min_value": 50, "max_value": 10}, "min_value is above max_value"),
        ({"id": "bad id"}, "id"),
        ({"id": "r", "colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_name_what_is_wrong(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        rules(rule)
    assert message in str(caught.value)


def test_rule_ids_are_unique() -> None:
    with pytest.raises(ValidationError, match="rule id 'a' is used twice"):
        rules({"id": "a"}, {"id": "a"})


# -- match criteria ---------------------------------------------------------------------------


CATCH_ALL = {"id": "other", "window": "any"}
STOCKED = {("TEE", "WH-NJ"): 50, ("MUG", "WH-NJ"): 50, ("SPRAY", "WH-NJ"): 50, ("SOFA", "WH-NJ"): 5}


@pytest.mark.parametrize(
    ("rule", "the_order", "matched"),
    [
        ({"match": "region=northeast"}, order(("TEE", 1)), True),
        ({"match": "region=west"}, order(("TEE", 1)), False),
        ({"match": "region=~north.*"}, order(("TEE", 1)), True),
        ({"match": "region!~north.*"}, order(("TEE", 1)), False),
        ({"match": "region=~100.*"}, order(("TEE", 1), region="10001"), True),  # postal prefix
        ({"match": "market=northeast"}, order(("TEE", 1), region="NE"), True),  # short code
        ({"match": "channel=marketplace"}, order(("TEE", 1), channel="marketplace"), True),
        ({"match": "channel!=marketplace"}, order(("TEE", 1), channel="marketplace"), False),
        ({"match": "method=ship_from_store"}, order(("TEE", 1)), False),
        ({"match": "category=home"}, order(("TEE", 1), ("MUG", 1)), True),  # any line
        ({"match": "category!=home"}, order(("TEE", 1), ("MUG", 1)), False),  # no line
        ({"match": "product_type=~aero.*"}, order(("SPRAY", 1)), True),
        ({"match": "hazmat=true"}, order(("TEE", 1)), False),
        ({"match": "hazmat=true"}, order(("TEE", 1), ("SPRAY", 1)), True),
        ({"match": "sku=SOFA"}, order(("SOFA", 1)), True),
        ({"min_value": 100}, order(("TEE", 2)), False),  # 2 × 20.00 = 40
        ({"min_value": 100}, order(("SOFA", 1)), True),
        ({"max_value": 40}, order(("TEE", 2)), True),
        ({"max_value": 39.99}, order(("TEE", 2)), False),
        ({"min_weight_kg": 50}, order(("SOFA", 1)), True),
        ({"max_weight_kg": 1}, order(("TEE", 3)), False),  # 1.5 kg
    ],
)
def test_each_match_criterion(rule: dict[str, Any], the_order: Any, matched: bool) -> None:
    section = rules({"id": "r", "window": "any", **rule}, CATCH_ALL)
    d = route(the_order, inventory(STOCKED), NODES, section, NOON)
    assert d.status == "routed"
    assert d.rule_id == ("r" if matched else "other")
    if not matched:
        assert d.trace[0].outcome == "not_matched"
        assert "does not hold" in d.trace[0].detail or "is " in d.trace[0].detail


def test_unit_price_in_the_order_wins_over_catalogue_price() -> None:
    section = rules({"id": "big", "min_value": 100, "window": "any"}, CATCH_ALL)
    cheap_sofa = order(("SOFA", 1), unit_price="99.00")
    d = route(cheap_sofa, inventory(STOCKED), NODES, section, NOON)
    assert d.rule_id == "other"


def test_disabled_rule_is_skipped_and_says_so() -> None:
    section = rules({"id": "off", "enabled": False}, CATCH_ALL)
    d = route(order(("TEE", 1)), inventory(STOCKED), NODES, section, NOON)
    assert d.rule_id == "other"
    assert (d.trace[0].rule_id, d.trace[0].outcome) == ("off", "skipped")


def test_no_rule_matching_holds_the_order() -> None:
    section = rules({"id": "west-only", "match": "region=west"})
    d = route(order(("TEE", 1)), inventory(STOCKED), NODES, section, NOON)
    assert d.status == "held"
    assert d.summary == "held: no rule matched"


# -- rejection reasons --------------------------------------------------------------------


def test_every_rejection_reason_is_named_in_the_trace() -> None:
    section = rules(
        {
            "id": "r",
            "kinds": ["warehouse", "store"],
            "max_distance_km": 500,
            "window": "today",
            "fallback": "hold",
            "max_splits": 0,
        },
        nodes={"ST-BKN": {"enabled": False}, "ST-NYC": {"capacity": 10}},
    )
    stock = inventory(
        {("TEE", "WH-NJ"): 1, ("TEE", "WH-TX"): 9, ("TEE", "ST-NYC"): 9, ("TEE", "ST-DEN"): 9},
        ST_NYC=10,
    )
    d = route(order(("TEE", 2)), stock, NODES, section, ny(16))  # 16:00: past 15:00 cut-offs
    got = candidates(d)
    assert got == {
        "DS-OH": ("rejected", "wrong_kind"),
        "ST-BKN": ("rejected", "disabled"),
        "WH-TX": ("rejected", "too_far"),  # 2,200 km, and past its cut-off too
        "ST-NYC": ("rejected", "no_capacity"),
        "ST-DEN": ("rejected", "too_far"),
        "WH-NJ": ("rejected", "past_cutoff"),  # and 1 unit only
    }
    assert d.status == "held"
    wh_nj = next(c for c in d.trace[0].candidates if c.location_id == "WH-NJ")
    assert "past the 15:00 cut-off" in wh_nj.detail
    assert "TEE 1 after buffer 0, needs 2" in wh_nj.detail


def test_no_stock_after_buffer_and_closed_store() -> None:
    stock = inventory({("TEE", "ST-NYC"): 3, ("TEE", "ST-BKN"): 9})
    # 20:30 New York: Brooklyn closed at 20:00; ST-NYC has 3 but keeps 2 back.
    d = route(
        order(("TEE", 2), method="ship_from_store"),
        stock,
        NODES,
        rules(
            {"id": "r", "kinds": ["store"], "window": "today", "fallback": "hold"},
            buffers={"store": 2},
        ),
        ny(20, 30),
    )
    got = candidates(d)
    assert got["ST-NYC"] == ("rejected", "past_cutoff")  # 20:00 cut-off, and short of stock
    assert got["ST-BKN"] == ("rejected", "closed")
    nyc = next(c for c in d.trace[0].candidates if c.location_id == "ST-NYC")
    assert "TEE 1 after buffer 2, needs 2" in nyc.detail


def test_split_limit_is_a_reason_of_its_own() -> None:
    stock = inventory({("TEE", "WH-NJ"): 5, ("MUG", "WH-TX"): 5})
    single = rules({"id": "one", "window": "any", "max_splits": 0, "fallback": "hold"})
    d = route(order(("TEE", 1), ("MUG", 1)), stock, NODES, single, NOON)
    assert d.status == "held"
    assert candidates(d)["WH-NJ"] == ("rejected", "no_stock")
    wh_nj = next(c for c in d.trace[0].candidates if c.location_id == "WH-NJ")
    assert wh_nj.detail == "cannot fill everything: MUG 0 after buffer 0, needs 1"
    split = rules({"id": "two", "window": "any", "max_splits": 1})
    d = route(order(("TEE", 1), ("MUG", 1)), stock, NODES, split, NOON)
    assert d.status == "routed"
    assert sorted(d.nodes) == ["WH-NJ", "WH-TX"] and d.splits == 1
    assert {line.sku: line.location_id for line in d.lines} == {"TEE": "WH-NJ", "MUG": "WH-TX"}


# -- buffers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_buffer", "kind_buffer", "rule_buffer", "on_hand", "routable"),
    [
        (0, None, None, 2, True),
        (0, 1, None, 2, False),  # store keeps 1 back: 1 left, needs 2
        (2, 1, None, 4, True),  # the larger buffer (node's 2) applies: 2 left
        (2, 1, None, 3, False),
        (0, 3, 0, 2, True),  # the rule overrides the section's kind buffer
        (1, 3, 0, 2, False),  # ... but never goes below the node's own buffer
    ],
)
def test_buffers(
    node_buffer: int, kind_buffer: int | None, rule_buffer: int | None, on_hand: int, routable: bool
) -> None:
    nodes = [n.model_copy(update={"safety_buffer": node_buffer}) for n in NODES]
    rule: dict[str, Any] = {"id": "r", "kinds": ["store"], "window": "any", "fallback": "hold"}
    if rule_buffer is not None:
        rule["buffers"] = {"store": rule_buffer}
    section = rules(rule, buffers={} if kind_buffer is None else {"store": kind_buffer})
    d = route(order(("TEE", 2)), inventory({("TEE", "ST-NYC"): on_hand}), nodes, section, NOON)
    assert (d.status == "routed") is routable


def test_reserved_units_are_not_routable() -> None:
    section = rules({"id": "r", "window": "any", "fallback": "hold"})
    d = route(order(("TEE", 2)), inventory({("TEE", "WH-NJ"): (3, 2)}), NODES, section, NOON)
    assert d.status == "unfulfillable"
    assert d.summary == "TEE: no node has 2 after buffers (most: 1)"


# -- windows across time zones ----------------------------------------------------------------


def test_cutoff_across_time_zones_denver_still_ships_at_2030_new_york() -> None:
    section = rules(
        {"id": "today", "kinds": ["store", "warehouse"], "window": "today", "prep_minutes": 20}
    )
    stock = inventory({("TEE", "WH-NJ"): 9, ("TEE", "ST-NYC"): 9, ("TEE", "ST-DEN"): 9})
    d = route(order(("TEE", 1)), stock, NODES, section, ny(20, 30))  # 18:30 in Denver
    got = candidates(d)
    assert got["WH-NJ"] == ("rejected", "past_cutoff")
    assert got["ST-NYC"] == ("rejected", "past_cutoff")
    assert got["ST-DEN"] == ("chosen", None)
    (shipment,) = d.shipments
    assert shipment.at == datetime(2026, 11, 19, 2, 0, tzinfo=UTC)  # 19:00 Denver
    # at 21:30 New York (19:30 Denver) nobody ships today: the rule finds no plan
    d = route(order(("TEE", 1)), stock, NODES, section, ny(21, 30))
    assert candidates(d)["ST-DEN"] == ("rejected", "past_cutoff")
    assert d.status == "held"


def test_promise_window_prefers_a_node_that_keeps_the_promise() -> None:
    stock = inventory({("TEE", "WH-NJ"): 9, ("TEE", "WH-TX"): 9})
    section = rules({"id": "p", "kinds": ["warehouse"], "window": "promise"})
    # 15:30 New York = 14:30 Dallas: WH-NJ missed its 15:00 cut-off, WH-TX has not.
    d = route(order(("TEE", 1), promised=ny(17)), stock, NODES, section, ny(15, 30))
    assert d.nodes == ["WH-TX"] and not d.late
    assert candidates(d)["WH-NJ"][1] == "past_cutoff"
    assert d.promised_by == ny(16)  # 15:00 in Dallas


def test_any_window_routes_late_and_says_so() -> None:
    section = rules({"id": "a", "kinds": ["warehouse"], "window": "any"})
    stock = inventory({("TEE", "WH-NJ"): 9})
    d = route(order(("TEE", 1), promised=ny(17)), stock, NODES, section, ny(16))
    assert d.nodes == ["WH-NJ"] and d.late
    assert d.promised_by == ny(15, day=19)
    assert d.summary.endswith("LATE vs promise")


def test_next_window_fallback_for_shipping() -> None:
    section = rules(
        {"id": "n", "kinds": ["warehouse"], "window": "today", "fallback": "next_pickup_window"}
    )
    d = route(order(("TEE", 1)), inventory({("TEE", "WH-NJ"): 9}), NODES, section, ny(16))
    assert (d.status, d.fallback, d.nodes) == ("routed", "next_pickup_window", ["WH-NJ"])
    assert [t.relaxed for t in d.trace] == [False, True]


# -- BOPIS --------------------------------------------------------------------------------------

BOPIS = {
    "id": "bopis",
    "match": "method=bopis",
    "kinds": ["store"],
    "max_distance_km": 30,
    "window": "promise",
    "rank_by": ["distance"],
    "fallback": "next_pickup_window",
}
SHIP = {"id": "ship", "match": "method=ship", "kinds": ["warehouse"], "window": "any"}


def test_bopis_nearest_store_with_stock_in_a_valid_window() -> None:
    stock = inventory({("TEE", "ST-NYC"): 5, ("TEE", "ST-BKN"): 5, ("TEE", "ST-DEN"): 5})
    cart = order(("TEE", 1), method="bopis", location="ST-NYC")
    d = route(cart, stock, NODES, rules(BOPIS, SHIP), ny(14))
    assert (d.nodes, d.fallback, d.carrier) == (["ST-NYC"], None, None)
    assert d.pickup_window == (ny(15), ny(21))  # 60 min preparation, until closing
    assert [a.location_id for a in d.alternatives] == ["ST-BKN"]  # Denver is too far
    assert candidates(d)["ST-DEN"] == ("rejected", "too_far")


def test_bopis_skips_a_store_without_stock_for_the_next_nearest() -> None:
    stock = inventory({("TEE", "ST-NYC"): 1, ("TEE", "ST-BKN"): 5})
    cart = order(("TEE", 2), method="bopis", location="ST-NYC")
    d = route(cart, stock, NODES, rules(BOPIS, SHIP), ny(14))
    assert d.nodes == ["ST-BKN"]
    assert candidates(d)["ST-NYC"] == ("rejected", "no_stock")
    assert d.pickup_window == (ny(15), ny(20))


def test_bopis_after_hours_falls_back_to_the_next_pickup_window() -> None:
    stock = inventory({("TEE", "ST-NYC"): 5, ("TEE", "ST-BKN"): 5})
    cart = order(("TEE", 1), method="bopis", location="ST-NYC", promised=ny(21, 30))
    d = route(cart, stock, NODES, rules(BOPIS, SHIP), ny(20, 30))
    first = candidates(d, "bopis")  # the relaxed pass is the last one of the rule
    assert first["ST-NYC"] == ("chosen", None)
    strict = {c.location_id: c.reason for c in d.trace[0].candidates}
    assert strict["ST-NYC"] == "past_cutoff" and strict["ST-BKN"] == "closed"
    assert d.fallback == "next_pickup_window"
    # tomorrow: opens 09:00 + 60 min preparation, until 21:00
    assert d.pickup_window == (ny(10, day=19), ny(21, day=19))
    assert d.late  # it was promised for tonight
    (alt,) = d.alternatives
    assert (alt.location_id, alt.ready_at, alt.same_day) == ("ST-BKN", ny(11, day=19), False)
    assert "next window" in d.summary


def test_bopis_with_no_store_in_reach_offers_ship_to_home() -> None:
    stock = inventory({("TEE", "ST-DEN"): 5, ("TEE", "WH-NJ"): 5})
    cart = order(("TEE", 1), method="bopis", location="ST-NYC", promised=ny(18))
    d = route(cart, stock, NODES, rules(BOPIS, SHIP), ny(14))
    assert (d.status, d.method, d.requested_method) == ("routed", "ship", "bopis")
    assert (d.fallback, d.nodes, d.rule_id) == ("ship_to_home", ["WH-NJ"], "ship")
    assert d.carrier == "ground" and not d.late  # the pickup promise does not apply
    assert "ship to home" in d.summary
    assert [t.method for t in d.trace if t.candidates] == ["bopis", "bopis", "ship"]


def test_bopis_without_ship_to_home_is_held() -> None:
    stock = inventory({("TEE", "WH-NJ"): 5})
    cart = order(("TEE", 1), method="bopis", location="ST-NYC")
    d = route(cart, stock, NODES, rules(BOPIS, SHIP, bopis_ship_to_home=False), ny(14))
    assert d.status == "held"


def test_no_stock_anywhere_is_unfulfillable() -> None:
    cart = order(("TEE", 1), method="bopis", location="ST-NYC")
    d = route(cart, inventory({}), NODES, rules(BOPIS, SHIP), ny(14))
    assert d.status == "unfulfillable" and d.nodes == []
    assert d.summary == "TEE: no node has 1 after buffers (most: 0)"


def test_unknown_sku_is_unfulfillable_and_named() -> None:
    d = route(order(("NOPE", 1)), inventory({}), NODES, FulfillmentRouting(), NOON)
    assert (d.status, d.summary) == ("unfulfillable", "unknown SKU(s): NOPE")


def test_hold_fallback_stops_at_the_rule() -> None:
    section = rules(
        {"id": "stop", "kinds": ["dropship"], "window": "any", "fallback": "hold"}, CATCH_ALL
    )
    d = route(order(("TEE", 1)), inventory(STOCKED), NODES, section, NOON)
    assert (d.status, d.rule_id, d.fallback) == ("held", "stop", "hold")
    assert d.summary == "held by rule stop for a person to decide"


def test_next_rule_fallback_moves_on() -> None:
    section = rules({"id": "first", "kinds": ["dropship"], "window": "any"}, CATCH_ALL)
    d = route(order(("TEE", 1)), inventory(STOCKED), NODES, section, NOON)
    assert (d.status, d.rule_id) == ("routed", "other")
    assert [t.outcome for t in d.trace] == ["no_plan", "chosen"]


# -- ranking ------------------------------------------------------------------------------------

BOTH = {("TEE", "WH-NJ"): 9, ("TEE", "ST-DEN"): 9, ("MUG", "ST-DEN"): 9}


@pytest.mark.parametrize(
    ("rank_by", "nodes_cfg", "load", "the_order", "expected", "why"),
    [
        # same market first: WH-NJ (northeast) beats the Denver store for a northeast order
        (["same_market", "distance"], {}, {}, order(("TEE", 1)), ["WH-NJ"], None),
        # fewest splits first: Denver fills both lines; WH-NJ only one
        (
            ["fewest_splits", "distance"],
            {},
            {},
            order(("TEE", 1), ("MUG", 1)),
            ["ST-DEN"],
            "fills 1 line(s) vs 2",
        ),
        # distance first with splits allowed: WH-NJ takes the tee, Denver the mug
        (
            ["distance"],
            {},
            {},
            order(("TEE", 1), ("MUG", 1)),
            ["WH-NJ", "ST-DEN"],
            None,
        ),
        # manual rank beats distance
        (
            ["manual_rank", "distance"],
            {"ST-DEN": {"rank": 1}},
            {},
            order(("TEE", 1)),
            ["ST-DEN"],
            "manual rank (100 vs 1)",
        ),
        # remaining capacity: WH-NJ has 1 left of 10, Denver 10
        (
            ["remaining_capacity"],
            {"WH-NJ": {"capacity": 10}, "ST-DEN": {"capacity": 10}},
            {"WH_NJ": 9},
            order(("TEE", 1)),
            ["ST-DEN"],
            "remaining capacity (1 vs 10)",
        ),
    ],
)
def test_ranking_criteria_apply_in_order(
    rank_by: list[str],
    nodes_cfg: dict[str, Any],
    load: dict[str, int],
    the_order: Any,
    expected: list[str],
    why: str | None,
) -> None:
    section = rules(
        {"id": "r", "window": "any", "max_splits": 1, "rank_by": rank_by}, nodes=nodes_cfg
    )
    d = route(the_order, inventory(BOTH, **load), NODES, section, NOON)
    assert d.nodes == expected
    if why is not None:
        loser = next(c for c in d.trace[0].candidates if c.outcome == "eligible")
        assert why in loser.detail


def test_trace_says_why_a_nearer_node_lost() -> None:
    section = rules({"id": "r", "window": "any", "rank_by": ["distance"]})
    d = route(order(("TEE", 1)), inventory(BOTH), NODES, section, NOON)
    den = next(c for c in d.trace[0].candidates if c.location_id == "ST-DEN")
    assert den.outcome == "eligible"
    assert den.detail.startswith("ranked below WH-NJ on distance (")


# -- carriers -----------------------------------------------------------------------------------


def test_carrier_by_region_and_no_air_for_hazmat() -> None:
    section = rules(
        {"id": "r", "kinds": ["warehouse"], "window": "any"},
        carriers=[
            {"match": "market=northeast", "carrier": "FedEx 2Day", "air": True, "transit_days": 2},
            {"match": "product_type=aerosol", "carrier": "UPS Hazmat Ground", "transit_days": 5},
        ],
    )
    stock = inventory(STOCKED)
    d = route(order(("TEE", 1)), stock, NODES, section, NOON)
    assert d.carrier == "FedEx 2Day"
    assert d.shipments[0].deliver_by == d.shipments[0].at + timedelta(days=2)
    d = route(order(("TEE", 1), ("SPRAY", 1)), stock, NODES, section, NOON)
    assert d.carrier == "UPS Hazmat Ground"
    assert "FedEx 2Day skipped for WH-NJ: no air for hazmat" in d.notes
    d = route(order(("TEE", 1), region="west"), stock, NODES, section, NOON)
    assert d.carrier == "ground"  # the default carrier
    allowed = section.model_copy(update={"allow_air_for_hazmat": True})
    d = route(order(("SPRAY", 1)), stock, NODES, allowed, NOON)
    assert d.carrier == "FedEx 2Day"


# -- purity and sequences -------------------------------------------------------------------


def test_route_does_not_change_its_inputs_and_is_deterministic() -> None:
    stock = inventory({("TEE", "WH-NJ"): 5})
    before = dict(stock.levels)
    a = route(order(("TEE", 5)), stock, NODES, FulfillmentRouting(), NOON)
    b = route(order(("TEE", 5)), stock, list(reversed(NODES)), FulfillmentRouting(), NOON)
    assert dict(stock.levels) == before
    assert a == b


def test_route_sequence_sees_earlier_reservations() -> None:
    stock = inventory({("TEE", "WH-NJ"): 5, ("TEE", "WH-TX"): 5})
    section = rules({"id": "r", "kinds": ["warehouse"], "window": "any", "rank_by": ["distance"]})
    orders = [(order(("TEE", 3), order_id=f"o{n}"), NOON) for n in range(3)]
    decisions = route_sequence(orders, stock, NODES, section)
    assert [d.nodes for d in decisions] == [["WH-NJ"], ["WH-TX"], []]
    assert decisions[2].status == "unfulfillable"
    assert stock.levels[("TEE", "WH-NJ")].reserved == 0  # the caller's stock is untouched


def test_capacity_is_counted_through_a_sequence() -> None:
    stock = inventory({("TEE", "WH-NJ"): 50, ("TEE", "WH-TX"): 50})
    section = rules(
        {"id": "r", "kinds": ["warehouse"], "window": "any", "rank_by": ["distance"]},
        capacity={"warehouse": 2},
    )
    orders = [(order(("TEE", 1), order_id=f"o{n}"), NOON) for n in range(5)]
    decisions = route_sequence(orders, stock, NODES, section)
    assert [d.nodes[0] if d.nodes else None for d in decisions] == [
        "WH-NJ",
        "WH-NJ",
        "WH-TX",
        "WH-TX",
        None,
    ]
    assert candidates(decisions[4])["WH-NJ"] == ("rejected", "no_capacity")


def test_decision_round_trips_through_json() -> None:
    cart = order(("TEE", 1), method="bopis", location="ST-NYC")
    d = route(cart, inventory({("TEE", "ST-NYC"): 5}), NODES, rules(BOPIS), ny(20, 30))
    assert Decision.model_validate_json(d.model_dump_json()) == d


# -- geo --------------------------------------------------------------------------------------


def test_haversine_new_york_to_los_angeles() -> None:
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, abs=5)


def test_ship_and_pickup_slots_around_opening_and_closing() -> None:
    hours = OpeningHours(opens="09:00", closes="21:00", cutoff="15:00")
    tz = "America/New_York"
    hour = timedelta(hours=1)
    # before opening: work starts at 09:00, ships at the 15:00 cut-off
    slot = ship_slot(hours, tz, ny(7), hour)
    assert (slot.at, slot.same_day, slot.issue) == (ny(15), True, None)
    # 14:30: an hour of work does not fit before 15:00
    slot = ship_slot(hours, tz, ny(14, 30), hour)
    assert (slot.at, slot.same_day, slot.issue) == (ny(15, day=19), False, "past_cutoff")
    # pickup: ready an hour after opening; after the cut-off it is tomorrow
    slot = pickup_slot(hours, tz, ny(7), hour)
    assert (slot.at, slot.until) == (ny(10), ny(21))
    slot = pickup_slot(hours, tz, ny(15, 30), hour)
    assert (slot.at, slot.issue) == (ny(10, day=19), "past_cutoff")
    slot = pickup_slot(hours, tz, ny(22), hour)
    assert (slot.at, slot.issue) == (ny(10, day=19), "closed")


def test_overnight_hours_and_dst() -> None:
    night = OpeningHours(opens="22:00", closes="06:00")
    # 01:00 in New York on the 18th is inside the opening that started on the 17th
    slot = pickup_slot(night, "America/New_York", ny(1), timedelta(minutes=30))
    assert (slot.at, slot.until, slot.same_day) == (ny(1, 30), ny(6), True)
    # DST ends on 2026-11-01 in New York: 15:00 local is 20:00 UTC after, 19:00 UTC before
    day = OpeningHours(cutoff="15:00")
    before = ship_slot(day, "America/New_York", datetime(2026, 10, 31, 12, tzinfo=UTC), timedelta())
    after = ship_slot(day, "America/New_York", datetime(2026, 11, 2, 12, tzinfo=UTC), timedelta())
    assert before.at == datetime(2026, 10, 31, 19, tzinfo=UTC)
    assert after.at == datetime(2026, 11, 2, 20, tzinfo=UTC)


@pytest.mark.parametrize("tz", ["America/New_York", "America/Denver", "Europe/London", "UTC"])
def test_kept_slots_equal_fresh_ones_at_every_moment(tz: str) -> None:
    """A slot kept until the next breakpoint is the one computed anew, at any moment.

    Moments every 7 minutes over three days around the DST change, and on every opening,
    cut-off and closing (where strict and loose comparisons differ) and a microsecond
    either side; in order (so kept slots are reused) and back again (from the other side).
    """
    from rules import geo

    all_hours = [
        OpeningHours(opens="09:00", closes="21:00", cutoff="15:00"),
        OpeningHours(opens="22:00", closes="06:00"),
        OpeningHours(opens="08:00", closes="20:00"),
    ]
    preps = [timedelta(), timedelta(minutes=45), timedelta(hours=2)]
    start = datetime(2026, 10, 31, 0, tzinfo=UTC)
    tick = timedelta(microseconds=1)
    moments = [start + timedelta(minutes=7 * n) for n in range(3 * 24 * 60 // 7)]
    for hours in all_hours:
        for day in range(-1, 4):
            local = (start + timedelta(days=day)).date()
            for prep in preps:
                for point in geo._breakpoints(
                    hours.opens, hours.closes, hours.cutoff, tz, local, prep
                ):
                    moments.extend((point - tick, point, point + tick))
    moments.sort()
    for hours in all_hours:
        for prep in preps:
            for moment in [*moments, *reversed(moments)]:
                assert ship_slot(hours, tz, moment, prep) == geo._ship_slot(
                    hours, tz, moment, prep
                ), (hours, prep, moment)
                assert pickup_slot(hours, tz, moment, prep) == geo._pickup_slot(
                    hours, tz, moment, prep
                ), (hours, prep, moment)


# -- saving into the rules file -------------------------------------------------------------------


def test_saving_keeps_comments_and_touches_only_what_changed() -> None:
    source = "# shop rules\n[alert]\nx = 1\n" + EXAMPLE_TOML.replace(
        'id = "hazmat-ground"', 'id = "hazmat-ground"  # DOT: never by air'
    )
    doc = tomlkit.parse(source)
    section = FulfillmentRouting.model_validate(doc["fulfillment"].unwrap())
    update_fulfillment_document(doc, section)
    assert tomlkit.dumps(doc) == source  # nothing changed, nothing rewritten
    moved = list(section.rules)
    moved.insert(0, moved.pop(1))  # hazmat-ground first
    moved[1] = moved[1].model_copy(update={"enabled": False})
    moved.append(RoutingRule(id="west", match="region=west", kinds=["warehouse"]))
    draft = section.model_copy(update={"rules": moved, "bopis_service_km": 30.0})
    update_fulfillment_document(doc, draft)
    text = tomlkit.dumps(doc)
    assert FulfillmentRouting.model_validate(tomlkit.parse(text)["fulfillment"].unwrap()) == draft
    assert 'id = "hazmat-ground"  # DOT: never by air' in text
    assert "# a postal prefix: Manhattan" in text and text.startswith(
        "# shop rules\n[alert]\nx = 1\n"
    )
    assert text.index('"hazmat-ground"') < text.index('id = "bopis"') < text.index('id = "west"')
    assert "enabled = false" in text and "bopis_service_km = 30.0" in text


def test_saving_into_an_empty_document() -> None:
    doc = tomlkit.document()
    update_fulfillment_document(doc, FulfillmentRouting())
    assert tomlkit.dumps(doc) == ""
    section = FulfillmentRouting.model_validate(tomlkit.parse(EXAMPLE_TOML).unwrap()["fulfillment"])
    update_fulfillment_document(doc, section)
    again = tomlkit.parse(tomlkit.dumps(doc)).unwrap()["fulfillment"]
    assert FulfillmentRouting.model_validate(again) == section


def test_preparation_longer_than_opening_hours_rejects_the_node() -> None:
    section = rules({"id": "r", "kinds": ["store"], "window": "any", "prep_minutes": 11 * 60})
    stock = inventory({("TEE", "ST-NYC"): 5, ("TEE", "ST-BKN"): 5})
    d = route(order(("TEE", 1), method="ship_from_store"), stock, NODES, section, NOON)
    got = candidates(d)
    assert got["ST-BKN"] == ("rejected", "never_open")  # open 10 hours only
    assert got["ST-NYC"] == ("chosen", None)  # 09:00 + 11 h fits its 20:00 cut-off tomorrow
    assert d.promised_by == ny(20, day=19)


def test_kept_slot_follows_edited_hours_the_clock_and_the_day() -> None:
    """A kept slot is keyed on the hours' values and the local day, bounded by breakpoints."""
    tz = "America/New_York"
    hour = timedelta(hours=1)
    hours = OpeningHours(opens="09:00", closes="21:00", cutoff="15:00")
    assert ship_slot(hours, tz, ny(12), hour).at == ny(15)  # kept now
    edited = OpeningHours(opens="09:00", closes="21:00", cutoff="17:00")
    assert ship_slot(edited, tz, ny(12, 1), hour).at == ny(17)  # the edited node: anew
    assert ship_slot(hours, tz, ny(14, 1), hour).at == ny(15, day=19)  # past 15:00 - 1 h
    assert ship_slot(hours, tz, ny(12, day=19), hour).at == ny(15, day=19)  # the next day
    ready = pickup_slot(hours, tz, ny(12), hour)
    later = pickup_slot(hours, tz, ny(12, 10), hour)  # the kept branch, this moment
    assert (ready.at, later.at, later.detail) == (ny(13), ny(13, 10), "ready today 13:10–21:00")
