"""One way to put an error in front of an operator: a line naming the field, or the message.

:func:`describe_validation_error` lists a pydantic error by field path
(``body.lines.0.quantity: Input should be greater than 0``); :func:`describe_error` makes
any exception one line for a status bar or a log (a validation error by field, else the
first line of its message, else its type name).  They sit in ``rules``, the lowest layer
that validates operator input, so feeds, runtimes and the console all describe errors alike
(the console's :func:`console.errors.describe_error` is this function with its own rule for
when to show the type).

An error that knows a better one-line wording than its message (a rules file with many
problems names the first and counts the rest) says so with an ``operator_line()`` method.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from store.invisible import describe as describe_invisible

if TYPE_CHECKING:  # an error of pydantic's exists only once pydantic_core is loaded
    from pydantic import ValidationError


def describe_validation_error(exc: ValidationError, *, limit: int | None = None) -> str:
    """One part per failing field, ``loc: message``, joined by ``; ``.

    Args:
        exc: The validation error.
        limit: Name at most this many fields, then ``(+N more)``; None: all of them.
    """
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors if limit is None else errors[:limit]:
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "string_pattern_mismatch":  # the identifier pattern: say why
            msg = describe_invisible(err.get("input")) or msg
        parts.append(f"{loc}: {msg}" if loc else msg)
    text = "; ".join(parts)
    if limit is not None and len(errors) > limit:
        text += f" (+{len(errors) - limit} more)"
    return text


def describe_error(error: BaseException | None, *, with_type: bool = False) -> str:
    """One line saying what went wrong.

    Args:
        error: The exception (None: ``unknown error``, as a failed worker may report).
        with_type: Prefix the type name (``OperationalError: database is locked``), for
            errors whose kind matters more than their text (I/O, the database).
    """
    if error is None:
        return "unknown error"
    own_line = getattr(error, "operator_line", None)
    if callable(own_line):
        return str(own_line())
    core = sys.modules.get("pydantic_core")  # not imported for it: the console's start
    if core is not None and isinstance(error, core.ValidationError):
        return describe_validation_error(error, limit=1)
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    if with_type:
        return f"{type(error).__name__}: {first}" if first else type(error).__name__
    return first or type(error).__name__
