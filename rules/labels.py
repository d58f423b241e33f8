"""Field types the rules file shares: label-matcher lists and durations.

:mod:`rules.matchers` parses the matcher grammar (``location=~WH-.*, channel!=pos``);
this module makes it a pydantic field, so alert scopes, routes, inhibition rules and
silences all read the same syntax the panels' filter prompt takes.  A matcher field
accepts one string (comma-separated matchers) or a list of such strings (all must hold).

Durations are written as in Prometheus: ``30s``, ``5m``, ``1h30m``, ``2d``; a bare number
is seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from rules.matchers import Matcher, format_matchers, matches_all, parse_matchers

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

MAX_DURATION = timedelta(days=36_500)
"""The longest duration a rules file may give (100 years): "now" plus or minus it stays a
date, so no window, wait or repeat can overflow the engine's arithmetic."""

_TOO_LONG = "a duration is at most 36500d (100 years)"


def _bounded(seconds: float) -> timedelta:
    if math.isnan(seconds):
        raise ValueError("a duration is text like 5m, or a number of seconds (not nan)")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(_TOO_LONG)
    return timedelta(seconds=seconds)


def parse_duration(text: str) -> timedelta:
    """``1h30m`` → 90 minutes.  Units: ms, s, m, h, d, w; ``0`` is allowed.

    Raises:
        ValueError: with the accepted syntax.
    """
    raw = text.strip()
    if raw in ("0", ""):
        if raw == "":
            raise ValueError("empty duration; write e.g. 30s, 5m, 1h30m or 0")
        return timedelta(0)
    pos = 0
    seconds = 0.0
    for found in _DURATION_PART.finditer(raw):
        if found.start() != pos:
            break
        seconds += float(found.group(1)) * _UNIT_SECONDS[found.group(2)]
        pos = found.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(f"bad duration {text!r}; write e.g. 30s, 5m, 1h30m, 2d or 0")
    return _bounded(seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text :func:`parse_duration` reads back: ``1h30m``, ``45s``, ``0s``."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    parts: list[str] = []
    sign = "-" if total < 0 else ""
    remaining = abs(total)
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        count = int(remaining // size)
        if count:
            parts.append(f"{count}{unit}")
            remaining -= count * size
    if remaining >= 0.001:
        parts.append(f"{round(remaining * 1000)}ms")
    return sign + "".join(parts)


def _validate_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        if abs(value) > MAX_DURATION:
            raise ValueError(_TOO_LONG)
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is text like 5m, or a number of seconds")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value)
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError("a duration is text like 5m, or a number of seconds")


Duration = Annotated[
    timedelta,
    PlainValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["30s", "5m", "1h30m"]}),
]
"""A duration field: text like ``5m`` in the file, a :class:`~datetime.timedelta` in code."""


def parse_matcher_field(value: Any) -> tuple[Matcher, ...]:
    """A matcher field's value: one string, a list of strings, or matchers already parsed.

    Raises:
        ValueError: naming the matcher that is wrong.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(parse_matchers(value))
    if isinstance(value, (list, tuple)):
        out: list[Matcher] = []
        for item in value:
            if isinstance(item, Matcher):
                out.append(item)
            elif isinstance(item, str):
                out.extend(parse_matchers(item))
            else:
                raise ValueError("matchers are strings like 'location=~WH-.*'")
        return tuple(out)
    raise ValueError("matchers are a string like 'location=~WH-.*, channel!=pos' or a list")


def _serialise_matchers(value: tuple[Matcher, ...]) -> str:
    return format_matchers(value)


MatcherList = Annotated[
    tuple[Matcher, ...],
    PlainValidator(parse_matcher_field),
    PlainSerializer(_serialise_matchers, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "examples": ["location=~WH-.*, channel!=pos"],
        }
    ),
]
"""Label matchers, all of which must hold (an empty list matches everything)."""


LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_label_names(labels: Mapping[str, str]) -> None:
    """Refuse label names the matcher grammar could not address.

    Raises:
        ValueError: naming the bad label.
    """
    for name in labels:
        if not LABEL_NAME.match(name):
            raise ValueError(f"bad label name {name!r}: letters, digits and _ only")


def labels_text(labels: Mapping[str, str]) -> str:
    """Labels as sorted matcher text (``a=1, b=2``); parses back with ``parse_matchers``."""
    return format_matchers([Matcher(k, "=", v) for k, v in sorted(labels.items())])


__all__ = [
    "MAX_DURATION",
    "Duration",
    "MatcherList",
    "check_label_names",
    "format_duration",
    "labels_text",
    "matches_all",
    "parse_duration",
    "parse_matcher_field",
]
