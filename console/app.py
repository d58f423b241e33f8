"""The omniops console application: layout, keys, and the one refresh coordinator.

The app is handed everything it shows.  ``compute()`` (blocking: it reads the SQLite store)
runs only in a single exclusive thread worker; the worker posts one
:class:`~console.messages.SnapshotsComputed` message; the app keeps the snapshots in a
reactive and every bar and panel renders from it.  A refresh is never stacked on a running
one: the next one is armed only when the previous one has finished, and ``r`` during a
refresh queues exactly one more.  A failed refresh keeps the last good data on screen and
says so in the status line.

Time comes from the injected clock and is shown in the operator's zone ``tz``.  The STALE
flag is about the refresh loop, so it is measured in wall seconds like
``refresh_interval``: data that arrived more than two intervals ago (a replay clock may
run 60 times faster than the wall; that is not staleness).  An idle console only repaints
the header clock once a minute (it is checked every 10 s) and the data after each
refresh, which keeps a slow SSH link quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import tzinfo
from functools import partial
from pathlib import Path
from time import monotonic
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.content import Content
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Input, TabbedContent, TabPane, Tabs
from textual.worker import Worker, WorkerState

from console.messages import PanelRowSelected, SnapshotsComputed
from console.screens import (
    DetailFetch,
    DetailRow,
    DetailScreen,
    ExportScreen,
    FeedsScreen,
    default_export_name,
    export_format,
)
from console.widgets.bars import FilterBar, HeadlineStrip, TextBar, feed_content, top_bar_content
from console.widgets.formatting import fmt_clock
from console.widgets.panels import (
    FulfillmentPanel,
    Panel,
    PanelTable,
    ReturnsPanel,
    StockoutPanel,
)
from rules.highlights import Highlights
from rules.matchers import Matcher, format_matchers, parse_matchers
from store.clock import Clock
from store.snapshots import Snapshots

ExportFn = Callable[[str, str, Path, Sequence[object]], Path]
"""``export(panel_name, fmt, path, rows) -> written path``; panel_name is fulfillment,
stockout or returns; fmt is csv or json; rows are the snapshot rows the panel shows (its
filter and sort applied), in table order."""

PANEL_KINDS = ("fulfillment", "stockout", "returns")
TAB_IDS = ("overview", *PANEL_KINDS)
WIDE_COLUMNS = 160
WIDE_SALES_COLUMNS = 100
CLOCK_TICK_SECONDS = 10.0
# Actions that act on the main console; they are off while a detail or dialog is shown.
_MAIN_SCREEN_ACTIONS = {
    "filter",
    "sort",
    "reverse_sort",
    "export",
    "show_tab",
    "detail",
    "open_view",
}

ViewFactory = Callable[["OmniopsApp"], Screen[None]]
"""Builds a view (alerts, rules, routing) over the console; injected by the command line."""

VIEW_TITLES = {
    "alerts": "Alerts",
    "rules": "Alert rules",
    "routing": "Fulfilment routing",
    "feeds": "Feeds",
}


class OmniopsApp(App[None]):
    """The operations console: headline strip, feed freshness and three panels."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses may live elsewhere
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012 - declared by App without ClassVar
        (0, "-narrow"),
        (WIDE_COLUMNS, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("f,slash", "filter", "Filter", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("o", "reverse_sort", "Reverse sort", id="reverse-sort", show=False),
        Binding("e", "export", "Export", id="export"),
        Binding("1", "show_tab('overview')", "Overview", id="tab-overview", show=False),
        Binding("2", "show_tab('fulfillment')", "Fulfillment", id="tab-fulfillment", show=False),
        Binding("3", "show_tab('stockout')", "Stock", id="tab-stockout", show=False),
        Binding("4", "show_tab('returns')", "Returns", id="tab-returns", show=False),
        Binding("a", "open_view('alerts')", "Alerts", id="alerts"),
        Binding("t", "open_view('rules')", "Rules", id="rules", show=False),
        Binding("g", "open_view('routing')", "Routing", id="routing", show=False),
        Binding("h", "open_view('feeds')", "Feeds", id="feeds", show=False),
    ]

    snapshots: var[Snapshots | None] = var(None, always_update=True)
    """The latest snapshots computed; None until the first refresh succeeds."""

    def __init__(
        self,
        *,
        compute: Callable[[], Snapshots],
        clock: Clock,
        tz: tzinfo,
        refresh_interval: float = 60.0,
        export: ExportFn | None = None,
        detail: DetailFetch | None = None,
        views: Mapping[str, ViewFactory] | None = None,
        title: str = "omniops",
        highlights: Callable[[], Highlights] | None = None,
    ) -> None:
        """Create the console.

        Args:
            compute: Blocking function returning fresh snapshots; called only from a
                thread worker, never on the event loop.
            clock: Source of "now" (UTC) for the header clock and staleness.
            tz: The operator's zone; every time is shown in it.
            refresh_interval: Wall seconds between the end of one refresh and the next;
                data older than twice this is flagged STALE.
            export: ``export(panel_name, fmt, path) -> Path`` writing a panel's current
                data; None disables export (the console says so and writes nothing).
            detail: fetches a row's history or late orders for its detail screen, in a
                worker thread; None shows the snapshot row alone.
            views: builds the alerts (``a``), rules (``t``) and routing (``g``) views.
            title: Shown at the left of the top bar.
            highlights: The thresholds in force for panel highlights (cheap, called on
                every render); None: the registry's defaults.
        """
        super().__init__()
        if refresh_interval <= 0:
            raise ValueError("refresh_interval must be positive")
        self._snapshot_source = compute
        self.clock = clock
        self.tz = tz
        self.refresh_interval = refresh_interval
        self._export = export
        self._detail = detail
        self._views = dict(views or {})
        self._views.setdefault("feeds", lambda app: FeedsScreen(snapshots=app.snapshots, tz=app.tz))
        self.title = title
        self._highlights = highlights or Highlights
        self._refresh_running = False
        self._refresh_pending = False
        self._refresh_timer: Timer | None = None
        self._row_filters: dict[str, tuple[Matcher, ...]] = {}
        self._filter_kind = PANEL_KINDS[0]
        self._status: dict[str, Content] = {}
        self._sighup_loop: asyncio.AbstractEventLoop | None = None
        self._console_ready = False
        self._received_at: float | None = None  # monotonic time the shown data arrived

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Top bar, feeds, headline, the tabbed panels, filter prompt, status and footer."""
        yield TextBar(id="topbar")
        yield TextBar(id="feeds")
        yield HeadlineStrip(id="headline")
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("1 Overview", id="overview"), Container(id="overview-grid"):
                yield FulfillmentPanel(tz=self.tz, compact=True, id="overview-fulfillment")
                yield StockoutPanel(tz=self.tz, compact=True, id="overview-stockout")
                yield ReturnsPanel(tz=self.tz, compact=True, id="overview-returns")
            with TabPane("2 Fulfillment", id="fulfillment"):
                yield FulfillmentPanel(tz=self.tz, id="fulfillment-panel")
            with TabPane("3 Stock", id="stockout"):
                yield StockoutPanel(tz=self.tz, id="stockout-panel")
            with TabPane("4 Returns", id="returns"):
                yield ReturnsPanel(tz=self.tz, id="returns-panel")
        yield FilterBar(id="filter-bar")
        yield TextBar(id="status")
        yield Footer()

    def on_mount(self) -> None:
        """Install the hang-up handler, draw the empty frame, and start refreshing."""
        self._install_sighup_handler()
        self._console_ready = True
        self._render_bars()
        self._render_status()
        self.main_screen.query_one("#overview-fulfillment", Panel).table.focus()
        self.set_interval(CLOCK_TICK_SECONDS, self.update_clock, name="clock")
        self.refresh_snapshots()

    def on_unmount(self) -> None:
        """Remove the hang-up handler installed on mount."""
        if self._sighup_loop is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._sighup_loop.remove_signal_handler(signal.SIGHUP)
            self._sighup_loop = None

    def _install_sighup_handler(self) -> None:
        """Exit when the terminal goes away (SSH link dropped) instead of spinning."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None or threading.current_thread() is not threading.main_thread():
            return
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(sighup, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not supported here (Windows, nested loops): nothing to clean up
        self._sighup_loop = loop

    def _on_sighup(self) -> None:
        self.exit(return_code=128 + int(signal.SIGHUP))

    @property
    def _wide(self) -> bool:
        return self.size.width >= WIDE_SALES_COLUMNS

    def on_resize(self) -> None:
        """At wide sizes the overview shows every column, and the bars show more."""
        if not self._console_ready:
            return
        wide = self.size.width >= WIDE_COLUMNS
        for panel in self.main_screen.query("#overview-grid Panel").results(Panel):
            panel.compact = not wide
        self._render_bars()
        if self.snapshots is not None:
            self.main_screen.query_one(HeadlineStrip).show(
                self.snapshots.headline, wide=self._wide, highlights=self._highlights()
            )

    # -- refresh coordinator ----------------------------------------------------------------

    def refresh_snapshots(self) -> None:
        """Start a refresh now, or queue one if a refresh is already running."""
        if self._refresh_running:
            self._refresh_pending = True
            return
        if self._refresh_timer is not None:
            self._refresh_timer.stop()
            self._refresh_timer = None
        self._refresh_running = True
        self._refresh_pending = False
        self._run_refresh()

    @work(thread=True, exclusive=True, exit_on_error=False, group="refresh")
    def _run_refresh(self) -> None:
        """Thread worker: compute every panel, post one message.  Never touches widgets."""
        snapshots = self._snapshot_source()
        self.post_message(SnapshotsComputed(snapshots))

    def on_snapshots_computed(self, message: SnapshotsComputed) -> None:
        """Keep the new snapshots; the watcher renders them."""
        self._set_status("refresh", None)
        self._received_at = monotonic()
        self.snapshots = message.snapshots

    def watch_snapshots(self, snapshots: Snapshots | None) -> None:
        """Render the new snapshots everywhere (also under a detail screen)."""
        if not self._console_ready:
            return
        self._render_bars()
        highlights = self._highlights()
        if snapshots is not None:
            self.main_screen.query_one(HeadlineStrip).show(
                snapshots.headline, wide=self._wide, highlights=highlights
            )
        for panel in self.main_screen.query(Panel):
            panel.highlights = highlights
            panel.snapshots = snapshots

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "refresh":
            if event.state == WorkerState.ERROR:
                self._refresh_failed(worker.error)
            if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
                self._refresh_finished()
        elif worker.group == "export":
            if event.state == WorkerState.SUCCESS:
                self.notify(f"Exported to {worker.result}", title="Export")
            elif event.state == WorkerState.ERROR:
                self.notify(
                    f"Export failed, nothing may have been written: {_describe(worker.error)}",
                    title="Export",
                    severity="error",
                )

    def _refresh_finished(self) -> None:
        """Arm the next refresh, or run the one queued by ``r`` during this one."""
        self._refresh_running = False
        if self._refresh_pending:
            self.refresh_snapshots()
        elif self.is_running:
            self._refresh_timer = self.set_timer(
                self.refresh_interval, self.refresh_snapshots, name="refresh"
            )

    def _refresh_failed(self, error: BaseException | None) -> None:
        now = fmt_clock(self.clock.now(), self.tz, seconds=True)
        kept = (
            f"showing data from {fmt_clock(self.snapshots.as_of, self.tz, seconds=True)}"
            if self.snapshots is not None
            else "no data yet"
        )
        self._set_status(
            "refresh",
            Content.assemble(
                ("REFRESH FAILED", "$text-error bold"),
                f" {now} {_describe(error)} · {kept} · retry in "
                f"{self.refresh_interval:.0f} s, r retries now",
            ),
        )

    # -- rendering of the bars ----------------------------------------------------------------

    def update_clock(self) -> None:
        """Re-read the clock and the data's age (every 10 s); repaints only on a change."""
        self._render_bars()

    @property
    def data_age(self) -> float | None:
        """Wall seconds since the data on screen arrived (None before the first refresh)."""
        return None if self._received_at is None else monotonic() - self._received_at

    def _render_bars(self) -> None:
        """Top bar (clock, data time, STALE) and feed strip; repaint only what changed."""
        if not self._console_ready:
            return
        now = self.clock.now()
        self.main_screen.query_one("#topbar", TextBar).set_content(
            top_bar_content(
                title=self.title,
                now=now,
                tz=self.tz,
                snapshots=self.snapshots,
                data_age=self.data_age,
                refresh_interval=self.refresh_interval,
            )
        )
        headline = self.snapshots.headline if self.snapshots is not None else None
        self.main_screen.query_one("#feeds", TextBar).set_content(
            feed_content(
                headline.feeds if headline else (),
                self.tz,
                wide=self.size.width >= WIDE_COLUMNS,
                adapters=headline.adapters if headline else (),
                now=self.snapshots.as_of if self.snapshots is not None else None,
            )
        )

    def _set_status(self, source: str, message: Content | str | None) -> None:
        if message is None:
            self._status.pop(source, None)
        else:
            self._status[source] = Content(message) if isinstance(message, str) else message
        self._render_status()

    def _render_status(self) -> None:
        status = self.main_screen.query_one("#status", TextBar)
        if not self._status:
            status.set_content(Content(""))
            status.add_class("-empty")
            return
        status.remove_class("-empty")
        status.set_content(Content(" │ ").join(self._status.values()))

    @property
    def refreshing(self) -> bool:
        """Whether a refresh is running right now."""
        return self._refresh_running

    @property
    def next_refresh_armed(self) -> bool:
        """Whether the timer for the next refresh is set (it is set only after one finishes)."""
        return self._refresh_timer is not None

    @property
    def status_text(self) -> str:
        """The status line as plain text (empty when all is well)."""
        return " │ ".join(c.plain for c in self._status.values())

    # -- panels and focus -----------------------------------------------------------------------

    @property
    def main_screen(self) -> Screen[object]:
        """The console screen (under any detail screen or dialog)."""
        return self.screen_stack[0]

    def panels(self, kind: str | None = None) -> list[Panel]:
        """All panels on the console, or those of one kind."""
        found = list(self.main_screen.query(Panel))
        return [p for p in found if kind is None or p.kind == kind]

    def current_panel(self) -> Panel:
        """The panel in view: the active tab's, or on Overview the one with focus."""
        active = self.main_screen.query_one(TabbedContent).active
        if active in PANEL_KINDS:
            return self.main_screen.query_one(f"#{active}-panel", Panel)
        focused = self.main_screen.focused
        node = focused
        while node is not None:
            if isinstance(node, Panel):
                return node
            node = node.parent  # type: ignore[assignment]
        return self.main_screen.query_one("#overview-fulfillment", Panel)

    def _focus_current_table(self) -> None:
        self.main_screen.set_focus(self.current_panel().table)

    def action_show_tab(self, tab: str) -> None:
        """Switch to a tab (1 Overview, 2 Fulfillment, 3 Stock, 4 Returns)."""
        if tab not in TAB_IDS:
            return
        self.main_screen.query_one(TabbedContent).active = tab
        pane = self.main_screen.query_one(f"#{tab}", TabPane)
        tables = pane.query(PanelTable)
        if not any(t.has_focus for t in tables):
            # Focus now, not on the next idle: keys typed right after the digit
            # (Enter, s, f) must already reach the new tab's table.
            self.main_screen.set_focus(tables.first())

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # A click on a tab puts the keys on its table; arrows on the tab bar stay there.
        if isinstance(self.focused, Tabs):
            return
        tables = event.pane.query(PanelTable)
        if tables and not any(t.has_focus for t in tables):
            self.main_screen.set_focus(tables.first())

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Console actions are off while a detail screen or dialog is on top."""
        return action not in _MAIN_SCREEN_ACTIONS or self.screen is self.main_screen

    # -- actions ----------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        """Refresh every panel now."""
        self.refresh_snapshots()

    def action_sort(self) -> None:
        """Sort the current panel by its next column (after the last: back to risk order)."""
        self.current_panel().cycle_sort()

    def action_reverse_sort(self) -> None:
        """Flip the direction of the current panel's sort."""
        self.current_panel().reverse_sort()

    def action_filter(self) -> None:
        """Open the filter prompt for the current panel."""
        panel = self.current_panel()
        self._filter_kind = panel.kind
        bar = self.main_screen.query_one(FilterBar)
        bar.open(panel.heading, format_matchers(self._row_filters.get(panel.kind, ())))

    def action_close_filter(self) -> None:
        """Close the filter prompt without changing the filter."""
        self.main_screen.query_one(FilterBar).close()
        self._set_status("filter", None)
        self._focus_current_table()

    def action_clear_filter(self) -> None:
        """Remove the current panel's filter."""
        self.apply_filter(self.current_panel().kind, "")

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_filter(self._filter_kind, event.value):
            self.main_screen.query_one(FilterBar).close()
            self._focus_current_table()

    def apply_filter(self, kind: str, text: str) -> bool:
        """Filter the rows of every panel of ``kind``; False (error shown) if ``text`` is bad."""
        heading = self.panels(kind)[0].heading
        try:
            matchers = tuple(parse_matchers(text))
            known = self.panels(kind)[0].label_names
            for matcher in matchers:
                if matcher.name not in known:
                    raise ValueError(
                        f"{heading} rows have no label {matcher.name!r}; use {', '.join(known)}"
                    )
        except ValueError as exc:
            self._set_status(
                "filter",
                Content.assemble(
                    ("FILTER NOT APPLIED", "$text-error bold"),
                    f" {exc}. Fix it and press Enter, or Escape to keep the old filter.",
                ),
            )
            return False
        self._row_filters[kind] = matchers
        for panel in self.panels(kind):
            panel.matchers = matchers
        self._set_status("filter", None)
        return True

    def action_detail(self) -> None:
        """Open the detail screen of the row under the cursor."""
        panel = self.current_panel()
        view = panel.cursor_view()
        if view is None or panel.snapshots is None:
            self.notify("No row selected.", severity="warning")
            return
        self._open_detail(view.source, panel.snapshots)

    def on_panel_row_selected(self, message: PanelRowSelected) -> None:
        """Enter on a row: show its detail."""
        self.push_screen(
            DetailScreen(row=message.row, as_of=message.as_of, tz=self.tz, fetch=self._detail)
        )

    def _open_detail(self, row: DetailRow, snapshots: Snapshots) -> None:
        self.push_screen(
            DetailScreen(row=row, as_of=snapshots.as_of, tz=self.tz, fetch=self._detail)
        )

    def action_open_view(self, name: str) -> None:
        """Open the alerts, rules or routing view, if this console has it."""
        factory = self._views.get(name)
        if factory is None:
            self.notify(
                f"{VIEW_TITLES.get(name, name)} are not available in this console.",
                severity="warning",
            )
            return
        self.push_screen(factory(self))

    def action_export(self) -> None:
        """Ask for a file name and export the current panel through the injected exporter."""
        panel = self.current_panel()
        if self._export is None:
            self.notify(
                "Export is not available in this console; nothing was written.",
                title="Export",
                severity="warning",
            )
            return
        as_of = self.snapshots.as_of if self.snapshots is not None else None
        suggested = default_export_name(panel.kind, as_of, self.tz)
        self.push_screen(
            ExportScreen(panel_name=panel.kind, suggested=suggested),
            callback=partial(self._export_chosen, panel.kind),
        )

    def _export_chosen(self, kind: str, name: str | None) -> None:
        if not name:
            return
        fmt = export_format(name)
        if fmt is None:
            self.notify(
                f"Not exported: {name!r} must end in .csv or .json.",
                title="Export",
                severity="error",
            )
            return
        rows = [view.source for view in self.panels(kind)[-1].views()]
        self._run_export(kind, fmt, Path(name).expanduser(), rows)

    @work(thread=True, exit_on_error=False, group="export")
    def _run_export(self, kind: str, fmt: str, path: Path, rows: Sequence[object]) -> Path:
        """Thread worker: the exporter may write a large file."""
        assert self._export is not None
        return self._export(kind, fmt, path, rows)

    # -- command palette -----------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every console action, also reachable from the command palette (ctrl+p)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Recompute every panel (r)", self.action_refresh)
        if screen is not self.main_screen:
            return
        yield SystemCommand(
            "Filter rows", "Filter the current panel by labels (f or /)", self.action_filter
        )
        yield SystemCommand(
            "Clear filter", "Show every row of the current panel", self.action_clear_filter
        )
        yield SystemCommand(
            "Sort", "Sort the current panel by its next column (s)", self.action_sort
        )
        yield SystemCommand("Reverse sort", "Flip the sort direction (o)", self.action_reverse_sort)
        yield SystemCommand(
            "Row detail", "Open the detail of the selected row (enter)", self.action_detail
        )
        yield SystemCommand(
            "Export", "Export the current panel to CSV or JSON (e)", self.action_export
        )
        for name, letter in (("alerts", "a"), ("rules", "t"), ("routing", "g"), ("feeds", "h")):
            if name in self._views:
                title = VIEW_TITLES[name]
                yield SystemCommand(
                    title,
                    f"Open the {title.lower()} view ({letter})",
                    partial(self.action_open_view, name),
                )
        for key, (tab, label) in enumerate(
            zip(TAB_IDS, ("Overview", "Fulfillment", "Stock", "Returns"), strict=True), start=1
        ):
            yield SystemCommand(
                f"Show {label}",
                f"Switch to the {label} tab ({key})",
                partial(self.action_show_tab, tab),
            )


def _describe(error: BaseException | None) -> str:
    """``OperationalError: database is locked`` (the type says what kind of failure)."""
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
