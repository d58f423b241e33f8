"""The machine's time zone by name, so local times follow its daylight-saving rules.

``datetime.now().astimezone().tzinfo`` is a fixed offset taken when it is called: a console
started in winter would show summer times an hour off.  :func:`local_zone` finds the zone's
name instead, without a third-party package, in the order the C library uses:

1. ``TZ`` (``Europe/Paris``, ``:Europe/Paris`` or a path to a zone file; set but empty
   means UTC, as POSIX says);
2. ``/etc/localtime``, a symlink into a zoneinfo tree on most systems (the name is the
   path below ``zoneinfo/``) or a copy of a zone file (read as it is);
3. ``/etc/timezone`` (Debian's one-line name);
4. UTC.

A ``TZ`` that is a POSIX rule rather than a name (``CET-1CEST``) is not understood by
:mod:`zoneinfo`; it falls through to the system files, with a warning in the log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

log = logging.getLogger(__name__)

LOCALTIME = Path("/etc/localtime")
TIMEZONE_FILE = Path("/etc/timezone")


def _named(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _from_file(path: Path, key: str) -> ZoneInfo | None:
    try:
        with path.open("rb") as fh:
            return ZoneInfo.from_file(fh, key=key)
    except (OSError, ValueError):
        return None


def _name_below_zoneinfo(path: Path) -> str | None:
    parts = path.parts
    if "zoneinfo" not in parts:
        return None
    index = len(parts) - 1 - parts[::-1].index("zoneinfo")
    rest = parts[index + 1 :]
    return "/".join(rest).removeprefix("posix/").removeprefix("right/") or None


def _from_tz(value: str) -> tzinfo | None:
    spec = value.removeprefix(":")
    if not spec:
        return UTC
    if spec.startswith("/"):
        path = Path(spec)
        name = _name_below_zoneinfo(path.resolve())
        zone = _named(name) if name else None
        return zone or _from_file(path, key=name or spec)
    zone = _named(spec)
    if zone is None:
        log.warning("TZ=%r is not a zone name; using the system's zone", value)
    return zone


def local_zone(
    environ: Mapping[str, str] | None = None,
    *,
    localtime: Path = LOCALTIME,
    timezone_file: Path = TIMEZONE_FILE,
) -> tzinfo:
    """The machine's zone, by name where it can be found (see the module docstring).

    Args:
        environ: The environment to read ``TZ`` from (default: the process's).
        localtime: The system's zone file (injected by tests).
        timezone_file: Debian's zone name file (injected by tests).
    """
    env = os.environ if environ is None else environ
    if "TZ" in env:
        zone = _from_tz(env["TZ"])
        if zone is not None:
            return zone
    if localtime.is_symlink():
        name = _name_below_zoneinfo(localtime.resolve())
        named = _named(name) if name else None
        if named is not None:
            return named
    if localtime.is_file():
        copied = _from_file(localtime, key="localtime")
        if copied is not None:
            return copied
    try:
        name = timezone_file.read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    return (_named(name) if name else None) or UTC
