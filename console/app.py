"""The omniops console application: layout, keys, and the one refresh coordinator.

The app is handed everything it shows and holds the refresh coordinator; the panels, their
layout and the main keys belong to :class:`~console.screens.main.ConsoleScreen`, the
bottom of the screen stack.  ``compute()`` (blocking: it reads the SQLite store)
runs only in a single exclusive thread worker; the worker posts one
:class:`~console.messages.SnapshotsComputed` message; the app keeps the snapshots in a
reactive, which the console screen watches.  A refresh is never stacked on a running
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
from datetime import datetime, tzinfo
from functools import partial
from pathlib import Path
from time import monotonic
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer

from console.errors import describe_error
from console.messages import (
    AlertsCounted,
    ExportWritten,
    RefreshFailed,
    SnapshotsComputed,
    WarmedUp,
    WorkFailed,
)
from console.screens.main import (
    TAB_IDS,
    TAB_LABELS,
    VIEW_KEYS,
    VIEW_TITLES,
    WIDE_COLUMNS,
    ConsoleScreen,
)
from console.widgets.formatting import fmt_clock
from rules.highlights import Highlights
from store.clock import Clock
from store.snapshots import Snapshots

if TYPE_CHECKING:
    from console.screens.detail import DetailFetch
    from rules.alerts.actions import AlertCount

ExportFn = Callable[[str, str, Path, Sequence[object]], Path]
"""``export(panel_name, fmt, path, rows) -> written path``; panel_name is fulfillment,
stockout or returns; fmt is csv or json; rows are the snapshot rows the panel shows (its
filter and sort applied), in table order."""

CLOCK_TICK_SECONDS = 10.0
ANNOUNCED = 3
"""Alerts named, a line each, in the notification of those that started paging; past it, a
line counts the rest."""
ANNOUNCE_SECONDS = 20.0
"""How long a started alert's notification stays on screen."""

ViewFactory = Callable[["OmniopsApp"], Screen[None]]
"""Builds a view (alerts, rules, routing) over the console; injected by the command line."""

__all__ = ["WIDE_COLUMNS", "ExportFn", "OmniopsApp", "ViewFactory"]


def _plain_feeds_view(app: OmniopsApp) -> Screen[None]:
    """The feeds view of a console given none: the snapshots' feeds alone."""
    from console.screens.feeds import FeedsScreen

    return FeedsScreen(snapshots=app.snapshots, tz=app.tz)


class OmniopsApp(App[None]):
    """The operations console: the refresh coordinator under a :class:`ConsoleScreen`."""

    CSS_PATH = str(Path(__file__).with_name("app.tcss"))  # absolute: subclasses may live elsewhere
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012 - declared by App without ClassVar
        (0, "-narrow"),
        (WIDE_COLUMNS, "-wide"),
    ]
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="quit"),
        # Ctrl-C quits everywhere, as in every terminal program (Textual's default only
        # hints at ctrl+q); priority, so a focused field does not take it as "copy".
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="quit-interrupt"),
        Binding("r", "refresh", "Refresh", id="refresh"),
        Binding("question_mark", "help", "Help", id="help"),
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
        compute_at: Callable[[datetime], Snapshots] | None = None,
        warm_up: Callable[[], bool] | None = None,
        first: Callable[[], Snapshots | None] | None = None,
        alert_count: Callable[[], AlertCount] | None = None,
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
            compute_at: Blocking function returning the snapshots as of a past moment on
                the same store (``:at 14:00``); None: this console can only look live.
            warm_up: Blocking work the first paint does not wait for (the rules file the
                highlights follow), run once in a thread worker after the first snapshots
                are on screen; it returns whether the panels must be drawn again.
            first: The first snapshots if they are already computed (never blocks; called
                once, on mount), else None; None (or no function): the first refresh
                computes them in its worker, as every later one.
            alert_count: Blocking function counting the alerts paging now (firing or
                no-data, not muted), called in a thread worker after every refresh and
                when a view closes; the top bar shows ``3 FIRING``.  None: no count.
        """
        super().__init__()
        if refresh_interval <= 0:
            raise ValueError("refresh_interval must be positive")
        self._snapshot_source = compute
        self._compute_at = compute_at
        self.viewing_at: datetime | None = None
        """The past moment the panels show (``:at``), or None: live, on the clock."""
        self.clock = clock
        self.tz = tz
        self.refresh_interval = refresh_interval
        self._export = export
        self.detail_fetch = detail
        """Fetches what a row's detail shows beyond the snapshot (None: nothing more)."""
        self.views: dict[str, ViewFactory] = dict(views or {})
        """The views ``a``, ``t``, ``g`` and ``h`` open, by name."""
        self.views.setdefault("feeds", _plain_feeds_view)
        self.title = title
        self._highlights = highlights or Highlights
        self._refresh_running = False
        self.refreshes_done = 0
        """Refreshes that ended (with snapshots or a failure) since the console started."""
        self._refresh_pending = False
        self._refresh_timer: Timer | None = None
        self._sighup_loop: asyncio.AbstractEventLoop | None = None
        self._received_at: float | None = None  # monotonic time the shown data arrived
        self._console_screen = ConsoleScreen()
        self._warm_up = warm_up
        self._warming = warm_up is not None  # until the warm-up after the first paint ran
        self._first = first
        self._alert_count = alert_count
        self.alert_count: AlertCount | None = None
        """The alerts paging now, as last read (None: never read yet)."""
        self.alert_count_failed = False
        """Whether the latest count failed (the top bar marks the last one read with ?)."""

    def highlights(self) -> Highlights:
        """The thresholds in force for panel highlights (the operator's rules, else defaults)."""
        return self._highlights()

    def build_view(self, name: str) -> Screen[None] | None:
        """The alerts, rules, routing or feeds view over this console, if it has it."""
        factory = self.views.get(name)
        return None if factory is None else factory(self)

    def get_default_screen(self) -> Screen[None]:
        """The console screen is the bottom of the stack; every other view goes on top."""
        return self._console_screen

    @property
    def main_screen(self) -> ConsoleScreen:
        """The console screen: panels, layout and the main keys (under any other view)."""
        return self._console_screen

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A notification, its text shown as it is (``markup`` is ignored).

        The console writes no markup, and a path, a reason or an alert name holding
        ``[...]`` must not lose it.
        """
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def on_mount(self) -> None:
        """Install the hang-up handler and start refreshing."""
        self._install_sighup_handler()
        self.set_interval(CLOCK_TICK_SECONDS, self.update_clock, name="clock")
        ready = self._first() if self._first is not None else None
        if ready is None:
            self.refresh_snapshots()
            return
        # Computed while the console loaded (a thread from the moment the store opened):
        # kept now, so the screen composed next lays out populated, with no worker's round
        # trip that could land after the first layout (issue 15).  The first refresh, done.
        self._refresh_running = True
        self._snapshots_computed(SnapshotsComputed(ready))

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

    @work(thread=True, exit_on_error=False, group="refresh")
    def _run_refresh(self) -> None:
        """Thread worker: compute every panel, post one message.  Never touches widgets.

        Not ``exclusive``: the coordinator already runs one at a time, and the next one may
        start (from the message handler) while this one is still returning.
        """
        moment = self.viewing_at
        try:
            if moment is None or self._compute_at is None:
                snapshots = self._snapshot_source()
            else:
                snapshots = self._compute_at(moment)
        except Exception as exc:  # reported on the status line; the last data stays
            self.post_message(RefreshFailed(exc))
            return
        self.post_message(SnapshotsComputed(snapshots))

    @on(SnapshotsComputed)
    def _snapshots_computed(self, message: SnapshotsComputed) -> None:
        """Keep the new snapshots (the console screen watches them) and arm the next."""
        self.main_screen.set_status("refresh", None)
        self._received_at = monotonic()
        self.snapshots = message.snapshots
        self._refresh_finished()
        self._start_warm_up()
        self.count_alerts()

    def count_alerts(self) -> None:
        """Count the alerts paging now in a worker (after a refresh, when a view closes)."""
        if self._alert_count is not None:
            self.call_after_refresh(self._run_alert_count, self._alert_count)

    @work(thread=True, exit_on_error=False, exclusive=True, group="alert-count")
    def _run_alert_count(self, count: Callable[[], AlertCount]) -> None:
        """Thread worker: count the paging alerts, post one message."""
        try:
            counted: AlertCount | None = count()
        except Exception:  # the bar marks the count "?": the store's own error shows in
            counted = None  # a refresh failure or in the alerts view
        self.post_message(AlertsCounted(counted))

    @on(AlertsCounted)
    def _alerts_counted(self, message: AlertsCounted) -> None:
        before, now = self.alert_count, message.count
        if now is not None:  # the last count that was read: an unreadable one says nothing
            if before is not None:
                self._announce(before, now)
            self.alert_count = now
        self.alert_count_failed = now is None
        self.main_screen.render_bars()

    def _announce(self, before: AlertCount, now: AlertCount) -> None:
        """One notification for the alerts that started paging since the last count.

        Not for those already paging when the console opened (the top bar counts them).
        One toast however many started (at 80×24 a toast each covered half the panels):
        at most three by name, one line each, and a line counting the rest.
        """
        from console.screens.alerts import scope_key

        known = {p.fingerprint for p in before.paging}
        started = [p for p in now.paging if p.fingerprint not in known]
        if not started:
            return
        lines = [
            f"{p.rule_id} {'no data' if p.state == 'nodata' else 'firing'} at {scope_key(p.scope)}"
            for p in started[:ANNOUNCED]
        ]
        if len(started) > ANNOUNCED:
            lines.append(f"{len(started) - ANNOUNCED} more alerts started paging: a lists them all")
        critical = any(p.severity == "critical" for p in started)
        title = (
            f"Alert ({started[0].severity})"
            if len(started) == 1
            else f"{len(started)} alerts started paging"
        )
        self.notify(
            "\n".join(lines),
            title=title,
            severity="error" if critical else "warning",
            timeout=ANNOUNCE_SECONDS,
        )

    def _start_warm_up(self) -> None:
        """Once, after the first refresh's result is painted: run the warm-up."""
        if self._warm_up is not None:
            warm_up, self._warm_up = self._warm_up, None
            self.call_after_refresh(self._run_warm_up, warm_up)

    @work(thread=True, exit_on_error=False, group="warm-up")
    def _run_warm_up(self, warm_up: Callable[[], bool]) -> None:
        """Thread worker: what the first paint did not wait for; redraw if it says so."""
        try:
            redraw = warm_up()
        except Exception as exc:  # said in a notice; the panels are drawn again all the same
            self.post_message(WarmedUp(redraw=True))
            self.post_message(WorkFailed("Part of the start failed", exc))
            return
        self.post_message(WarmedUp(redraw=redraw))

    @on(WarmedUp)
    def _warmed_up(self, message: WarmedUp) -> None:
        """Draw the panels again with what the warm-up loaded (the same snapshots)."""
        self._warming = False
        if message.redraw and self.snapshots is not None:
            self.snapshots = self.snapshots  # always_update: the screen re-renders

    @on(RefreshFailed)
    def _refresh_failed(self, message: RefreshFailed) -> None:
        now = fmt_clock(self.clock.now(), self.tz, seconds=True)
        kept = (
            f"showing data from {fmt_clock(self.snapshots.as_of, self.tz, seconds=True)}"
            if self.snapshots is not None
            else "no data yet"
        )
        self.main_screen.set_status(
            "refresh",
            Content.assemble(
                ("REFRESH FAILED", "$text-error bold"),
                f" {now} {describe_error(message.error)} · {kept} · retry in "
                f"{self.refresh_interval:.0f} s, r retries now",
            ),
        )
        self._refresh_finished()
        self._start_warm_up()

    def _refresh_finished(self) -> None:
        """Arm the next refresh, or run the one queued by ``r`` during this one."""
        self._refresh_running = False
        self.refreshes_done += 1
        if self._refresh_pending:
            self.refresh_snapshots()
        elif self.is_running:
            self._refresh_timer = self.set_timer(
                self.refresh_interval, self.refresh_snapshots, name="refresh"
            )

    @property
    def can_look_back(self) -> bool:
        """Whether this console can show a past moment (it was given ``compute_at``)."""
        return self._compute_at is not None

    def look_at(self, moment: datetime | None) -> None:
        """Show the store as of ``moment`` (a past time, UTC-aware), or live with None.

        The top bar says so at once; the panels follow with the next refresh, started now.
        """
        if moment is not None and self._compute_at is None:
            raise ValueError("this console cannot look at a past moment")
        self.viewing_at = moment
        self.main_screen.render_bars()
        self.refresh_snapshots()

    @property
    def refreshing(self) -> bool:
        """Whether a refresh is running right now.

        The first one counts until the warm-up after its paint (the rules the highlights
        follow) has run, so that what it shows is what the operator's rules say.
        """
        return self._refresh_running or self._warming

    @property
    def next_refresh_armed(self) -> bool:
        """Whether the timer for the next refresh is set (it is set only after one finishes)."""
        return self._refresh_timer is not None

    def action_refresh(self) -> None:
        """Refresh every panel now."""
        self.refresh_snapshots()

    def action_help(self) -> None:
        """Show every key of the current view (``?``), generated from its bindings."""
        from console.screens.help import HelpScreen

        screen = self.screen
        if isinstance(screen, HelpScreen):
            return
        title = "Console" if screen is self.main_screen else type(screen).__name__
        title = title.removesuffix("Screen")
        self.push_screen(HelpScreen(screen, title))

    # -- clock and status ---------------------------------------------------------------------

    def update_clock(self) -> None:
        """Re-read the clock and the data's age (every 10 s); repaints only on a change."""
        self.main_screen.render_bars()

    @property
    def data_age(self) -> float | None:
        """Wall seconds since the data on screen arrived (None before the first refresh)."""
        return None if self._received_at is None else monotonic() - self._received_at

    @property
    def status_text(self) -> str:
        """The console's status line as plain text (empty when all is well)."""
        return self.main_screen.status_text

    # -- export ------------------------------------------------------------------------------

    @property
    def can_export(self) -> bool:
        """Whether this console was given an exporter."""
        return self._export is not None

    def start_export(self, kind: str, fmt: str, path: Path, rows: Sequence[object]) -> None:
        """Write ``rows`` of panel ``kind`` to ``path`` in a thread worker."""
        self._run_export(kind, fmt, path, rows)

    @work(thread=True, exit_on_error=False, group="export")
    def _run_export(self, kind: str, fmt: str, path: Path, rows: Sequence[object]) -> None:
        """Thread worker: the exporter may write a large file."""
        assert self._export is not None
        try:
            written = self._export(kind, fmt, path, rows)
        except Exception as exc:  # said in a notice; nothing else depends on it
            self.post_message(WorkFailed("Export failed, nothing may have been written", exc))
            return
        self.post_message(ExportWritten(written))

    @on(ExportWritten)
    def _export_written(self, message: ExportWritten) -> None:
        self.notify(f"Exported to {message.path}", title="Export")

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        """A failure no screen handled: say it in a notice."""
        self.notify(
            f"{message.what}: {describe_error(message.error)}", title="Error", severity="error"
        )

    # -- command palette -----------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        """Every console action, also reachable from the command palette (ctrl+p)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Refresh now", "Recompute every panel (r)", self.action_refresh)
        if screen is not self.main_screen:
            return
        console = self.main_screen
        yield SystemCommand(
            "Filter rows", "Filter the current panel by labels (f or /)", console.action_filter
        )
        yield SystemCommand(
            "Clear filter", "Show every row of the current panel", console.action_clear_filter
        )
        yield SystemCommand(
            "Sort", "Sort the current panel by its next column (s)", console.action_sort
        )
        yield SystemCommand(
            "Reverse sort", "Flip the sort direction (o)", console.action_reverse_sort
        )
        yield SystemCommand(
            "Row detail", "Open the detail of the selected row (enter)", console.action_detail
        )
        yield SystemCommand(
            "Export", "Export the current panel to CSV or JSON (e)", console.action_export
        )
        for name, letter in VIEW_KEYS.items():
            if name in self.views:
                title = VIEW_TITLES[name]
                yield SystemCommand(
                    title,
                    f"Open the {title.lower()} view ({letter})",
                    partial(console.action_open_view, name),
                )
        for key, (tab, label) in enumerate(zip(TAB_IDS, TAB_LABELS, strict=True), start=1):
            yield SystemCommand(
                f"Show {label}",
                f"Switch to the {label} tab ({key})",
                partial(console.action_show_tab, tab),
            )
