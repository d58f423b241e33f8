"""Who a console acts as: the OS user of an SSH login, or the web user of a browser session.

``omniops web`` checks a browser's token, then starts ``omniops console`` with
``OMNIOPS_WEB_USER`` naming the web user.  That user's role is looked up in ``[roles]``
by name, exactly as an SSH login's OS user is, and every mutating path checks it through
the same :class:`~rules.alerts.Permissions`.

The variable can only *lower* what a process may do: the role used is the lower of the
web user's and the OS user's that runs the process.  Anyone who can start a console as
some OS user could set the variable themselves, so it must never raise their rights; the
account that runs ``omniops web`` therefore needs a role at least as high as the highest
web user's (list it among the ``editors`` to let web editors edit).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from rules.roles import Permissions, Role, Roles, current_user

WEB_USER_ENV = "OMNIOPS_WEB_USER"
"""Names the web user a console started by ``omniops web`` acts for."""

RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "editor": 2}


def lower_role(a: Role, b: Role) -> Role:
    """The role with fewer rights."""
    return a if RANK[a] <= RANK[b] else b


def web_user(environ: Mapping[str, str] | None = None) -> str | None:
    """The web user this process acts for, or None for a terminal login."""
    env = os.environ if environ is None else environ
    name = env.get(WEB_USER_ENV, "").strip()
    return name or None


def console_permissions(
    roles: Roles,
    *,
    read_only: bool = False,
    environ: Mapping[str, str] | None = None,
    os_user: str | None = None,
) -> Permissions:
    """The permissions of this console: the web user's (capped by the OS user's) or the OS user's.

    Args:
        roles: The ``[roles]`` section in force.
        read_only: ``--read-only``: nothing may change, whatever the role.
        environ: Where to read ``OMNIOPS_WEB_USER`` (default: this process's environment).
        os_user: The OS user running the process (default: :func:`current_user`).
    """
    who = os_user or current_user()
    browser = web_user(environ)
    if browser is None:
        return Permissions.for_user(roles, who, read_only=read_only)
    role = lower_role(roles.role_of(browser), roles.role_of(who))
    return Permissions(user=browser, role=role, read_only=read_only)


def capped_users(roles: Roles, users: list[str], os_user: str | None = None) -> list[str]:
    """Web users whose role is higher than the OS user's (they get the OS user's)."""
    who = os_user or current_user()
    limit = RANK[roles.role_of(who)]
    return [u for u in users if RANK[roles.role_of(u)] > limit]
