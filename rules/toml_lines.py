"""Locating keys in TOML source: the line of every table and key, by its pydantic path.

How a validation error of the rules file names the line the operator wrote.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")


_BARE = r"[A-Za-z0-9_-]+"


_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"


_KEY = re.compile(rf"^\s*((?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*)\s*=")


_STRINGS = re.compile(_QUOTED)


Loc = tuple[str | int, ...]


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(rf"{_BARE}|{_QUOTED}", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _bracket_delta(text: str) -> int:
    code = _STRINGS.sub("", text).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")


def key_lines(text: str) -> dict[Loc, int]:
    """The line of every table header and key, by its path (array-of-tables indexed).

    ``[[alert]]`` number 4's ``threshold`` is ``("alert", 3, "threshold")``, the same path
    pydantic reports in a validation error.  Lines inside multi-line strings and arrays
    are skipped; the first occurrence wins.
    """
    found: dict[Loc, int] = {}
    aot_paths: set[tuple[str, ...]] = set()
    aot_counts: dict[Loc, int] = {}
    current: Loc = ()
    in_string: str | None = None
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth = max(0, depth + _bracket_delta(line))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            header = _HEADER.match(line)
            if header is None:
                continue
            names = _split_dotted(header.group(2))
            is_aot = header.group(1) == "[["
            concrete: list[str | int] = []
            for i, name in enumerate(names):
                concrete.append(name)
                abstract = tuple(names[: i + 1])
                if i == len(names) - 1 and is_aot:
                    aot_paths.add(abstract)
                    key = tuple(concrete)
                    index = aot_counts.get(key, 0)
                    aot_counts[key] = index + 1
                    concrete.append(index)
                elif abstract in aot_paths:
                    concrete.append(max(0, aot_counts.get(tuple(concrete), 1) - 1))
            current = tuple(concrete)
            found.setdefault(current, lineno)
            continue
        key_match = _KEY.match(line)
        if key_match is None:
            continue
        path = (*current, *_split_dotted(key_match.group(1)))
        found.setdefault(path, lineno)
        rest = line[key_match.end() :].strip()
        for quote in ('"""', "'''"):
            if rest.startswith(quote) and rest.count(quote) == 1:
                in_string = quote
        if in_string is None:
            depth = max(0, _bracket_delta(rest))
    return found


def line_of(index: Mapping[Loc, int], loc: Sequence[str | int]) -> int | None:
    """The line of the deepest key of ``loc`` found in the source (None: not found).

    Path elements the source cannot have (pydantic's union tags, list positions inside an
    inline array) are skipped, so the answer is the nearest key the operator wrote.
    """
    prefixes: set[Loc] = set()
    for key in index:
        for n in range(1, len(key) + 1):
            prefixes.add(key[:n])
    path: Loc = ()
    best = index.get((), None)
    for element in loc:
        candidate = (*path, element)
        if candidate in prefixes:
            path = candidate
            best = index.get(path, best)
    return best


def field_text(loc: Sequence[str | int], data: Any) -> str:
    """``alert[late_orders].threshold`` (the rule's id when it has one), ``notify.route``."""
    out = ""
    node = data
    for position, element in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(element, int):
            label = f"#{element + 1}"
            if isinstance(node, list) and 0 <= element < len(node):
                item = node[element]
                if isinstance(item, dict) and isinstance(item.get("id") or item.get("name"), str):
                    label = str(item.get("id") or item.get("name"))
                node = item
            else:
                node = None
            out += f"[{label}]"
            continue
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif isinstance(node, dict) and not last:
            continue  # a pydantic tag (union member, validator): not a key of the file
        else:
            node = None
        out += f".{element}" if out else element
    return out


def error_message(error: Mapping[str, Any]) -> str:
    """A pydantic error in words an operator reads (the bad value shown when short)."""
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error.get("type") == "missing":
        return "missing: this field is required"
    if error.get("type") == "extra_forbidden":
        return "unknown field (check the spelling; see the shipped defaults for every field)"
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and not isinstance(value, dict):
        shown = repr(value)
        if len(shown) <= 60 and shown not in msg:
            msg += f" (got {shown})"
    return msg
