"""Distances and time windows for routing: haversine, opening hours, cut-offs, pickup windows.

Everything here is pure (no I/O) and works in UTC in and out; a node's opening hours and
cut-off are read in the node's own time zone, so "20:30 in New York" is 18:30 in Denver,
before a Denver store's 19:00 cut-off.

Two questions are answered for a node at a moment ``now``:

* :func:`ship_slot`: when would an order released now leave the node?  Work starts at
  ``now`` (or at opening, if the node is not open yet); when the work fits before the
  day's cut-off (``hours.cutoff``, or closing time when there is none) the order ships
  that day, at the cut-off; otherwise at the next day's cut-off.
* :func:`pickup_slot`: when could a store have an order ready for pickup?  Preparation
  starts at ``now`` (or at opening) and must start no later than the store's cut-off and
  end before closing; otherwise it is ready the next day at opening + preparation.  The
  pickup window is from ready until closing that day.

Opening hours are daily (the canonical model has no weekly calendar); a closing time at
or before the opening time means the node closes after midnight.  A node can be **closed**
on given local dates (holidays, stock-takes: ``closed_days`` in the rules file, see
:mod:`rules.routing.config`): such a day has no opening at all, so a slot falls on the
next day the node opens, and a night opening that starts on a closed day does not happen.
A day can also have **special hours** (``special_hours``: Christmas Eve closing early)
instead of the daily ones (:class:`Calendar`).  A day is a local date, a day of every
year (``"--12-25"``) or a weekday rule (:class:`NthWeekday`: Thanksgiving is the fourth
Thursday of November, Black Friday the day after).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from store.model import OpeningHours

EARTH_RADIUS_KM = 6371.0088
"""Mean Earth radius (IUGG), the usual constant for haversine distances."""

SlotIssue = Literal["closed", "past_cutoff"]
"""Why a slot is not on the node's current day."""


@lru_cache(maxsize=65536)
def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres between two points given in degrees."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """A cached :class:`ZoneInfo` (constructing one per call is measurably slow)."""
    return ZoneInfo(name)


@lru_cache(maxsize=256)
def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


@dataclass(frozen=True)
class DayTimes:
    """A node's opening, cut-off and closing instants on one local day, in UTC."""

    day: date
    """The node's local date."""
    opens: datetime
    cutoff: datetime
    """The order cut-off; closing time when the node has none."""
    closes: datetime
    has_cutoff: bool
    closed: bool = False
    """A closed day (``closed_days``): the node does not open at all on it."""


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th", -1: "last"}


@dataclass(frozen=True)
class NthWeekday:
    """A day of every year by weekday rule, e.g. ``4th Thu of Nov`` (US Thanksgiving).

    The ``nth`` (1 to 5, or -1 for the last) ``weekday`` (0 is Monday) of ``month``, moved
    by ``offset`` days: ``4th Thu of Nov +1`` is the Friday after Thanksgiving, whatever
    the date of the fourth Friday.  A year whose month has no 5th such weekday has no day.
    """

    month: int
    weekday: int
    nth: int
    offset: int = 0

    def on(self, year: int) -> date | None:
        """The rule's date in ``year`` (None when that month has no such weekday)."""
        if self.nth > 0:
            first = date(year, self.month, 1)
            day = first + timedelta(days=(self.weekday - first.weekday()) % 7 + 7 * (self.nth - 1))
            if day.month != self.month:
                return None
        else:
            following = date(year + self.month // 12, self.month % 12 + 1, 1)
            last = following - timedelta(days=1)
            day = last - timedelta(days=(last.weekday() - self.weekday) % 7)
        return day + timedelta(days=self.offset)

    def holds(self, day: date) -> bool:
        """True when local ``day`` is the rule's day (an offset may cross a year's end)."""
        return any(self.on(year) == day for year in (day.year - 1, day.year, day.year + 1))

    def __str__(self) -> str:
        text = f"{_ORDINALS[self.nth]} {WEEKDAYS[self.weekday]} of {MONTHS[self.month - 1]}"
        return f"{text} {self.offset:+d}" if self.offset else text


CalendarDay = date | str | NthWeekday
"""A local date, a ``"--MM-DD"`` day of every year (:data:`YEARLY`) or a weekday rule."""


@dataclass(frozen=True)
class Calendar:
    """A node's exceptions to its daily hours by local date (``closed_days``, ``special_hours``)."""

    closed: frozenset[CalendarDay] = frozenset()
    """Local days the node does not open at all: dates, ``"--MM-DD"`` texts (that day every
    year, :data:`YEARLY`) and weekday rules (:class:`NthWeekday`)."""
    hours: tuple[tuple[CalendarDay, str, str, str | None], ...] = ()
    """Special hours: (day, opens, closes, cut-off) instead of the daily ones; a date's own
    entry wins over a yearly one, a yearly date over a weekday rule, and a closed day stays
    closed."""


YEARLY = "--%m-%d"
"""How a day of every year is written (ISO 8601's ``--MM-DD``): ``--12-25``."""


ALWAYS_OPEN = Calendar()
"""No exceptions: the node keeps its daily hours every day."""


def day_times(hours: OpeningHours, tz: str, day: date) -> DayTimes:
    """Opening, cut-off and closing of local ``day`` at a node in zone ``tz`` (DST-aware)."""
    return _day_times(hours.opens, hours.closes, hours.cutoff, tz, day)


# Keyed on the hours' values, the zone and the local day, so an edited node or a new local
# day is a new key: nothing to invalidate.  Bounded: old days fall out.
@lru_cache(maxsize=8192)
def _day_times(
    opens_at: str, closes_at: str, cutoff_at: str | None, tz: str, day: date
) -> DayTimes:
    zinfo = zone(tz)
    opens = datetime.combine(day, _hhmm(opens_at), zinfo)
    closes = datetime.combine(day, _hhmm(closes_at), zinfo)
    if closes <= opens:
        closes = datetime.combine(day + timedelta(days=1), _hhmm(closes_at), zinfo)
    if cutoff_at is not None:
        cutoff = datetime.combine(day, _hhmm(cutoff_at), zinfo)
        if cutoff < opens:
            cutoff = datetime.combine(day + timedelta(days=1), _hhmm(cutoff_at), zinfo)
        cutoff = min(cutoff, closes)
    else:
        cutoff = closes
    return DayTimes(
        day=day,
        opens=opens.astimezone(UTC),
        cutoff=cutoff.astimezone(UTC),
        closes=closes.astimezone(UTC),
        has_cutoff=cutoff_at is not None,
    )


@lru_cache(maxsize=4096)
def _week(
    opens_at: str,
    closes_at: str,
    cutoff_at: str | None,
    tz: str,
    today: date,
    calendar: Calendar = ALWAYS_OPEN,
) -> tuple[DayTimes, tuple[DayTimes, ...]]:
    """Yesterday and the eight days from ``today`` (the days a slot can fall on)."""
    special = {d: (o, c, k) for d, o, c, k in calendar.hours if not isinstance(d, NthWeekday)}
    ruled = [(d, (o, c, k)) for d, o, c, k in calendar.hours if isinstance(d, NthWeekday)]
    closed = calendar.closed
    closed_rules = [d for d in closed if isinstance(d, NthWeekday)]

    def day(n: int) -> DayTimes:
        local = today + timedelta(days=n)
        yearly = local.strftime(YEARLY)
        own = special.get(local) or special.get(yearly)
        if own is None:
            own = next((hours for rule, hours in ruled if rule.holds(local)), None)
        if own is not None:
            times = _day_times(*own, tz, local)
        else:
            times = _day_times(opens_at, closes_at, cutoff_at, tz, local)
        if local in closed or yearly in closed or any(r.holds(local) for r in closed_rules):
            return replace(times, closed=True)
        return times

    return day(-1), tuple(day(n) for n in range(8))


def local_day(now: datetime, tz: str) -> date:
    """The node's local date at ``now``."""
    return now.astimezone(zone(tz)).date()


@dataclass(frozen=True)
class Slot:
    """When a node can ship an order, or have it ready for pickup."""

    at: datetime
    """Ship-by (the cut-off it leaves at) or ready-for-pickup time, UTC."""
    until: datetime
    """End of the window: the same cut-off for shipping, closing time for pickup."""
    same_day: bool
    """True when the slot is on the node's local day at ``now``."""
    issue: SlotIssue | None
    """Why it is not the same day (None when it is)."""
    detail: str
    """A short human explanation in the node's local time."""


@lru_cache(maxsize=8192)
def _local_hm(moment: datetime, tz: str) -> str:
    return moment.astimezone(zone(tz)).strftime("%H:%M")


@lru_cache(maxsize=8192)
def _local_day_hm(moment: datetime, tz: str) -> str:
    return moment.astimezone(zone(tz)).strftime("%a %d %b %H:%M")


def _days_from(
    hours: OpeningHours, tz: str, now: datetime, calendar: Calendar
) -> Iterator[DayTimes]:
    """The node's day at ``now`` (an overnight day still open counts) and the next week.

    Closed days are among them (marked): the first one says why today has no slot.
    """
    today = local_day(now, tz)
    yesterday, days = _week(hours.opens, hours.closes, hours.cutoff, tz, today, calendar)
    if yesterday.closes > now and not yesterday.closed:  # opened yesterday, overnight
        yield yesterday
    yield from days


_NEVER = datetime.min.replace(tzinfo=UTC)
_EVER = datetime.max.replace(tzinfo=UTC)

_SlotKey = tuple[str, str, str | None, str, timedelta, date, Calendar]
_KEPT_SLOTS = 4096
"""Slots kept per function (one per node's hours, zone, preparation and local day)."""
_ship_kept: dict[_SlotKey, tuple[datetime, datetime, Slot]] = {}
_pickup_kept: dict[_SlotKey, tuple[datetime, datetime, Slot]] = {}
_pickup_live: dict[_SlotKey, tuple[datetime, datetime, Slot]] = {}
"""Pickups ready today ``prep`` after ``now``: the branch is kept, the moment filled in."""


@lru_cache(maxsize=4096)
def _breakpoints(
    opens_at: str,
    closes_at: str,
    cutoff_at: str | None,
    tz: str,
    today: date,
    prep: timedelta,
    calendar: Calendar = ALWAYS_OPEN,
) -> tuple[datetime, ...]:
    """Every instant of local ``today``'s week where a slot's answer can change, sorted.

    :func:`ship_slot` and :func:`pickup_slot` compare ``now`` only with these (the days'
    opening, cut-off and closing, and the latest start that still fits ``prep`` before
    them); so between two neighbours, on one local day, their answer does not depend on
    ``now`` unless it holds ``now`` itself (a pickup ready at ``now + prep``).  A closed
    day's times are never compared with ``now``: they are no breakpoints.
    """
    yesterday, days = _week(opens_at, closes_at, cutoff_at, tz, today, calendar)
    points: set[datetime] = set()
    for dt in (yesterday, *days):
        if dt.closed:
            continue
        points.update((dt.opens, dt.cutoff, dt.closes, dt.cutoff - prep, dt.closes - prep))
    return tuple(sorted(points))


def _kept_slot(
    kept: dict[_SlotKey, tuple[datetime, datetime, Slot]], key: _SlotKey, now: datetime
) -> Slot | None:
    found = kept.get(key)
    if found is not None and found[0] < now < found[1]:
        return found[2]
    return None


def _keep_slot(
    kept: dict[_SlotKey, tuple[datetime, datetime, Slot]], key: _SlotKey, now: datetime, slot: Slot
) -> None:
    """Keep ``slot`` for the open interval between the breakpoints around ``now``."""
    points = _breakpoints(key[0], key[1], key[2], key[3], key[5], key[4], key[6])
    at = bisect_left(points, now)
    if at < len(points) and points[at] == now:
        return  # on a breakpoint: a strict and a loose comparison may disagree here
    lo = points[at - 1] if at else _NEVER
    hi = points[at] if at < len(points) else _EVER
    if len(kept) >= _KEPT_SLOTS:
        kept.clear()
    kept[key] = (lo, hi, slot)


def ship_slot(
    hours: OpeningHours, tz: str, now: datetime, prep: timedelta, calendar: Calendar = ALWAYS_OPEN
) -> Slot:
    """When an order released at ``now`` leaves a node with ``hours`` in zone ``tz``.

    The order ships at the first cut-off that the preparation (``prep``), started at
    ``now`` or at opening, fits before, on a day the node opens (see ``calendar``).  The
    answer only changes at the instants of :func:`_breakpoints` (and at local midnight),
    so it is kept until the next of them.
    """
    key = (hours.opens, hours.closes, hours.cutoff, tz, prep, local_day(now, tz), calendar)
    slot = _kept_slot(_ship_kept, key, now)
    if slot is None:
        slot = _ship_slot(hours, tz, now, prep, calendar)
        _keep_slot(_ship_kept, key, now, slot)
    return slot


def _closed_today(first: DayTimes) -> str:
    return f"closed all day {first.day:%a %d %b} (closed_days)"


def _never(what: str, hours: OpeningHours) -> ValueError:
    return ValueError(
        f"{what} fits on no day of the week ahead ({hours}; closed_days, special_hours)"
    )


def _ship_slot(
    hours: OpeningHours, tz: str, now: datetime, prep: timedelta, calendar: Calendar = ALWAYS_OPEN
) -> Slot:
    first: DayTimes | None = None
    for dt in _days_from(hours, tz, now, calendar):
        first = first or dt
        if dt.closed:
            continue
        start = max(now, dt.opens)
        if start + prep <= dt.cutoff:
            if dt is first:
                return Slot(
                    dt.cutoff, dt.cutoff, True, None, f"ships today at {_local_hm(dt.cutoff, tz)}"
                )
            issue: SlotIssue = "closed" if first.closed or now >= first.closes else "past_cutoff"
            if first.closed:
                why = _closed_today(first)
            elif issue == "closed":
                why = f"closed since {_local_hm(first.closes, tz)}"
            elif now > first.cutoff:
                why = f"past the {_local_hm(first.cutoff, tz)} cut-off"
            else:
                why = (
                    f"{int(prep.total_seconds() // 60)} min of work does not fit before the "
                    f"{_local_hm(first.cutoff, tz)} cut-off"
                )
            return Slot(
                dt.cutoff, dt.cutoff, False, issue, f"{why}; ships {_local_day_hm(dt.cutoff, tz)}"
            )
    if calendar != ALWAYS_OPEN:
        raise _never(f"the work ({prep}) before cut-off", hours)
    raise ValueError(f"the work ({prep}) never fits between opening and cut-off ({hours})")


def pickup_slot(
    hours: OpeningHours, tz: str, now: datetime, prep: timedelta, calendar: Calendar = ALWAYS_OPEN
) -> Slot:
    """When a store could have an order placed at ``now`` ready for pickup, and until when.

    Preparation starts at ``now`` or at opening; it must start by the store's cut-off (if it
    has one) and end by closing time; otherwise the order is ready the next day.  A slot
    whose preparation starts at an opening (not at ``now``) is kept like :func:`ship_slot`'s.
    A day the ``calendar`` closes has no pickups; one with special hours has those.
    """
    key = (hours.opens, hours.closes, hours.cutoff, tz, prep, local_day(now, tz), calendar)
    slot = _kept_slot(_pickup_kept, key, now)
    if slot is not None:
        return slot
    live = _kept_slot(_pickup_live, key, now)
    if live is not None:
        return live_pickup(live, now, prep, tz)
    slot = _pickup_slot(hours, tz, now, prep, calendar)
    if slot.at - prep != now:  # started at an opening: the same until the next breakpoint
        _keep_slot(_pickup_kept, key, now, slot)
    elif slot.same_day:  # started now, ready today: this branch until the next breakpoint
        _keep_slot(_pickup_live, key, now, slot)
    return slot


def live_pickup(kept: Slot, now: datetime, prep: timedelta, tz: str) -> Slot:
    """A pickup slot kept as "started now, ready today" (:func:`pickup_slot`), at ``now``."""
    ready = now + prep
    return Slot(
        ready,
        kept.until,
        True,
        None,
        f"ready today {_local_hm(ready, tz)}–{_local_hm(kept.until, tz)}",
    )


def is_live_pickup(slot: Slot, now: datetime, prep: timedelta) -> bool:
    """Whether a :func:`pickup_slot` at ``now`` is ready ``prep`` after ``now`` (not kept as is)."""
    return slot.at - prep == now


@lru_cache(maxsize=1024)
def _day_span(tz: str, day: date) -> tuple[datetime, datetime] | None:
    """The instants that start local ``day`` and the next one in ``tz`` (None: not found)."""
    zinfo = zone(tz)
    start = datetime.combine(day, time(0), zinfo).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), zinfo).astimezone(UTC)
    tick = timedelta(microseconds=1)
    for moment, local in ((start, day), (start - tick, None), (end - tick, day), (end, None)):
        got = local_day(moment, tz)
        if (local is not None and got != local) or (local is None and got == day):
            return None  # a zone whose midnight is skipped or repeated: do not guess
    return start, end


def slot_span(
    hours: OpeningHours, tz: str, now: datetime, prep: timedelta, calendar: Calendar = ALWAYS_OPEN
) -> tuple[datetime, datetime] | None:
    """The open interval around ``now`` in which :func:`ship_slot` and :func:`pickup_slot` hold.

    Between two neighbouring :func:`_breakpoints` and within ``now``'s local day their
    answer is the same (a pickup ready ``prep`` after ``now`` keeps its case, the moment
    filled in: :func:`live_pickup`), so a caller may keep a slot for the interval and
    compare two instants per lookup.  None when ``now`` is on a breakpoint (a strict and a
    loose comparison may disagree there) or the local day's bounds are unclear.
    """
    today = local_day(now, tz)
    day = _day_span(tz, today)
    if day is None:
        return None
    points = _breakpoints(hours.opens, hours.closes, hours.cutoff, tz, today, prep, calendar)
    at = bisect_left(points, now)
    if at < len(points) and points[at] == now:
        return None
    lo = points[at - 1] if at else _NEVER
    hi = points[at] if at < len(points) else _EVER
    # The day starts at day[0] inclusive: "lo < now" with lo one tick before it.
    return max(lo, day[0] - timedelta(microseconds=1)), min(hi, day[1])


def _pickup_slot(
    hours: OpeningHours, tz: str, now: datetime, prep: timedelta, calendar: Calendar = ALWAYS_OPEN
) -> Slot:
    first: DayTimes | None = None
    for dt in _days_from(hours, tz, now, calendar):
        first = first or dt
        if dt.closed:
            continue
        start = max(now, dt.opens)
        if start <= dt.cutoff and start + prep <= dt.closes:
            ready = start + prep
            if dt is first:
                return Slot(
                    ready,
                    dt.closes,
                    True,
                    None,
                    f"ready today {_local_hm(ready, tz)}–{_local_hm(dt.closes, tz)}",
                )
            issue: SlotIssue
            if first.closed:
                issue, why = "closed", _closed_today(first)
            elif now >= first.closes:
                issue, why = "closed", f"closed since {_local_hm(first.closes, tz)}"
            elif first.has_cutoff and now > first.cutoff:
                issue, why = "past_cutoff", f"past the {_local_hm(first.cutoff, tz)} pickup cut-off"
            else:
                issue = "closed"
                why = (
                    f"closes {_local_hm(first.closes, tz)}, too soon for "
                    f"{int(prep.total_seconds() // 60)} min of preparation"
                )
            return Slot(
                ready,
                dt.closes,
                False,
                issue,
                f"{why}; next pickup {_local_day_hm(ready, tz)}–{_local_hm(dt.closes, tz)}",
            )
    if calendar != ALWAYS_OPEN:
        raise _never(f"preparation ({prep})", hours)
    raise ValueError(f"preparation ({prep}) never fits in the opening hours ({hours})")
