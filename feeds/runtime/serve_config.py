"""The configuration of ``omniops serve``: the ``serve`` section of :mod:`feeds.settings`.

Kept so existing imports work; the model, its sources and their precedence are documented
in :mod:`feeds.settings`.
"""

from __future__ import annotations

from feeds.settings import (
    PollSubscription,
    ServeConfig,
    StreamSubscription,
    config_file,
    load_serve_config,
)

__all__ = [
    "PollSubscription",
    "ServeConfig",
    "StreamSubscription",
    "config_file",
    "load_serve_config",
]
