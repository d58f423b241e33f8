"""The one settings model: where its file is, every existing key and env var, precedence."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from feeds.settings import (
    PollSubscription,
    ServeConfig,
    Settings,
    StreamSubscription,
    WebConfig,
    config_file,
    load_serve_config,
    load_web_config,
)

EVERY_KEY = """
db = "/srv/shop.db"
refresh_interval = 30
display_timezone = "Europe/Paris"
rules_file = "/etc/omniops/rules.toml"
keys = { refresh = "f5", quit = "ctrl+q" }

[metrics]
timezone = "America/Chicago"
top_n = 50
stale_overrides = { catalog = 600.0 }

[roles]
editors = ["ana"]
operators = ["bo"]
default_role = "operator"

[serve]
host = "0.0.0.0"
port = 9001
tls_cert = "/etc/ssl/c.pem"
tls_key = "/etc/ssl/k.pem"
max_body_bytes = 1024
shopify_webhook_secret = "a"
shopify_webhook_secret_previous = "b"
square_signature_key = "c"
square_notification_url = "https://example.test/sq"
easypost_webhook_secret = "d"
amazon_relay_token = "e"
events_token = "f"
mapping_file = "/etc/omniops/mapping.toml"
drop_folder = "/srv/drop"
drop_timezone = "America/Denver"
history_channel = "web"
history_location = "WH9"
stale_after_minutes = 5
batch_wait_ms = 1.5

[[serve.streams]]
name = "wms"
url = "http://127.0.0.1:1/s"
format = "ndjson"
token = "t"
cursor_param = "from"
max_backoff_seconds = 9

[[serve.polls]]
name = "erp"
url = "https://127.0.0.1:2/p"
interval_seconds = 12
since_param = "after"
token = "u"
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No operator environment leaks in: a fresh HOME, no OMNIOPS_* or XDG_* variables."""
    import os

    for name in list(os.environ):
        if name.startswith(("OMNIOPS_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_file_location_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = write(tmp_path / "home/.config/omniops/config.toml", "refresh_interval = 1\n")
    assert config_file() == home
    assert Settings().refresh_interval == 1

    xdg = write(tmp_path / "xdg/omniops/config.toml", "refresh_interval = 2\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_file() == xdg
    assert Settings().refresh_interval == 2

    named = write(tmp_path / "named.toml", "refresh_interval = 3\n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(named))
    assert config_file() == named
    assert Settings().refresh_interval == 3
    assert load_serve_config().db == Path("omniops.db")

    monkeypatch.setenv("OMNIOPS_CONFIG", "")  # empty: as if unset
    assert config_file() == xdg
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    assert config_file() == home


def test_defaults_work_with_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    settings = Settings()
    assert settings.db == settings.serve.db == Path("omniops.db")
    assert (settings.serve.host, settings.serve.port) == ("127.0.0.1", 8080)
    assert settings.serve.streams == [] and settings.rules_file is None


def test_every_existing_key_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(write(tmp_path / "c.toml", EVERY_KEY)))
    s = Settings()
    assert (s.db, s.refresh_interval, s.display_timezone) == (
        Path("/srv/shop.db"),
        30,
        "Europe/Paris",
    )
    assert s.rules_file == Path("/etc/omniops/rules.toml")
    assert s.keys == {"refresh": "f5", "quit": "ctrl+q"}
    assert (s.metrics.timezone, s.metrics.top_n) == ("America/Chicago", 50)
    assert s.metrics.stale_overrides == {"catalog": 600.0}
    assert (s.roles.editors, s.roles.operators, s.roles.default_role) == (
        ("ana",),
        ("bo",),
        "operator",
    )
    v = s.serve
    assert v.db == Path("/srv/shop.db")  # the top-level db, as before
    assert (v.host, v.port, v.max_body_bytes) == ("0.0.0.0", 9001, 1024)
    assert (v.tls_cert, v.tls_key) == (Path("/etc/ssl/c.pem"), Path("/etc/ssl/k.pem"))
    secrets = [
        v.shopify_webhook_secret,
        v.shopify_webhook_secret_previous,
        v.square_signature_key,
        v.easypost_webhook_secret,
        v.amazon_relay_token,
        v.events_token,
    ]
    assert [x.get_secret_value() if x else None for x in secrets] == list("abcdef")
    assert v.square_notification_url == "https://example.test/sq"
    assert (v.mapping_file, v.drop_folder) == (Path("/etc/omniops/mapping.toml"), Path("/srv/drop"))
    assert (v.drop_timezone, v.history_channel, v.history_location) == (
        "America/Denver",
        "web",
        "WH9",
    )
    assert (v.stale_after_minutes, v.batch_wait_ms) == (5, 1.5)
    stream = v.streams[0]
    assert (stream.name, stream.format, stream.cursor_param, stream.max_backoff_seconds) == (
        "wms",
        "ndjson",
        "from",
        9,
    )
    assert stream.token is not None and stream.token.get_secret_value() == "t"
    poll = v.polls[0]
    assert (poll.name, poll.interval_seconds, poll.since_param) == ("erp", 12, "after")
    assert "abcdef"[0] not in repr(v.shopify_webhook_secret)
    # The serve loader sees the same section.
    assert load_serve_config() == v


def test_every_existing_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(write(tmp_path / "c.toml", EVERY_KEY)))
    monkeypatch.setenv("OMNIOPS_DB", "/env/store.db")
    monkeypatch.setenv("OMNIOPS_REFRESH_INTERVAL", "7")
    monkeypatch.setenv("OMNIOPS_METRICS__TOP_N", "9")
    monkeypatch.setenv("OMNIOPS_PORT", "9100")  # the flat names serve has always read
    monkeypatch.setenv("OMNIOPS_EVENTS_TOKEN", "from-env")
    monkeypatch.setenv("OMNIOPS_STREAMS", '[{"name": "x", "url": "http://127.0.0.1:3/"}]')
    s = Settings()
    assert (s.db, s.refresh_interval, s.metrics.top_n) == (Path("/env/store.db"), 7, 9)
    assert s.serve.db == Path("/env/store.db")
    assert s.serve.port == 9100 and s.serve.host == "0.0.0.0"  # env over file, file kept
    assert s.serve.events_token == SecretStr("from-env")
    assert [x.name for x in s.serve.streams] == ["x"]
    monkeypatch.setenv("OMNIOPS_SERVE__PORT", "9200")  # the nested name beats the flat one
    assert Settings().serve.port == 9200
    assert load_serve_config(port=9300, host=None).port == 9300  # command line over both


def test_serve_db_follows_db_unless_serve_sets_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "c.toml", 'db = "/a.db"\n[serve]\ndb = "/b.db"\n')
    monkeypatch.setenv("OMNIOPS_CONFIG", str(path))
    s = Settings()
    assert (s.db, s.serve.db) == (Path("/a.db"), Path("/b.db"))
    assert load_serve_config(db=Path("/c.db")).db == Path("/c.db")


def test_web_is_a_section_of_the_one_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """[web] loads through Settings: file, flat and nested env names, top-level db, CLI on top."""
    from feeds.runtime.web_config import load_web_config as web_module_loader

    path = write(
        tmp_path / "c.toml",
        'db = "/a.db"\n[web]\nport = 8101\nmax_sessions = 3\nusers = { ana = "$T_ANA" }\n',
    )
    monkeypatch.setenv("OMNIOPS_CONFIG", str(path))
    w = Settings().web
    assert (w.db, w.port, w.max_sessions, w.users) == (Path("/a.db"), 8101, 3, {"ana": "$T_ANA"})
    assert web_module_loader is load_web_config
    monkeypatch.setenv("OMNIOPS_WEB_PORT", "8102")  # the flat name omniops web always read
    monkeypatch.setenv("OMNIOPS_WEB_MAX_SESSIONS", "5")
    assert (load_web_config().port, load_web_config().max_sessions) == (8102, 5)
    monkeypatch.setenv("OMNIOPS_WEB__PORT", "8103")  # the nested name beats it
    assert load_web_config().port == 8103
    assert load_web_config(port=8104, host=None).port == 8104  # the command line over both
    assert load_web_config(port=8104).max_sessions == 5  # and the rest is kept
    bad = write(tmp_path / "bad.toml", "[web]\nprot = 1\n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(bad))
    with pytest.raises(ValidationError, match=r"web\.prot"):
        Settings()


def test_bad_file_names_the_file_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(tmp_path / "bad.toml", "[serve]\nprot = 1\n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(bad))
    with pytest.raises(ValidationError, match=r"serve\.prot"):
        Settings()
    broken = write(tmp_path / "broken.toml", "db = \n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(broken))
    with pytest.raises(ValueError, match=r"broken\.toml"):
        Settings()


@pytest.mark.parametrize(
    "model",
    [Settings, ServeConfig, WebConfig, StreamSubscription, PollSubscription],
    ids=lambda m: m.__name__,
)
def test_every_field_has_a_docstring(model: type[BaseModel]) -> None:
    missing = [name for name, field in model.model_fields.items() if not field.description]
    assert missing == []


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ('top_n = "many"', "metrics.top_n: Input should be a valid integer"),
        ("return_fdr_q = 2", "metrics.return_fdr_q: Value error, return_fdr_q is a false"),
        ("velocty_window_days = 3", "metrics.velocty_window_days: Extra inputs"),
        # Values that once reached the day arithmetic (an OverflowError traceback) or a
        # division, or made a window run backwards, are refused under their key.
        ("pick_window_hours = inf", "metrics.pick_window_hours: Value error, pick_window_hours"),
        ("velocity_window_days = 0", "velocity_window_days must be at least 1 and at most 36,500"),
        ("return_window_days = -1", "return_window_days must be above 0"),
        ("stale_feed_minutes = nan", "stale_feed_minutes must be above 0 and at most 52,560,000"),
        ("delivery_window_days = 1e300", "delivery_window_days must be above 0"),
        ("stale_overrides = { catalog = inf }", "stale_overrides['catalog']: minutes must be"),
        ("oversell_channel_tolerance = { web = [1, nan] }", "['web']: percent must be at least 0"),
        ("top_n = 0", "metrics.top_n: Value error, top_n must be at least 1"),
    ],
    ids=[
        "type",
        "check",
        "unknown",
        "infinite-window",
        "zero-velocity-window",
        "negative-window",
        "nan-staleness",
        "window-past-year-one",
        "override",
        "channel-tolerance",
        "no-rows",
    ],
)
def test_a_bad_metrics_value_is_one_line_naming_its_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    line: str,
    named: str,
) -> None:
    from console.cli import main

    config = write(tmp_path / "c.toml", f"[metrics]\n{line}\n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(config))
    assert main(["report", "--db", str(tmp_path / "s.db")]) == 2
    said = capsys.readouterr().err
    assert said.startswith("omniops report: the settings (") and str(config) in said
    assert named in said and "Traceback" not in said and said.count("\n") == 1


def test_no_traceback_for_bad_settings_from_the_command(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    config = write(tmp_path / "c.toml", '[metrics]\ntop_n = "many"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIOPS_", "XDG_"))}
    env |= {"OMNIOPS_CONFIG": str(config), "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "console.cli", "report", "--db", str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "metrics.top_n" in done.stderr


def test_the_metrics_section_is_the_store_s_dataclass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from store.risk import MetricParams

    config = write(
        tmp_path / "c.toml",
        "[metrics]\nexpected_feeds = ['wms']\nreturn_min_count = '4'\n"
        "oversell_channel_tolerance = { marketplace = [10, 1.5] }\n",
    )
    monkeypatch.setenv("OMNIOPS_CONFIG", str(config))
    metrics = Settings().metrics
    assert type(metrics) is MetricParams
    assert metrics == MetricParams(
        expected_feeds=("wms",),
        return_min_count=4,
        oversell_channel_tolerance={"marketplace": (10, 1.5)},
    )
    assert metrics.oversell_limits("marketplace")[:2] == (10, 1.5)
    given = dataclasses.replace(metrics, top_n=3)
    assert Settings(metrics=given).metrics == given
    assert Settings(metrics={"top_n": 5}).model_dump()["metrics"]["top_n"] == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.top_n = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        MetricParams(velocty_window_days=3)  # type: ignore[call-arg]


def test_nothing_configured_reads_the_defaults_without_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.cli import DefaultSettings, read_settings

    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "none.toml"))  # named, not there
    monkeypatch.setenv("OMNIOPS_RULES", str(tmp_path / "rules.toml"))
    fast, full = read_settings(), Settings()
    assert isinstance(fast, DefaultSettings)
    for name in ("db", "refresh_interval", "display_timezone", "rules_file", "keys", "metrics"):
        assert getattr(fast, name) == getattr(full, name), name
    assert fast.display_tz() == full.display_tz() and fast.roles == full.roles


def test_the_variables_the_defaults_allow_are_no_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.cli import SETTINGS_FREE_ENV

    defaults = Settings().model_dump()
    for name in SETTINGS_FREE_ENV - {"OMNIOPS_CONFIG"}:  # that one names the file
        monkeypatch.setenv(name, "7")
    assert Settings().model_dump() == defaults


@pytest.mark.parametrize(
    ("variable", "config"),
    [
        (None, "refresh_interval = 5\n"),
        ("OMNIOPS_REFRESH_INTERVAL", None),
        ("omniops_refresh_interval", None),
        ("OMNIOPS_SERVE__PORT", None),
    ],
    ids=["file", "variable", "lower-case", "nested"],
)
def test_a_file_or_a_variable_is_read_and_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str | None, config: str | None
) -> None:
    from console.cli import read_settings

    path = tmp_path / "c.toml"
    if config is not None:
        write(path, config)
    monkeypatch.setenv("OMNIOPS_CONFIG", str(path))
    if variable is not None:
        monkeypatch.setenv(variable, "5")
    read = read_settings()
    assert isinstance(read, Settings)
    assert (read.refresh_interval == 5) is (variable != "OMNIOPS_SERVE__PORT")
    if variable is not None:
        monkeypatch.setenv(variable, "soon")
        with pytest.raises(ValidationError):
            read_settings()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("serve", "batch_wait_ms", "inf"),  # a writer that never commits
        ("serve", "max_past_days", "1e300"),  # the time window's arithmetic overflowed
        ("serve", "max_body_bytes", "1000000000000000000000"),
        ("serve", "stale_after_minutes", "nan"),
        ("web", "login_hours", "inf"),
        ("", "refresh_interval", "1e300"),
    ],
)
def test_unbounded_numbers_are_refused_under_their_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    section: str,
    key: str,
    value: str,
) -> None:
    from console.cli import main

    header = f"[{section}]\n" if section else ""
    config = write(tmp_path / "c.toml", f"{header}{key} = {value}\n")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(config))
    assert main(["report", "--db", str(tmp_path / "s.db")]) == 2
    said = capsys.readouterr().err
    named = f"{section}.{key}" if section else key
    assert f"{named}: " in said and "Traceback" not in said and said.count("\n") == 1, said
