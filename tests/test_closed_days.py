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


THANKSGIVING = geo.NthWeekday(month=11, weekday=3, nth=4)
"""The fourth Thursday of November."""


def test_weekday_rules_fall_on_the_hand_counted_dates() -> None:
    # US Thanksgiving from a calendar: 28 Nov 2024, 27 Nov 2025, 26 Nov 2026, 25 Nov 2027,
    # 23 Nov 2028 (November 2028 starts on a Wednesday: its 1st Thursday is the 2nd).
    assert [THANKSGIVING.on(y) for y in range(2024, 2029)] == [
        date(2024, 11, 28),
        date(2025, 11, 27),
        date(2026, 11, 26),
        date(2027, 11, 25),
        date(2028, 11, 23),
    ]
    memorial = geo.NthWeekday(month=5, weekday=0, nth=-1)  # the last Monday of May
    assert (memorial.on(2026), memorial.on(2027)) == (date(2026, 5, 25), date(2027, 5, 31))
    # February 2026 starts on a Sunday: four Mondays, no fifth.
    assert geo.NthWeekday(month=2, weekday=0, nth=5).on(2026) is None
    assert geo.NthWeekday(month=3, weekday=0, nth=5).on(2026) == date(2026, 3, 30)
    # The Friday after Thanksgiving is not always the fourth Friday (November 2030 starts
    # on a Friday): the offset counts from Thanksgiving itself.
    black_friday = geo.NthWeekday(month=11, weekday=3, nth=4, offset=1)
    assert black_friday.on(2030) == date(2030, 11, 29)  # Thanksgiving 2030 is the 28th
    assert geo.NthWeekday(month=11, weekday=4, nth=4).on(2030) == date(2030, 11, 22)
    # An offset across the year's end: the last Thursday of 2026 is the 31st.
    week_after = geo.NthWeekday(month=12, weekday=3, nth=-1, offset=7)
    assert week_after.holds(date(2027, 1, 7)) and not week_after.holds(date(2026, 12, 31))
    assert str(black_friday) == "4th Thu of Nov +1"
    assert str(week_after) == "last Thu of Dec +7"


def test_a_weekday_rule_closes_the_node_every_year() -> None:
    closed = Calendar(closed=frozenset({THANKSGIVING}))
    hour = timedelta(minutes=60)
    for eve, friday in (
        (datetime(2026, 11, 25, 21, tzinfo=UTC), datetime(2026, 11, 27, 20, tzinfo=UTC)),
        (datetime(2027, 11, 24, 21, tzinfo=UTC), datetime(2027, 11, 26, 20, tzinfo=UTC)),
    ):
        # Wednesday 16:00 in New York, past the 15:00 cut-off: not Thursday, Friday 15:00.
        slot = geo.ship_slot(HOURS, NY, eve, hour, closed)
        assert (slot.at, slot.issue) == (friday, "past_cutoff"), eve
        assert geo.ship_slot(HOURS, NY, eve, hour).at == friday - timedelta(days=1)
    on = geo.pickup_slot(HOURS, NY, datetime(2026, 11, 26, 15, tzinfo=UTC), hour, closed)
    assert on.detail == (
        "closed all day Thu 26 Nov (closed_days); next pickup Fri 27 Nov 10:00–21:00"
    )
    # A Thursday that is not the fourth is an ordinary day.
    third = geo.ship_slot(HOURS, NY, datetime(2026, 11, 19, 15, tzinfo=UTC), hour, closed)
    assert third.same_day


def test_special_hours_on_a_weekday_rule_and_their_precedence() -> None:
    black_friday = geo.NthWeekday(month=11, weekday=3, nth=4, offset=1)
    early = Calendar(
        hours=(
            (black_friday, "06:00", "23:00", "20:00"),
            (date(2027, 11, 26), "07:00", "22:00", None),  # 2027's own date wins
        )
    )
    hour = timedelta(minutes=60)
    # 05:00 on Friday 27 Nov 2026 in New York (10:00Z): ready at 07:00 (06:00 + the hour).
    pickup = geo.pickup_slot(HOURS, NY, datetime(2026, 11, 27, 10, tzinfo=UTC), hour, early)
    assert (pickup.at, pickup.until) == (
        datetime(2026, 11, 27, 12, tzinfo=UTC),
        datetime(2026, 11, 28, 4, tzinfo=UTC),
    )
    # 2027: the date's own hours open at 07:00, so ready at 08:00 (13:00Z).
    own = geo.pickup_slot(HOURS, NY, datetime(2027, 11, 26, 10, tzinfo=UTC), hour, early)
    assert own.at == datetime(2027, 11, 26, 13, tzinfo=UTC)
    # The Thursday before keeps the daily hours: opens 09:00, ready 10:00 (15:00Z).
    thursday = geo.pickup_slot(HOURS, NY, datetime(2026, 11, 26, 10, tzinfo=UTC), hour, early)
    assert thursday.at == datetime(2026, 11, 26, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("4th Thu of Nov", THANKSGIVING),
        ("fourth Thursday in November", THANKSGIVING),
        ("4TH THU OF NOV", THANKSGIVING),
        ("last Mon of May", geo.NthWeekday(month=5, weekday=0, nth=-1)),
        ("4th Thu of Nov +1", geo.NthWeekday(month=11, weekday=3, nth=4, offset=1)),
        ("1st Mon of Sep - 3 days", geo.NthWeekday(month=9, weekday=0, nth=1, offset=-3)),
    ],
)
def test_weekday_rules_read_from_the_rules_file(text: str, rule: geo.NthWeekday) -> None:
    loaded = parse_rules(
        f'alert = []\n[fulfillment]\nclosed_days = {{ store = ["{text}"] }}\n'
        f"[fulfillment.special_hours.warehouse]\n"
        f'"{text}" = {{ opens = "06:00", closes = "20:00" }}\n',
        Path("rules.toml"),
    )
    assert loaded.fulfillment.closed_days == {"store": [rule]}
    assert list(loaded.fulfillment.special_hours["warehouse"]) == [rule]
    # Written back (the console's saves) in the canonical text, which reads as the same rule.
    dumped = loaded.fulfillment.model_dump(mode="json")
    assert dumped["closed_days"] == {"store": [str(rule)]}
    assert FulfillmentRouting.model_validate(dumped) == loaded.fulfillment


@pytest.mark.parametrize(
    "text", ["6th Thu of Nov", "4th Thu of Novem", "4th Thu of Nov +32", "4th Thx of Nov", "Thu"]
)
def test_a_bad_weekday_rule_names_the_field(text: str) -> None:
    with pytest.raises(RulesFileError) as err:
        parse_rules(
            f'alert = []\n[fulfillment]\nclosed_days = {{ store = ["{text}"] }}\n',
            Path("rules.toml"),
        )
    message = str(err.value)
    assert message.startswith("rules.toml:3: fulfillment.closed_days.store"), message
    assert f"got {text!r}" in message and "4th Thu of Nov" in message, message


def test_a_weekday_rule_moves_the_order_off_the_closed_store() -> None:
    """Through the router: the store shut on Thanksgiving, every year, not a week later."""
    stock = inventory({("TEE", n.location_id): 5 for n in NODES})
    pickup = order(("TEE", 1), method="bopis", location="ST-NYC")
    rules = FulfillmentRouting.model_validate({"closed_days": {"store": ["4th Thu of Nov"]}})
    for noon in (datetime(2026, 11, 26, 17, tzinfo=UTC), datetime(2027, 11, 25, 17, tzinfo=UTC)):
        decision = route(pickup, stock, NODES, rules, noon)
        nyc = [c for t in decision.trace for c in t.candidates if c.location_id == "ST-NYC"]
        assert nyc and all(f"closed all day Thu {noon.day} Nov" in c.detail for c in nyc), nyc
        later = route(pickup, stock, NODES, rules, noon + timedelta(days=7))
        assert later.nodes == ["ST-NYC"], later.summary
        assert later.pickup_window is not None and (
            later.pickup_window[0].date() == (noon + timedelta(days=7)).date()
        )
