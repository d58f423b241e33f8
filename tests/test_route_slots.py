"""A slot kept by a routing :class:`rules.routing.candidates.Network` is the one computed anew.

The network keeps each node's ship and pickup slot for the interval in which it holds
(:func:`rules.geo.slot_span`: between breakpoints, within the local day), across requests.
Here every kept answer is compared with :func:`rules.geo._ship_slot` /
:func:`rules.geo._pickup_slot` computed from nothing, over moments every 7 minutes through
four days around the DST change, on every breakpoint and local midnight and a microsecond
either side, in order (so kept slots are reused) and back again, in four zones and with
overnight hours; and the routing of an order at such moments gives the decision a fresh
network gives.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from rules import geo
from rules.routing import candidates
from rules.routing.candidates import Network
from rules.routing.config import FulfillmentRouting
from rules.routing.router import route
from store.model import LocationBody, OpeningHours
from tests.routing_world import NODES, inventory, node, order

HOURS = [
    ("09:00", "21:00", "15:00"),
    ("22:00", "06:00", None),
    ("08:00", "20:00", None),
    ("00:00", "23:59", None),
]
ZONES = ["America/New_York", "America/Denver", "Europe/London", "UTC"]
PREPS = [0, 45, 120]
START = datetime(2026, 10, 30, 0, tzinfo=UTC)


def _nodes() -> list[LocationBody]:
    return [
        node(f"N-{z}-{h}", "store", "northeast", 40.0, -74.0, tz, *hours)
        for z, tz in enumerate(ZONES)
        for h, hours in enumerate(HOURS)
    ]


def _moments(nodes: list[LocationBody]) -> list[datetime]:
    tick = timedelta(microseconds=1)
    moments = [START + timedelta(minutes=7 * n) for n in range(4 * 24 * 60 // 7)]
    for n in nodes:
        for day in range(-1, 5):
            local = (START + timedelta(days=day)).date()
            midnight = datetime.combine(local, time(0), geo.zone(n.timezone)).astimezone(UTC)
            points = [midnight]
            for prep in PREPS:
                h = n.hours
                points += geo._breakpoints(
                    h.opens, h.closes, h.cutoff, n.timezone, local, timedelta(minutes=prep)
                )
            for point in points:
                moments.extend((point - tick, point, point + tick))
    return sorted(set(moments))


@pytest.mark.parametrize("pickup", [False, True])
def test_kept_slots_equal_fresh_ones_at_every_moment(pickup: bool) -> None:
    nodes = _nodes()
    net = Network(FulfillmentRouting(), nodes)
    moments = _moments(nodes)
    fresh = geo._pickup_slot if pickup else geo._ship_slot
    for n in nodes:
        for prep in PREPS:
            minutes = timedelta(minutes=prep)
            for moment in [*moments, *reversed(moments)]:
                assert net.slot(n, pickup, prep, moment) == fresh(
                    n.hours, n.timezone, moment, minutes
                ), (n.location_id, prep, moment)


@pytest.mark.parametrize("pickup", [False, True])
def test_a_moment_asked_again_gets_the_fresh_slot(pickup: bool) -> None:
    """On a breakpoint the slot is kept for that very instant: asked again, and then a tick on."""
    nodes = _nodes()
    net = Network(FulfillmentRouting(), nodes)
    fresh = geo._pickup_slot if pickup else geo._ship_slot
    tick = timedelta(microseconds=1)
    for n in nodes:
        for prep in PREPS:
            minutes = timedelta(minutes=prep)
            for moment in _moments([n]):
                for at in (moment, moment, moment + tick, moment, moment - tick):
                    assert net.slot(n, pickup, prep, at) == fresh(
                        n.hours, n.timezone, at, minutes
                    ), (n.location_id, prep, at)


def test_a_node_that_never_opens_raises_every_time() -> None:
    never = node("N-X", "store", "northeast", 40.0, -74.0, "UTC", "09:00", "10:00")
    net = Network(FulfillmentRouting(), [never])
    for _ in range(2):
        with pytest.raises(ValueError):
            net.slot(never, True, 120, START)


def test_routing_through_kept_slots_decides_as_a_fresh_network() -> None:
    """One network over two days of moments decides as a new network at each moment."""
    rules = FulfillmentRouting()
    stock = inventory({("TEE", n.location_id): 5 for n in NODES})
    orders = [order(("TEE", 1)), order(("TEE", 2), method="bopis", location="ST-NYC")]
    tick = timedelta(microseconds=1)
    moments = [START + timedelta(minutes=13 * n) for n in range(2 * 24 * 60 // 13)]
    for n in NODES:
        h = n.hours
        local = (START + timedelta(days=1)).date()
        for point in geo._breakpoints(h.opens, h.closes, h.cutoff, n.timezone, local, timedelta()):
            moments.extend((point - tick, point, point + tick))
    moments.sort()
    for o in orders:
        for moment in moments:
            kept = route(o, stock, NODES, rules, moment)  # the shared network, slots kept
            geo._ship_kept.clear()
            geo._pickup_kept.clear()
            geo._pickup_live.clear()
            other = rules.model_copy()  # another rules object: a network of its own
            anew = route(o, stock, NODES, other, moment)
            candidates._NETWORKS.pop((id(other), tuple(map(id, NODES))), None)
            assert kept == anew, (o.method, moment)


def test_edited_hours_are_a_new_network() -> None:
    hours = OpeningHours(opens="09:00", closes="21:00", cutoff="15:00")
    edited = OpeningHours(opens="09:00", closes="21:00", cutoff="17:00")
    before = node("N-1", "warehouse", "northeast", 40.0, -74.0, "America/New_York")
    before = before.model_copy(update={"hours": hours})
    after = before.model_copy(update={"hours": edited})
    rules = FulfillmentRouting()
    noon = datetime(2026, 11, 18, 17, tzinfo=UTC)
    assert Network(rules, [before]).slot(before, False, 0, noon).at == noon + timedelta(hours=3)
    assert Network(rules, [after]).slot(after, False, 0, noon).at == noon + timedelta(hours=5)
