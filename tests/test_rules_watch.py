"""Hot reload with a real file and real watchfiles: valid edits apply, invalid ones are refused
with their line while the last good rules stay.  Waits on events set by the callbacks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rules.file import LoadedRules, RulesFileError, default_rules_text
from rules.watch import RulesWatcher

TIMEOUT = 15.0


class Seen:
    """What the watcher reported, with an event per report."""

    def __init__(self) -> None:
        self.reloads: list[LoadedRules] = []
        self.errors: list[RulesFileError] = []
        self.reloaded = asyncio.Event()
        self.refused = asyncio.Event()

    def on_reload(self, loaded: LoadedRules) -> None:
        self.reloads.append(loaded)
        self.reloaded.set()

    async def on_error(self, error: RulesFileError) -> None:  # async callbacks work too
        self.errors.append(error)
        self.refused.set()

    async def next_reload(self) -> LoadedRules:
        await asyncio.wait_for(self.reloaded.wait(), TIMEOUT)
        self.reloaded.clear()
        return self.reloads[-1]

    async def next_error(self) -> RulesFileError:
        await asyncio.wait_for(self.refused.wait(), TIMEOUT)
        self.refused.clear()
        return self.errors[-1]


def replace_file(path: Path, text: str) -> None:
    """Save the way editors do: write a temporary file and rename it over the old one."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[tuple[RulesWatcher, Seen]]:
    seen = Seen()
    watcher = RulesWatcher(
        tmp_path / "rules.toml",
        on_reload=seen.on_reload,
        on_error=seen.on_error,
        create=True,
        debounce_ms=50,
    )
    task = watcher.start()
    await asyncio.wait_for(watcher.watching.wait(), TIMEOUT)
    yield watcher, seen
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_first_run_writes_the_defaults_and_loads_them(
    watched: tuple[RulesWatcher, Seen],
) -> None:
    watcher, seen = watched
    first = await seen.next_reload()
    assert first.text == default_rules_text()
    assert watcher.current is first and len(first.rules.alert) == 9


async def test_valid_edit_applies_invalid_is_refused_with_line_and_last_good_stays(
    watched: tuple[RulesWatcher, Seen],
) -> None:
    watcher, seen = watched
    await seen.next_reload()
    path = watcher.path
    text = path.read_text()

    # a valid edit, in place (as `echo >>` or the console's atomic save would)
    edited = text.replace("threshold = 10\n", "threshold = 14\n", 1)
    path.write_text(edited)
    loaded = await seen.next_reload()
    late = loaded.rules.rule("late_orders")
    assert late is not None and late.threshold == 14

    # an invalid edit, saved by rename like an editor: refused, located, last good kept
    broken = edited.replace("threshold = 14\n", 'threshold = "fourteen"\n', 1)
    replace_file(path, broken)
    error = await seen.next_error()
    line = broken.splitlines().index('threshold = "fourteen"') + 1
    assert str(error.first).startswith(f"{path}:{line}: alert[late_orders].threshold:")
    assert watcher.current is loaded
    assert watcher.error is error

    # fixed again: applies
    replace_file(path, edited.replace("threshold = 14\n", "threshold = 15\n", 1))
    fixed = await seen.next_reload()
    assert fixed.rules.rule("late_orders").threshold == 15  # type: ignore[union-attr]
    assert watcher.error is None


async def test_a_deleted_file_keeps_the_last_good_rules(
    watched: tuple[RulesWatcher, Seen],
) -> None:
    watcher, seen = watched
    good = await seen.next_reload()
    watcher.path.unlink()
    error = await seen.next_error()
    assert "cannot read" in str(error)
    assert watcher.current is good


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "the rules file is empty"),
        ("  \n\t\n", "the rules file is empty"),
        ('[notify.route]\nreceiver = "console"\n', "no alert list"),
    ],
)
async def test_an_empty_file_or_one_without_alerts_is_refused_and_the_last_good_stays(
    watched: tuple[RulesWatcher, Seen], text: str, why: str
) -> None:
    watcher, seen = watched
    good = await seen.next_reload()
    replace_file(watcher.path, text)
    error = await seen.next_error()
    assert why in str(error.first) and "alert = []" in str(error.first)
    assert watcher.current is good and len(watcher.current.rules.alert) == 9


async def test_an_explicit_empty_alert_list_turns_alerts_off(
    watched: tuple[RulesWatcher, Seen],
) -> None:
    watcher, seen = watched
    await seen.next_reload()
    replace_file(watcher.path, "alert = []\n")
    loaded = await seen.next_reload()
    assert loaded.rules.alert == ()


async def test_a_fulfillment_section_naming_an_unknown_node_is_refused_naming_the_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.toml"
    text = (
        "alert = []\n\n[fulfillment.nodes.WH-NJ]\nrank = 1\n\n[fulfillment.nodes.WH-XX]\nrank = 2\n"
    )
    path.write_text(text)
    watcher = RulesWatcher(path, known_nodes=lambda: {"WH-NJ", "WH-TX"})
    assert watcher.load_initial() is None
    assert watcher.error is not None
    (problem,) = watcher.error.problems
    assert problem.line == 6
    assert "unknown node 'WH-XX'" in problem.message and "WH-NJ, WH-TX" in problem.message
    assert RulesWatcher(path).load_initial() is not None  # no node list: not checked
