"""Where omniops keeps its files on the operator's machine (the XDG base directories).

* configuration (``config.toml``, ``rules.toml``): ``$XDG_CONFIG_HOME/omniops``, default
  ``~/.config/omniops``;
* state (the log file): ``$XDG_STATE_HOME/omniops``, default ``~/.local/state/omniops``.

As the XDG specification says, a variable that is unset, empty or not an absolute path is
ignored.  These sit at the bottom layer so every package (the rules file's default location
included) can resolve them the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

APP = "omniops"


def _base(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path(fallback).expanduser()


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/omniops`` (default ``~/.config/omniops``)."""
    return _base("XDG_CONFIG_HOME", "~/.config") / APP


def state_dir() -> Path:
    """``$XDG_STATE_HOME/omniops`` (default ``~/.local/state/omniops``)."""
    return _base("XDG_STATE_HOME", "~/.local/state") / APP
