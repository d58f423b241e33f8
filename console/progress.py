"""Progress of a long command on a terminal: a bar, events, rate and time left, on one line.

Long commands (``ingest``, ``import-history``) call a :class:`TerminalProgress` with the
number of events done after each chunk.  On a terminal it redraws one line on stderr; when
stderr is not a terminal the command prints one summary line at the end instead (see
:func:`summary_line`), so logs and pipes get no carriage returns.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_CELLS = 24
"""Width of the bar, in cells (the whole line stays within 80 columns)."""


def progress_line(
    task: str, done: int, total: int | None, elapsed: float, *, cells: int = BAR_CELLS
) -> str:
    """One line: ``omniops ingest [#####.....]  41% 210,000/511,000 events, 9,800/s, 31 s left``.

    Args:
        task: The command's name.
        done: Events done so far.
        total: The expected number of events (an estimate), or None when unknown: the line
            then shows the count and rate only.
        elapsed: Seconds since the task began.
        cells: Width of the bar.
    """
    rate = done / max(elapsed, 1e-9)
    if not total:
        return f"omniops {task}: {done:,} events, {rate:,.0f}/s, {elapsed:.0f} s"
    total = max(total, done)
    share = done / total
    filled = int(share * cells)
    bar = "#" * filled + "." * (cells - filled)
    left = (total - done) / rate if rate > 0 else None
    eta = f", {_duration(left)} left" if left is not None and done < total else ""
    return f"omniops {task} [{bar}] {share:4.0%} {done:,}/{total:,} events, {rate:,.0f}/s{eta}"


def summary_line(task: str, done: int, elapsed: float) -> str:
    """The line printed at the end when stderr is not a terminal."""
    rate = done / max(elapsed, 1e-9)
    return f"omniops {task}: {done:,} events in {elapsed:.1f} s, {rate:,.0f}/s"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TerminalProgress:
    """A live progress line on a terminal; set :attr:`total` when the size becomes known."""

    def __init__(self, task: str, *, total: int | None = None, stream: TextIO | None = None):
        self.task = task
        self.total = total
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.shown = False

    def __call__(self, done: int) -> None:
        """Redraw the line for ``done`` events."""
        line = progress_line(self.task, done, self.total, time.monotonic() - self.started)
        self.stream.write(f"\r{line}\033[K")
        self.stream.flush()
        self.shown = True

    def set_total(self, total: int) -> None:
        """The expected number of events, once known (a bar and time left appear)."""
        self.total = total or None

    def close(self) -> None:
        """Clear the line, so the summary that follows starts clean."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
