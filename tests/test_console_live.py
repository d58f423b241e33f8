"""The console as a supervisor lives in it, at 80×24: help, command mode, live layout,
worst rows first, headers that show the sort, detail screens that follow the refresh,
times that read as times, and editors that never trap the operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Static, TabbedContent

from console.screens.alerts import ALERT_WIDTH, WHERE_WIDTH, cut
from console.screens.command import CommandScreen
from console.screens.detail import DetailScreen
from console.screens.dialogs import ConfirmScreen
from console.screens.help import HelpScreen
from console.screens.main import ConsoleScreen
from console.screens.notify_form import NotifyFormScreen
from console.screens.rule_form import AlertRuleFormScreen
from console.screens.rules import RulesScreen
from console.widgets.formatting import fmt_day, fmt_minutes, fmt_past, fmt_when
from tests.snapshot_factory import TZ, build_snapshots, build_updated_snapshots
from tests.test_alerts_console import RULES, ConsoleApp
from tests.test_alerts_console import settle as settle_rules
from tests.test_console import FakeCompute, make_app, panel, row_keys, settle, static_text

STATUS_RANK = {"LATE": 0, "OUT": 0, "SPIKE": 0, "OVERSELL": 1, "AT RISK": 2}


def title(app: Any, panel_id: str) -> str:
    return static_text(panel(app, panel_id).query_one(".panel-title", Static))


# -- the first screen answers "where is it going wrong?" -------------------------------------------


async def test_overview_fulfillment_shows_worst_locations_and_counts_what_it_shows() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        fulfillment = panel(app, "overview-fulfillment")
        rows = [v.source for v in fulfillment.views()]
        assert rows and all(r.scope == "location" for r in rows)  # type: ignore[union-attr]
        assert rows[0].key == "WH-TX"  # type: ignore[union-attr]
        # The title's LATE and AT RISK count orders at those locations, as its rows do.
        late = sum(r.late for r in rows)  # type: ignore[union-attr]
        risk = sum(r.at_risk for r in rows)  # type: ignore[union-attr]
        text = title(app, "overview-fulfillment")
        assert f"{late:,} LATE" in text and f"{risk:,} AT RISK" in text
        assert "by location" in text
        # Carriers and channels are one key away.
        await pilot.press("2")
        await pilot.pause()
        assert any(k.startswith("carrier:") for k in row_keys(app, "fulfillment-panel"))


async def test_every_panel_starts_on_its_worst_row_and_the_title_shows_it() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for panel_id, column in (
            ("overview-fulfillment", "status"),
            ("overview-stockout", "status"),
            ("overview-returns", "spike"),
        ):
            table = panel(app, panel_id).table
            assert table.row_count
            shown = [
                table.get_cell(str(table.ordered_rows[i].key.value), column).plain
                for i in range(table.row_count)
            ]
            ranks = [STATUS_RANK.get(s, 9) for s in shown]
            assert ranks == sorted(ranks), (panel_id, shown)  # worst first
            assert table.cursor_row == 0  # the cursor starts on the worst row
            counted = [s for s in STATUS_RANK if f" {s}" in " " + title(app, panel_id)]
            worst_counted = min(
                (STATUS_RANK[s] for s in counted if f"0 {s}" not in title(app, panel_id)),
                default=9,
            )
            assert ranks[0] <= worst_counted, (panel_id, shown, title(app, panel_id))


async def test_returns_title_never_counts_a_spike_its_first_row_does_not_show() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "1 SPIKE" in title(app, "overview-returns")
        first = row_keys(app, "overview-returns")[0]
        assert panel(app, "overview-returns").table.get_cell(first, "spike").plain == "SPIKE"


def panel_lines(app: Any, panel_id: str) -> list[str]:
    """The lines of a panel as rendered on screen: title, header, then the visible rows."""
    region = panel(app, panel_id).region
    lines = screen_lines(app)
    return [lines[y][region.x : region.x + region.width] for y in range(region.y, region.bottom)]


def worst_counted(text: str) -> str | None:
    """The worst state a title counts (a count above 0), by :data:`STATUS_RANK`."""
    counted = [s for s in STATUS_RANK if f" {s}" in " " + text and f" 0 {s}" not in " " + text]
    return min(counted, key=STATUS_RANK.__getitem__, default=None)


async def test_at_80x24_every_title_state_is_on_a_visible_row_and_wh_tx_shows() -> None:
    app = make_app()  # the hand-made day at 14:30, its worst afternoon moment
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause()
        for panel_id in ("overview-fulfillment", "overview-stockout", "overview-returns"):
            shown = panel_lines(app, panel_id)
            worst = worst_counted(shown[0])
            assert worst is not None, shown[0]
            first_row = shown[2]
            assert f" {worst} " in f" {first_row} ".replace("SPIKE", " SPIKE "), (panel_id, shown)
        fulfillment = panel_lines(app, "overview-fulfillment")
        assert any("WH-TX" in line for line in fulfillment[2:])
        # A filter narrows what the title counts too: no OUT on screen, no OUT counted.
        assert app.main_screen.apply_filter("stockout", "status=AT RISK")
        await pilot.pause()
        stock = panel_lines(app, "overview-stockout")
        assert " 0 OUT" in stock[0] and "AT RISK" in stock[2]
        assert all("OUT" not in line for line in stock[2:])
        assert app.main_screen.apply_filter("returns", "spike=no")
        await pilot.pause()
        assert "0 SPIKE" in panel_lines(app, "overview-returns")[0]


# -- layout follows the terminal -------------------------------------------------------------------


async def test_resize_80_200_80_switches_layout_and_keeps_cursor_and_filter() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        stock = panel(app, "overview-stockout")
        assert app.main_screen.apply_filter("stockout", "location=~WH-.*")
        stock.table.focus()
        await pilot.press("down")
        await pilot.pause()
        chosen = stock.cursor_view()
        assert chosen is not None and stock.compact
        await pilot.resize_terminal(200, 60)
        await pilot.pause()
        assert not stock.compact and len(stock.table.columns) == len(stock.columns)
        assert stock.cursor_view() is not None and stock.cursor_view().key == chosen.key  # type: ignore[union-attr]
        assert [str(m) for m in stock.matchers] == ["location=~WH-.*"]
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert stock.compact
        assert len(stock.table.columns) == len([c for c in stock.columns if c.compact])
        assert stock.cursor_view().key == chosen.key  # type: ignore[union-attr]
        assert [str(m) for m in stock.matchers] == ["location=~WH-.*"]
        # Back at 80 columns the compact table fits: no horizontal scrolling.
        assert stock.table.virtual_size.width <= stock.table.size.width


# -- help, command mode, footer, sort header -------------------------------------------------------


async def test_help_lists_every_key_of_the_view_from_its_bindings() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        table = app.screen.query_one(DataTable)
        listed = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        for binding in ConsoleScreen.BINDINGS:
            assert binding.description in listed  # type: ignore[union-attr]
        assert {"Quit", "Refresh", "Help", "Detail"} <= listed
        await pilot.press("escape")
        await pilot.pause()
        # Over the detail screen the help lists the detail's keys, not the console's.
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        listed = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert "Back" in listed and "Filter" not in listed
        await pilot.press("question_mark", "escape")
        await pilot.pause()
        assert app.screen is app.main_screen


async def test_command_mode_completes_and_runs_views_filters_and_sorts() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("colon", "s", "t")
        await pilot.pause()
        command = app.screen
        assert isinstance(command, CommandScreen)
        assert command.candidates_text.split() == ["stock"]
        await pilot.press("tab", *" loc", "tab", "W", "H")
        await pilot.pause()
        assert command.query_one(Input).value == "stock location=WH"
        assert command.candidates_text.split("  ") == [
            "stock location=WH-NJ",
            "stock location=WH-TX",
        ]
        await pilot.press("backspace", "backspace", *"WH-TX", "enter")
        await pilot.pause()
        assert app.screen is app.main_screen
        assert app.main_screen.query_one(TabbedContent).active == "stockout"
        assert all(k.endswith("@WH-TX") for k in row_keys(app, "stockout-panel"))
        assert row_keys(app, "stockout-panel")
        await pilot.press("colon", *"sort cov", "tab", "enter")
        await pilot.pause()
        stock = panel(app, "stockout-panel")
        assert stock.sort_column == "cover"
        assert "Cover ▲" in [str(c.label) for c in stock.table.columns.values()]
        await pilot.press("colon", *"nonsense", "enter")
        await pilot.pause()
        assert "UNKNOWN COMMAND 'nonsense'" in app.status_text
        await pilot.press("colon", "escape")
        await pilot.pause()
        assert app.screen is app.main_screen


async def test_sort_column_is_marked_in_its_header_and_follows_direction() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "s", "s", "s")  # Where, Status, Open
        await pilot.pause()
        labels = [str(c.label) for c in panel(app, "fulfillment-panel").table.columns.values()]
        assert "Open ▼" in labels and "Where" in labels and "Status" in labels
        await pilot.press("o")
        await pilot.pause()
        labels = [str(c.label) for c in panel(app, "fulfillment-panel").table.columns.values()]
        assert "Open ▲" in labels


async def test_footer_shows_the_views_keys_at_full_width() -> None:
    app = make_app()
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot)
        await pilot.pause()
        shown = {str(getattr(key, "description", "")) for key in app.screen.query("FooterKey")}
        assert {"Rules", "Routing", "Feeds", "Command", "Help", "Alerts", "Filter"} <= shown
        await pilot.press("question_mark")
        await pilot.pause()
        shown = {str(getattr(key, "description", "")) for key in app.screen.query("FooterKey")}
        assert "Filter" not in shown  # the help screen's own keys, not the console's


def screen_lines(app: Any) -> list[str]:
    """The screen as rendered, one string per terminal line."""
    return ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]


async def test_footer_at_80_columns_shows_the_views_keys_uncut_and_the_rest_in_help() -> None:
    from console.widgets.footer import FittedFooter

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause()
        footer = app.main_screen.query_one(FittedFooter)
        bottom = screen_lines(app)[-1]
        assert len(bottom) <= 80
        # The keys a supervisor needs first are on screen, whole, with their keys.
        for key, label in (
            ("⏎", "Detail"),
            ("f", "Filter"),
            ("s", "Sort"),
            ("a", "Alerts"),
            ("t", "Rules"),
            ("g", "Route"),
            ("h", "Feeds"),
            ("m", "Mute"),
            (":", "Cmd"),
            ("?", "Help"),
        ):
            assert f"{key} {label}" in bottom, (label, bottom)
        assert list(footer.shown) == [w for w in footer.shown if w in bottom]
        assert bottom.rstrip().endswith("? Help")  # the last key shown is whole
        # Every key left out is in ? (nothing is lost, only moved).
        await pilot.press("question_mark")
        await pilot.pause()
        listed = {r.description for r in app.screen.rows}  # type: ignore[attr-defined]
        assert {"Export", "Quit", "Refresh"} <= listed
        await pilot.press("escape")
        # Wider, the full labels come back; narrower again, the short ones.
        await pilot.resize_terminal(200, 60)
        await pilot.pause()
        await pilot.pause()
        bottom = screen_lines(app)[-1]
        assert "g Routing" in bottom and "m Silences" in bottom and "e Export" in bottom
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        bottom = screen_lines(app)[-1]
        assert "m Mute" in bottom and bottom.rstrip().endswith("? Help")


# -- detail screens refresh with the panels --------------------------------------------------------


async def test_an_open_detail_screen_follows_the_refresh() -> None:
    app = make_app(FakeCompute(build_snapshots(), build_updated_snapshots()))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "enter")
        await pilot.pause()
        detail = app.screen
        assert isinstance(detail, DetailScreen)
        before = detail.as_of
        key = (detail.row.sku, detail.row.location_id)  # type: ignore[union-attr]
        await pilot.press("r")
        await settle(pilot)
        await pilot.pause()
        assert app.screen is detail
        assert detail.as_of > before
        assert (detail.row.sku, detail.row.location_id) == key  # type: ignore[union-attr]
        stamp = static_text(detail.query_one("#detail-title", Static))
        assert detail.as_of.astimezone(TZ).strftime("%H:%M:%S") in stamp


# -- times read as times ---------------------------------------------------------------------------


def test_long_ages_read_in_days_and_other_years_carry_the_year() -> None:
    assert fmt_minutes(287 * 24 * 60 + 125) == "287 d"
    assert fmt_minutes(6900 * 24 * 60) == "6,900 d"
    assert fmt_minutes(50 * 60) == "2d02h"  # two days still read with their hours
    now = datetime(2026, 11, 18, 15, tzinfo=UTC)
    utc = UTC
    assert fmt_past(datetime(2025, 1, 10, 9, tzinfo=UTC), utc, now) == "Jan 10 2025"
    assert fmt_past(datetime(2026, 10, 21, 9, tzinfo=UTC), utc, now) == "Oct 21"
    assert fmt_when(datetime(2027, 2, 3, 9, tzinfo=UTC), utc, now) == "Feb 03 2027"
    assert fmt_day(datetime(2027, 2, 3, 9, tzinfo=UTC), utc, now) == "Feb 03 2027"
    from console.screens.alerts import fmt_age

    assert fmt_age(timedelta(days=287, hours=3)) == "287 d"


# -- no traps: every editor lets go, critical rules ask, no-change saves write nothing -------------


async def _open_rule_form(pilot: Pilot[Any]) -> AlertRuleFormScreen:
    await settle_rules(pilot)
    await pilot.press("enter")
    await pilot.pause()
    form = pilot.app.screen
    assert isinstance(form, AlertRuleFormScreen)
    return form


async def test_escape_in_the_rule_form_asks_before_dropping_edits(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        form = await _open_rule_form(pilot)
        await pilot.press("escape")  # nothing edited: leaves at once
        await pilot.pause()
        assert isinstance(app.screen, RulesScreen)
        form = await _open_rule_form(pilot)
        form.field("threshold").focus()
        await pilot.press("backspace", "7")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep editing
        await pilot.pause()
        assert app.screen is form and form.field("threshold").value == "17"
        await pilot.press("escape", "y")
        await pilot.pause()
        assert isinstance(app.screen, RulesScreen)
    assert app.rules_path.read_text() == RULES


async def test_a_save_without_changes_writes_nothing(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open_rule_form(pilot)
        await pilot.press("f2")
        await settle_rules(pilot)
        assert isinstance(app.screen, RulesScreen)
        assert app.editor.audit() == []
    assert app.rules_path.read_text() == RULES


async def test_escape_leaves_the_notify_editor_and_asks_when_edited(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle_rules(pilot)
        await pilot.press("g")
        await pilot.pause()
        editor = app.screen
        assert isinstance(editor, NotifyFormScreen)
        await pilot.press("escape")  # the TOML editor does not swallow it
        await pilot.pause()
        assert isinstance(app.screen, RulesScreen)
        await pilot.press("g")
        await pilot.pause()
        await pilot.press("#")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await pilot.pause()
        assert isinstance(app.screen, RulesScreen)
        await pilot.press("g", "f2")  # unchanged: nothing is written
        await settle_rules(pilot)
        assert isinstance(app.screen, RulesScreen)
    assert app.rules_path.read_text() == RULES


async def test_disabling_or_deleting_a_critical_rule_asks_first(tmp_path: Path) -> None:
    app = ConsoleApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle_rules(pilot)
        rules = app.screen
        assert isinstance(rules, RulesScreen)
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "critical" in app.screen.question.lower()
        await pilot.press("n")
        await settle_rules(pilot)
        assert app.rules_path.read_text() == RULES
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "CRITICAL" in app.screen.question
        await pilot.press("escape")
        await settle_rules(pilot)
        assert app.rules_path.read_text() == RULES
        await pilot.press("t", "y")
        await settle_rules(pilot)
        assert "enabled = false" in app.rules_path.read_text()


def test_panel_rows_from_every_panel_kind_are_found_again() -> None:
    from console.screens.detail import same_row

    old, new = build_snapshots(), build_updated_snapshots()
    for row in (old.fulfillment.rows[0], old.stockout.rows[0], old.returns.rows[0]):
        found = same_row(row, new)
        assert found is not None and type(found) is type(row)


# -- SVG snapshots: the Overview and the alerts view at 80×24 and 200×60 ---------------------------

FIRING_RULES = RULES.replace("threshold = 10", "threshold = 0").replace(
    "[notify.route]",
    """[[alert]]
id = "pick_time_p90_high"
metric = "fulfillment.pick_p90_minutes"
matchers = 'scope=location'
op = ">"
threshold = 20
for = "0s"
severity = "warning"
no_data = "ok"

[notify.route]""",
)


def _alerts_app(tmp_path: Path) -> ConsoleApp:
    (tmp_path / "rules.toml").write_text(FIRING_RULES)
    return ConsoleApp(tmp_path)


async def _show_alerts(pilot: Pilot[Any]) -> None:
    await settle_rules(pilot)
    await pilot.app.push_screen("alerts")
    await settle_rules(pilot)


class _HelpedApp(ConsoleApp):
    """The rules and alerts views under an app with the console's ``?`` key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", id="help"),
        Binding("q", "quit", "Quit", id="quit"),
    ]


async def test_the_sub_views_footers_keep_help_at_80_columns(tmp_path: Path) -> None:
    """Alerts and rules have more keys than 80 columns: the footer is fitted, never cut."""
    from console.widgets.footer import FittedFooter

    (tmp_path / "rules.toml").write_text(FIRING_RULES)
    app = _HelpedApp(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle_rules(pilot)
        for view, first in (("rules", "Edit"), ("alerts", "Ack")):
            if view == "alerts":
                await app.push_screen("alerts")
                await settle_rules(pilot)
            await pilot.pause()
            footer = app.screen.query_one(FittedFooter)
            bottom = screen_lines(app)[-1]
            assert "? Help" in bottom and footer.shown[-1] in bottom, (view, bottom)
            assert any(label.startswith(first) for label in footer.shown)
            assert all(label in bottom for label in footer.shown)
            assert len(footer.shown) >= 5, footer.shown


def test_snapshot_overview_200x60(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(200, 60), run_before=settle)


def test_snapshot_overview_80x24(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=settle)


def test_snapshot_alerts_80x24(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(_alerts_app(tmp_path), terminal_size=(80, 24), run_before=_show_alerts)


def test_snapshot_alerts_200x60(snap_compare: Any, tmp_path: Path) -> None:
    assert snap_compare(_alerts_app(tmp_path), terminal_size=(200, 60), run_before=_show_alerts)


async def test_alerts_view_at_80x24_shows_rule_where_and_value_of_each_alert(
    tmp_path: Path,
) -> None:
    app = _alerts_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await _show_alerts(pilot)
        alerts = app.screen
        table = alerts.query_one(DataTable)
        assert table.row_count >= 2
        region = table.region
        labels = [str(c.label) for c in table.columns.values()]
        assert labels[:6] == ["State", "Sev", "Alert", "Where", "Value", "Since"]
        # State to Since fit in the visible width without scrolling.
        widths = [c.get_render_width(table) for c in list(table.columns.values())[:6]]
        assert sum(widths) <= region.width
        cells = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        wheres = {row[3] for row in cells}
        assert "WH-TX" in wheres and len(wheres) > 1
        assert all(">" in row[4] for row in cells)
        # On the rendered screen, each alert's row shows its state, rule and where it is.
        lines = screen_lines(app)
        for row in cells[: table.region.height - 1]:
            state, rule, where = row[0], row[2], row[3]
            assert any(state in line and rule in line and where in line for line in lines), row


def test_long_rule_ids_and_scope_keys_are_cut_to_keep_state_to_since_on_screen() -> None:
    assert cut("late_orders", ALERT_WIDTH) == "late_orders"
    long_id = "stockout_risk_best_sellers"
    assert cut(long_id, ALERT_WIDTH) == long_id[: ALERT_WIDTH - 1] + "…"
    assert len(cut(long_id, ALERT_WIDTH)) == ALERT_WIDTH
    assert cut("FTW-1001@ST-CHI@footwear", WHERE_WIDTH).endswith("…")
    # 8 state + 4 sev + the two cut columns + a 10-wide value + 11-wide since, each
    # with its padding of 2: inside 80 columns.
    assert 8 + 4 + ALERT_WIDTH + WHERE_WIDTH + 10 + 11 + 6 * 2 <= 80


async def test_escape_in_the_routing_rule_form_asks_before_dropping_edits() -> None:
    from console.screens.routing import RoutingScreen
    from console.screens.routing_form import RoutingRuleFormScreen
    from tests.test_routing_console import Fake, Host
    from tests.test_routing_console import settle as settle_routing

    app = Host(Fake())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle_routing(pilot)
        await pilot.press("e", "escape")  # untouched: leaves at once
        await pilot.pause()
        assert isinstance(app.screen, RoutingScreen)
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RoutingRuleFormScreen)
        form.query_one("#rf-description", Input).value = "edited"
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is form
        assert form.query_one("#rf-description", Input).value == "edited"
        await pilot.press("escape", "y")
        await pilot.pause()
        view = app.screen
        assert isinstance(view, RoutingScreen) and not view.dirty
