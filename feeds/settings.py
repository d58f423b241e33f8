"""The configuration of every omniops process, as one model: no file needed, a TOML file, env.

:class:`Settings` holds what the console, the demo, ``report`` and ``omniops serve`` read;
``serve`` and ``web`` are its nested sections (:class:`ServeConfig`, the ``[serve]`` table;
:class:`WebConfig`, the ``[web]`` table).

Where the file is: ``$OMNIOPS_CONFIG`` if set, else ``$XDG_CONFIG_HOME/omniops/config.toml``
(default ``~/.config/omniops/config.toml``); it is read only if it exists, and every field
has a working default without it.

Precedence, highest first:

1. constructor arguments (the command line: ``load_serve_config(port=...)``);
2. the environment: ``OMNIOPS_<FIELD>`` for top-level fields (``OMNIOPS_DB``,
   ``OMNIOPS_REFRESH_INTERVAL``), nested ones with ``__`` (``OMNIOPS_METRICS__TOP_N``,
   ``OMNIOPS_SERVE__PORT``), and, for the serve section, the flat names ``omniops serve``
   has always read (``OMNIOPS_PORT``, ``OMNIOPS_SHOPIFY_WEBHOOK_SECRET``) and for the web
   section ``OMNIOPS_WEB_<FIELD>`` (``OMNIOPS_WEB_PORT``), which a nested name beats;
3. the file;
4. the defaults.

``serve.db`` and ``web.db`` follow the top-level ``db`` unless their section sets its own (or
``--db`` is given), so one ``db = ...`` line configures the console, the server and the web
view alike.

Secrets are :class:`pydantic.SecretStr`: they print as ``**********`` and
:meth:`ServeConfig.describe` names which are set, never their values.  Keep them in the
environment (or a secrets manager that sets it), not in the file.

The model sits in ``feeds`` because it needs the rules' :class:`~rules.alerts.Roles` and the
store's :class:`~store.risk.MetricParams` and is read by the runtimes (``feeds.runtime``) and
the console above them; nothing in ``rules`` or ``store`` reads it.
"""

from __future__ import annotations

import ast
import dataclasses
import hmac
import inspect
import os
import re
import tomllib
import typing
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from feeds.kafka.config import KafkaOut, KafkaSubscription
from feeds.localzone import local_zone
from rules.roles import Roles
from rules.textfile import read_regular
from store.paths import config_dir
from store.risk import METRIC_CHECKS, MetricParams


def attribute_docstrings(source: str) -> dict[str, dict[str, str]]:
    """The docstring under each annotated field of each top-level class of ``source``.

    What pydantic's ``use_attribute_docstrings`` reads, found with one parse of the module
    instead of pydantic's search of the source per class (0.07-0.2 s of every start).
    """
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields: dict[str, str] = {}
        for field, doc in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
                and "ClassVar" not in ast.unparse(field.annotation)
            ):
                fields[field.target.id] = inspect.cleandoc(doc.value.value)
        docs[node.name] = fields
    return docs


_FIELD_DOCS = attribute_docstrings(Path(__file__).read_text(encoding="utf-8"))
"""Every field docstring of this module, by class: they are the fields' descriptions."""


class Described:
    """Gives each field its docstring as its description, before pydantic collects fields.

    A base of every model here (first, before the pydantic base): pydantic then builds the
    fields with ``Field(description=<docstring>)`` as if it had been written out.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Turn each documented field's default into a ``Field`` carrying its docstring."""
        super().__init_subclass__(**kwargs)
        for name, doc in _FIELD_DOCS.get(cls.__name__, {}).items():
            if name.startswith("_") or cls.__module__ != __name__:
                continue
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, FieldInfo):
                if value.description is None:  # what pydantic's own docstring reading does
                    value.description = doc
                    # and what it merges into the field it builds from this one (pydantic 2)
                    value._attributes_set["description"] = doc
            elif value is _MISSING:
                setattr(cls, name, Field(description=doc))
            else:
                setattr(cls, name, Field(default=value, description=doc))


_MISSING = object()


CONFIG_ENV = "OMNIOPS_CONFIG"
"""The environment variable that names the config file."""


def default_config_file() -> Path:
    """``$XDG_CONFIG_HOME/omniops/config.toml`` (default ``~/.config/omniops/config.toml``)."""
    return config_dir() / "config.toml"


def config_file() -> Path:
    """The config file in force: ``$OMNIOPS_CONFIG``, else :func:`default_config_file`."""
    named = os.environ.get(CONFIG_ENV)
    return Path(named).expanduser() if named else default_config_file()


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


class StreamSubscription(Described, BaseModel):
    """One HTTP stream to subscribe to (a ``[[serve.streams]]`` table)."""

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
    max_backoff_seconds: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between reconnection attempts."""

    _http = field_validator("url")(_http_url)


class PollSubscription(Described, BaseModel):
    """One REST endpoint to poll with a since-cursor (a ``[[serve.polls]]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    """Feed name: where its cursor and health are kept."""
    url: str
    """The endpoint; ``?since=<cursor>`` is added."""
    interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    """Seconds between polls."""
    since_param: str = "since"
    """The query parameter that carries the cursor."""
    token: SecretStr | None = None
    """Sent as ``Authorization: Bearer <token>`` when set."""

    _http = field_validator("url")(_http_url)


class ServeConfig(Described, BaseModel):
    """The ``[serve]`` section: everything ``omniops serve`` can be told.

    Build it with :func:`load_serve_config` (file, environment and command line); a
    direct ``ServeConfig(...)`` takes only its arguments and the defaults.
    """

    model_config = ConfigDict(extra="forbid")

    db: Path = Path("omniops.db")
    """The SQLite store this process writes (the only writer); default: the top-level ``db``."""
    host: str = "127.0.0.1"
    """Address to listen on.  Loopback by default: expose it through a reverse proxy."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port to listen on (0: any free port; the chosen one is printed)."""
    tls_cert: Path | None = None
    """PEM certificate chain; with ``tls_key``, serve HTTPS directly."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, gt=0, le=1024**3)
    """Largest request body accepted; larger ones are answered 413 and not read."""
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """Longest a request body may take to arrive once its headers have; a slower one (a
    client trickling bytes to hold a connection) is answered 408 and closed."""
    shopify_webhook_secret: SecretStr | None = None
    """Shopify app client secret (signs ``X-Shopify-Hmac-Sha256``); unset: endpoint off."""
    shopify_webhook_secret_previous: SecretStr | None = None
    """The previous Shopify secret, still accepted while a rotation is under way."""
    square_signature_key: SecretStr | None = None
    """Square webhook signature key; unset: ``/webhooks/square`` is off."""
    square_notification_url: str | None = None
    """The notification URL exactly as registered with Square (it is part of what is signed)."""
    square_access_token: SecretStr | None = None
    """Square access token (``OMNIOPS_SQUARE_ACCESS_TOKEN``): ``serve`` fetches each notified
    order (and refund) from the Orders API with it; unset, notifications are kept pending."""
    square_api_url: str = "https://connect.squareup.com"
    """Base URL of Square's API (``https://connect.squareupsandbox.com`` for the sandbox)."""
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
    api_token: SecretStr | None = None
    """Bearer token for the read endpoints (``GET /health``, ``GET /metrics``, ``POST /route``,
    ``GET /route/{order_id}``); unset: they are open (keep them on loopback or behind the
    proxy).  Set but empty is a configuration error: they answer 503."""
    max_past_days: float = Field(default=3650.0, gt=0, le=36_500)
    """Event times (``ts``) older than this many days before the server's clock are refused
    (422, quarantined): a year-0001 order is a sender's bug, not history."""
    max_future_days: float = Field(default=365.0, gt=0, le=36_500)
    """Event times more than this many days after the server's clock are refused."""
    max_promise_days: float = Field(default=730.0, gt=0, le=36_500)
    """Promises, ETAs and delivery estimates are accepted up to this many days either side
    of the server's clock."""
    kafka: list[KafkaSubscription] = []
    """Kafka consumer-group subscriptions (``[[serve.kafka]]``, see :mod:`feeds.kafka`)."""
    kafka_out: KafkaOut | None = None
    """Publish routing decisions and alert notifications to Kafka (``[serve.kafka_out]``)."""
    stale_after_minutes: float = Field(default=15.0, gt=0, le=52_560_000)
    """A feed with nothing for this long shows as stale in ``/health``."""
    feed_health_seconds: float = Field(default=5.0, gt=0, le=86_400)
    """How often the feed adapters' state is written to the store (the consoles' feeds view)."""
    batch_wait_ms: float = Field(default=0.0, ge=0, le=1000)
    """How long the writer gathers a batch after its first event (latency vs throughput).

    0 (the default) is group commit: no timer, a batch is whatever queued while the previous
    one committed, so a burst still commits in few transactions and a lone event at once.
    A wait only idles the writer while callers gated on the commit (webhooks answered once
    durable) cannot send more (``python -m tests.bench_webhooks --batch-wait-ms 2``)."""
    events_workers: int = Field(default=0, ge=0, le=64)
    """Processes that validate ``POST /events`` batches off the writer's GIL (0: threads)."""

    _square_api = field_validator("square_api_url")(_http_url)

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


MIN_TOKEN_CHARS = 16
"""Shortest token accepted (``python -c 'import secrets; print(secrets.token_urlsafe())'``)."""

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV_NAME = re.compile(r"^\$?([A-Za-z_][A-Za-z0-9_]*)$")


class WebConfigError(ValueError):
    """The ``[web]`` configuration cannot be used (names the key and what to do)."""


class WebConfig(Described, BaseModel):
    """The ``[web]`` section: everything ``omniops web`` can be told.

    Every field but ``users`` has a default.  Build it with
    :func:`feeds.runtime.web_config.load_web_config` (file, environment and command line);
    a direct ``WebConfig(...)`` takes only its arguments and the defaults.

    Who may log in is the ``users`` table: a web user's name and the *name of an
    environment variable* that holds their token, never the token itself
    (``users = { ana = "$OMNIOPS_WEB_TOKEN_ANA" }``).  A variable that is unset or empty, a
    token shorter than :data:`MIN_TOKEN_CHARS`, a token written literally in the file, or
    two users sharing one token is a configuration error: ``omniops web`` refuses to start
    rather than open a door.
    """

    model_config = ConfigDict(extra="forbid")

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
    max_sessions: int = Field(default=8, ge=1, le=100_000)
    """Most browser sessions (console processes) at once; more are refused with 503."""
    idle_timeout_minutes: float = Field(default=30.0, gt=0, le=525_600)
    """A session with no key, click or resize for this long is closed (its process ends)."""
    login_hours: float = Field(default=12.0, gt=0, le=8_760)
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


def metrics_model(params: type[MetricParams] = MetricParams) -> type[BaseModel]:
    """The ``[metrics]`` section's model, generated from the :class:`MetricParams` dataclass.

    One field per dataclass field, with its type and default, unknown keys refused, and
    the dataclass's checks (:data:`~store.risk.METRIC_CHECKS`) as field validators, so that
    a bad value is reported under its key (``metrics.return_fdr_q: ...``) like any other.
    """
    hints = typing.get_type_hints(params)
    fields: dict[str, Any] = {}
    for spec in dataclasses.fields(params):
        if spec.default_factory is not dataclasses.MISSING:
            fields[spec.name] = (hints[spec.name], Field(default_factory=spec.default_factory))
        else:
            fields[spec.name] = (hints[spec.name], spec.default)

    def checked(name: str) -> Any:
        check = METRIC_CHECKS[name]

        def run(cls: type[BaseModel], value: Any) -> Any:
            check(value)
            return value

        return field_validator(name)(classmethod(run))

    validators = {f"_check_{name}": checked(name) for name in METRIC_CHECKS}
    return create_model(
        "MetricsSection",
        __config__=ConfigDict(frozen=True, extra="forbid"),
        __validators__=validators,
        **fields,
    )


MetricsSection = metrics_model()
"""The ``[metrics]`` section as pydantic validates it (then turned into a MetricParams)."""


def _metrics_in(value: Any) -> Any:
    """A :class:`MetricParams` given as is (``Settings(metrics=params)``) as its fields."""
    if isinstance(value, MetricParams):
        return {spec.name: getattr(value, spec.name) for spec in dataclasses.fields(value)}
    return value


def _metrics_out(section: BaseModel) -> MetricParams:
    """The validated section as the dataclass the store's computations take."""
    return MetricParams(**{name: getattr(section, name) for name in type(section).model_fields})


if TYPE_CHECKING:
    MetricsField = MetricParams
else:
    MetricsField = Annotated[
        MetricsSection,
        BeforeValidator(_metrics_in),
        AfterValidator(_metrics_out),
        PlainSerializer(dataclasses.asdict),
    ]
    """What ``Settings.metrics`` is: validated as :data:`MetricsSection`, held as a
    :class:`MetricParams`, dumped as its fields."""


class Settings(Described, BaseSettings):
    """Everything an operator can configure; every field has a working default."""

    model_config = SettingsConfigDict(
        env_prefix="OMNIOPS_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    db: Path = Path("omniops.db")
    """The SQLite store file."""
    refresh_interval: float = Field(default=60.0, gt=0, le=86_400)
    """Seconds between panel refreshes in the console (``r`` refreshes at once)."""
    display_timezone: str | None = None
    """Time zone times are shown in; default: the operator's own (the machine's) zone."""
    keys: dict[str, str] = {}
    """Key remapping by binding id, e.g. ``{refresh = "f5", quit = "ctrl+q"}``."""
    metrics: MetricsField = MetricParams()
    """Metric windows and thresholds; ``metrics.timezone`` sets the store's local day."""
    rules_file: Path | None = None
    """The rules file (alerts, notifications, fulfillment routing); default
    ``$OMNIOPS_RULES`` or ``~/.config/omniops/rules.toml``, written with the shipped
    defaults on first run."""
    roles: Roles = Roles()
    """Who may edit rules, acknowledge and silence, by OS user; unknown users only view."""
    serve: ServeConfig = ServeConfig()
    """The ``[serve]`` table, read by ``omniops serve``."""
    web: WebConfig = WebConfig()
    """The ``[web]`` table, read by ``omniops web``."""

    @model_validator(mode="before")
    @classmethod
    def _sections_db_follows_db(cls, data: Any) -> Any:
        """``serve.db`` and ``web.db`` default to the top-level ``db`` (their own ``db`` wins)."""
        if not isinstance(data, dict) or "db" not in data:
            return data
        for name in ("serve", "web"):
            section = data.get(name, {})
            if isinstance(section, dict) and "db" not in section:
                data = {**data, name: {**section, "db": data["db"]}}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, the environment (nested, then flat serve names), the file."""
        return (
            init_settings,
            env_settings,
            FlatServeEnvSource(settings_cls),
            FlatWebEnvSource(settings_cls),
            InitSettingsSource(settings_cls, init_kwargs=read_config_file(config_file())),
        )

    def display_tz(self) -> tzinfo:
        """The zone to show times in: ``display_timezone``, else the machine's zone by name."""
        if self.display_timezone:
            try:
                return ZoneInfo(self.display_timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(
                    f"display_timezone: unknown zone {self.display_timezone!r}"
                ) from exc
        return local_zone()


class FlatServeEnvSource(EnvSettingsSource):
    """The serve section's fields under their flat names: ``OMNIOPS_PORT``, ``OMNIOPS_DB``.

    ``omniops serve`` read these before the sections were merged; operators' unit files set
    them, so they keep working.  ``OMNIOPS_DB`` is also the top-level ``db``.
    """

    def __call__(self) -> dict[str, Any]:
        """``{"serve": {...}}`` with the fields set in the environment (or nothing)."""
        section: dict[str, Any] = {}
        for name, field in ServeConfig.model_fields.items():
            key = f"{self.env_prefix}{name}"
            raw = self.env_vars.get(key if self.case_sensitive else key.lower())
            if raw is None:
                continue
            is_complex = self.field_is_complex(field)
            section[name] = self.prepare_field_value(name, field, raw, is_complex)
        return {"serve": section} if section else {}


class FlatWebEnvSource(EnvSettingsSource):
    """The web section's fields under ``OMNIOPS_WEB_<FIELD>`` (``OMNIOPS_WEB_PORT``).

    ``omniops web`` read these names when it had a loader of its own; they keep working,
    and the nested ``OMNIOPS_WEB__PORT`` beats them.
    """

    def __call__(self) -> dict[str, Any]:
        """``{"web": {...}}`` with the fields set in the environment (or nothing)."""
        section: dict[str, Any] = {}
        for name, field in WebConfig.model_fields.items():
            key = f"{self.env_prefix}web_{name}"
            raw = self.env_vars.get(key if self.case_sensitive else key.lower())
            if raw is None:
                continue
            is_complex = self.field_is_complex(field)
            section[name] = self.prepare_field_value(name, field, raw, is_complex)
        return {"web": section} if section else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML file at ``path`` as a dict (empty when it does not exist).

    Raises:
        ValueError: the file is not valid TOML (the message names the file and line).
    """
    if not path.exists():
        return {}
    try:
        return tomllib.loads(read_regular(path).decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text: {exc}") from exc


def load_settings(**overrides: Any) -> Settings:
    """The settings in force, with ``overrides`` on top (None values are left out)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def load_serve_config(**overrides: Any) -> ServeConfig:
    """The serve section in force, with ``overrides`` (command-line options) on top.

    Overrides that are None are left out, so an option not given does not hide the
    environment or the file.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(serve=given).serve if given else Settings().serve


def load_web_config(**overrides: Any) -> WebConfig:
    """The web section in force, with ``overrides`` (command-line options) on top.

    Overrides that are None are left out, so an option not given does not hide the
    environment or the file.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(web=given).web if given else Settings().web
