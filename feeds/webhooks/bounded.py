"""JSON that cannot hurt: a body's depth and its number of strings are bounded before decoding.

Python's :func:`json.loads` recurses once per nesting level, so ``[[[[…]]]]`` a few
thousand levels deep raises :class:`RecursionError` (and so does anything that walks the
decoded value).  :func:`check_shape` scans the raw text once, in linear time and without
recursion, and refuses a body nested deeper than :data:`MAX_DEPTH` or holding more than
:data:`MAX_STRINGS` strings; :func:`loads` is ``check_shape`` then ``json.loads``.

Both raise :class:`ShapeError` (a :class:`ValueError` with the offending ``field``), which
every HTTP handler answers with **400** and quarantines with the reason.  Legitimate
payloads of every vendor omniops reads are a dozen levels deep at most; the bounds leave a
wide margin.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a request body."""
MAX_STRINGS = 50_000
"""Most strings (keys and values) accepted in one request body."""

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
"""A JSON string literal (the unrolled loop: each character is tried once, linear time)."""
_TOKEN = re.compile(r'"|[\[\]{}]')


class ShapeError(ValueError):
    """A JSON text nested too deeply or holding too many strings.

    ``field`` is ``(body)``; ``message`` says which bound was exceeded, and by how much.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.field = "(body)"
        self.message = message


def check_shape(text: str, *, max_depth: int = MAX_DEPTH, max_strings: int = MAX_STRINGS) -> None:
    """Raise :class:`ShapeError` if ``text`` nests too deeply or holds too many strings.

    The common case (every string terminated, both bounds kept) is decided in a few C
    passes: the string literals are cut out (a split on quotes when the text has no
    backslash, else one ``subn``, which finds exactly the strings the walk finds, since each
    starts at the first quote after the previous one; an odd quote is left in), and
    the depth is the running sum over the brackets left.  Anything else (an unterminated
    string, a bound exceeded) is decided by :func:`_walk`, which says which bound was
    exceeded first, so the answer is the walk's in every case.
    """
    if "\\" in text:
        stripped, strings = _STRING.subn("", text, count=max_strings + 1)
    else:  # no escapes: each string runs from a quote to the next one
        parts = text.split('"')
        strings = (len(parts) - 1) // 2
        stripped = "".join(parts[0::2]) if len(parts) % 2 else '"'
    if strings <= max_strings and '"' not in stripped and _shallow(stripped, max_depth):
        return
    _walk(text, max_depth, max_strings)


_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_CHUNK = 4096


def _shallow(text: str, max_depth: int) -> bool:
    """True if the brackets of ``text`` (a text without strings) never nest past ``max_depth``.

    Running sums over chunks of brackets, stopping at the first chunk that goes too deep.
    """
    brackets = _NOT_BRACKET.sub("", text)
    if len(brackets) <= max_depth:
        return True
    depth = 0
    for start in range(0, len(brackets), _CHUNK):
        chunk = brackets[start : start + _CHUNK]
        sums = list(accumulate(map(_STEP.__getitem__, chunk), initial=depth))
        if max(sums) > max_depth:
            return False
        depth = sums[-1]
    return True


def _walk(text: str, max_depth: int, max_strings: int) -> None:
    """The reference scan: bracket and string tokens in order, stopping at the first excess.

    Linear, with C-speed regular expressions; the depth count visits only bracket
    characters outside strings.
    """
    strings = 0
    depth = 0
    pos = 0
    # Walk bracket and string tokens in order: brackets inside strings do not count.
    while True:
        match = _TOKEN.search(text, pos)
        if match is None:
            return
        char = match.group()
        if char == '"':
            literal = _STRING.match(text, match.start())
            if literal is None:  # an unterminated string: json.loads will say where
                return
            strings += 1
            if strings > max_strings:
                raise ShapeError(f"body has more than {max_strings} strings")
            pos = literal.end()
            continue
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise ShapeError(f"body is nested deeper than {max_depth} levels")
        else:
            depth -= 1
        pos = match.end()


def loads(text: str | bytes) -> Any:
    """``json.loads`` after :func:`check_shape`; :class:`ShapeError` or :class:`ValueError`.

    Bytes are decoded as UTF-8 first (:class:`UnicodeDecodeError`, a ``ValueError``, if
    they are not).
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    # At most MAX_DEPTH brackets cannot nest deeper, and at most 2 * MAX_STRINGS quotes
    # cannot hold more strings (both counted at C speed, brackets and quotes inside
    # strings over-counting only): a webhook's usual body needs no scan.
    if text.count("{") + text.count("[") > MAX_DEPTH or text.count('"') > 2 * MAX_STRINGS:
        check_shape(text)
    return json.loads(text)


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """The nesting depth of decoded JSON, counted without recursion (stops past ``limit``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level) for child in children)
    return deepest


__all__ = ["MAX_DEPTH", "MAX_STRINGS", "ShapeError", "check_shape", "depth_of", "loads"]
