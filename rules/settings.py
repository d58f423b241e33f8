"""Configuration of every omniops process: no file needed, a TOML file, or the environment.

The file is the one ``OMNIOPS_CONFIG`` names (default ``~/.config/omniops/config.toml``,
used only if it exists).  Environment variables override the file: ``OMNIOPS_DB``,
``OMNIOPS_REFRESH_INTERVAL``, and nested metric knobs as ``OMNIOPS_METRICS__TOP_N``.
"""

from __future__ import annotations

import os
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rules.alerts import Roles
from store.risk import MetricParams

DEFAULT_CONFIG = Path("~/.config/omniops/config.toml").expanduser()


def config_path() -> Path:
    """The config file in force: ``$OMNIOPS_CONFIG`` or the default location."""
    return Path(os.environ.get("OMNIOPS_CONFIG", DEFAULT_CONFIG)).expanduser()


class Settings(BaseSettings):
    """Everything an operator can configure; every field has a working default."""

    model_config = SettingsConfigDict(
        env_prefix="OMNIOPS_", env_nested_delimiter="__", extra="forbid"
    )

    db: Path = Path("omniops.db")
    """The SQLite store file."""
    refresh_interval: float = Field(default=60.0, gt=0)
    """Seconds between panel refreshes in the console (``r`` refreshes at once)."""
    display_timezone: str | None = None
    """Time zone times are shown in; default: the operator's own (the machine's) zone."""
    keys: dict[str, str] = {}
    """Key remapping by binding id, e.g. ``{refresh = "f5", quit = "ctrl+q"}``."""
    metrics: MetricParams = MetricParams()
    rules_file: Path | None = None
    """The rules file (alerts, notifications, fulfilment routing); default
    ``$OMNIOPS_RULES`` or ``~/.config/omniops/rules.toml``, written with the shipped
    defaults on first run."""
    roles: Roles = Roles()
    """Who may edit rules, acknowledge and silence, by OS user; unknown users only view."""
    serve: dict[str, Any] = {}
    """The ``[serve]`` table, read by ``omniops serve`` (see ``feeds.runtime.serve_config``)."""
    web: dict[str, Any] = {}
    """The ``[web]`` table, read by ``omniops web`` (see ``feeds.runtime.web_config``)."""
    """Metric windows and thresholds; ``metrics.timezone`` sets the store's local day."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, then the environment, then the TOML file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_path()
        if path.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def display_tz(self) -> tzinfo:
        """The zone to show times in."""
        if self.display_timezone:
            try:
                return ZoneInfo(self.display_timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(
                    f"display_timezone: unknown zone {self.display_timezone!r}"
                ) from exc
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else ZoneInfo("UTC")
