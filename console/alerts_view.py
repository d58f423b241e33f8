"""The alerts view: what is firing, since when, for which scope; acknowledge, silence, jump.

The screen is handed an :class:`AlertsSource` (in the app:
:class:`rules.alerts.actions.AlertActions`)
and never touches the store itself.  Every call to the source is blocking, so it runs in a
thread worker that hands the result back with ``call_from_thread``.  The list reloads every
``poll_seconds`` (another process may be the one evaluating) and whenever the app calls
:meth:`AlertsScreen.refresh_alerts` (after each refresh).  A newly firing alert that is not
silenced or inhibited rings the terminal bell and shows a notice.

Keys: ``a`` acknowledge (with an optional comment), ``u`` withdraw the acknowledgement,
``s`` silence (matchers prefilled from the selected alert), ``x`` end the silence muting the
selected alert, ``enter``/``j`` jump to the panel row behind the alert, ``d`` the alert's
history, ``v`` show or hide alerts resolved in the last 24 h, ``r`` reload, ``escape`` back.
Mutations are refused (and say why) for a read-only console or a user whose role does not
allow them; the source checks the role again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, ClassVar, Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.worker import Worker, WorkerState

from console.widgets.formatting import fmt_clock
from rules.alerts.actions import PanelTarget, ReceiverStatus, Silence, Transition, panel_target
from rules.alerts.silences import AlertView
from rules.alerts.state import condition_text
from rules.labels import parse_duration
from rules.matchers import Matcher, format_matchers, parse_matchers
from rules.roles import Permissions
from store.clock import Clock


class AlertsSource(Protocol):
    """What the alerts view needs (:class:`rules.alerts.actions.AlertActions` provides it)."""

    permissions: Permissions

    def alerts(self, *, resolved_within: timedelta | None = None) -> list[AlertView]:
        """Active alerts (and recently resolved ones), with silence/inhibition markers."""
        ...

    def acknowledge(self, fingerprint: str, comment: str = "") -> object:
        """Acknowledge an alert."""
        ...

    def unacknowledge(self, fingerprint: str) -> None:
        """Withdraw an acknowledgement."""
        ...

    def silence(self, matchers: str, duration: timedelta, comment: str = "") -> Silence:
        """Create a silence."""
        ...

    def expire_silence(self, silence_id: int) -> None:
        """End a silence now."""
        ...

    def history(self, fingerprint: str, limit: int = 50) -> list[Transition]:
        """An alert's transitions, newest first."""
        ...

    def receiver_status(self) -> list[ReceiverStatus]:
        """Delivery counters per receiver."""
        ...


# -- formatting (pure) -------------------------------------------------------------------------

STATE_WORDS = {
    "firing": "FIRING",
    "nodata": "NO DATA",
    "pending": "pending",
    "resolved": "resolved",
}


def fmt_age(delta: timedelta) -> str:
    """``45s``, ``12m``, ``3h05``, ``2d04h``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def fmt_since(moment: datetime, now: datetime, tz: tzinfo) -> str:
    """``14:05 (12m)``: local time and how long ago."""
    return f"{fmt_clock(moment, tz)} ({fmt_age(now - moment)})"


def fmt_value(view: AlertView) -> str:
    """``14 > 10``, ``6 (clears ≤ 5)`` while held by hysteresis, or ``no data (> 10)``."""
    return condition_text(view.record)


def fmt_mute(view: AlertView) -> str:
    """Who acknowledged it, and whether a silence or another alert mutes it."""
    parts: list[str] = []
    if view.record.acked_by:
        parts.append(f"ack {view.record.acked_by}")
    if view.silenced_by is not None:
        parts.append(f"silenced #{view.silenced_by}")
    if view.inhibited_by is not None:
        parts.append(f"inhibited by {view.inhibited_by.split('|', 1)[0]}")
    return ", ".join(parts) or "-"


def silence_matchers_for(view: AlertView) -> str:
    """Matchers selecting this alert's rule and scope: the default of a new silence."""
    record = view.record
    scope = parse_matchers(record.scope) if record.scope else []
    return format_matchers([Matcher("alertname", "=", record.rule_id), *scope])


@dataclass(frozen=True)
class AlertsLoaded:
    """One load of the alert list (passed from the worker to the screen)."""

    views: tuple[AlertView, ...]
    receivers: tuple[ReceiverStatus, ...]


# -- prompt ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptField:
    """One labelled input of a :class:`PromptScreen`."""

    name: str
    label: str
    value: str = ""
    check: Callable[[str], str | None] | None = None
    """Returns an error message for a bad value, or None."""


class PromptScreen(ModalScreen[dict[str, str] | None]):
    """A small dialog of labelled inputs, validated as you type; Enter confirms."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt-cancel"),
    ]
    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical {
        width: 76; max-width: 100%; height: auto; padding: 0 1;
        background: $panel; border: round $primary;
    }
    PromptScreen .prompt-title { text-style: bold; }
    PromptScreen Label { color: $text-muted; }
    PromptScreen #prompt-error { color: $text-error; height: auto; }
    PromptScreen #prompt-hint { color: $text-muted; }
    """

    def __init__(self, title: str, fields: Sequence[PromptField], hint: str = "") -> None:
        """A dialog titled ``title`` asking for ``fields``."""
        super().__init__()
        self.title_text = title
        self.fields = tuple(fields)
        self.hint = hint or "Enter confirms · Escape cancels"

    def compose(self) -> ComposeResult:
        """Title, one label and input per field, error line, hint."""
        with Vertical():
            yield Static(self.title_text, classes="prompt-title")
            for f in self.fields:
                yield Label(f.label)
                yield Input(value=f.value, id=f"prompt-{f.name}", compact=True)
            yield Static("", id="prompt-error")
            yield Static(self.hint, id="prompt-hint")

    def on_mount(self) -> None:
        """Focus the first input."""
        first = self.query(Input).first()
        first.cursor_blink = False
        first.focus()
        self._check()

    def values(self) -> dict[str, str]:
        """The current text of every field."""
        return {f.name: self.query_one(f"#prompt-{f.name}", Input).value for f in self.fields}

    def _check(self) -> str | None:
        values = self.values()
        for f in self.fields:
            if f.check is not None:
                problem = f.check(values[f.name])
                if problem:
                    message = f"{f.label}: {problem}"
                    self.query_one("#prompt-error", Static).update(message)
                    return message
        self.query_one("#prompt-error", Static).update("")
        return None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._check()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._check() is None:
            self.dismiss(self.values())

    def action_cancel(self) -> None:
        """Close without an answer."""
        self.dismiss(None)


def check_matchers(text: str) -> str | None:
    """Error text for a silence's matchers, or None."""
    try:
        if not parse_matchers(text):
            return "at least one matcher (an empty silence would mute everything)"
    except ValueError as exc:
        return str(exc)
    return None


def check_duration(text: str) -> str | None:
    """Error text for a silence's duration, or None."""
    try:
        if parse_duration(text) <= timedelta(0):
            return "must be longer than 0"
    except ValueError as exc:
        return str(exc)
    return None


class HistoryScreen(ModalScreen[None]):
    """The recorded transitions of one alert (read-only)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="history-close"),
    ]
    DEFAULT_CSS = """
    HistoryScreen { align: center middle; }
    HistoryScreen > VerticalScroll {
        width: 90%; height: 80%; background: $panel; border: round $primary; padding: 0 1;
    }
    """

    def __init__(self, title: str, transitions: Sequence[Transition], tz: tzinfo) -> None:
        """Show ``transitions`` of the alert named ``title``, times in ``tz``."""
        super().__init__()
        self.title_text = title
        self.transitions = tuple(transitions)
        self.tz = tz

    def compose(self) -> ComposeResult:
        """One line per transition."""
        lines: list[str] = []
        for t in self.transitions:
            when = t.at.astimezone(self.tz).strftime("%b %d %H:%M:%S")
            what = f"{t.from_state or '-'} → {t.to_state}" if t.kind == "state" else t.kind
            lines.append(f"{when}  {what:22}  by {t.by}  {t.note}")
        body = "\n".join(lines) or "No transitions recorded."
        with VerticalScroll():
            yield Static(Content.assemble((self.title_text, "bold"), "\n", body))

    def action_close(self) -> None:
        """Back to the alerts."""
        self.dismiss(None)


# -- the screen --------------------------------------------------------------------------------


class AlertsScreen(Screen[None]):
    """Firing and pending alerts, worst first; keys to acknowledge, silence and jump."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "acknowledge", "Ack", id="alert-ack"),
        Binding("u", "unacknowledge", "Unack", id="alert-unack", show=False),
        Binding("s", "silence", "Silence", id="alert-silence"),
        Binding("x", "expire_silence", "End silence", id="alert-expire-silence", show=False),
        Binding("j", "jump", "Jump to row (enter)", id="alert-jump"),
        Binding("d", "history", "History", id="alert-history"),
        Binding("v", "toggle_resolved", "Resolved", id="alert-toggle-resolved"),
        Binding("r", "reload", "Reload", id="alert-reload", show=False),
        Binding("escape", "back", "Back", id="alert-back"),
    ]
    DEFAULT_CSS = """
    AlertsScreen { layout: vertical; }
    AlertsScreen #alerts-header { height: 1; padding: 0 1; background: $panel; }
    AlertsScreen #alerts-receivers { height: auto; padding: 0 1; color: $text-warning; }
    AlertsScreen #alerts-receivers.-empty { display: none; }
    AlertsScreen #alerts-table { height: 1fr; }
    AlertsScreen #alerts-status { height: auto; padding: 0 1; background: $error 15%; }
    AlertsScreen #alerts-status.-empty { display: none; }
    """

    def __init__(
        self,
        *,
        source: AlertsSource,
        clock: Clock,
        tz: tzinfo,
        on_jump: Callable[[PanelTarget], None] | None = None,
        poll_seconds: float = 10.0,
        bell: bool = True,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        """Create the alerts view.

        Args:
            source: Lists alerts and carries out acknowledgements and silences (blocking).
            clock: "now" for the ages shown.
            tz: The operator's zone.
            on_jump: Called with the panel and filter of the selected alert's row.
            poll_seconds: Reload the list this often (0: only when asked).
            bell: Ring the terminal bell when an alert starts firing.
            name: Textual name of the screen.
            id: Textual id of the screen.
        """
        super().__init__(name=name, id=id)
        self.source = source
        self.clock = clock
        self.tz = tz
        self.on_jump = on_jump
        self.poll_seconds = poll_seconds
        self.bell = bell
        self.show_resolved = False
        self.views: tuple[AlertView, ...] = ()
        self.receivers: tuple[ReceiverStatus, ...] = ()
        self.loads = 0
        """Completed loads (tests wait on this)."""
        self._firing_seen: set[str] | None = None
        self._status: str = ""

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header, receiver problems, the table, a status line and the footer."""
        yield Static("Alerts", id="alerts-header")
        yield Static("", id="alerts-receivers", classes="-empty")
        table: DataTable[Any] = DataTable(id="alerts-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="alerts-status", classes="-empty")
        yield Footer()

    def on_mount(self) -> None:
        """Columns, first load, and the poll timer."""
        table = self.table
        # The scope can be long: it goes last, so 80 columns show everything else.
        for key, label in (
            ("state", "State"),
            ("severity", "Sev"),
            ("alert", "Alert"),
            ("value", "Value"),
            ("since", "Since"),
            ("mute", "Ack / mute"),
            ("scope", "Scope"),
        ):
            table.add_column(label, key=key)
        table.focus()
        self.refresh_alerts()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.refresh_alerts, name="alerts-poll")

    @property
    def table(self) -> DataTable[Any]:
        """The alerts table."""
        return self.query_one("#alerts-table", DataTable)

    # -- loading -------------------------------------------------------------------------------

    def refresh_alerts(self) -> None:
        """Reload the list from the source (in a thread worker)."""
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="alerts-load")
    def _load(self) -> AlertsLoaded:
        within = timedelta(hours=24) if self.show_resolved else None
        views = self.source.alerts(resolved_within=within)
        receivers = self.source.receiver_status()
        return AlertsLoaded(tuple(views), tuple(receivers))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "alerts-load":
            if event.state == WorkerState.SUCCESS and isinstance(worker.result, AlertsLoaded):
                self._set_status("")
                self.show(worker.result)
            elif event.state == WorkerState.ERROR:
                self._set_status(
                    f"ALERTS NOT RELOADED: {_describe(worker.error)}; showing the last list, "
                    f"retrying in {self.poll_seconds:.0f} s (r retries now)."
                )
        elif worker.group == "alerts-action":
            if event.state == WorkerState.SUCCESS:
                self._set_status("")
                self.notify(str(worker.result), title="Alerts")
                self.refresh_alerts()
            elif event.state == WorkerState.ERROR:
                self._set_status(f"NOT DONE: {_describe(worker.error)}")

    def show(self, loaded: AlertsLoaded) -> None:
        """Render a loaded list: header, receivers, table rows by key; ring for new alerts."""
        self.views = loaded.views
        self.receivers = loaded.receivers
        now = self.clock.now()
        self._render_header()
        self._render_receivers()
        rows = [(v.record.fingerprint, self._cells(v, now)) for v in loaded.views]
        self._sync(rows)
        firing = {
            v.record.fingerprint
            for v in loaded.views
            if v.record.state in ("firing", "nodata") and not v.muted
        }
        if self._firing_seen is not None:
            new = [v for v in loaded.views if v.record.fingerprint in firing - self._firing_seen]
            if new:
                if self.bell:
                    self.app.bell()
                names = ", ".join(f"{v.record.rule_id} {v.record.scope}" for v in new[:3])
                self.notify(f"New alert firing: {names}", title="Alert", severity="error")
        self._firing_seen = firing
        self.loads += 1

    def _cells(self, v: AlertView, now: datetime) -> list[Text]:
        r = v.record
        bold = "bold" if r.state in ("firing", "nodata") else ""
        return [
            Text(STATE_WORDS.get(r.state, r.state), style=bold),
            Text(r.severity[:4], style="bold" if r.severity == "critical" else ""),
            Text(r.rule_id),
            Text(fmt_value(v)),
            Text(fmt_since(r.since, now, self.tz)),
            Text(fmt_mute(v), style="dim" if v.muted else ""),
            Text(r.scope or "(all)"),
        ]

    def _sync(self, rows: list[tuple[str, list[Text]]]) -> None:
        table = self.table
        current = [str(key.value) for key in table.rows]
        wanted = [key for key, _ in rows]
        with self.app.batch_update():
            if current != wanted:
                cursor_key = self.selected_fingerprint()
                table.clear()
                for key, cells in rows:
                    table.add_row(*cells, key=key)
                if cursor_key in wanted:
                    table.move_cursor(row=wanted.index(cursor_key))
                return
            columns = [str(c.value) for c in table.columns]
            for key, cells in rows:
                for column, cell in zip(columns, cells, strict=True):
                    if str(table.get_cell(key, column)) != str(cell):
                        table.update_cell(key, column, cell)

    def _render_header(self) -> None:
        counts = {"firing": 0, "nodata": 0, "pending": 0}
        muted = 0
        for v in self.views:
            if v.record.state in counts:
                counts[v.record.state] += 1
            if v.record.active and v.muted:
                muted += 1
        p = self.source.permissions
        role = "read-only" if p.read_only else p.role
        parts: list[str | tuple[str, str]] = [("ALERTS ", "bold")]
        parts.append((f"{counts['firing']} firing", "$text-error bold" if counts["firing"] else ""))
        parts.append(f" · {counts['nodata']} no data · {counts['pending']} pending")
        parts.append(f" · {muted} muted")
        if self.show_resolved:
            parts.append(" · with resolved (24 h)")
        parts.append((f"   {p.user} ({role})", "$text-muted"))
        self.query_one("#alerts-header", Static).update(Content.assemble(*parts))

    def _render_receivers(self) -> None:
        widget = self.query_one("#alerts-receivers", Static)
        troubled = [r for r in self.receivers if r.pending or r.last_error]
        lines = []
        for r in troubled:
            if r.pending:
                lines.append(
                    f"{r.receiver}: {r.pending} undelivered, {r.failed_attempts} failed "
                    f"attempts, retrying; last error: {r.last_error or '-'}"
                )
            elif r.last_error and (
                r.last_delivered_at is None
                or (r.last_error_at is not None and r.last_error_at > r.last_delivered_at)
            ):
                lines.append(f"{r.receiver}: last delivery failed: {r.last_error}")
        widget.update("\n".join(lines))
        widget.set_class(not lines, "-empty")

    def _set_status(self, text: str) -> None:
        self._status = text
        status = self.query_one("#alerts-status", Static)
        status.update(text)
        status.set_class(not text, "-empty")

    @property
    def status_text(self) -> str:
        """The status line (empty when all is well)."""
        return self._status

    # -- selection -----------------------------------------------------------------------------

    def selected_fingerprint(self) -> str | None:
        """The fingerprint of the alert under the cursor."""
        table = self.table
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return None if key.value is None else str(key.value)

    def selected(self) -> AlertView | None:
        """The alert under the cursor."""
        fp = self.selected_fingerprint()
        return next((v for v in self.views if v.record.fingerprint == fp), None)

    def _need_selection(self) -> AlertView | None:
        view = self.selected()
        if view is None:
            self.notify("No alert selected.", severity="warning")
        return view

    def _allowed(self) -> bool:
        p = self.source.permissions
        if p.can_acknowledge:
            return True
        why = "this console is read-only" if p.read_only else f"{p.user} is a {p.role}"
        self._set_status(
            f"NOT ALLOWED: {why}; acknowledging and silencing need the operator or editor role "
            "(the [roles] section of the config)."
        )
        return False

    # -- actions -------------------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="alerts-action")
    def _act(self, done: str, action: Callable[[], object]) -> str:
        action()
        return done

    def action_acknowledge(self) -> None:
        """Acknowledge the selected alert (asks for an optional comment)."""
        view = self._need_selection()
        if view is None or not self._allowed():
            return
        if not view.record.active:
            self._set_status("NOT DONE: a resolved alert needs no acknowledgement.")
            return
        fp = view.record.fingerprint

        def answered(values: dict[str, str] | None) -> None:
            if values is not None:
                comment = values["comment"].strip()
                self._act(
                    f"Acknowledged {view.record.rule_id} {view.record.scope}",
                    lambda: self.source.acknowledge(fp, comment),
                )

        self.app.push_screen(
            PromptScreen(
                f"Acknowledge {view.record.rule_id} {view.record.scope}",
                [PromptField("comment", "Comment (optional)")],
                "Enter acknowledges · Escape cancels · it ends when the alert resolves",
            ),
            callback=answered,
        )

    def action_unacknowledge(self) -> None:
        """Withdraw the acknowledgement of the selected alert."""
        view = self._need_selection()
        if view is None or not self._allowed():
            return
        fp = view.record.fingerprint
        self._act(
            f"Acknowledgement of {view.record.rule_id} withdrawn",
            lambda: self.source.unacknowledge(fp),
        )

    def action_silence(self) -> None:
        """Silence alerts like the selected one (matchers, duration and comment asked)."""
        view = self._need_selection()
        if view is None or not self._allowed():
            return

        def answered(values: dict[str, str] | None) -> None:
            if values is None:
                return
            matchers = values["matchers"]
            duration = parse_duration(values["duration"])
            comment = values["comment"].strip()
            self._act(
                f"Silenced {matchers} for {values['duration'].strip()}",
                lambda: self.source.silence(matchers, duration, comment),
            )

        self.app.push_screen(
            PromptScreen(
                "Silence alerts",
                [
                    PromptField("matchers", "Matchers", silence_matchers_for(view), check_matchers),
                    PromptField("duration", "For (e.g. 30m, 2h, 1d)", "2h", check_duration),
                    PromptField("comment", "Comment (why)"),
                ],
                "Enter silences · Escape cancels · silenced alerts still resolve",
            ),
            callback=answered,
        )

    def action_expire_silence(self) -> None:
        """End the silence that mutes the selected alert."""
        view = self._need_selection()
        if view is None or not self._allowed():
            return
        silence_id = view.silenced_by
        if silence_id is None:
            self._set_status("NOT DONE: the selected alert is not silenced.")
            return
        self._act(f"Silence #{silence_id} ended", lambda: self.source.expire_silence(silence_id))

    @on(DataTable.RowSelected, "#alerts-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_jump()

    def action_jump(self) -> None:
        """Show the panel row behind the selected alert."""
        view = self._need_selection()
        if view is None:
            return
        target = panel_target(view.record)
        if self.on_jump is None:
            where = f"{target.panel} panel" + (f", filter {target.filter}" if target.filter else "")
            self.notify(f"The data behind this alert is on the {where}.", title="Jump")
            return
        self.on_jump(target)

    def action_history(self) -> None:
        """Show the selected alert's recorded transitions."""
        view = self._need_selection()
        if view is not None:
            self._history(view.record.fingerprint, f"{view.record.rule_id} {view.record.scope}")

    @work(thread=True, exit_on_error=False, group="alerts-history")
    def _history(self, fingerprint: str, title: str) -> None:
        transitions = self.source.history(fingerprint)
        self.app.call_from_thread(
            self.app.push_screen, HistoryScreen(f"History · {title}", transitions, self.tz)
        )

    def action_toggle_resolved(self) -> None:
        """Show or hide the alerts resolved in the last 24 h."""
        self.show_resolved = not self.show_resolved
        self.refresh_alerts()

    def action_reload(self) -> None:
        """Reload the list now."""
        self.refresh_alerts()

    def action_back(self) -> None:
        """Leave the alerts view (when it was pushed over the console)."""
        if len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text or type(error).__name__
