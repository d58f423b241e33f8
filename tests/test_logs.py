"""The console and the demo log to a file under the state folder, and say where in --help."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from console.cli import build_parser, main
from feeds.runtime.logs import log_file, stop_logging_to_file


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv("OMNIOPS_LOG_FILE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    yield tmp_path / "state"
    stop_logging_to_file()


def test_a_warning_lands_in_the_state_folder_log(state_home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    assert main(["console", "--db", str(missing)]) == 2  # configures the log, then refuses
    logging.getLogger("feeds.stream").warning("feed wms: retrying in 2.0 s")
    path = state_home / "omniops" / "omniops.log"
    assert log_file() == path
    text = path.read_text(encoding="utf-8")
    assert f"ERROR omniops: {missing}: no such store" in text
    assert "WARNING feeds.stream: feed wms: retrying in 2.0 s" in text


def test_the_log_file_can_be_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moved = tmp_path / "elsewhere" / "console.log"
    monkeypatch.setenv("OMNIOPS_LOG_FILE", str(moved))
    assert main(["console", "--db", str(tmp_path / "none.db")]) == 2
    main(["console", "--db", str(tmp_path / "none.db")])  # a second call: one handler
    logging.getLogger("rules.watch").warning("rules file change refused")
    assert moved.read_text(encoding="utf-8").count("rules file change refused") == 1


@pytest.mark.parametrize("command", [[], ["console"], ["demo"]])
def test_help_says_where_the_log_is(
    command: list[str], state_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps the epilog, at hyphens too
    assert str(state_home / "omniops" / "omniops.log") in out
    assert "OMNIOPS_LOG_FILE" in out
