"""The command line explains itself: a user's page, help on every option, clear refusals."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from console.cli import COMMANDS, build_parser, main


def walk(
    parser: argparse.ArgumentParser, path: str = "omniops"
) -> list[tuple[str, argparse.Action]]:
    """Every (command path, action) of the parser and its subcommands, recursively."""
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.extend(walk(child, f"{path} {name}"))
        else:
            found.append((path, action))
    return found


def test_every_option_of_every_command_has_help() -> None:
    actions = walk(build_parser())
    assert len({p for p, _ in actions}) > len(COMMANDS)  # subcommands of subcommands too
    missing = [
        f"{path}: {'/'.join(a.option_strings) or a.dest}"
        for path, a in actions
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_the_main_help_is_a_users_page(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    page = capsys.readouterr().out
    for command in COMMANDS:  # each command on a line of its own, with an example
        lines = [ln for ln in page.splitlines() if ln.strip().startswith(command + " ")]
        assert lines, command
        assert f"omniops {command}" in lines[0], lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("omniops ") and out.split()[1][0].isdigit()


def test_speed_zero_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--speed", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --speed: 0: give simulated seconds per wall second above 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["report", "ingest"])
def test_bad_db_files_get_one_clear_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    missing_folder = tmp_path / "no-such-folder" / "s.db"
    extra = [str(Path(__file__).parent.parent / "fixtures" / "day")] if command == "ingest" else []
    cases = {
        empty: "an empty file (0 bytes)",
        text: "not an SQLite file",
        missing_folder: f"the folder {missing_folder.parent} does not exist",
    }
    for db, says in cases.items():
        assert main([command, *extra, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
        assert "Traceback" not in err
    assert not missing_folder.parent.exists()  # never created silently
    assert empty.read_bytes() == b"" and text.read_text() == "not a database\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["demo", "--refresh", "0"], "--refresh"),
        (["demo", "--refresh", "-1"], "--refresh"),
        (["report", "--db", "{db}", "--timezone", "Mars/Olympus"], "Mars/Olympus"),
        # Values that once reached date arithmetic (an OverflowError traceback) or the
        # replay clock: refused by the option, with its range.
        (["report", "--db", "{db}", "--at", "0001-01-01T00:00:00Z"], "give a time from 1900"),
        (["report", "--db", "{db}", "--at", "0001-01-01T00:00:00+01:00"], "from 1900 to 8999"),
        (["report", "--db", "{db}", "--at", "9999-12-31T23:59:59Z"], "from 1900 to 8999"),
        (["demo", "--speed", "1e300"], "at most 31536000 (a year a second)"),
        (["demo", "--refresh", "1e9"], "at most 86400 (a day)"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No traceback: argparse names the option and the value."""
    argv = [a.replace("{db}", str(tmp_path / "s.db")) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("omniops")


def test_a_demo_of_an_empty_fixture_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "fixtures"
    empty.mkdir()
    db = tmp_path / "x.db"
    assert main(["demo", "--fixtures", str(empty), "--db", str(db)]) == 2
    assert f"omniops demo: {empty}: no fixture files (*.jsonl" in capsys.readouterr().err
    assert not db.exists()  # nothing was built
