"""Closed days and special hours (``closed_days``, ``special_hours`` in ``[fulfillment]``).

Hand-computed slots around a holiday in New York (ship and pickup, before, on and after
it, across a cut-off, an early-closing Christmas Eve), kept slots equal fresh ones with
closed days and special hours in four zones, a node closed all week, a decision that
moves off a closed store, and the rules file's errors naming the field.  The next
``/route`` answer after a rules file closes a node is in ``tests/test_route_cache.py``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from rules import geo
from rules.file import RulesFileError, parse_rules
from rules.geo import Calendar
from rules.routing.candidates import Network, calendar
from rules.routing.config import FulfillmentRouting, NodeSettings
from rules.routing.router import route
from store.model import OpeningHours
from tests.routing_world import NODES, inventory, order
from tests.test_route_slots import PREPS, _moments, _nodes

NY = "America/New_York"
HOURS = OpeningHours(opens="09:00", closes="21:00", cutoff="15:00")
XMAS = Calendar(closed=frozenset({date(2026, 12, 25)}))  # a Friday


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    """A New York wall-clock time in December 2026 (EST, UTC−5), as UTC."""
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC) + timedelta(hours=5)


def test_shipping_skips_the_closed_day() -> None:
    hour = timedelta(minutes=60)
    # The day before, in time: ships that day as ever.
    before = geo.ship_slot(HOURS, NY, ny(24, 10), hour, XMAS)
    assert (before.at, before.same_day) == (ny(24, 15), True)
    # The day before, past the cut-off: not on the 25th but on the 26th at its cut-off.
    late = geo.ship_slot(HOURS, NY, ny(24, 16), hour, XMAS)
    assert (late.at, late.same_day, late.issue) == (ny(26, 15), False, "past_cutoff")
    assert late.detail == "past the 15:00 cut-off; ships Sat 26 Dec 15:00"
    # On the day itself, even in what would be opening hours: closed, the 26th.
    on = geo.ship_slot(HOURS, NY, ny(25, 10), hour, XMAS)
    assert (on.at, on.same_day, on.issue) == (ny(26, 15), False, "closed")
    assert on.detail == "closed all day Fri 25 Dec (closed_days); ships Sat 26 Dec 15:00"
    # Without the closed day the same moment ships that day.
    assert geo.ship_slot(HOURS, NY, ny(25, 10), hour).at == ny(25, 15)


def test_pickup_skips_the_closed_day() -> None:
    hour = timedelta(minutes=60)
    on = geo.pickup_slot(HOURS, NY, ny(25, 10), hour, XMAS)
    assert (on.at, on.until, on.same_day, on.issue) == (ny(26, 10), ny(26, 21), False, "closed")
    assert on.detail == (
        "closed all day Fri 25 Dec (closed_days); next pickup Sat 26 Dec 10:00–21:00"
    )
    late = geo.pickup_slot(HOURS, NY, ny(24, 16), hour, XMAS)
    assert (late.at, late.issue) == (ny(26, 10), "past_cutoff")
    # Two closed days in a row: the 27th.
    both = Calendar(closed=frozenset({date(2026, 12, 25), date(2026, 12, 26)}))
    assert geo.pickup_slot(HOURS, NY, ny(25, 10), hour, both).at == ny(27, 10)


@pytest.mark.parametrize("pickup", [False, True])
def test_kept_slots_equal_fresh_ones_with_closed_days(pickup: bool) -> None:
    nodes = _nodes()
    # START of tests.test_route_slots is 2026-10-30: close the 31st and 2 Nov (around the
    # DST change) for every store, and 1 Nov for some of them besides.
    rules = FulfillmentRouting(
        closed_days={"store": [date(2026, 10, 31), date(2026, 11, 2)]},
        special_hours={
            "store": {
                date(2026, 11, 1): OpeningHours(opens="10:00", closes="16:00", cutoff="14:00")
            }
        },
        nodes={
            **{n.location_id: NodeSettings(closed_days=[date(2026, 11, 1)]) for n in nodes[::3]},
            **{  # a night opening of their own on the 3rd, and on a closed day (it stays shut)
                n.location_id: NodeSettings(
                    special_hours={
                        date(2026, 11, 3): OpeningHours(opens="23:00", closes="05:00"),
                        date(2026, 11, 2): OpeningHours(opens="08:00", closes="12:00"),
                    }
                )
                for n in nodes[1::3]
            },
        },
    )
    net = Network(rules, nodes)
    moments = _moments(nodes)
    fresh = geo._pickup_slot if pickup else geo._ship_slot
    for n in nodes:
        days = calendar(n, rules)
        assert date(2026, 10, 31) in days.closed and days.hours
        for prep in PREPS:
            minutes = timedelta(minutes=prep)
            for moment in [*moments, *reversed(moments)]:
                assert net.slot(n, pickup, prep, moment) == fresh(
                    n.hours, n.timezone, moment, minutes, days
                ), (n.location_id, prep, moment)


def test_a_node_closed_all_week_is_never_open_with_the_reason() -> None:
    week = Calendar(closed=frozenset(date(2026, 12, 21) + timedelta(days=n) for n in range(10)))
    with pytest.raises(ValueError, match="fits on no day of the week ahead"):
        geo.ship_slot(HOURS, NY, ny(22, 10), timedelta(minutes=30), week)


def test_an_order_moves_off_the_closed_store() -> None:
    stock = inventory({("TEE", n.location_id): 5 for n in NODES})
    pickup = order(("TEE", 1), method="bopis", location="ST-NYC")
    noon = datetime(2026, 11, 18, 17, tzinfo=UTC)  # Wednesday, noon in New York
    open_ = route(pickup, stock, NODES, FulfillmentRouting(), noon)
    assert open_.nodes == ["ST-NYC"] and open_.pickup_window is not None
    assert open_.pickup_window[0].date() == noon.date()
    rules = FulfillmentRouting(nodes={"ST-NYC": NodeSettings(closed_days=[date(2026, 11, 18)])})
    closed = route(pickup, stock, NODES, rules, noon)
    assert closed.nodes != ["ST-NYC"] or (
        closed.pickup_window is not None and closed.pickup_window[0] > noon + timedelta(hours=12)
    ), closed.summary
    nyc = [c for t in closed.trace for c in t.candidates if c.location_id == "ST-NYC"]
    assert nyc and all("closed all day Wed 18 Nov" in c.detail for c in nyc), nyc


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('closed_days = { store = ["2026-13-01"] }', "fulfillment.closed_days.store[#1]"),
        ("closed_days = { shop = [2026-12-25] }", "fulfillment.closed_days.shop"),
        ('[fulfillment.nodes.ST-NYC]\nclosed_days = ["xmas"]', "nodes.ST-NYC.closed_days[#1]"),
        (  # bounded: a rules file cannot make every slot lookup hash a huge calendar
            "closed_days = { store = [" + ", ".join(["2026-01-01"] * 1001) + "] }",
            "fulfillment.closed_days.store: List should have at most 1000 items",
        ),
    ],
)
def test_a_bad_closed_day_names_the_field(text: str, field: str) -> None:
    with pytest.raises(RulesFileError) as err:
        parse_rules(f"alert = []\n[fulfillment]\n{text}\n", Path("rules.toml"))
    assert field in str(err.value), str(err.value)


def test_dates_read_as_toml_dates_and_as_text() -> None:
    loaded = parse_rules(
        'alert = []\n[fulfillment]\nclosed_days = { store = [2026-11-26, "2026-12-25"] }\n',
        Path("rules.toml"),
    )
    assert loaded.fulfillment.closed_days == {"store": [date(2026, 11, 26), date(2026, 12, 25)]}


EVE = Calendar(
    closed=frozenset({date(2026, 12, 25)}), hours=((date(2026, 12, 24), "09:00", "14:00", "12:00"),)
)
"""Christmas Eve closing at 14:00 with a 12:00 cut-off, Christmas Day closed."""


def test_special_hours_replace_the_days_own() -> None:
    hour = timedelta(minutes=60)
    morning = geo.ship_slot(HOURS, NY, ny(24, 10), hour, EVE)
    assert (morning.at, morning.same_day) == (ny(24, 12), True)  # the eve's 12:00 cut-off
    late = geo.ship_slot(HOURS, NY, ny(24, 13), hour, EVE)  # past it: the 26th (25th shut)
    assert (late.at, late.issue) == (ny(26, 15), "past_cutoff")
    assert late.detail == "past the 12:00 cut-off; ships Sat 26 Dec 15:00"
    pickup = geo.pickup_slot(HOURS, NY, ny(24, 11), hour, EVE)
    assert (pickup.at, pickup.until, pickup.same_day) == (ny(24, 12), ny(24, 14), True)
    after = geo.pickup_slot(HOURS, NY, ny(24, 13), hour, EVE)
    assert (after.at, after.issue) == (ny(26, 10), "past_cutoff")
    # The day before keeps the daily hours.
    assert geo.ship_slot(HOURS, NY, ny(23, 14), hour, EVE).at == ny(23, 15)


def test_a_nodes_own_special_hours_win_over_its_kinds() -> None:
    store = next(n for n in NODES if n.location_id == "ST-NYC")
    eve = date(2026, 12, 24)
    own = NodeSettings(special_hours={eve: OpeningHours(opens="08:00", closes="13:00")})
    rules = FulfillmentRouting(
        closed_days={"store": [date(2026, 12, 25)]},
        special_hours={"store": {eve: OpeningHours(opens="09:00", closes="17:00")}},
        nodes={"ST-NYC": own},
    )
    assert calendar(store, rules) == Calendar(
        closed=frozenset({date(2026, 12, 25)}), hours=((eve, "08:00", "13:00", None),)
    )
    other = next(n for n in NODES if n.location_id == "ST-BKN")
    assert calendar(other, rules).hours == ((eve, "09:00", "17:00", None),)
    warehouse = next(n for n in NODES if n.kind == "warehouse")
    assert calendar(warehouse, rules) == geo.ALWAYS_OPEN


def test_a_bad_special_hour_names_the_field() -> None:
    text = '[fulfillment.special_hours.store]\n"2026-12-24" = { opens = "9am" }'
    with pytest.raises(RulesFileError) as err:
        parse_rules(f"alert = []\n{text}\n", Path("rules.toml"))
    assert "fulfillment.special_hours.store.2026-12-24.opens" in str(err.value), str(err.value)


def test_a_day_of_every_year_is_closed_every_year() -> None:
    yearly = Calendar(closed=frozenset({"--12-25"}))
    hour = timedelta(minutes=60)
    for year in (2026, 2027, 2030):
        eve = datetime(year, 12, 24, 21, tzinfo=UTC)  # 16:00 in New York, past the cut-off
        slot = geo.ship_slot(HOURS, NY, eve, hour, yearly)
        assert slot.at == datetime(year, 12, 26, 20, tzinfo=UTC), year  # the 26th, 15:00
    # The 25th of another month is an ordinary day.
    assert geo.ship_slot(HOURS, NY, ny(24, 16) - timedelta(days=30), hour, yearly).same_day is False
    assert geo.ship_slot(HOURS, NY, ny(25, 10) - timedelta(days=30), hour, yearly).same_day


def test_a_dates_own_hours_win_over_the_yearly_ones() -> None:
    both = Calendar(
        hours=(
            ("--12-24", "09:00", "17:00", "15:00"),
            (date(2026, 12, 24), "09:00", "13:00", "11:00"),
        )
    )
    hour = timedelta(minutes=60)
    assert geo.ship_slot(HOURS, NY, ny(24, 9), hour, both).at == ny(24, 11)  # 2026's own
    next_eve = datetime(2027, 12, 24, 14, tzinfo=UTC)  # 09:00 in New York
    assert geo.ship_slot(HOURS, NY, next_eve, hour, both).at == next_eve + timedelta(hours=6)


def test_yearly_days_read_from_the_rules_file() -> None:
    loaded = parse_rules(
        'alert = []\n[fulfillment]\nclosed_days = { store = ["--12-25", "--02-29", 2026-11-26] }\n'
        '[fulfillment.special_hours.store]\n"--12-24" = { opens = "09:00", closes = "17:00" }\n',
        Path("rules.toml"),
    )
    routing = loaded.fulfillment
    assert routing.closed_days == {"store": ["--12-25", "--02-29", date(2026, 11, 26)]}
    store = next(n for n in NODES if n.location_id == "ST-NYC")
    days = calendar(store, routing)
    assert days.closed == {"--12-25", "--02-29", date(2026, 11, 26)}
    assert days.hours == (("--12-24", "09:00", "17:00", None),)
    for bad in ('"--02-30"', '"--13-01"', "2026-12-25T10:00:00"):
        with pytest.raises(RulesFileError, match="or a day of every year"):
            parse_rules(
                f"alert = []\n[fulfillment]\nclosed_days = {{ store = [{bad}] }}\n",
                Path("rules.toml"),
            )
