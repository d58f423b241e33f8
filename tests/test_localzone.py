"""The default display zone is the machine's zone by name, so summer and winter both show right."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import pytest

from feeds.localzone import local_zone
from feeds.settings import Settings

ZONEINFO = Path("/usr/share/zoneinfo")
WINTER = datetime(2026, 1, 15, 12, tzinfo=UTC)
SUMMER = datetime(2026, 7, 15, 12, tzinfo=UTC)
needs_tzdata = pytest.mark.skipif(
    not (ZONEINFO / "Europe/Paris").exists(), reason="needs the system tz database"
)


def offsets(zone: tzinfo) -> tuple[timedelta | None, timedelta | None]:
    return WINTER.astimezone(zone).utcoffset(), SUMMER.astimezone(zone).utcoffset()


NOWHERE = {"localtime": Path("/nonexistent/localtime"), "timezone_file": Path("/nonexistent/tz")}


def test_tz_names_the_zone_and_daylight_saving_applies() -> None:
    zone = local_zone({"TZ": "America/New_York"}, **NOWHERE)
    assert getattr(zone, "key", None) == "America/New_York"
    assert offsets(zone) == (timedelta(hours=-5), timedelta(hours=-4))
    assert getattr(local_zone({"TZ": ":Europe/Paris"}, **NOWHERE), "key", None) == "Europe/Paris"
    assert local_zone({"TZ": ""}, **NOWHERE) == UTC  # set but empty: UTC (POSIX)


@needs_tzdata
def test_tz_as_a_path_and_etc_localtime(tmp_path: Path) -> None:
    by_path = local_zone({"TZ": str(ZONEINFO / "Europe/Paris")}, **NOWHERE)
    assert getattr(by_path, "key", None) == "Europe/Paris"
    link = tmp_path / "localtime"
    link.symlink_to(ZONEINFO / "Australia/Sydney")
    zone = local_zone({}, localtime=link, timezone_file=NOWHERE["timezone_file"])
    assert getattr(zone, "key", None) == "Australia/Sydney"
    assert offsets(zone) == (timedelta(hours=11), timedelta(hours=10))
    copy = tmp_path / "copied"
    copy.write_bytes((ZONEINFO / "Europe/Paris").read_bytes())  # a copy, not a link
    assert offsets(local_zone({}, localtime=copy, timezone_file=NOWHERE["timezone_file"])) == (
        timedelta(hours=1),
        timedelta(hours=2),
    )
    name_file = tmp_path / "timezone"
    name_file.write_text("Asia/Tokyo\n")
    assert (
        getattr(
            local_zone({}, localtime=NOWHERE["localtime"], timezone_file=name_file), "key", None
        )
        == "Asia/Tokyo"
    )
    assert local_zone({"TZ": "Not/AZone"}, **NOWHERE) == UTC  # nothing found: UTC


def test_settings_default_display_zone_follows_tz_in_a_fresh_process(tmp_path: Path) -> None:
    """A process started in winter still shows summer times with the summer offset."""
    code = (
        "from datetime import datetime, UTC\n"
        "from feeds.settings import Settings\n"
        "z = Settings().display_tz()\n"
        "print(getattr(z, 'key', z))\n"
        "print(datetime(2026, 7, 15, 12, tzinfo=UTC).astimezone(z).isoformat())\n"
        "print(datetime(2026, 1, 15, 12, tzinfo=UTC).astimezone(z).isoformat())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIOPS_")}
    env |= {"TZ": "America/Chicago", "OMNIOPS_CONFIG": str(tmp_path / "absent.toml")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == ["America/Chicago", "2026-07-15T07:00:00-05:00", "2026-01-15T06:00:00-06:00"]


def test_configured_display_zone_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("TZ", "America/Chicago")
    monkeypatch.setenv("OMNIOPS_DISPLAY_TIMEZONE", "Asia/Tokyo")
    assert getattr(Settings().display_tz(), "key", None) == "Asia/Tokyo"
