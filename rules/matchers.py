r"""Label matchers: the small filter language operators type into the console.

A filter is a comma-separated list of matchers, all of which must hold (AND)::

    location=WH-TX, category=~app.*, channel!=pos

Each matcher is ``name OP value`` with one of four operators, as in Prometheus:

* ``=``  the label equals the value;
* ``!=`` the label does not equal the value;
* ``=~`` the label matches the regular expression (anchored at both ends);
* ``!~`` the label does not match the regular expression (anchored).

A label a row does not have counts as the empty string, so ``channel!=pos`` keeps rows
without a channel.  A value may be wrapped in double quotes to hold commas or spaces
(``reason="too small, runs short"``; ``\"`` and ``\\`` escape inside quotes).  Values are
case-sensitive; use ``=~(?i)wh-tx`` to ignore case.

This module is pure: no I/O and no ``textual`` import, so it is shared by the console and
by rule evaluation and tested on its own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

# A user's pattern like ``[[a]`` compiles with a FutureWarning about what a later Python
# may read differently; printed on stderr it would scribble over the console's screen.
# The pattern means today what it is matched with today: the warning is not shown.
warnings.filterwarnings("ignore", message="Possible (nested )?set", category=FutureWarning)

MatchOp = Literal["=", "!=", "=~", "!~"]

_MATCHER_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_SYNTAX_HELP = "expected name=value, name!=value, name=~regex or name!~regex"


@dataclass(frozen=True)
class Matcher:
    """One ``name OP value`` condition on a row's labels."""

    name: str
    """The label name, e.g. ``location``."""
    op: MatchOp
    """One of ``=``, ``!=``, ``=~``, ``!~``."""
    value: str
    """The literal value, or the regular expression for ``=~`` / ``!~``."""
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~") and self._regex is None:
            try:
                regex = re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"bad regular expression in {self}: {exc}") from None
            object.__setattr__(self, "_regex", regex)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the labels satisfy this matcher (a missing label is the empty string)."""
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        value = self.value
        if not value or any(ch in value for ch in ',"\\') or value != value.strip():
            value = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{self.name}{self.op}{value}"


def _split_parts(text: str) -> list[str]:
    """Split on commas that are outside double quotes, keeping quotes in the parts."""
    parts: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and in_quotes:
            current.append(ch)
            escaped = True
        elif ch == '"':
            current.append(ch)
            in_quotes = not in_quotes
        elif ch == "," and not in_quotes:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if in_quotes:
        raise ValueError(f"unclosed double quote in {text.strip()!r}")
    parts.append("".join(current))
    return parts


def _unquote(raw: str, part: str) -> str:
    """Strip the double quotes around a value and resolve its escapes."""
    if not raw.startswith('"'):
        if '"' in raw:
            raise ValueError(f"bad matcher {part!r}: a quoted value must be quoted as a whole")
        return raw
    if len(raw) < 2 or not raw.endswith('"'):
        raise ValueError(f"bad matcher {part!r}: a quoted value must be quoted as a whole")
    body = raw[1:-1]
    out: list[str] = []
    escaped = False
    for ch in body:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            raise ValueError(f"bad matcher {part!r}: unescaped double quote inside the value")
        else:
            out.append(ch)
    if escaped:
        raise ValueError(f"bad matcher {part!r}: the value ends with a lone backslash")
    return "".join(out)


def parse_matchers(text: str) -> list[Matcher]:
    """Parse a comma-separated matcher expression; an empty text means "match everything".

    Raises:
        ValueError: naming the part that is wrong (bad syntax, bad regular expression,
            unbalanced quotes).
    """
    if not text.strip():
        return []
    matchers: list[Matcher] = []
    for part in _split_parts(text):
        if not part.strip():
            continue  # tolerate "a=b," and "a=b,,c=d"
        found = _MATCHER_RE.match(part)
        if found is None:
            raise ValueError(f"bad matcher {part.strip()!r}: {_SYNTAX_HELP}")
        name, op, raw_value = found.groups()
        value = _unquote(raw_value, part.strip())
        matchers.append(Matcher(name=name, op=cast(MatchOp, op), value=value))
    return matchers


def matches_all(matchers: list[Matcher] | tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    """Whether every matcher holds for the labels (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)


def format_matchers(matchers: list[Matcher] | tuple[Matcher, ...]) -> str:
    """The canonical text of a matcher list, the inverse of :func:`parse_matchers`."""
    return ", ".join(str(m) for m in matchers)
