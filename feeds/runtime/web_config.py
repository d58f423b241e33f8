"""Configuration of ``omniops web``: defaults, the ``[web]`` table of the TOML file, env.

Precedence as for ``serve`` (see :mod:`feeds.runtime.serve_config`): command-line options, then
environment variables (``OMNIOPS_WEB_<FIELD>``, e.g. ``OMNIOPS_WEB_PORT``), then the
``[web]`` table of the config file (its top-level ``db`` too), then the defaults.

Who may log in is the ``users`` table: a web user's name and the *name of an environment
variable* that holds their token, never the token itself::

    [web]
    users = { ana = "$OMNIOPS_WEB_TOKEN_ANA", olga = "$OMNIOPS_WEB_TOKEN_OLGA" }

A web user's role is looked up in the ``[roles]`` section by that name, exactly as an SSH
login's OS user is (see :mod:`rules.identity`).  A variable that is unset or empty, a
token shorter than :data:`MIN_TOKEN_CHARS`, a token written literally in the file, or two
users sharing one token is a configuration error: ``omniops web`` refuses to start rather
than open a door.
"""

from __future__ import annotations

import argparse
import hmac
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from feeds.settings import config_file, read_config_file

MIN_TOKEN_CHARS = 16
"""Shortest token accepted (``python -c 'import secrets; print(secrets.token_urlsafe())'``)."""

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^\$?([A-Za-z_][A-Za-z0-9_]*)$")


class WebConfigError(ValueError):
    """The ``[web]`` configuration cannot be used (names the key and what to do)."""


class WebConfig(BaseSettings):
    """Everything ``omniops web`` can be told; every field but ``users`` has a default."""

    model_config = SettingsConfigDict(env_prefix="OMNIOPS_WEB_", extra="forbid")

    db: Path = Path("omniops.db")
    """The store every browser session's console reads."""
    host: str = "127.0.0.1"
    """Address to listen on.  Loopback by default: expose it through a reverse proxy."""
    port: int = Field(default=8090, ge=0, le=65535)
    """Port to listen on (0: any free port; the chosen one is printed)."""
    tls_cert: Path | None = None
    """PEM certificate chain; with ``tls_key``, serve HTTPS (and WSS) directly."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    public_url: str | None = None
    """The address browsers use (e.g. ``https://ops.example.com/console``) when a reverse
    proxy stands in front; default: taken from each request's own host and scheme."""
    users: dict[str, str] = {}
    """Web user → ``"$ENV_VAR"`` holding that user's token (secrets only from the env)."""
    max_sessions: int = Field(default=8, ge=1)
    """Most browser sessions (console processes) at once; more are refused with 503."""
    idle_timeout_minutes: float = Field(default=30.0, gt=0)
    """A session with no key, click or resize for this long is closed (its process ends)."""
    login_hours: float = Field(default=12.0, gt=0)
    """How long the session cookie set after a token check stays valid."""
    font_size: int = Field(default=16, ge=6, le=48)
    """Terminal font size in the browser (``?fontsize=`` overrides it per page)."""

    @field_validator("users")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for user, ref in value.items():
            if not _USER_NAME.match(user):
                raise ValueError(f"web.users: {user!r} is not a user name (letters, digits, ._-)")
            if not _ENV_NAME.match(ref.strip()):
                raise ValueError(
                    f"web.users.{user}: write the name of an environment variable that holds "
                    f'the token, e.g. "$OMNIOPS_WEB_TOKEN_{user.upper()}" (tokens are never '
                    "kept in the config file)"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments (the command line), the environment, the TOML file."""
        return (
            init_settings,
            env_settings,
            InitSettingsSource(settings_cls, init_kwargs=_file_table()),
        )

    def tokens(self, environ: dict[str, str] | None = None) -> dict[str, SecretStr]:
        """Each user's token, read from the environment.

        Raises:
            WebConfigError: no users, a variable unset or empty, a token too short, or one
                token shared by two users.
        """
        env = os.environ if environ is None else environ
        if not self.users:
            raise WebConfigError(
                "web.users: no users, so nobody could log in; add e.g. "
                'users = { ana = "$OMNIOPS_WEB_TOKEN_ANA" } to the [web] table'
            )
        tokens: dict[str, SecretStr] = {}
        for user, ref in self.users.items():
            match = _ENV_NAME.match(ref.strip())
            assert match is not None  # checked by the validator
            var = match.group(1)
            token = env.get(var)
            if token is None:
                raise WebConfigError(f"web.users.{user}: ${var} is not set in the environment")
            if not token.strip():
                raise WebConfigError(
                    f"web.users.{user}: ${var} is empty; an empty token would let anyone in"
                )
            if len(token) < MIN_TOKEN_CHARS:
                raise WebConfigError(
                    f"web.users.{user}: ${var} is {len(token)} characters; use at least "
                    f"{MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe())')"
                )
            for other, seen in tokens.items():
                if hmac.compare_digest(seen.get_secret_value(), token):
                    raise WebConfigError(
                        f"web.users.{user}: same token as {other}; give every user their own"
                    )
            tokens[user] = SecretStr(token)
        return tokens

    def describe(self) -> str:
        """One line for the log: store, users (names only), limits."""
        return (
            f"store {self.db}; users {', '.join(sorted(self.users)) or 'none'}; "
            f"at most {self.max_sessions} sessions, idle after {self.idle_timeout_minutes:g} min"
        )


def _file_table() -> dict[str, Any]:
    """The config file's ``[web]`` table, with the top-level ``db`` unless it sets one."""
    data = read_config_file(config_file())
    table = dict(data.get("web", {}))
    if "db" in data and "db" not in table:
        table["db"] = data["db"]
    return table


def load_web_config(**overrides: Any) -> WebConfig:
    """The configuration in force, with ``overrides`` (command-line options) on top.

    Overrides that are None are left out, so an option not given does not hide the
    environment or the file.
    """
    return WebConfig(**{k: v for k, v in overrides.items() if v is not None})


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
