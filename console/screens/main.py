"""The console screen: top bar, feeds line, headline, the tabbed panels, filter and status.

:class:`ConsoleScreen` owns the panels, their layout and the main keys.  Every other view
(detail, alerts, rules, routing, feeds, help, dialogs) is pushed on top of it, so its keys
are simply not there while another screen is shown.  It renders what the app holds: it
watches the app's ``snapshots`` and re-renders the bars and panels when they change.

The layout follows the terminal: below :data:`WIDE_COLUMNS` columns the Overview's panels
show their key columns, from it on every column, switching on every resize in both
directions; filters, sorts and cursors are kept across the switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta, tzinfo
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, cast

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Input, TabbedContent, TabPane, Tabs

from console.messages import PanelRowSelected
from console.widgets.bars import FilterBar, HeadlineStrip, TextBar, feed_content, top_bar_content
from console.widgets.footer import FittedFooter
from console.widgets.formatting import to_local
from console.widgets.panels import (
    FulfillmentPanel,
    Panel,
    PanelTable,
    ReturnsPanel,
    StockoutPanel,
)
from rules.highlights import Highlights
from rules.matchers import format_matchers, parse_matchers
from store.clock import Clock
from store.snapshots import Snapshots

if TYPE_CHECKING:
    from console.screens.detail import DetailFetch
    from rules.alerts.actions import AlertCount

# The screens pushed over the console (detail, prompt, command line) are imported when first
# opened: the first paint does not wait on their modules (issue 15).


class ConsoleHost(Protocol):
    """What the console screen reads from its app (:class:`console.app.OmniopsApp`).

    A protocol rather than an import, so the screens never import the app module.
    """

    tz: tzinfo
    clock: Clock
    title: str
    refresh_interval: float
    detail_fetch: DetailFetch | None
    alert_count: AlertCount | None
    alert_count_failed: bool

    def count_alerts(self) -> None:
        """Count the alerts paging now again (the top bar), in a worker."""
        ...

    @property
    def snapshots(self) -> Snapshots | None:
        """The latest snapshots (None before the first refresh)."""
        ...

    @property
    def data_age(self) -> float | None:
        """Wall seconds since the data on screen arrived."""
        ...

    @property
    def can_export(self) -> bool:
        """Whether an exporter was given."""
        ...

    def start_export(self, kind: str, fmt: str, path: Path, rows: Sequence[object]) -> None:
        """Export rows in a worker."""
        ...

    def build_view(self, name: str) -> Screen[None] | None:
        """The alerts, rules, routing or feeds view, or None when this console has none."""
        ...

    def highlights(self) -> Highlights:
        """The thresholds in force for panel highlights (the operator's rules)."""
        ...

    def action_help(self) -> None:
        """Show the help of the current view."""
        ...

    @property
    def viewing_at(self) -> datetime | None:
        """The past moment shown (``:at``), None when live."""
        ...

    @property
    def can_look_back(self) -> bool:
        """Whether ``:at`` can show a past moment on this console."""
        ...

    def look_at(self, moment: datetime | None) -> None:
        """Show a past moment (None: live again)."""
        ...


PANEL_KINDS = ("fulfillment", "stockout", "returns")
TAB_IDS = ("overview", *PANEL_KINDS)
TAB_LABELS = ("Overview", "Fulfillment", "Stock", "Returns")
WIDE_COLUMNS = 160
"""From this width on the Overview shows every column and the bars say more."""
WIDE_SALES_COLUMNS = 100

VIEW_TITLES = {
    "alerts": "Alerts",
    "rules": "Alert rules",
    "routing": "Fulfillment routing",
    "feeds": "Feeds",
    "silences": "Silences",
}
VIEW_KEYS = {"alerts": "a", "rules": "t", "routing": "g", "feeds": "h", "silences": "m"}
TAB_WORDS = {
    "overview": "overview",
    "fulfillment": "fulfillment",
    "stock": "stockout",
    "returns": "returns",
}
"""``:`` words that show a tab (and filter its panel with what follows)."""
COMMAND_WORDS = (*VIEW_KEYS, *TAB_WORDS, "sort", "filter", "at", "help", "quit")
MAX_VALUE_COMPLETIONS = 50


LIVE_WORDS = ("now", "live")
AT_HOURS_LISTED = 8
"""``:at`` completes ``now`` and the whole local hours of the last this many hours."""


def parse_at(text: str, now: datetime, tz: tzinfo) -> datetime | None:
    """The moment ``:at TEXT`` names (UTC-aware), or None for ``now``/``live``.

    ``14:00`` (or ``14:00:30``) is that time today in the display zone ``tz``;
    ``2026-11-18T14:00`` (or with a space) is in ``tz`` unless it carries its own offset
    (``…Z``, ``…-05:00``).  ``now`` is the console's clock (the replay clock of a demo).

    Raises:
        ValueError: not a time, or a moment after ``now`` (the store has no future).
    """
    word = text.strip()
    if not word:
        raise ValueError("give a time: :at 14:00, :at 2026-11-18T14:00 or :at now")
    if word.lower() in LIVE_WORDS:
        return None
    local_now = now.astimezone(tz)
    moment: datetime
    try:
        clock = time.fromisoformat(word)
    except ValueError:
        try:
            moment = datetime.fromisoformat(word.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{word!r} is not a time; use 14:00, 2026-11-18T14:00 or now") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
    else:
        if clock.tzinfo is not None:
            raise ValueError(f"{word!r}: a time of day is in the display zone; drop the offset")
        moment = datetime.combine(local_now.date(), clock, tzinfo=tz)
    if moment > now:
        raise ValueError(
            f"{moment.astimezone(tz):%Y-%m-%d %H:%M} is after now "
            f"({local_now:%Y-%m-%d %H:%M}); the store has no future"
        )
    return moment.astimezone(now.tzinfo)


def at_completions(now: datetime, tz: tzinfo) -> list[str]:
    """``now``, then the whole local hours before ``now``, latest first (``14:00``)."""
    hour = now.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    found = ["now"]
    for back in range(AT_HOURS_LISTED):
        found.append(f"{(hour - timedelta(hours=back)):%H:%M}")
    return found


def export_format(path_text: str) -> str | None:
    """``csv`` or ``json`` from a file name's extension, None for anything else."""
    lowered = path_text.lower()
    for fmt in ("csv", "json"):
        if lowered.endswith("." + fmt):
            return fmt
    return None


def default_export_name(panel_name: str, as_of: datetime | None, tz: tzinfo) -> str:
    """``stockout-20251124-0830.csv`` (the snapshot's local time, not the wall clock)."""
    if as_of is None:
        return f"{panel_name}.csv"
    return f"{panel_name}-{to_local(as_of, tz).strftime('%Y%m%d-%H%M')}.csv"


class ConsoleScreen(Screen[None]):
    """The main console: bars, the four tabs of panels, the filter prompt and the status."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f,slash", "filter", "Filter", id="filter"),
        Binding("s", "sort", "Sort", id="sort"),
        Binding("o", "reverse_sort", "Reverse sort", id="reverse-sort", show=False),
        Binding("e", "export", "Export", id="export"),
        Binding("1", "show_tab('overview')", "Overview", id="tab-overview", show=False),
        Binding("2", "show_tab('fulfillment')", "Fulfillment", id="tab-fulfillment", show=False),
        Binding("3", "show_tab('stockout')", "Stock", id="tab-stockout", show=False),
        Binding("4", "show_tab('returns')", "Returns", id="tab-returns", show=False),
        Binding("a", "open_view('alerts')", "Alerts", id="alerts"),
        Binding("t", "open_view('rules')", "Rules", id="rules"),
        Binding("g", "open_view('routing')", "Routing", id="routing"),
        Binding("h", "open_view('feeds')", "Feeds", id="feeds"),
        Binding("m", "open_view('silences')", "Silences", id="silences"),
        Binding("colon", "command", "Command", id="command"),
    ]

    FOOTER_PRIORITY: ClassVar[tuple[str, ...]] = (
        "help",
        "filter",
        "sort",
        "alerts",
        "detail",
        "silences",
        "rules",
        "routing",
        "feeds",
        "command",
        "export",
        "refresh",
        "quit",
    )
    """Binding ids, most useful first: what the footer keeps when not every key fits."""

    def __init__(self) -> None:
        """The console screen; it reads everything else from its app."""
        super().__init__(id="console")
        self._status: dict[str, Content] = {}
        self._filter_kind = PANEL_KINDS[0]
        self._ready = False
        self._resumed = False
        self._laid_out_for = -1
        """The width the layout was last applied for (a resize to the same width is none)."""

    @property
    def omniops(self) -> ConsoleHost:
        """The app this screen belongs to, as what the screen needs of it."""
        return cast("ConsoleHost", self.app)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Top bar, feeds, headline, the tabbed panels, filter prompt, status and footer."""
        tz = self.omniops.tz
        # The breakpoint class the first resize would give (``App.HORIZONTAL_BREAKPOINTS``),
        # set before the widgets get their styles: that resize then changes no class, and
        # the whole screen is not styled a second time before its first paint (issue 15).
        wide = self.app.size.width >= WIDE_COLUMNS
        self.set_class(wide, "-wide", update=False)
        self.set_class(not wide, "-narrow", update=False)
        yield TextBar(id="topbar")
        yield TextBar(id="feeds")
        yield HeadlineStrip(id="headline")
        with TabbedContent(initial="overview", id="tabs"):
            with TabPane("1 Overview", id="overview"), Container(id="overview-grid"):
                yield FulfillmentPanel(
                    tz=tz, compact=not wide, scopes=("location",), id="overview-fulfillment"
                )
                yield StockoutPanel(tz=tz, compact=not wide, id="overview-stockout")
                yield ReturnsPanel(tz=tz, compact=not wide, id="overview-returns")
            with TabPane("2 Fulfillment", id="fulfillment"):
                yield FulfillmentPanel(tz=tz, id="fulfillment-panel")
            with TabPane("3 Stock", id="stockout"):
                yield StockoutPanel(tz=tz, id="stockout-panel")
            with TabPane("4 Returns", id="returns"):
                yield ReturnsPanel(tz=tz, id="returns-panel")
        yield FilterBar(id="filter-bar")
        yield TextBar(id="status")
        yield FittedFooter()

    def on_mount(self) -> None:
        """Draw the empty frame, follow the app's snapshots, keys on the first panel."""
        self._ready = True
        # init=False: before the first refresh there is nothing to hand the panels (they
        # draw their empty frame themselves); snapshots already there are shown now.
        self.watch(self.app, "snapshots", self._snapshots_changed, init=False)
        self._apply_layout(self.app.size.width, render=self.omniops.snapshots is None)
        if self.omniops.snapshots is not None:
            self._snapshots_changed(self.omniops.snapshots)  # the bars and headline too
        self._render_status()
        first = self.query_one("#overview-fulfillment", Panel)
        first.table.focus()  # its panel's title shows it (Panel.-focused)

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        # The first resume follows the mount at once: every widget was styled as it was
        # mounted (the width class already set in compose), each class change since
        # restyled its own nodes (the first panel's focus class among them).  Textual's
        # resume would style the whole screen a second time before the first paint (a tenth
        # of its work to it, issue 15); later resumes do.
        if not self._resumed:
            self._resumed = True
            event.refresh_styles = False
        else:  # back from a view (the alerts view may have acknowledged or silenced)
            self.omniops.count_alerts()

    def on_resize(self, event: events.Resize) -> None:
        """Compact below :data:`WIDE_COLUMNS`, full from it; both directions, live."""
        if event.size.width != self._laid_out_for:  # the start's resizes keep the width
            self._apply_layout(event.size.width)

    def _apply_layout(self, width: int, *, render: bool = True) -> None:
        if not self._ready:
            return
        self._laid_out_for = width
        wide = width >= WIDE_COLUMNS
        for panel in self.query("#overview-grid Panel").results(Panel):
            if panel.compact == wide:
                panel.compact = not wide
        if not render:
            return
        self.render_bars()
        snapshots = self.omniops.snapshots
        if snapshots is not None:
            self.query_one(HeadlineStrip).show(
                snapshots.headline,
                wide=width >= WIDE_SALES_COLUMNS,
                highlights=self.omniops.highlights(),
            )

    def _snapshots_changed(self, snapshots: Snapshots | None) -> None:
        """Render new snapshots everywhere (also while another screen is on top)."""
        self.render_bars()
        highlights = self.omniops.highlights()
        if snapshots is not None:
            self.query_one(HeadlineStrip).show(
                snapshots.headline,
                wide=self.app.size.width >= WIDE_SALES_COLUMNS,
                highlights=highlights,
            )
        # The tab in view first; the other tabs' panels after this frame is painted, so
        # the first populated paint does not wait on tables nobody sees yet (issue 15).
        active = self.query_one(TabbedContent).active
        later: list[Panel] = []
        for panel in self.query(Panel):
            panel.highlights = highlights
            pane = panel.query_ancestor(TabPane)
            if pane.id == active:
                panel.snapshots = snapshots
            else:
                later.append(panel)
        if later:
            self.call_after_refresh(self._show_later, later, snapshots)

    def _show_later(self, panels: list[Panel], snapshots: Snapshots | None) -> None:
        """Hand the snapshots to the panels of the tabs not in view (unless newer came)."""
        if snapshots is not self.omniops.snapshots:
            return  # a newer refresh already reached every panel
        for panel in panels:
            if panel.snapshots is not snapshots:
                panel.snapshots = snapshots

    # -- bars and status -----------------------------------------------------------------------

    def render_bars(self) -> None:
        """Top bar (clock, data time, STALE) and feed strip; repaint only what changed."""
        if not self._ready:
            return
        app = self.omniops
        snapshots = app.snapshots
        self.query_one("#topbar", TextBar).set_content(
            top_bar_content(
                title=app.title,
                now=app.clock.now(),
                tz=app.tz,
                snapshots=snapshots,
                data_age=app.data_age,
                refresh_interval=app.refresh_interval,
                looking_at=app.viewing_at,
                alerts=app.alert_count,
                alerts_unknown=app.alert_count_failed,
                width=self.app.size.width - 2,  # #topbar's padding: 0 1
            )
        )
        headline = snapshots.headline if snapshots is not None else None
        self.query_one("#feeds", TextBar).set_content(
            feed_content(
                headline.feeds if headline else (),
                app.tz,
                wide=self.app.size.width >= WIDE_COLUMNS,
                adapters=headline.adapters if headline else (),
                now=snapshots.as_of if snapshots is not None else None,
                width=self.app.size.width,
            )
        )

    def set_status(self, source: str, message: Content | str | None) -> None:
        """Show (or with None clear) the status of one source: refresh, filter, export."""
        if message is None:
            self._status.pop(source, None)
        else:
            self._status[source] = Content(message) if isinstance(message, str) else message
        self._render_status()

    def _render_status(self) -> None:
        if not self._ready:
            return
        status = self.query_one("#status", TextBar)
        if not self._status:
            status.set_content(Content(""))
            status.add_class("-empty")
            return
        status.remove_class("-empty")
        status.set_content(Content(" │ ").join(self._status.values()))

    @property
    def status_text(self) -> str:
        """The status line as plain text (empty when all is well)."""
        return " │ ".join(c.plain for c in self._status.values())

    # -- panels and focus ------------------------------------------------------------------------

    def panels(self, kind: str | None = None) -> list[Panel]:
        """All panels on the console, or those of one kind."""
        return [p for p in self.query(Panel) if kind is None or p.kind == kind]

    def current_panel(self) -> Panel:
        """The panel in view: the active tab's, or on Overview the one with focus."""
        active = self.query_one(TabbedContent).active
        if active in PANEL_KINDS:
            return self.query_one(f"#{active}-panel", Panel)
        node = self.focused
        while node is not None:
            if isinstance(node, Panel):
                return node
            node = node.parent  # type: ignore[assignment]
        return self.query_one("#overview-fulfillment", Panel)

    def _focus_current_table(self) -> None:
        self.set_focus(self.current_panel().table)

    def action_show_tab(self, tab: str) -> None:
        """Switch to a tab (1 Overview, 2 Fulfillment, 3 Stock, 4 Returns)."""
        if tab not in TAB_IDS:
            return
        self.query_one(TabbedContent).active = tab
        tables = self.query_one(f"#{tab}", TabPane).query(PanelTable)
        if not any(t.has_focus for t in tables):
            # Focus now, not on the next idle: keys typed right after the digit
            # (Enter, s, f) must already reach the new tab's table.
            self.set_focus(tables.first())

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # A click on a tab puts the keys on its table; arrows on the tab bar stay there.
        if isinstance(self.focused, Tabs):
            return
        tables = event.pane.query(PanelTable)
        if tables and not any(t.has_focus for t in tables):
            self.set_focus(tables.first())

    # -- sort and filter ---------------------------------------------------------------------------

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
        self.query_one(FilterBar).open(panel.heading, format_matchers(panel.matchers))

    def action_close_filter(self) -> None:
        """Close the filter prompt without changing the filter."""
        self.query_one(FilterBar).close()
        self.set_status("filter", None)
        self._focus_current_table()

    def action_clear_filter(self) -> None:
        """Remove the current panel's filter."""
        self.apply_filter(self.current_panel().kind, "")

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.apply_filter(self._filter_kind, event.value):
            self.query_one(FilterBar).close()
            self._focus_current_table()

    def apply_filter(self, kind: str, text: str) -> bool:
        """Filter the rows of every panel of ``kind``; False (error shown) if ``text`` is bad."""
        panels = self.panels(kind)
        heading = panels[0].heading
        try:
            matchers = tuple(parse_matchers(text))
            known = panels[0].label_names
            for matcher in matchers:
                if matcher.name not in known:
                    raise ValueError(
                        f"{heading} rows have no label {matcher.name!r}; use {', '.join(known)}"
                    )
        except ValueError as exc:
            self.set_status(
                "filter",
                Content.assemble(
                    ("FILTER NOT APPLIED", "$text-error bold"),
                    f" {exc}. Fix it and press Enter, or Escape to keep the old filter.",
                ),
            )
            return False
        for panel in panels:
            panel.matchers = matchers
        self.set_status("filter", None)
        return True

    # -- detail, views, export ---------------------------------------------------------------------

    def action_detail(self) -> None:
        """Open the detail screen of the row under the cursor."""
        panel = self.current_panel()
        view = panel.cursor_view()
        if view is None or panel.snapshots is None:
            self.notify("No row selected.", severity="warning")
            return
        self._open_detail(view.source, panel.snapshots.as_of)

    @on(PanelRowSelected)
    def _row_selected(self, message: PanelRowSelected) -> None:
        """Enter on a row: show its detail."""
        message.stop()
        self._open_detail(message.row, message.as_of)

    def _open_detail(self, row: object, as_of: datetime) -> None:
        from console.screens.detail import DetailScreen

        app = self.omniops
        self.app.push_screen(
            DetailScreen(row=row, as_of=as_of, tz=app.tz, fetch=app.detail_fetch)  # type: ignore[arg-type]
        )

    def action_open_view(self, name: str) -> None:
        """Open the alerts, rules, routing or feeds view, if this console has it."""
        view = self.omniops.build_view(name)
        if view is None:
            self.notify(
                f"{VIEW_TITLES.get(name, name)} are not available in this console.",
                severity="warning",
            )
            return
        self.app.push_screen(view)

    def action_export(self) -> None:
        """Ask for a file name and export the current panel through the injected exporter."""
        panel = self.current_panel()
        app = self.omniops
        if not app.can_export:
            self.notify(
                "Export is not available in this console; nothing was written.",
                title="Export",
                severity="warning",
            )
            return
        from console.screens.dialogs import PromptField, PromptScreen

        as_of = app.snapshots.as_of if app.snapshots is not None else None
        self.app.push_screen(
            PromptScreen(
                f"Export {panel.kind} to file",
                [
                    PromptField(
                        "path",
                        "",
                        default_export_name(panel.kind, as_of, app.tz),
                        placeholder="stock.csv",
                    )
                ],
                "Ends in .csv or .json.  Enter exports · Escape cancels",
            ),
            callback=partial(self._export_chosen, panel.kind),
        )

    def _export_chosen(self, kind: str, answer: dict[str, str] | None) -> None:
        name = (answer or {}).get("path", "").strip()
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
        rows: Sequence[object] = [view.source for view in self.panels(kind)[-1].views()]
        self.omniops.start_export(kind, fmt, Path(name).expanduser(), rows)

    # -- command mode ----------------------------------------------------------------------------

    def action_command(self) -> None:
        """Open the ``:`` command line (completion from the views, columns and rows)."""

        def answered(text: str | None) -> None:
            if text:
                self.run_command(text)

        from console.screens.command import CommandScreen

        self.app.push_screen(CommandScreen(self.completions), answered)

    def _panel_for(self, word: str) -> Panel | None:
        """The full-tab panel a ``:`` word names (None for the current panel)."""
        kind = TAB_WORDS.get(word)
        if kind is None or kind == "overview":
            return None
        return self.query_one(f"#{kind}-panel", Panel)

    def completions(self, text: str) -> list[str]:
        """Whole command lines that extend ``text``, best first.

        ``al`` → ``alerts``; ``sort c`` → ``sort cover`` (the current panel's columns);
        ``stock loc`` → ``stock location=``; ``stock location=WH`` → ``stock location=WH-TX``
        (the values in the panel's rows).
        """
        lowered = text.lower()
        word, space, rest = lowered.partition(" ")
        if not space:
            return [w for w in COMMAND_WORDS if w.startswith(lowered)]
        head = text[: len(word) + 1]
        if word == "sort":
            panel = self.current_panel()
            keys = [c.key for c in panel.visible_columns]
            keys += [c.label.lower() for c in panel.visible_columns if c.label.lower() not in keys]
            return [head + k for k in keys if k.startswith(rest)]
        if word == "at":
            app = self.omniops
            found = at_completions(app.clock.now(), app.tz) if app.can_look_back else []
            return [head + w for w in found if w.startswith(rest)]
        if word == "filter" or (word in TAB_WORDS and word != "overview"):
            panel = self._panel_for(word) or self.current_panel()
            return [head + c for c in self._label_completions(panel, text[len(head) :])]
        return []

    def _label_completions(self, panel: Panel, typed: str) -> list[str]:
        """``location=`` for ``loc``; ``location=WH-TX`` for ``location=WH`` (last matcher)."""
        before, comma, last = typed.rpartition(",")
        prefix = before + comma + (" " if comma and not last.startswith(" ") else "")
        last = last.strip()
        name, eq, value = last.partition("=")
        if not eq:
            return [prefix + n + "=" for n in panel.label_names if n.startswith(name.lower())]
        snapshots = self.omniops.snapshots
        if snapshots is None or name not in panel.label_names:
            return []
        values = sorted({v.labels.get(name, "") for v in panel.build_rows(snapshots)} - {""})
        wanted = value.lower()
        found = [prefix + f"{name}={v}" for v in values if v.lower().startswith(wanted)]
        return found[:MAX_VALUE_COMPLETIONS]

    def run_command(self, text: str) -> bool:
        """Carry out one ``:`` line; False (and the status line says why) when it is not one."""
        word, _, rest = text.strip().lstrip(":").partition(" ")
        word, rest = word.lower(), rest.strip()
        self.set_status("command", None)
        if word in VIEW_KEYS:
            self.action_open_view(word)
            return True
        if word in TAB_WORDS:
            tab = TAB_WORDS[word]
            self.action_show_tab(tab)
            if tab != "overview" and rest:
                return self.apply_filter(tab, rest)
            return True
        if word == "filter":
            return self.apply_filter(self.current_panel().kind, rest)
        if word == "sort":
            return self._sort_command(rest)
        if word == "at":
            return self._at_command(rest)
        if word == "help":
            self.omniops.action_help()
            return True
        if word in ("quit", "q"):
            self.app.exit()
            return True
        self.set_status(
            "command",
            Content.assemble(
                ("UNKNOWN COMMAND", "$text-error bold"),
                f" {word!r}; try :alerts, :stock location=WH-TX, :sort cover or :help.",
            ),
        )
        return False

    def _at_command(self, rest: str) -> bool:
        """``:at 14:00`` shows that past moment of the store; ``:at now`` goes live again."""
        app = self.omniops
        if not app.can_look_back:
            self.set_status(
                "command",
                Content.assemble(
                    ("NOT AVAILABLE", "$text-error bold"),
                    " this console cannot look at a past moment (it was given no store).",
                ),
            )
            return False
        try:
            moment = parse_at(rest, app.clock.now(), app.tz)
        except ValueError as exc:
            self.set_status(
                "command", Content.assemble(("NOT MOVED", "$text-error bold"), f" :at {exc}.")
            )
            return False
        app.look_at(moment)
        return True

    def _sort_command(self, rest: str) -> bool:
        panel = self.current_panel()
        name, _, direction = rest.lower().partition(" ")
        if not name:
            panel.sort_by(None)
            return True
        spec = next(
            (c for c in panel.visible_columns if name in (c.key, c.label.lower())),
            None,
        )
        if spec is None:
            columns = ", ".join(c.key for c in panel.visible_columns)
            self.set_status(
                "command",
                Content.assemble(
                    ("NOT SORTED", "$text-error bold"),
                    f" {panel.heading} has no column {name!r}; use {columns}.",
                ),
            )
            return False
        descending = {"desc": True, "asc": False}.get(direction.strip())
        panel.sort_by(spec.key, descending)
        return True
