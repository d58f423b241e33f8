"""One way to put a failure into words on the console's status lines.

Errors written for operators (a bad value, a refused permission, a file that changed on
disk) read as their message; anything else keeps its type in front (``OperationalError:
database is locked``), because the type says what kind of failure it was.
"""

from __future__ import annotations

from pydantic import ValidationError

from rules.editor import ConflictError
from rules.file import RulesFileError

_SPOKEN = (ValueError, PermissionError, ConflictError)
"""Errors whose message is meant for the operator as it is."""


def describe_error(error: BaseException | None) -> str:
    """The first line of what went wrong, naming the field or file when the error knows it.

    Args:
        error: The failure (None when a worker ended without one).

    Returns:
        ``rules.toml: alert[2].threshold: must be a number (+1 more)``,
        ``fulfillment.rules.0.id: Field required``, ``RuntimeError: database is locked``.
    """
    if error is None:
        return "unknown error"
    if isinstance(error, RulesFileError):
        first = error.first
        more = f" (+{len(error.problems) - 1} more)" if len(error.problems) > 1 else ""
        return (f"{first.field}: {first.message}" if first.field else first.message) + more
    if isinstance(error, ValidationError):
        detail = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in detail["loc"]) or "rules"
        return f"{where}: {detail['msg']}"
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else ""
    if isinstance(error, _SPOKEN):
        return first_line or type(error).__name__
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__
