"""Configuration of ``omniops serve``: defaults, the ``[serve]`` table of the TOML file, env.

Precedence: command-line options, then environment variables (``OMNIOPS_<FIELD>``, e.g.
``OMNIOPS_PORT``, ``OMNIOPS_SHOPIFY_WEBHOOK_SECRET``), then the ``[serve]`` table of the
config file (``$OMNIOPS_CONFIG``, default ``~/.config/omniops/config.toml``, read only if
it exists; its top-level ``db`` is used too), then the defaults, which work with no file:
a store ``omniops.db`` and a server on 127.0.0.1:8080 with every webhook disabled until
its secret is set.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********`` and
:meth:`ServeConfig.describe` (what ``serve`` logs at start) names which are set, never
their values.  Keep them in the environment (or a secrets manager that sets it), not in
the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from feeds.kafka.config import KafkaOut, KafkaSubscription

DEFAULT_CONFIG = Path("~/.config/omniops/config.toml")


class StreamSubscription(BaseModel):
    """One HTTP stream to subscribe to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Feed name: where its cursor and health are kept."""
    url: str
    """The stream's URL (``http://`` or ``https://``)."""
    format: Literal["sse", "ndjson"] = "sse"
    """Server-Sent Events (cursor: ``Last-Event-ID``) or newline-delimited JSON."""
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer <token>`` when set."""
    cursor_param: str = "after"
    """NDJSON only: the query parameter that carries the cursor on reconnect."""
    max_backoff_seconds: float = Field(default=60.0, gt=0)
    """Longest wait between reconnection attempts."""

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class PollSubscription(BaseModel):
    """One REST endpoint to poll with a since-cursor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Feed name: where its cursor and health are kept."""
    url: str
    """The endpoint; ``?since=<cursor>`` is added."""
    interval_seconds: float = Field(default=60.0, gt=0)
    """Seconds between polls."""
    since_param: str = "since"
    """The query parameter that carries the cursor."""
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer <token>`` when set."""

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class ServeConfig(BaseSettings):
    """Everything ``omniops serve`` can be told; every field has a working default."""

    model_config = SettingsConfigDict(env_prefix="OMNIOPS_", extra="forbid")

    db: Path = Path("omniops.db")
    """The SQLite store this process writes (the only writer)."""
    host: str = "127.0.0.1"
    """Address to listen on.  Loopback by default: expose it through a reverse proxy."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0: any free port; the chosen one is printed)."""
    tls_cert: Path | None = None
    """PEM certificate chain; with ``tls_key``, serve HTTPS directly."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger ones are answered 413 and not read."""
    shopify_webhook_secret: SecretStr | None = None
    """Shopify app client secret (signs ``X-Shopify-Hmac-Sha256``); unset: endpoint off."""
    shopify_webhook_secret_previous: SecretStr | None = None
    """The previous Shopify secret, still accepted while a rotation is under way."""
    square_signature_key: SecretStr | None = None
    """Square webhook signature key; unset: ``/webhooks/square`` is off."""
    square_notification_url: str | None = None
    """The notification URL exactly as registered with Square (it is part of what is signed)."""
    easypost_webhook_secret: SecretStr | None = None
    """EasyPost webhook secret; unset: ``/webhooks/easypost`` is off."""
    amazon_relay_token: SecretStr | None = None
    """Bearer token of the Amazon SQS relay; unset: ``/webhooks/amazon`` is off."""
    events_token: SecretStr | None = None
    """Bearer token for ``POST /events``; unset: the endpoint is off."""
    mapping_file: Path | None = None
    """External id → canonical id mapping (TOML, see ``feeds.webhooks.mapping``); reloaded
    when it changes (a bad edit keeps the last good mapping)."""
    drop_folder: Path | None = None
    """Folder watched for CSV and JSON Lines drops (``done/`` and ``failed/`` inside it)."""
    drop_timezone: str = "UTC"
    """Zone of times without an offset in dropped files."""
    history_channel: str = "webshop"
    """Channel of order-history files dropped in the folder."""
    history_location: str = "WH1"
    """Location of order-history files dropped in the folder."""
    streams: list[StreamSubscription] = []
    """HTTP streams to subscribe to (``[[serve.streams]]``)."""
    polls: list[PollSubscription] = []
    """REST endpoints to poll (``[[serve.polls]]``)."""
    kafka: list[KafkaSubscription] = []
    """Kafka consumer-group subscriptions (``[[serve.kafka]]``, see :mod:`feeds.kafka`)."""
    kafka_out: KafkaOut | None = None
    """Publish routing decisions and alert notifications to Kafka (``[serve.kafka_out]``)."""
    stale_after_minutes: float = Field(default=15.0, gt=0)
    """A feed with nothing for this long shows as stale in ``/health``."""
    feed_health_seconds: float = Field(default=5.0, gt=0)
    """How often the feed adapters' state is written to the store (the consoles' feeds view)."""
    batch_wait_ms: float = Field(default=2.0, ge=0)
    """How long the writer gathers a batch after its first event (latency vs throughput)."""

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

    def describe(self) -> str:
        """One line for the log: what is enabled (secrets only as set / not set)."""
        enabled = {
            "shopify": self.shopify_webhook_secret is not None,
            "square": self.square_signature_key is not None and bool(self.square_notification_url),
            "easypost": self.easypost_webhook_secret is not None,
            "amazon": self.amazon_relay_token is not None,
            "events": self.events_token is not None,
        }
        on = ", ".join(k for k, v in enabled.items() if v) or "none"
        return (
            f"store {self.db}; webhooks: {on}; streams {len(self.streams)}, "
            f"polls {len(self.polls)}, kafka {len(self.kafka)}; "
            f"drop folder {self.drop_folder or 'off'}; "
            f"mapping {self.mapping_file or 'none'}"
        )


def config_file() -> Path:
    """The config file in force: ``$OMNIOPS_CONFIG`` or the default location."""
    return Path(os.environ.get("OMNIOPS_CONFIG", str(DEFAULT_CONFIG))).expanduser()


def _file_table() -> dict[str, Any]:
    path = config_file()
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    table = dict(data.get("serve", {}))
    if "db" in data and "db" not in table:
        table["db"] = data["db"]
    return table


def load_serve_config(**overrides: Any) -> ServeConfig:
    """The configuration in force, with ``overrides`` (command-line options) on top.

    Overrides that are None are left out, so an option not given does not hide the
    environment or the file.
    """
    return ServeConfig(**{k: v for k, v in overrides.items() if v is not None})
