"""Where the console and the demo log: a file under the state folder.

A full-screen console cannot write its warnings to the terminal it draws on, and before
this they went nowhere.  :func:`log_to_file` sends every ``logging`` record at INFO and
above (a feed retrying, a rules file refused, a notification not delivered) to
``$OMNIOPS_LOG_FILE``, default ``$XDG_STATE_HOME/omniops/omniops.log``
(``~/.local/state/omniops/omniops.log``), rotated at 1 MB with three old files kept.
``omniops serve`` keeps logging to stderr (its supervisor collects it).
"""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from store.paths import state_dir

LOG_ENV = "OMNIOPS_LOG_FILE"
"""The environment variable that moves the log file."""
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_file() -> Path:
    """``$OMNIOPS_LOG_FILE``, else ``$XDG_STATE_HOME/omniops/omniops.log``."""
    named = os.environ.get(LOG_ENV)
    return Path(named).expanduser() if named else state_dir() / "omniops.log"


def log_help() -> str:
    """The sentence ``--help`` shows about the log."""
    return (
        f"Warnings and errors of the console and the demo go to {log_file()} "
        f"($XDG_STATE_HOME/omniops/omniops.log; {LOG_ENV} moves it)."
    )


class _OmniopsFileHandler(RotatingFileHandler):
    """Marks the handler this module installed, so a second call replaces it."""


def log_to_file(path: Path | None = None, level: int = logging.INFO) -> Path:
    """Send the root logger's records at ``level`` and up to ``path`` (default :func:`log_file`).

    Returns the file used.  Calling it again moves the log rather than doubling it.
    """
    target = path or log_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OmniopsFileHandler)]:
        root.removeHandler(old)
        old.close()
    handler = _OmniopsFileHandler(target, maxBytes=1_000_000, backupCount=3, encoding="utf-8")
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > level:
        root.setLevel(level)
    return target


def stop_logging_to_file() -> None:
    """Remove the handler :func:`log_to_file` installed (tests, embedding)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OmniopsFileHandler)]:
        root.removeHandler(old)
        old.close()


def log_to_stderr(level: str) -> None:
    """The headless servers (``serve``, ``web``): log lines with a time stamp to stderr.

    Args:
        level: A logging level name (``INFO``, ``debug``, ...); an unknown one means INFO.
    """
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
