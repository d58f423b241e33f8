"""Configuration of ``omniops web``: the ``web`` section of :mod:`feeds.settings`, and its options.

The model (:class:`~feeds.settings.WebConfig`), its sources and their precedence are
documented in :mod:`feeds.settings`: command-line options, then environment variables
(``OMNIOPS_WEB__<FIELD>``, or the older ``OMNIOPS_WEB_<FIELD>``, e.g. ``OMNIOPS_WEB_PORT``),
then the ``[web]`` table of the config file (its top-level ``db`` too), then the defaults.
This module keeps the names ``omniops web`` and its tests import, and the command's options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from feeds.settings import MIN_TOKEN_CHARS, WebConfig, WebConfigError, load_web_config

__all__ = ["MIN_TOKEN_CHARS", "WebConfig", "WebConfigError", "add_web_arguments", "load_web_config"]


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``omniops web`` (each overrides the environment and the file)."""
    parser.add_argument("--db", type=Path, help="store file (env OMNIOPS_WEB_DB, or db)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8090; 0 = any free port)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (HTTPS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key (HTTPS)")
    parser.add_argument("--max-sessions", type=int, help="most browser sessions at once")
    parser.add_argument("--idle-timeout-minutes", type=float, help="close sessions idle this long")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
