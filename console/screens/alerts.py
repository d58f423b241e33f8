"""The alerts view: what is firing, since when, for which scope; acknowledge, silence, jump.

The screen is handed an :class:`AlertsSource` (in the app:
:class:`rules.alerts.actions.AlertActions`)
and never touches the store itself.  Every call to the source is blocking, so it runs in a
thread worker that posts its result as a message (:mod:`console.messages`).  The list reloads every
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
from datetime import UTC, datetime, timedelta, tzinfo
from typing import ClassVar, Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import DataTable, Static

from console.messages import AlertHistoryRead, AlertsLoaded, WorkFailed
from console.screens.alert_history import HistoryScreen
from console.screens.dialogs import PromptField, PromptScreen
from console.screens.listing import ListScreen, fit_columns
from console.widgets.cursor import place_cursor
from console.widgets.footer import FittedFooter
from console.widgets.formatting import fmt_age_seconds, fmt_past
from console.widgets.plain import Plain
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
    """``45s``, ``12m``, ``3h05``, ``2d04h``, ``287 d``."""
    return fmt_age_seconds(delta.total_seconds())


def fmt_since(moment: datetime, now: datetime, tz: tzinfo) -> str:
    """``14:05 (12m)``, ``Tue 09:10 (2d04h)``: local time (its day when not today), age."""
    return f"{fmt_past(moment, tz, now)} ({fmt_age(now - moment)})"


def fmt_value(view: AlertView) -> str:
    """``14 > 10``, ``6 (clears ≤ 5)`` while held by hysteresis, or ``no data (> 10)``."""
    return condition_text(view.record)


def scope_key(scope: str) -> str:
    """Where an alert is, in a word: ``WH-TX`` for ``location=WH-TX, scope=location``.

    A scope naming its kind (``scope=carrier, carrier=UPS``) reads as that kind's value;
    one of several labels (a SKU at a location) as the values joined by ``@``; none as
    ``(all)``.
    """
    if not scope:
        return "(all)"
    try:
        labels = {m.name: m.value for m in parse_matchers(scope)}
    except ValueError:
        return scope
    kind = labels.pop("scope", None)
    if kind is not None and kind in labels:
        return labels[kind]
    ordered = [labels.pop(n) for n in ("sku", "location") if n in labels]
    return "@".join(ordered + list(labels.values())) or (kind or "(all)")


def receiver_lines(receivers: Sequence[ReceiverStatus], tz: tzinfo, now: datetime) -> list[str]:
    """The receivers' trouble, one line each: what waits in the outbox and its next try.

    ``notifications: 3 waiting for ops-webhook (next try 14:02); 5 failed attempts, last
    error: HTTP 503 …``; dead letters as ``notifications: 2 given up for ops-webhook``.
    ``now`` is wall time (the outbox's next try is, whatever clock the console runs on).
    """
    lines: list[str] = []
    for r in receivers:
        if r.pending:
            line = f"notifications: {r.pending} waiting for {r.receiver}"
            if r.next_attempt_at is not None:
                when = "now" if r.next_attempt_at <= now else fmt_past(r.next_attempt_at, tz, now)
                line += f" (next try {when})"
            if r.failed_attempts:
                line += f"; {r.failed_attempts} failed attempts"
            if r.last_error:
                line += f", last error: {r.last_error}"
            lines.append(line)
        elif r.last_error and (
            r.last_delivered_at is None
            or (r.last_error_at is not None and r.last_error_at > r.last_delivered_at)
        ):
            lines.append(f"{r.receiver}: last delivery failed: {r.last_error}")
        if r.dead_letter:
            lines.append(
                f"notifications: {r.dead_letter} given up for {r.receiver} (dead letters, "
                "kept in the store)"
            )
    return lines


ALERT_WIDTH = 19
"""Widest rule id the Alert column shows whole (longer ones end in …; Scope and the
alert's history have it whole)."""
WHERE_WIDTH = 16
"""Widest scope key the Where column shows whole (the Scope column has every label)."""


def cut(text: str, width: int) -> str:
    """``text``, or its first ``width - 1`` characters and ``…`` when it is longer."""
    return text if len(text) <= width else text[: width - 1] + "…"


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


# -- silence checks ----------------------------------------------------------------------


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


# -- the screen --------------------------------------------------------------------------------


class AlertsScreen(ListScreen[AlertsSource, AlertsLoaded]):
    """Firing and pending alerts, worst first; keys to acknowledge, silence and jump."""

    CSS_PATH = "alerts.tcss"
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
    FOOTER_PRIORITY: ClassVar[tuple[str, ...]] = (
        "help",
        "alert-ack",
        "alert-silence",
        "alert-back",
        "alert-jump",
        "alert-history",
        "alert-toggle-resolved",
    )
    """Keys kept first when the footer is narrow (the rest are in ``?``)."""
    list_name = "alerts"
    # State and severity first (short: 16 columns with their padding), then what and
    # where (rule and the scope's key, each cut with … past ALERT_WIDTH / WHERE_WIDTH),
    # value vs threshold and since when: at 80 columns all of that is on screen without
    # scrolling however long a rule id or a SKU@location key; the full scope goes last.
    list_columns = (
        ("state", "State"),
        ("severity", "Sev"),
        ("alert", "Alert"),
        ("where", "Where"),
        ("value", "Value"),
        ("since", "Since"),
        ("mute", "Ack / mute"),
        ("scope", "Scope"),
    )
    reload_failed = "ALERTS NOT RELOADED"
    notice_title = "Alerts"

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
        super().__init__(
            source=source, clock=clock, tz=tz, poll_seconds=poll_seconds, name=name, id=id
        )
        self.on_jump = on_jump
        self.bell = bell
        self.show_resolved = False
        self.views: tuple[AlertView, ...] = ()
        self.receivers: tuple[ReceiverStatus, ...] = ()
        self._firing_seen: set[str] | None = None

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Header, receiver problems, the table, a status line and the footer."""
        yield Plain("Alerts", id="alerts-header")
        yield Plain("", id="alerts-receivers", classes="-empty")
        yield self.list_table()
        yield self.status_line()
        yield FittedFooter()

    # -- loading -------------------------------------------------------------------------------

    def refresh_alerts(self) -> None:
        """Reload the list from the source (in a thread worker)."""
        self.load_list()

    def read_list(self) -> AlertsLoaded:
        """The alerts (with those resolved in 24 h when shown) and the receivers' state."""
        within = timedelta(hours=24) if self.show_resolved else None
        views = self.source.alerts(resolved_within=within)
        receivers = self.source.receiver_status()
        return AlertsLoaded(tuple(views), tuple(receivers))

    def show_loaded(self, loaded: AlertsLoaded) -> None:
        """Show the loaded alerts."""
        self.show(loaded)

    def failure_text(self, failed: WorkFailed) -> str:
        """A failed reload says the last list stays and when it is retried."""
        text = super().failure_text(failed)
        if failed.what == self.reload_failed:
            text += (
                f"; showing the last list, retrying in {self.poll_seconds:.0f} s (r retries now)."
            )
        return text

    @on(AlertHistoryRead)
    def _history_read(self, message: AlertHistoryRead) -> None:
        message.stop()
        self.app.push_screen(HistoryScreen(message.title, message.transitions, self.tz))

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

    def _cells(self, v: AlertView, now: datetime) -> list[Text]:
        r = v.record
        bold = "bold" if r.state in ("firing", "nodata") else ""
        return [
            Text(STATE_WORDS.get(r.state, r.state), style=bold),
            Text(r.severity[:4], style="bold" if r.severity == "critical" else ""),
            Text(cut(r.rule_id, ALERT_WIDTH), style=bold),
            Text(cut(scope_key(r.scope), WHERE_WIDTH)),
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
            fit_columns(table, [cells for _, cells in rows])
            if current != wanted:
                selected = self.selected_fingerprint()
                table.clear()
                for key, cells in rows:
                    table.add_row(*cells, key=key)
                place_cursor(table, selected)
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
        lines = receiver_lines(self.receivers, self.tz, datetime.now(UTC))
        widget.update("\n".join(lines))
        widget.set_class(not lines, "-empty")

    # -- selection -----------------------------------------------------------------------------

    def selected_fingerprint(self) -> str | None:
        """The fingerprint of the alert under the cursor."""
        return self.selected_key()

    def selected(self) -> AlertView | None:
        """The alert under the cursor."""
        fp = self.selected_fingerprint()
        return next((v for v in self.views if v.record.fingerprint == fp), None)

    def _need_selection(self) -> AlertView | None:
        view = self.selected()
        if view is None:
            self.notify("No alert selected.", severity="warning")
        return view

    def _may_change(self) -> bool:
        return self._allowed("acknowledging and silencing need")

    # -- actions -------------------------------------------------------------------------------

    def action_acknowledge(self) -> None:
        """Acknowledge the selected alert (asks for an optional comment)."""
        view = self._need_selection()
        if view is None or not self._may_change():
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
        if view is None or not self._may_change():
            return
        fp = view.record.fingerprint
        self._act(
            f"Acknowledgement of {view.record.rule_id} withdrawn",
            lambda: self.source.unacknowledge(fp),
        )

    def action_silence(self) -> None:
        """Silence alerts like the selected one (matchers, duration and comment asked)."""
        view = self._need_selection()
        if view is None or not self._may_change():
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
        if view is None or not self._may_change():
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
        """Thread worker: read the transitions, post :class:`AlertHistoryRead`."""
        try:
            transitions = self.source.history(fingerprint)
        except Exception as exc:  # said on the status line
            self.post_message(WorkFailed("HISTORY NOT READ", exc))
            return
        self.post_message(AlertHistoryRead(f"History · {title}", tuple(transitions)))

    def action_toggle_resolved(self) -> None:
        """Show or hide the alerts resolved in the last 24 h."""
        self.show_resolved = not self.show_resolved
        self.refresh_alerts()
