"""One way to put a failure into words on the console's status lines.

It is :func:`rules.errors.describe_error` (the one describer every layer uses) with the
console's rule for the type name: errors written for operators (a bad value, a refused
permission, a file that changed on disk) read as their message; anything else keeps its type
in front (``OperationalError: database is locked``), because the type says what kind of
failure it was.
"""

from __future__ import annotations

import sys

from rules.errors import describe_error as _describe

_SPOKEN: tuple[type[BaseException], ...] = (ValueError, PermissionError)
"""Errors whose message is meant for the operator as it is (and the editor's conflict)."""


def _spoken(error: BaseException) -> bool:
    """Whether ``error``'s message is for the operator as it is.

    The rules editor's :class:`~rules.editor.ConflictError` is one; it is looked up only
    if the editor was imported (an error of a module never loaded cannot be one of its
    classes), so the console's start does not load the editor for it.
    """
    if isinstance(error, _SPOKEN):
        return True
    editor = sys.modules.get("rules.editor")
    conflict = getattr(editor, "ConflictError", None)
    return conflict is not None and isinstance(error, conflict)


def describe_error(error: BaseException | None) -> str:
    """The first line of what went wrong, naming the field or file when the error knows it.

    Args:
        error: The failure (None when a worker ended without one).

    Returns:
        ``rules.toml: alert[2].threshold: must be a number (+1 more)``,
        ``fulfillment.rules.0.id: Field required``, ``RuntimeError: database is locked``.
    """
    return _describe(error, with_type=error is not None and not _spoken(error))
