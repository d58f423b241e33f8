"""The alerts and rules screens under Pilot, in a tiny app wired like the real one:
a rules file on disk, a real store, the engine evaluating hand-made snapshots."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.app import App
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Static

from console.screens.alerts import AlertsScreen
from console.screens.dialogs import PromptScreen
from console.screens.route_test import RouteTestScreen
from console.screens.rule_form import AlertRuleFormScreen
from console.screens.rules import RulesScreen
from rules.alerts.actions import AlertActions
from rules.editor import RulesEditor
from rules.engine import AlertEngine
from rules.file import LoadedRules, load_rules
from rules.roles import Permissions
from store import alerts as store
from store.clock import FixedClock
from tests.snapshot_factory import AS_OF, build_snapshots

RULES = """\
# Test rules.
[[alert]]
id = "late_orders"   # the one we tune
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 10
for = "0s"
severity = "critical"
no_data = "ok"

[notify.route]
receiver = "console"
"""
SNAP = build_snapshots()  # WH-TX has 9 late orders
WH_TX = "late_orders|location=WH-TX, scope=location"


class ConsoleApp(App[None]):
    """Rules view and alerts view over one store, re-evaluating after every save."""

    def __init__(self, tmp: Path, *, role: str = "editor", read_only: bool = False) -> None:
        super().__init__()
        self.clock = FixedClock(AS_OF)
        self.rules_path = tmp / "rules.toml"
        if not self.rules_path.exists():
            self.rules_path.write_text(RULES)
        db = tmp / "store.db"
        self.connect: Callable[[], sqlite3.Connection] = lambda: store.connect(db, create=True)
        permissions = Permissions("erin", role, read_only)  # type: ignore[arg-type]
        self.editor = RulesEditor(self.rules_path, permissions=permissions, clock=self.clock)
        self.actions = AlertActions(self.connect, self.clock, permissions)
        self.engine = AlertEngine(load_rules(self.rules_path).rules, self.connect, self.clock)
        self.engine.evaluate(SNAP)
        self.evaluations = 0

    def on_mount(self) -> None:
        self.install_screen(
            AlertsScreen(source=self.actions, clock=self.clock, tz=UTC, poll_seconds=0),
            name="alerts",
        )
        self.push_screen(
            RulesScreen(
                editor=self.editor,
                tz=UTC,
                snapshots=lambda: SNAP,
                fired_counts=self.actions.fired_counts,
                on_saved=self.rules_saved,
            )
        )

    def rules_saved(self, loaded: LoadedRules) -> None:
        # What the lead wires: new rules to the engine, evaluate, refresh the alerts view.
        self.engine.set_rules(loaded.rules)
        self.run_worker(self._evaluate, thread=True, group="evaluate")

    def _evaluate(self) -> None:
        self.engine.evaluate(SNAP)
        self.evaluations += 1


async def settle(pilot: Pilot[Any]) -> None:
    """Let thread workers finish and their results be handled (no sleeps)."""
    for _ in range(4):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


def alert_rows(screen: AlertsScreen) -> dict[str, str]:
    return {v.record.fingerprint: v.record.state for v in screen.views}


async def open_form(pilot: Pilot[Any]) -> AlertRuleFormScreen:
    await settle(pilot)
    rules = pilot.app.screen
    assert isinstance(rules, RulesScreen) and rules.loaded is not None
    await pilot.press("enter")
    await pilot.pause()
    form = pilot.app.screen
    assert isinstance(form, AlertRuleFormScreen)
    return form


async def set_field(pilot: Pilot[Any], form: AlertRuleFormScreen, name: str, value: str) -> None:
    field = form.field(name)
    field.focus()
    field.value = ""
    await pilot.press(*value)  # typed, so validation runs as the operator types
    await pilot.pause()


async def test_editing_a_threshold_makes_the_alert_fire_then_resolve(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot)
        assert form.field("threshold").value == "10"
        assert "would fire for 0 of 3 scope(s) now" in form.check_text

        await set_field(pilot, form, "threshold", "8")
        assert "would fire for 1 of 3 scope(s) now" in form.check_text
        assert "location=WH-TX, scope=location 9" in form.check_text
        await set_field(pilot, form, "for", "5 min")
        assert form.check_text.startswith("INVALID for: bad duration")
        await set_field(pilot, form, "for", "0s")

        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, RulesScreen)
        assert app.evaluations == 1
        assert "threshold = 8   # the one we tune" not in app.rules_path.read_text()
        assert "threshold = 8\n" in app.rules_path.read_text()
        assert "# Test rules." in app.rules_path.read_text()

        await app.push_screen("alerts")
        await settle(pilot)
        alerts = app.screen
        assert isinstance(alerts, AlertsScreen)
        assert alert_rows(alerts) == {WH_TX: "firing"}
        assert alerts.table.get_row_at(0)[0].plain == "FIRING"  # State comes first

        # back to the rules, raise the threshold above the value: it resolves
        app.pop_screen()
        await settle(pilot)
        form = await open_form(pilot)
        await set_field(pilot, form, "threshold", "12")
        assert "would fire for 0 of 3" in form.check_text
        await pilot.press("ctrl+o")
        await settle(pilot)
        await app.push_screen("alerts")
        alerts.refresh_alerts()
        await settle(pilot)
        assert alert_rows(alerts) == {}
        await pilot.press("v")  # show the resolved ones too
        await settle(pilot)
        assert alert_rows(alerts) == {WH_TX: "resolved"}
        assert len(app.editor.audit()) == 2


async def test_saving_after_the_file_changed_on_disk_shows_the_conflict(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot)
        by_hand = RULES.replace("threshold = 10", "threshold = 11")
        app.rules_path.write_text(by_hand)  # someone else saved meanwhile
        await set_field(pilot, form, "threshold", "8")
        await pilot.press("f2")
        await settle(pilot)
        assert app.screen is form  # still open, with the operator's value
        assert form.status_text.startswith("CONFLICT:")
        assert "changed on disk since you opened it" in form.status_text
        assert form.field("threshold").value == "8"
        assert app.rules_path.read_text() == by_hand

        await pilot.press("ctrl+r")  # take the file's version
        await settle(pilot)
        assert form.field("threshold").value == "11"
        await set_field(pilot, form, "threshold", "8")
        await pilot.press("f2")
        await settle(pilot)
        assert isinstance(app.screen, RulesScreen)
        assert "threshold = 8\n" in app.rules_path.read_text()


async def test_acknowledge_and_silence_from_the_alerts_view(tmp_path: Path) -> None:
    tmp_path.joinpath("rules.toml").write_text(RULES.replace("threshold = 10", "threshold = 5"))
    app = ConsoleApp(tmp_path, role="operator")
    async with app.run_test(size=(100, 30)) as pilot:
        await app.push_screen("alerts")
        await settle(pilot)
        alerts = app.screen
        assert isinstance(alerts, AlertsScreen)
        assert alert_rows(alerts) == {WH_TX: "firing"}

        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"on it", "enter")
        await settle(pilot)
        assert alerts.views[0].record.acked_by == "erin"
        assert alerts.views[0].record.ack_comment == "on it"

        await pilot.press("s")
        await pilot.pause()
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        assert (
            prompt.values()["matchers"] == "alertname=late_orders, location=WH-TX, scope=location"
        )
        await pilot.press("enter")
        await settle(pilot)
        assert alerts.views[0].silenced_by is not None
        assert "silenced #" in alerts.table.get_row_at(0)[6].plain  # Ack / mute


async def test_read_only_users_can_look_but_not_change(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path, role="viewer")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        rules = app.screen
        assert isinstance(rules, RulesScreen)
        await pilot.press("n")
        assert rules.status_text.startswith("NOT ALLOWED: erin is a viewer")
        await pilot.press("w")
        await pilot.pause()
        tester = app.screen
        assert isinstance(tester, RouteTestScreen)
        assert "→ console  via root" in tester.answer_text
        await pilot.press("escape")
        form = await open_form(pilot)
        assert form.field("threshold").disabled
        await pilot.press("f2")
        assert form.status_text.startswith("NOT SAVED: erin is a viewer")
        assert app.rules_path.read_text() == RULES


async def test_text_in_square_brackets_is_shown_not_read_as_markup(tmp_path: Path) -> None:
    """The route tester's ``group_by [alertname]`` (Textual reads a str as markup)."""
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await pilot.pause()
        tester = app.screen
        assert isinstance(tester, RouteTestScreen)
        shown = tester.query_one("#route-result", Static).render()
        assert isinstance(shown, Content)
        assert "group_by [alertname]" in shown.plain, shown.plain


@pytest.mark.parametrize("size", [(80, 24)])
async def test_the_form_fits_80x24(tmp_path: Path, size: tuple[int, int]) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=size) as pilot:
        form = await open_form(pilot)
        check = form.query_one("#form-check")
        assert check.region.bottom <= size[1] - 1  # above the footer
        assert form.field("enabled").region.height == 1


async def test_the_alerts_columns_fit_their_cells_in_the_batch_that_fills_them(
    tmp_path: Path,
) -> None:
    """Widths are set with the cells, not on DataTable's next idle (a frame painted before
    that kept the header widths in a browser console under load: ``late_``)."""
    tmp_path.joinpath("rules.toml").write_text(RULES.replace("threshold = 10", "threshold = 5"))
    app = ConsoleApp(tmp_path, role="operator")
    async with app.run_test(size=(100, 30)) as pilot:
        await app.push_screen("alerts")
        await settle(pilot)
        alerts = app.screen
        assert isinstance(alerts, AlertsScreen)
        table = alerts.table
        rows = [(str(r.key.value), list(table.get_row(r.key))) for r in table.ordered_rows]
        # Fresh columns (as a newly pushed view has them), refilled without an idle between.
        for column in table.columns.values():
            column.auto_width, column.width = True, 0
            column.content_width = len(column.label.plain)
        table.clear()
        alerts._sync(rows)
        widths = [c.get_render_width(table) - 2 * table.cell_padding for c in table.ordered_columns]
        assert widths[2] >= len("late_orders")  # the Alert column
        for index, column in enumerate(table.ordered_columns):
            assert widths[index] >= max(len(column.label.plain), rows[0][1][index].cell_len)


async def test_keys_typed_right_behind_tab_land_in_the_next_field(tmp_path: Path) -> None:
    """A burst (a fast typist, a slow SSH link): Tab then 9 must not type 9 into Threshold."""
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(pilot)
        threshold = form.field("threshold")
        threshold.focus()
        await pilot.pause()
        app.post_message(events.Key("tab", None))
        app.post_message(events.Key("9", "9"))
        await pilot.pause()
        await pilot.pause()
        assert threshold.value == "10"
        assert app.focused is not threshold and getattr(app.focused, "value", "").endswith("9")


class RulesOnlyApp(App[None]):
    """The rules view alone over a rules file (no engine: the file may be refused)."""

    def __init__(self, rules_path: Path) -> None:
        super().__init__()
        permissions = Permissions("erin", "editor", False)
        self.editor = RulesEditor(rules_path, permissions=permissions, clock=FixedClock(AS_OF))

    def on_mount(self) -> None:
        self.push_screen(RulesScreen(editor=self.editor, tz=UTC, snapshots=lambda: SNAP))


async def test_a_refused_rules_file_names_its_file_and_line_on_the_status_line(
    tmp_path: Path,
) -> None:
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES.replace("threshold = 10", 'threshold = "ten"'))
    line = RULES.splitlines().index("threshold = 10") + 1
    app = RulesOnlyApp(rules_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, RulesScreen)
        assert screen.status_text.startswith(
            f"RULES FILE REFUSED: rules.toml:{line}: alert[late_orders].threshold: "
        )
        assert screen.status_text.endswith("; no rules shown.")
