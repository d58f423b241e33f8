"""Console tests: pure formatting and projection, Pilot-driven behaviour, SVG snapshots.

Every app here gets hand-made snapshots (``tests/snapshot_factory.py``) through an
injected ``compute`` and a :class:`~store.clock.FixedClock`, so nothing depends on the
wall clock; tests await workers and the message queue instead of sleeping.
"""

from __future__ import annotations

import ast
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.binding import Binding
from textual.content import Content
from textual.pilot import Pilot
from textual.widgets import Input, Static, TabbedContent
from textual.widgets._toast import Toast

from console.app import OmniopsApp
from console.screens import (
    DetailScreen,
    PromptScreen,
    default_export_name,
    export_format,
    project_stock,
    projection_horizon,
    render_stock_chart,
    stock_reason,
)
from console.widgets.bars import feed_content, is_stale, sales_content, top_bar_content
from console.widgets.formatting import (
    fmt_days,
    fmt_minutes,
    fmt_pick,
    fmt_rate,
    fmt_trend,
    fmt_when,
)
from console.widgets.panels import Panel, RowView, sort_views
from store.clock import FixedClock
from store.snapshots import FeedFreshness, Snapshots
from tests.snapshot_factory import (
    AS_OF,
    TZ,
    build_snapshots,
    build_updated_snapshots,
    stockout_rows,
)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"


class FakeCompute:
    """A ``compute`` that returns (or raises) the queued results in turn, counting calls."""

    def __init__(self, *results: Snapshots | BaseException) -> None:
        self.results = list(results) or [build_snapshots()]
        self.calls = 0
        self.threads: set[str] = set()

    def __call__(self) -> Snapshots:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        result = self.results[min(self.calls, len(self.results)) - 1]
        if isinstance(result, BaseException):
            raise result
        return result


def make_app(
    compute: Callable[[], Snapshots] | None = None,
    *,
    clock: FixedClock | None = None,
    export: Callable[[str, str, Path], Path] | None = None,
    refresh_interval: float = 60.0,
) -> OmniopsApp:
    """An app over the hand-made snapshots with a fixed clock."""
    return OmniopsApp(
        compute=compute or FakeCompute(),
        clock=clock or FixedClock(AS_OF + timedelta(seconds=5)),
        tz=TZ,
        refresh_interval=refresh_interval,
        export=export,
    )


async def settle(pilot: Pilot[None]) -> None:
    """Wait until a refresh ended, none is running or queued, and every message is handled.

    The first refresh starts after the first paint: on a busy machine a pause can come
    back before it began, so "not refreshing" alone is not settled.
    """
    app = pilot.app
    assert isinstance(app, OmniopsApp)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not app.refreshing and app.refreshes_done > 0 and shown_everywhere(app):
            return
    raise AssertionError("refresh did not settle")


def shown_everywhere(app: OmniopsApp) -> bool:
    """Whether every panel, those of the tabs not in view too, holds the latest snapshots
    (the hidden tabs get them after the frame that shows the visible one)."""
    latest = app.snapshots
    return all(p.snapshots is latest for p in app.main_screen.query(Panel))


def panel(app: OmniopsApp, panel_id: str) -> Panel:
    """A panel by DOM id on the console screen."""
    return app.main_screen.query_one(f"#{panel_id}", Panel)


def row_keys(app: OmniopsApp, panel_id: str) -> list[str]:
    """Row keys of a panel's table, in display order."""
    table = panel(app, panel_id).table
    return [str(row.key.value) for row in table.ordered_rows]


def cell_text(app: OmniopsApp, panel_id: str, row_key: str, column: str) -> str:
    """The plain text of one cell."""
    return panel(app, panel_id).table.get_cell(row_key, column).plain


def focused(app: OmniopsApp) -> object:
    """The focused widget (typed loosely, so successive checks do not narrow it)."""
    return app.focused


def static_text(widget: Static) -> str:
    """What a Static shows, as plain text."""
    return str(widget.render())


# -- pure helpers --------------------------------------------------------------------------


def test_formatting_renders_none_as_dash_and_units() -> None:
    assert fmt_minutes(None) == "—"
    assert fmt_minutes(45) == "45m"
    assert fmt_minutes(385) == "6h25"
    assert fmt_minutes(60 * 50) == "2d02h"
    assert fmt_rate(0.871) == "87%"
    assert fmt_rate(None, 1) == "—"
    assert fmt_days(None, "no sales") == "no sales"
    assert fmt_days(2.04) == "2.0d"
    assert fmt_days(33.3) == "33d"
    assert fmt_pick(18, 52) == "18/52m"
    assert fmt_pick(None, None) == "—"
    assert fmt_trend(18450.2, 24800) == "▼ 26%"
    assert fmt_trend(41.5, 38.2) == "▲ 9%"
    assert fmt_trend(10, 10.01) == "±0%"
    assert fmt_trend(10, None) == "—"


def test_times_show_in_the_operator_zone() -> None:
    now = AS_OF  # 14:30 in Chicago
    assert fmt_when(AS_OF + timedelta(hours=1), TZ, now) == "15:30"
    assert fmt_when(AS_OF + timedelta(days=2), TZ, now) == "Wed 14:30"
    assert fmt_when(AS_OF + timedelta(days=13), TZ, now) == "Dec 07"
    assert fmt_when(AS_OF, TZ, now) == "now"
    assert fmt_when(None, TZ, now) == "—"


def test_top_bar_flags_stale_data_by_wall_age() -> None:
    snapshots = build_snapshots()

    def bar(data_age: float | None) -> str:
        return top_bar_content(
            title="omniops",
            now=AS_OF + timedelta(hours=3),  # a replay clock may run far ahead: irrelevant
            tz=TZ,
            snapshots=snapshots,
            data_age=data_age,
            refresh_interval=60,
        ).plain

    assert "Mon 24 Nov 17:30 CST" in bar(30)
    assert "data 14:30:00" in bar(30)
    assert "STALE" not in bar(30)
    assert "STALE no refresh for 3m" in bar(181)
    assert is_stale(120, 60) is False
    assert is_stale(121, 60) is True
    assert is_stale(None, 60) is False


def test_feed_strip_marks_stale_feeds_with_glyph_and_word() -> None:
    text = feed_content(build_snapshots().headline.feeds, TZ).plain
    assert "● web" in text
    assert "▲ marketplace STALE last 13:48" in text
    assert "3 quarantined" in text


def test_many_stale_feeds_are_counted_and_named_while_they_fit() -> None:
    """Eight stale feeds at 80 columns: two lines used to end at the sixth, no word more."""
    old = datetime(2026, 11, 19, 15, tzinfo=UTC)
    names = ["carrier", "catalog", "inventory", "marketplace", "pos", "purchasing", "returns"]
    feeds = [FeedFreshness(f, old, 10, 0, True) for f in [*names, "wms"]]
    feeds += [FeedFreshness(f, AS_OF, 10, 4, False) for f in ("web", "kafka:orders")]
    text = feed_content(feeds, TZ, now=AS_OF, width=80).plain
    assert text.startswith("▲ 8 STALE: carrier, catalog")
    assert len(text) <= 2 * 78 - 8
    shown = [n for n in [*names, "wms"] if n in text]
    hidden = 8 - len(shown)
    assert hidden == 0 or f"… +{hidden} (h)" in text
    assert "● 2 ok" in text and "8 quarantined" in text  # 2 feeds x 4
    narrow = feed_content(feeds, TZ, now=AS_OF, width=40).plain
    assert narrow.startswith("▲ 8 STALE: carrier") and "(h)" in narrow
    assert len(narrow) <= 2 * 38 - 8
    # What fits is shown whole, as before.
    few = feeds[:1] + feeds[-2:]
    assert (
        feed_content(few, TZ, now=AS_OF, width=80).plain == feed_content(few, TZ, now=AS_OF).plain
    )


def test_sales_line_flags_low_sales() -> None:
    text = sales_content(build_snapshots().headline).plain
    assert "Net sales 18,450 ▼ 26% LOW vs 24,800" in text
    assert "Orders/h 41.5 ▲ 9%" in text


def test_stock_projection_consumes_velocity_and_adds_inbound() -> None:
    out_row = stockout_rows()[0]  # available -2, 6.5/day, 120 inbound in 3 d 2 h
    projection = project_stock(out_row, AS_OF, horizon_days=7, step_hours=24)
    assert projection.days == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    assert projection.available[0] == -2
    assert projection.available[1] == pytest.approx(-8.5)
    assert projection.available[3] == pytest.approx(-2 - 6.5 * 3)  # ETA not reached yet
    assert projection.available[4] == pytest.approx(-2 - 6.5 * 4 + 120)
    no_sales = stockout_rows()[-1]
    assert set(project_stock(no_sales, AS_OF).available) == {25}
    assert projection_horizon(stockout_rows()[3], AS_OF) == 20  # cover 12.5 d → 19.75


def test_stock_chart_is_drawn_on_a_private_figure() -> None:
    import plotext

    before = plotext.figure.build().string(colorless=True)
    text = render_stock_chart(
        project_stock(stockout_rows()[2], AS_OF),
        reorder_point=60,
        width=60,
        height=14,
        title="Projected",
    )
    assert "Projected" in text and "days from now" in text
    assert len(text.splitlines()) == 14
    assert plotext.figure.build().string(colorless=True) == before


def test_stock_reason_explains_the_status() -> None:
    rows = stockout_rows()
    assert stock_reason(rows[0]) == "nothing available to sell"
    assert stock_reason(rows[1]) == "marketplace advertises 12 but only 4 available"
    assert "cover 4.0d < lead time 6.0d" in stock_reason(rows[2])


def test_export_format_and_default_name() -> None:
    assert export_format("a/b/out.CSV") == "csv"
    assert export_format("x.json") == "json"
    assert export_format("x.txt") is None
    assert default_export_name("stockout", AS_OF, TZ) == "stockout-20251124-1430.csv"


def test_sort_views_keeps_missing_values_last() -> None:
    rows = stockout_rows()
    views = [RowView(r.sku, {}, {"cover": r.days_of_cover}, {}, r) for r in rows]
    ordered = sort_views(views, "cover", descending=True)
    assert ordered[-1].key == "SKU-7777"  # no sales: no cover, always last
    assert ordered[0].key == "SKU-5120"
    assert sort_views(views, None, False) == views


PURE_STORE_MODULES = {"store.snapshots", "store.clock", "store.model", "store.registry"}
"""The store modules without I/O: snapshots, the clock, the canonical model, the metric registry."""


def test_console_does_no_io_of_its_own() -> None:
    """console/ never imports a database, network or file-watching module."""
    forbidden = {"sqlite3", "aiosqlite", "socket", "aiohttp", "watchfiles", "http", "urllib"}
    for path in CONSOLE_DIR.rglob("*.py"):
        if path.name in {"cli.py", "settings.py"}:
            continue  # the CLI wires the console to the store; not part of the UI layer
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
                assert not name.startswith("store.") or name in PURE_STORE_MODULES, (
                    f"{path.name} imports {name}: the console only knows snapshots"
                )


# -- the running app -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_starts_and_shows_every_panel_at_80x24() -> None:
    compute = FakeCompute()
    app = make_app(compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert compute.calls == 1
        assert all(name != threading.main_thread().name for name in compute.threads)
        assert app.query_one(TabbedContent).active == "overview"
        # The Overview answers "where": locations only, worst first; every scope on tab 2.
        assert row_keys(app, "overview-fulfillment") == [
            "location:WH-TX",
            "location:STORE-AUS-01",
            "location:WH-NJ",
        ]
        assert row_keys(app, "fulfillment-panel")[:3] == [
            "location:WH-TX",
            "carrier:UPS",
            "location:STORE-AUS-01",
        ]
        table = panel(app, "overview-fulfillment").table
        assert table.row_count == 3
        assert [c.plain for c in table.get_row("location:WH-TX")] == [
            "WH-TX",
            "LATE",
            "142",
            "9",
            "14",
            "87%",
        ]
        assert panel(app, "overview-fulfillment").compact
        assert cell_text(app, "stockout-panel", "SKU-7777@STORE-AUS-01", "cover") == "no sales"
        assert cell_text(app, "stockout-panel", "SKU-7777@STORE-AUS-01", "stockout") == "—"
        assert cell_text(app, "stockout-panel", "SKU-1042@WH-TX", "inbound") == "120 Thu 27"
        assert cell_text(app, "returns-panel", "SKU-2210", "spike") == "SPIKE"
        assert cell_text(app, "returns-panel", "SKU-5120", "baseline") == "—"
        assert cell_text(app, "fulfillment-panel", "carrier:UPS", "oldest") == "25h00"
        top = static_text(app.query_one("#topbar", Static))
        assert "Mon 24 Nov 14:30 CST" in top and "data 14:30:00" in top
        assert "STALE" not in top
        feeds = static_text(app.query_one("#feeds", Static))
        assert "▲ marketplace STALE" in feeds
        assert app.status_text == ""
        assert app.next_refresh_armed


@pytest.mark.asyncio
async def test_the_focused_panel_s_title_is_highlighted_and_follows_tab() -> None:
    compute = FakeCompute()
    app = make_app(compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        ids = ("overview-fulfillment", "overview-stockout", "overview-returns")

        def lit() -> list[str]:
            titles = {i: panel(app, i).title_bar.styles.background for i in ids}
            plain = panel(app, "fulfillment-panel").title_bar.styles.background
            return [i for i, colour in titles.items() if colour != plain]

        assert lit() == ["overview-fulfillment"]
        await pilot.press("tab")
        await pilot.pause()
        assert app.focused is panel(app, "overview-stockout").table
        assert lit() == ["overview-stockout"]
        await pilot.press("tab")
        await pilot.pause()
        assert lit() == ["overview-returns"]


async def test_panel_tables_fix_their_widths_and_size_without_measuring_every_cell() -> None:
    """Every column of a shown panel has a fixed width fitting its cells and header, and
    the table's virtual size counts every row and column (DataTable's per-cell measure of
    new rows is skipped for such tables, issue 15)."""
    from rich.cells import cell_len

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for panel_id in ("overview-stockout", "fulfillment-panel", "returns-panel"):
            table = panel(app, panel_id).table
            assert table.row_count > 0
            for column in table.columns.values():
                assert not column.auto_width
                cells = [table.get_cell(row, column.key).plain for row in table.rows]
                assert column.width >= max(cell_len(c) for c in [*cells, str(column.label)])
            width = sum(c.get_render_width(table) for c in table.columns.values())
            assert table.virtual_size.width == width
            assert table.virtual_size.height == table.row_count + table.header_height


async def test_wide_overview_shows_every_column() -> None:
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        overview = panel(app, "overview-stockout")
        assert not overview.compact
        assert len(overview.table.columns) == len(overview.columns)
        assert overview.table.row_count == 6
        assert "carriers 14:26" in static_text(app.query_one("#feeds", Static))
    narrow = make_app()
    async with narrow.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        overview = panel(narrow, "overview-stockout")
        assert overview.compact
        assert list(k.value for k in overview.table.columns) == [
            "sku",
            "location",
            "status",
            "available",
            "cover",
        ]


class WallClock:
    """A stand-in for ``time.monotonic`` in console.app, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.asyncio
async def test_data_older_than_two_intervals_is_flagged_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = WallClock()
    monkeypatch.setattr("console.app.monotonic", wall)
    clock = FixedClock(AS_OF + timedelta(minutes=10))  # the data clock runs ahead (replay)
    app = make_app(clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        top = app.query_one("#topbar", Static)
        assert "STALE" not in static_text(top)
        wall.t += 121
        app.update_clock()
        await pilot.pause()
        # In full it is 81 columns: at 80 the bar says it in fewer words, cut nowhere.
        assert static_text(top).endswith("data 14:30:00 │ STALE 2m")
        await pilot.press("r")
        await settle(pilot)
        assert "STALE" not in static_text(top)


@pytest.mark.asyncio
async def test_r_refreshes_and_rows_update_by_key() -> None:
    compute = FakeCompute(build_snapshots(), build_updated_snapshots())
    app = make_app(compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        stock = panel(app, "stockout-panel")
        stock.table.move_cursor(row=3)  # SKU-3301@WH-TX
        unchanged = stock.table.get_cell("SKU-5120@WH-NJ", "sku")
        await pilot.press("r")
        await settle(pilot)
        assert compute.calls == 2
        assert row_keys(app, "stockout-panel") == [
            "SKU-1042@WH-TX",
            "SKU-2210@STORE-AUS-01",
            "SKU-8800@WH-NJ",
            "SKU-0007@WH-NJ",
            "SKU-3301@WH-TX",
            "SKU-5120@WH-NJ",
        ]
        # The untouched cell is the very same object: patched, not cleared and refilled.
        assert stock.table.get_cell("SKU-5120@WH-NJ", "sku") is unchanged
        # The cursor follows its row, not its index.
        cursor = stock.cursor_view()
        assert cursor is not None and cursor.key == "SKU-3301@WH-TX"
        assert cell_text(app, "fulfillment-panel", "location:WH-TX", "late") == "11"
        assert "data 14:31:00" in static_text(app.query_one("#topbar", Static))


@pytest.mark.asyncio
async def test_refresh_under_a_detail_screen_still_updates_the_panels() -> None:
    compute = FakeCompute(build_snapshots(), build_updated_snapshots())
    app = make_app(compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        await pilot.press("r")
        await settle(pilot)
        assert compute.calls == 2
        assert "SKU-8800@WH-NJ" in row_keys(app, "stockout-panel")
        await pilot.press("escape")
        await pilot.pause()
        assert "data 14:31:00" in static_text(app.query_one("#topbar", Static))


@pytest.mark.asyncio
async def test_refreshes_never_stack() -> None:
    gate = threading.Event()
    calls: list[int] = []

    def slow_compute() -> Snapshots:
        calls.append(1)
        if len(calls) == 1:
            gate.wait(10)
        return build_snapshots()

    app = make_app(slow_compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.refreshing
        await pilot.press("r", "r", "r")
        await pilot.pause()
        assert len(calls) == 1  # still the first one; r only queued one more
        assert not app.next_refresh_armed
        gate.set()
        await settle(pilot)
        assert len(calls) == 2
        assert app.next_refresh_armed


@pytest.mark.asyncio
async def test_failed_refresh_shows_error_and_keeps_data() -> None:
    compute = FakeCompute(
        build_snapshots(), RuntimeError("database is locked"), build_updated_snapshots()
    )
    app = make_app(compute)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert app.is_running
        assert "REFRESH FAILED" in app.status_text
        assert "RuntimeError: database is locked" in app.status_text
        assert "showing data from 14:30:00" in app.status_text
        assert "#status" and not app.query_one("#status").has_class("-empty")
        assert panel(app, "fulfillment-panel").table.row_count == 8
        assert app.snapshots is not None and app.snapshots.as_of == AS_OF
        assert app.next_refresh_armed
        await pilot.press("r")
        await settle(pilot)
        assert app.status_text == ""
        assert app.snapshots.as_of == AS_OF + timedelta(minutes=1)


@pytest.mark.asyncio
async def test_first_refresh_failing_says_there_is_no_data() -> None:
    app = make_app(FakeCompute(OSError("no such table: orders")))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "OSError: no such table: orders" in app.status_text
        assert "no data yet" in app.status_text
        assert panel(app, "overview-fulfillment").table.row_count == 0


@pytest.mark.asyncio
async def test_number_keys_switch_tabs_and_focus_the_table() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        tabs = app.query_one(TabbedContent)
        for key, tab, panel_id in [
            ("2", "fulfillment", "fulfillment-panel"),
            ("3", "stockout", "stockout-panel"),
            ("4", "returns", "returns-panel"),
            ("1", "overview", "overview-fulfillment"),
        ]:
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == tab
            assert app.focused is panel(app, panel_id).table


@pytest.mark.asyncio
async def test_filter_narrows_rows_of_the_visible_panel() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "f")
        assert focused(app) is app.query_one("#filter-input", Input)
        await pilot.press(*"location=WH-TX")
        await pilot.press("enter")
        await pilot.pause()
        assert row_keys(app, "stockout-panel") == ["SKU-1042@WH-TX", "SKU-3301@WH-TX"]
        assert row_keys(app, "overview-stockout") == ["SKU-1042@WH-TX", "SKU-3301@WH-TX"]
        assert len(row_keys(app, "fulfillment-panel")) == 8  # other panels untouched
        title = static_text(panel(app, "stockout-panel").query_one(".panel-title", Static))
        assert "filter location=WH-TX (2 of 6)" in title
        assert focused(app) is panel(app, "stockout-panel").table
        await pilot.press("r")  # the filter holds across refreshes
        await settle(pilot)
        assert row_keys(app, "stockout-panel") == ["SKU-1042@WH-TX", "SKU-3301@WH-TX"]
        # Regex, negation and AND on another panel.
        await pilot.press("2", "slash")
        await pilot.press(*"scope=channel, key!~p.*")
        await pilot.press("enter")
        await pilot.pause()
        assert row_keys(app, "fulfillment-panel") == ["channel:marketplace", "channel:web"]
        # An empty filter shows everything again.
        await pilot.press("f")
        app.query_one("#filter-input", Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert len(row_keys(app, "fulfillment-panel")) == 8


@pytest.mark.asyncio
async def test_bad_filter_is_explained_and_escape_keeps_the_old_one() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("4", "f", *"category=~app.*", "enter")
        await pilot.pause()
        assert row_keys(app, "returns-panel") == ["SKU-1042", "SKU-0007"]
        await pilot.press("f", "ctrl+u", *"category", "enter")
        await pilot.pause()
        assert "FILTER NOT APPLIED" in app.status_text
        assert "bad matcher 'category'" in app.status_text
        assert app.query_one("#filter-bar").has_class("-open")
        await pilot.press("ctrl+u", *"colour=red", "enter")
        await pilot.pause()
        assert "Returns rows have no label 'colour'" in app.status_text
        await pilot.press("escape")
        await pilot.pause()
        assert not app.query_one("#filter-bar").has_class("-open")
        assert app.status_text == ""
        assert row_keys(app, "returns-panel") == ["SKU-1042", "SKU-0007"]


@pytest.mark.asyncio
async def test_s_cycles_sort_columns_and_o_reverses() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("2", "s")
        await pilot.pause()
        assert row_keys(app, "fulfillment-panel") == [
            "carrier:FedEx",
            "channel:marketplace",
            "channel:pos",
            "location:STORE-AUS-01",
            "carrier:UPS",
            "channel:web",
            "location:WH-NJ",
            "location:WH-TX",
        ]
        await pilot.press("s", "s")  # Status, then Open (largest first)
        await pilot.pause()
        assert row_keys(app, "fulfillment-panel")[:3] == [
            "channel:web",
            "location:WH-TX",
            "location:WH-NJ",
        ]
        title = static_text(panel(app, "fulfillment-panel").query_one(".panel-title", Static))
        assert "sorted by Open ▼" in title
        await pilot.press("o")
        await pilot.pause()
        assert row_keys(app, "fulfillment-panel")[0] == "channel:pos"
        # The sort survives a refresh.
        await pilot.press("r")
        await settle(pilot)
        assert row_keys(app, "fulfillment-panel")[0] == "channel:pos"
        # Cycling past the last column goes back to the snapshot's risk order.
        for _ in range(len(panel(app, "fulfillment-panel").columns) - 2):
            await pilot.press("s")
        await pilot.pause()
        assert panel(app, "fulfillment-panel").sort_column is None
        assert row_keys(app, "fulfillment-panel")[0] == "location:WH-TX"


@pytest.mark.asyncio
async def test_enter_opens_detail_and_escape_returns() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "down", "down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        numbers = static_text(app.screen.query_one(".detail-numbers", Static))
        assert "SKU-0007" in static_text(app.screen.query_one("#detail-title", Static))
        assert "cover 4.0d < lead time 6.0d" in numbers
        chart = static_text(app.screen.query_one("#stock-chart", Static))
        assert "days from now" in chart
        await pilot.press("2")  # tab keys are off while the detail is shown
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is app.main_screen
        assert app.query_one(TabbedContent).active == "stockout"
        await pilot.press("4", "enter")
        await pilot.pause()
        reasons = static_text(app.screen.query_one("#reasons", Static))
        assert "too small" in reasons and "11" in reasons
        await pilot.press("escape", "2", "enter")
        await pilot.pause()
        assert "Late (past promised-by)" in static_text(
            app.screen.query_one(".detail-numbers", Static)
        )


@pytest.mark.asyncio
async def test_export_without_exporter_writes_nothing_and_says_so(tmp_path: Path) -> None:
    app = make_app(export=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        await pilot.pause()
        assert app.screen is app.main_screen
        messages = [n.message for n in app._notifications]
        assert any("Export is not available" in m for m in messages)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.asyncio
async def test_export_asks_a_file_name_and_calls_the_exporter(tmp_path: Path) -> None:
    calls: list[tuple[str, str, Path]] = []
    exported: list[list[object]] = []

    def export(panel_name: str, fmt: str, path: Path, rows: Any) -> Path:
        calls.append((panel_name, fmt, path))
        exported.append(list(rows))
        return path

    app = make_app(export=export)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("3", "e")
        await pilot.pause()
        assert isinstance(app.screen, PromptScreen)
        field = app.screen.query_one(Input)
        assert field.value == "stockout-20251124-1430.csv"
        field.value = str(tmp_path / "stock.json")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert calls == [("stockout", "json", tmp_path / "stock.json")]
        # the rows shown on the Stock tab, in table order
        assert [f"{r.sku}@{r.location_id}" for r in exported[0]] == row_keys(app, "stockout-panel")
        assert any("Exported to" in n.message for n in app._notifications)
        # A file name without .csv/.json is refused before the exporter is called.
        await pilot.press("e")
        await pilot.pause()
        app.screen.query_one(Input).value = "stock.txt"
        await pilot.press("enter")
        await pilot.pause()
        assert len(calls) == 1
        assert any("must end in .csv or .json" in n.message for n in app._notifications)
        # Escape cancels.
        await pilot.press("e", "escape")
        await pilot.pause()
        assert app.screen is app.main_screen and len(calls) == 1


@pytest.mark.asyncio
async def test_every_action_is_in_the_command_palette() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title in [
            "Refresh now",
            "Filter rows",
            "Clear filter",
            "Sort",
            "Reverse sort",
            "Row detail",
            "Export",
            "Show Overview",
            "Show Fulfillment",
            "Show Stock",
            "Show Returns",
            "Quit",
        ]:
            assert title in commands
        commands["Show Stock"].callback()
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "stockout"
        commands["Row detail"].callback()
        await pilot.pause()
        assert isinstance(app.screen, DetailScreen)
        assert "SKU-1042" in static_text(app.screen.query_one("#detail-title", Static))
        bindings = [*app.BINDINGS, *app.main_screen.BINDINGS]
        ids = {b.id for b in bindings if isinstance(b, Binding)}
        assert {"quit", "refresh", "filter", "sort", "export", "tab-stockout"} <= ids


@pytest.mark.asyncio
async def test_theme_change_recolours_status_cells() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        before = panel(app, "fulfillment-panel").table.get_cell("carrier:UPS", "status").style
        app.theme = "textual-light"
        await pilot.pause()
        after = panel(app, "fulfillment-panel").table.get_cell("carrier:UPS", "status")
        assert after.plain == "LATE"
        assert str(after.style) != str(before)


@pytest.mark.asyncio
async def test_q_quits() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


@pytest.mark.asyncio
async def test_ctrl_c_quits_even_from_a_form_field() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f")  # the filter field has the focus
        await pilot.pause()
        assert app.focused is not None and type(app.focused).__name__ == "Input"
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


@pytest.mark.asyncio
async def test_a_notification_shows_square_brackets_as_they_are() -> None:
    """A screen's notify (a held delivery's reason, a path) is never read as markup."""
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        app.screen.notify("held: [shopify] line_items[0]")
        await pilot.pause()
        await pilot.pause()
        shown = [toast.render() for toast in app.screen.query(Toast)]
        texts = [t.plain for t in shown if isinstance(t, Content)]
        assert ["[shopify] line_items[0]" in text for text in texts] == [True], shown


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
@pytest.mark.asyncio
async def test_hangup_exits() -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app._sighup_loop is not None, "handler must be installed before we signal"
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(20):
            await pilot.pause()
            if not app.is_running:
                break
        assert not app.is_running
    assert app.return_code == 128 + int(signal.SIGHUP)


# -- SVG snapshots (sync: snap_compare runs the app itself) ---------------------------------


async def _wait_for_data(pilot: Pilot[Any]) -> None:
    await settle(pilot)


def test_snapshot_overview_80x24(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_wait_for_data)


def test_snapshot_fulfillment_tab_80x24(snap_compare: Any) -> None:
    assert snap_compare(make_app(), press=["2"], terminal_size=(80, 24), run_before=_wait_for_data)


def test_snapshot_stock_detail_80x24(snap_compare: Any) -> None:
    assert snap_compare(
        make_app(),
        press=["3", "down", "down", "enter"],
        terminal_size=(80, 24),
        run_before=_wait_for_data,
    )


def test_snapshot_wide_overview_with_stale_data_160x48(
    snap_compare: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    wall = WallClock()
    monkeypatch.setattr("console.app.monotonic", wall)
    app = make_app(clock=FixedClock(AS_OF + timedelta(minutes=5)))

    async def go_stale(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        wall.t += 300
        app.update_clock()

    assert snap_compare(app, terminal_size=(160, 48), run_before=go_stale)
