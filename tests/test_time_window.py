"""The plausible-time window on the clocks ``serve``, tests and replays hand it.

On the system clock (the default, or a :class:`SystemClock`'s ``now``, which is what
``serve`` passes) a time well inside the window is accepted against a recent sample of the
clock; near a bound, and on any other clock, the clock is read.  Both must give the
answers the definition gives: inside accepted, outside refused naming the bound.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from store.clock import FixedClock, SystemClock
from store.model import TimeWindow, parse_event, set_time_window


@pytest.fixture
def window() -> Iterator[None]:
    """Restore the window in force after a test sets its own."""
    previous = set_time_window(TimeWindow())
    yield
    set_time_window(previous)


def _event(ts: datetime) -> bytes:
    stamp = ts.isoformat().replace("+00:00", "Z")
    return (
        b'{"id": "e-1", "type": "stock.snapshot", "ts": "%s", "source": "wms",'
        b' "body": {"sku": "SKU-1", "location_id": "WH-NJ", "on_hand": 3}}' % stamp.encode()
    )


def test_a_system_clock_is_recognised_and_another_clock_is_not() -> None:
    assert TimeWindow().system
    assert TimeWindow(now=SystemClock().now).system
    assert not TimeWindow(now=FixedClock(datetime(2026, 1, 1, tzinfo=UTC)).now).system
    assert not TimeWindow(now=lambda: datetime.now(UTC)).system


@pytest.mark.usefixtures("window")
def test_serve_window_on_the_system_clock_keeps_the_definition() -> None:
    """``serve``'s window (a SystemClock's now): inside, near and beyond each bound."""
    set_time_window(
        TimeWindow(past=timedelta(days=2), future=timedelta(days=1), now=SystemClock().now)
    )
    now = datetime.now(UTC)
    for inside in (now, now - timedelta(days=1), now + timedelta(hours=20)):
        for _ in range(3):  # the first read takes the sample, the next use it
            assert parse_event(_event(inside)).ts == inside
    # Near a bound (within the sample's margin) the clock is read: still inside.
    assert parse_event(_event(now - timedelta(days=2) + timedelta(seconds=20)))
    with pytest.raises(ValidationError, match="more than 2 days before now"):
        parse_event(_event(now - timedelta(days=2, seconds=5)))
    with pytest.raises(ValidationError, match="more than 1 days after now"):
        parse_event(_event(now + timedelta(days=1, seconds=5)))


@pytest.mark.usefixtures("window")
def test_another_clock_is_read_not_the_system_sample() -> None:
    """A time plausible by the wall clock but not by the window's own clock is refused."""
    fixed = datetime(2020, 6, 1, tzinfo=UTC)
    set_time_window(TimeWindow(future=timedelta(days=1), now=FixedClock(fixed).now))
    wall = datetime.now(UTC)
    with pytest.raises(ValidationError, match="more than 1 days after now"):
        parse_event(_event(wall))
    assert parse_event(_event(fixed + timedelta(hours=3))).ts == fixed + timedelta(hours=3)
