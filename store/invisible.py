"""Characters no identifier may hold and no stored text keeps: controls and invisibles.

A terminal acts on a control character (``ESC`` starts an escape sequence: a console over
SSH would let a payload move the cursor, retitle the window or write the clipboard), and
an invisible one (zero-width space, bidi override, byte-order mark) makes two ids that
look alike different, or text read in another order than it is stored.  So:

* an identifier (:data:`store.model.Identifier`) holding one is refused, naming the field
  and the character (:func:`describe`);
* free text (:data:`store.model.Text`) has each control replaced by a space and each
  invisible dropped (:func:`clean_text`).

No pydantic here: :mod:`rules.errors` reads :func:`describe` on the console's start path.
"""

from __future__ import annotations

RANGES: tuple[tuple[int, int], ...] = (
    (0x00, 0x1F),  # C0 controls (ESC, NUL, tab, newline, ...)
    (0x7F, 0x9F),  # DEL and the C1 controls (CSI, OSC, ...)
    (0x200B, 0x200F),  # zero-width space / (non-)joiner, LRM, RLM
    (0x2028, 0x202E),  # line and paragraph separators, bidi embeddings and overrides
    (0x2060, 0x2069),  # word joiner, invisible operators, bidi isolates
    (0xFEFF, 0xFEFF),  # byte-order mark (zero-width no-break space)
)
"""Closed code point ranges, in order."""

IDENTIFIER_PATTERN = "^[^" + "".join(f"\\u{lo:04x}-\\u{hi:04x}" for lo, hi in RANGES) + "]*$"
"""The pattern an identifier must match (pydantic-core's Rust regex and Python's ``re``)."""

_BLANKED = {0x2028, 0x2029}  # line breaks of their own: a space, as a newline is


def _table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for lo, hi in RANGES:
        for code in range(lo, hi + 1):
            control = hi <= 0x9F
            table[code] = " " if control or code in _BLANKED else None
    return table


_TRANSLATE = _table()


def invisible(value: str) -> tuple[int, str] | None:
    """The first control or invisible character of ``value``: ``(index, "U+001B")``."""
    for index, char in enumerate(value):
        code = ord(char)
        if any(lo <= code <= hi for lo, hi in RANGES):
            return index, f"U+{code:04X}"
    return None


def clean_text(value: str) -> str:
    """``value`` with controls as spaces and invisibles dropped (unchanged when it has none).

    ``str.isprintable`` is the fast path: true for almost every text, it is a C scan.
    """
    if value.isprintable():
        return value
    return value.translate(_TRANSLATE)


def describe(value: object) -> str | None:
    """Why ``value`` is no identifier, when it holds such a character; else None."""
    if not isinstance(value, str):
        return None
    found = invisible(value)
    if found is None:
        return None
    index, code = found
    return f"holds a control or invisible character ({code} at position {index + 1})"
