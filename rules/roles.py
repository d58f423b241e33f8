"""Roles and permissions: who may acknowledge, silence and edit, by OS user.

Every mutating path (rules saves, fulfillment saves, acknowledgements, silences) calls
:meth:`Permissions.require` before it changes anything.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["viewer", "operator", "editor"]


class Roles(BaseModel):
    """Who may do what, by OS user (an SSH login): the ``[roles]`` section of the config.

    ``viewer`` reads; ``operator`` also acknowledges and silences; ``editor`` also edits
    the rules file.  Users not listed get ``default_role`` (read-only unless changed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    editors: tuple[str, ...] = ()
    """OS users who may edit rules, acknowledge and silence."""
    operators: tuple[str, ...] = ()
    """OS users who may acknowledge and silence."""
    default_role: Role = "viewer"
    """The role of anyone not listed."""

    def role_of(self, user: str) -> Role:
        """The role of ``user``."""
        if user in self.editors:
            return "editor"
        if user in self.operators:
            return "operator"
        return self.default_role


class PermissionDenied(PermissionError):
    """A mutating action the current user's role does not allow."""


def current_user() -> str:
    """The OS user running this process (who did it, unless a caller says otherwise)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class Permissions:
    """What the current user may do; every mutating path calls :meth:`require`."""

    user: str
    role: Role
    read_only: bool = False
    """``--read-only``: nothing may change, whatever the role."""

    @classmethod
    def for_user(
        cls, roles: Roles, user: str | None = None, *, read_only: bool = False
    ) -> Permissions:
        """The permissions of ``user`` (default: the OS user) under ``roles``."""
        who = user or current_user()
        return cls(user=who, role=roles.role_of(who), read_only=read_only)

    @property
    def can_edit_rules(self) -> bool:
        """May save the rules file."""
        return not self.read_only and self.role == "editor"

    @property
    def can_acknowledge(self) -> bool:
        """May acknowledge, silence and expire silences."""
        return not self.read_only and self.role in ("operator", "editor")

    def require(self, action: Literal["edit", "acknowledge", "silence"]) -> None:
        """Raise :class:`PermissionDenied` unless ``action`` is allowed."""
        allowed = self.can_edit_rules if action == "edit" else self.can_acknowledge
        if allowed:
            return
        if self.read_only:
            raise PermissionDenied(f"read-only console: cannot {action}")
        needed = "editor" if action == "edit" else "operator or editor"
        raise PermissionDenied(
            f"user {self.user!r} is a {self.role} and may not {action} (needs {needed}; "
            "roles are set per OS user in the [roles] section of the config)"
        )
