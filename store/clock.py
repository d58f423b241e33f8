"""Injected clocks: everything that needs "now" asks one of these.

* :class:`SystemClock`: wall time, for ``serve`` and ``console`` on a live store.
* :class:`ReplayClock`: simulated time that runs ``speed`` times faster than the wall
  from a chosen start; the demo runs the whole app (feeds, metrics, header) on it.
* :class:`FixedClock`: a clock tests move by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

CALENDAR = (datetime(1900, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC))
"""Moments a user may name (``report --at``, a CSV row's time): any window of up to a
hundred years around one, and any promise after it, is still a date."""


def within_calendar(moment: datetime) -> datetime | None:
    """An aware ``moment`` in UTC if it lies within :data:`CALENDAR`, else None.

    Year 1 with a positive offset is before year 1 in UTC: None too, not an OverflowError.
    """
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        return None
    return utc if CALENDAR[0] <= utc < CALENDAR[1] else None


class Clock(Protocol):
    """Anything that can tell the current UTC time."""

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        """The current wall time in UTC."""
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told to (tests, ``report --at``)."""

    def __init__(self, at: datetime) -> None:
        self._at = at.astimezone(UTC)

    def now(self) -> datetime:
        """The time last set."""
        return self._at

    def set(self, at: datetime) -> None:
        """Jump to ``at``."""
        self._at = at.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move forward by ``delta``."""
        self._at += delta


class ReplayClock:
    """Simulated time: ``start`` plus ``speed`` × the wall time elapsed since creation.

    The default speed of 60 plays one simulated hour per wall minute.
    """

    def __init__(
        self, start: datetime, speed: float = 60.0, *, wall_epoch: float | None = None
    ) -> None:
        """Start at ``start`` now, or (``wall_epoch``) at the Unix time another clock started.

        ``wall_epoch`` lets a second process follow a clock the first one recorded
        (:mod:`store.replay_clock`): both then tell the same simulated time.
        """
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.start = start.astimezone(UTC)
        self.speed = speed
        now_epoch = time.time()
        self.wall_epoch = now_epoch if wall_epoch is None else wall_epoch
        """Unix time at which the simulated time was ``start``."""
        self._wall0 = time.monotonic() - (now_epoch - self.wall_epoch)

    def now(self) -> datetime:
        """The simulated time now."""
        return self.start + timedelta(seconds=(time.monotonic() - self._wall0) * self.speed)

    def wall_seconds_until(self, at: datetime) -> float:
        """Wall seconds to wait until simulated time reaches ``at`` (0 if past)."""
        return max(0.0, (at - self.now()).total_seconds() / self.speed)
