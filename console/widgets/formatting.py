"""Pure text formatting for the console: numbers, ages, local times and trend arrows.

Nothing here imports ``textual``; every function takes plain values and returns strings, so
the panels stay declarative and the rules for what a reader sees are tested in one place.
``None`` always renders as an em dash: it means "no data", never zero.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

DASH = "—"
"""What a missing number looks like."""
UP = "▲"
DOWN = "▼"


def fmt_int(value: int | None) -> str:
    """An integer with thousands separators, or a dash."""
    return DASH if value is None else f"{value:,}"


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A float with ``digits`` decimals and thousands separators, or a dash."""
    return DASH if value is None else f"{value:,.{digits}f}"


def fmt_money(value: float | None) -> str:
    """A sales figure: whole units from 1,000 up, two decimals below."""
    if value is None:
        return DASH
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def fmt_rate(rate: float | None, digits: int = 0) -> str:
    """A 0..1 ratio as a percentage (``0.934`` → ``93%``), or a dash."""
    return DASH if rate is None else f"{rate * 100:.{digits}f}%"


AGE_DAYS_FROM = 3
"""From this many days on an age reads in whole days (``287 d``), not days and hours."""


def fmt_minutes(minutes: float | None) -> str:
    """An age or a duration in minutes, compact: ``45m``, ``3h05``, ``2d04h``, ``287 d``."""
    if minutes is None:
        return DASH
    total = max(0, round(minutes))
    if total < 60:
        return f"{total}m"
    hours, mins = divmod(total, 60)
    if hours < 48:
        return f"{hours}h{mins:02d}"
    days, hours = divmod(hours, 24)
    if days >= AGE_DAYS_FROM:
        return f"{days:,} d"
    return f"{days}d{hours:02d}h"


def fmt_age_seconds(seconds: float) -> str:
    """An age in seconds: ``45s`` under a minute, else as :func:`fmt_minutes` (``287 d``)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    return fmt_minutes(whole // 60)


def fmt_hours_signed(hours: float | None) -> str:
    """A signed delay in hours (``+3.5h``, ``-0.4h``), or a dash."""
    return DASH if hours is None else f"{hours:+.1f}h"


def fmt_days(days: float | None, none_text: str = DASH) -> str:
    """Days of cover: ``0.4d``, ``12d``; ``none_text`` when there is no figure."""
    if days is None:
        return none_text
    if days < 10:
        return f"{days:.1f}d"
    return f"{days:,.0f}d"


def fmt_pick(p50: float | None, p90: float | None) -> str:
    """Pick time median and p90 in minutes as ``12/45m``."""
    if p50 is None and p90 is None:
        return DASH
    left = DASH if p50 is None else f"{p50:.0f}"
    right = DASH if p90 is None else f"{p90:.0f}"
    return f"{left}/{right}m"


def pct_change(value: float | None, baseline: float | None) -> float | None:
    """Relative change of ``value`` against ``baseline`` in percent, None without a baseline."""
    if value is None or baseline is None or baseline == 0:
        return None
    return (value - baseline) / abs(baseline) * 100.0


def fmt_trend(value: float | None, baseline: float | None) -> str:
    """Arrow and percentage against a baseline: ``▲ 5%``, ``▼ 23%``, ``±0%``; else a dash."""
    change = pct_change(value, baseline)
    if change is None:
        return DASH
    if abs(change) < 0.5:
        return "±0%"
    arrow = UP if change > 0 else DOWN
    return f"{arrow} {abs(change):.0f}%"


def _date(local: datetime, local_now: datetime) -> str:
    """``Dec 02``, with the year when it is not the current one (``Jan 10 2025``)."""
    if local.year != local_now.year:
        return local.strftime("%b %d %Y")
    return local.strftime("%b %d")


def to_local(moment: datetime, tz: tzinfo) -> datetime:
    """A stored UTC time in the operator's zone."""
    return moment.astimezone(tz)


def fmt_clock(moment: datetime | None, tz: tzinfo, *, seconds: bool = False) -> str:
    """Local time of day, ``14:05`` (or ``14:05:09``), or a dash."""
    if moment is None:
        return DASH
    return to_local(moment, tz).strftime("%H:%M:%S" if seconds else "%H:%M")


def fmt_when(moment: datetime | None, tz: tzinfo, now: datetime) -> str:
    """A coming local time, relative to ``now``.

    ``now`` if already past, ``14:05`` today, ``Tue 14:05`` within a week, else ``Dec 02``
    (``Jan 10 2027`` in another year).
    """
    if moment is None:
        return DASH
    if moment <= now:
        return "now"
    local = to_local(moment, tz)
    local_now = to_local(now, tz)
    if local.date() == local_now.date():
        return local.strftime("%H:%M")
    if abs((local.date() - local_now.date()).days) < 7:
        return local.strftime("%a %H:%M")
    return _date(local, local_now)


def fmt_past(moment: datetime | None, tz: tzinfo, now: datetime) -> str:
    """A local time gone by: ``14:05`` today, ``Tue 14:05`` within a week, else ``Oct 21``.

    A day of another year carries its year: ``Jan 10 2025``.
    """
    if moment is None:
        return DASH
    local = to_local(moment, tz)
    local_now = to_local(now, tz)
    if local.date() == local_now.date():
        return local.strftime("%H:%M")
    if 0 < (local_now.date() - local.date()).days < 7:
        return local.strftime("%a %H:%M")
    return _date(local, local_now)


def fmt_day(moment: datetime | None, tz: tzinfo, now: datetime) -> str:
    """A local date relative to ``now``: ``today``, ``Tue 25``, ``Dec 02``, ``Jan 10 2027``."""
    if moment is None:
        return DASH
    local = to_local(moment, tz)
    local_now = to_local(now, tz)
    if local.date() == local_now.date():
        return "today"
    if abs((local.date() - local_now.date()).days) < 7:
        return local.strftime("%a %d")
    return _date(local, local_now)


def fmt_header_clock(moment: datetime, tz: tzinfo) -> str:
    """The header clock: ``Mon 24 Nov 08:30 CST`` (minutes only: an idle console stays quiet)."""
    local = to_local(moment, tz)
    zone = local.strftime("%Z")
    return local.strftime("%a %d %b %H:%M") + (f" {zone}" if zone else "")


def fmt_metric(fmt: str, value: float | None, digits: int | None = None) -> str:
    """A value in a registry format (:data:`store.registry.Format`), or a dash.

    ``int`` ``1,204``; ``minutes`` ``3h05``; ``hours`` ``+3.5h``; ``rate`` ``93%`` (0-1);
    ``ratio`` ``80%`` of the rolling value; ``number`` and ``z`` ``12.3``; ``money``
    ``1,204`` / ``12.50``; ``flag`` ``yes`` / ``no``.  ``digits`` overrides the decimals
    of ``rate``, ``ratio``, ``number`` and ``z``.
    """
    if value is None:
        return DASH
    if fmt == "int":
        return fmt_int(round(value))
    if fmt == "minutes":
        return fmt_minutes(value)
    if fmt == "hours":
        return fmt_hours_signed(value)
    if fmt in ("rate", "ratio"):
        return fmt_rate(value, digits or 0)
    if fmt == "money":
        return fmt_money(value)
    if fmt == "flag":
        return "yes" if value else "no"
    return fmt_num(value, 1 if digits is None else digits)
