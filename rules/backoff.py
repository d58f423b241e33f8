"""Exponential back-off, the one policy every retrying part uses.

Feeds reconnecting to a stream or a poll endpoint use full jitter (a random delay up to the
ceiling, so many clients do not retry in step); notification receivers retry without jitter
(the operator sees "retrying in 4 s" and it is 4 s).  The n-th delay's ceiling is
``min(cap, base × factor^(n-1))``.
"""

from __future__ import annotations

import random


class Backoff:
    """Exponential back-off, with or without full jitter.

    :meth:`delay` is pure (the delay after the n-th consecutive failure); :meth:`next_delay`
    and :meth:`reset` keep the count for a caller with one connection to retry.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 60.0,
        rng: random.Random | None = None,
        *,
        factor: float = 2.0,
        jitter: bool = True,
    ) -> None:
        """A policy.

        Args:
            base: Ceiling of the first delay, in seconds.
            cap: Longest delay, in seconds.
            rng: Source of the jitter (inject a seeded one in tests).
            factor: Growth of the ceiling per failure.
            jitter: Full jitter (uniform between 0 and the ceiling) or exactly the ceiling.
        """
        self.base = base
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.rng = rng or random.Random()
        self.attempt = 0
        """Failures counted by :meth:`next_delay` since the last :meth:`reset`."""

    def ceiling(self, attempt: int) -> float:
        """The longest delay after the ``attempt``-th consecutive failure (1-based)."""
        return float(min(self.cap, self.base * self.factor ** max(0, attempt - 1)))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th consecutive failure (1-based)."""
        top = self.ceiling(attempt)
        return self.rng.uniform(0.0, top) if self.jitter else top

    def next_delay(self) -> float:
        """Count one more failure and return the delay before the next attempt."""
        self.attempt += 1
        return self.delay(self.attempt)

    def reset(self) -> None:
        """Back to the first delay (after an attempt that worked)."""
        self.attempt = 0
