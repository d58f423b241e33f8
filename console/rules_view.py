"""The rules view: alert rules in a table, an edit form validated as you type, routing.

The screen is handed a :class:`rules.editor.RulesEditor` (which reads and writes the file,
checks the role, detects conflicts and writes the audit log) and a ``snapshots`` callable
(the latest panel snapshots, for "would fire now"); it reads no file and runs no SQL of its
own.  Editor calls that touch the disk run in thread workers.

Keys in the table: ``enter``/``e`` edit, ``n`` new, ``c`` duplicate, ``t`` enable/disable,
``x`` delete (asks), ``g`` edit notification routing ([notify] as text), ``w`` route
tester, ``l`` audit log, ``r`` reload from disk, ``escape`` back.  In a form: ``f2`` or
``ctrl+o`` saves, ``ctrl+r`` reloads the file (after a conflict), ``escape`` cancels.

Saving never overwrites a file that changed on disk since the form was opened: the form
says so and keeps the operator's values on screen.  A read-only console, or a user without
the editor role, can look at everything and change nothing (the editor checks again).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Footer, Input, Label, Static, TextArea
from textual.worker import Worker, WorkerState

from rules.alerts.preview import RulePreview, preview_rule
from rules.alerts.rule import AlertRule
from rules.alerts.samples import Sample, samples
from rules.audit import AuditEntry
from rules.editor import ConflictError, RulesEditor
from rules.file import LoadedRules, RulesFileError
from rules.labels import format_duration
from rules.matchers import format_matchers
from rules.notify import parse_label_args, route_test
from rules.rule_form import FORM_FIELDS, FormError, form_values, rule_form_fields
from store.registry import METRICS
from store.snapshots import Snapshots

SnapshotsFn = Callable[[], Snapshots | None]
"""Returns the latest snapshots the panels show (None before the first refresh)."""

_FIELD_LABELS = {
    "id": "Id",
    "metric": "Metric",
    "matchers": "Scope",
    "op": "Op",
    "threshold": "Threshold",
    "clear": "Clear at",
    "for": "For",
    "severity": "Severity",
    "no_data": "No data",
    "labels": "Labels",
    "description": "Description",
    "enabled": "Enabled",
}
_SUGGESTIONS: dict[str, list[str]] = {
    "metric": sorted(METRICS),
    "op": [">", ">=", "<", "<="],
    "severity": ["critical", "warning", "info"],
    "no_data": ["alert", "ok", "keep"],
    "enabled": ["yes", "no"],
}
_PLACEHOLDERS = {
    "matchers": "scope=location, location=~WH-.*   (empty: every scope)",
    "clear": "empty: same as the threshold",
    "for": "0s, 5m, 1h30m",
    "labels": "team=warehouse, pager=yes",
}


class _SampleCache:
    """``samples()`` of the latest snapshots, recomputed only when they change."""

    def __init__(self, snapshots: SnapshotsFn) -> None:
        self._snapshots = snapshots
        self._key: int | None = None
        self._samples: list[Sample] = []

    def get(self) -> list[Sample] | None:
        snap = self._snapshots()
        if snap is None:
            return None
        if id(snap) != self._key:
            self._key = id(snap)
            self._samples = samples(snap)
        return self._samples


def _first_problem(exc: RulesFileError) -> str:
    p = exc.first
    more = f" (+{len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
    return (f"{p.field}: {p.message}" if p.field else p.message) + more


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, RulesFileError):
        return _first_problem(error)
    text = str(error).strip()
    return text or type(error).__name__


# -- small dialogs -----------------------------------------------------------------------------


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question (``y`` / ``n`` or Escape)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static {
        width: 60; max-width: 100%; height: auto; padding: 1 2;
        background: $panel; border: round $warning;
    }
    """

    def __init__(self, question: str) -> None:
        """Ask ``question``."""
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question and the keys."""
        yield Static(f"{self.question}\n\ny yes · n no")

    def action_answer(self, yes: bool) -> None:
        """Answer."""
        self.dismiss(yes)


class RouteTestScreen(ModalScreen[None]):
    """Type labels, see which receivers an alert with them reaches and by which path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="route-test-close"),
    ]
    DEFAULT_CSS = """
    RouteTestScreen { align: center middle; }
    RouteTestScreen > Vertical {
        width: 96%; height: auto; max-height: 90%; padding: 0 1;
        background: $panel; border: round $primary;
    }
    RouteTestScreen #route-result { height: auto; }
    """

    def __init__(self, loaded: LoadedRules, labels: str = "") -> None:
        """Test against the routing tree of ``loaded``."""
        super().__init__()
        self.loaded = loaded
        self.initial = labels or "alertname=late_orders severity=warning scope=location"

    def compose(self) -> ComposeResult:
        """Labels input and the answer."""
        with Vertical():
            yield Static(Content.assemble(("Route tester", "bold"), "  key=value key=value …"))
            yield Input(value=self.initial, id="route-labels", compact=True)
            yield Static("", id="route-result")

    def on_mount(self) -> None:
        """Answer for the initial labels."""
        self.query_one(Input).focus()
        self._answer(self.initial)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._answer(event.value)

    def _answer(self, text: str) -> None:
        result = self.query_one("#route-result", Static)
        parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
        try:
            labels = parse_label_args(parts)
        except ValueError as exc:
            result.update(f"{exc}")
            return
        answer = route_test(self.loaded.rules.notify, labels)
        result.update(answer.text(self.loaded.rules.notify.route))

    @property
    def answer_text(self) -> str:
        """The answer shown (tests read it)."""
        return str(self.query_one("#route-result", Static).render())

    def action_close(self) -> None:
        """Back to the rules."""
        self.dismiss(None)


class AuditScreen(ModalScreen[None]):
    """The audit log: who changed the rules file, when, and the diff."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="audit-close"),
    ]
    DEFAULT_CSS = """
    AuditScreen { align: center middle; }
    AuditScreen > VerticalScroll {
        width: 96%; height: 90%; background: $panel; border: round $primary; padding: 0 1;
    }
    """

    def __init__(self, entries: list[AuditEntry], tz: tzinfo) -> None:
        """Show ``entries`` (newest first), times in ``tz``."""
        super().__init__()
        self.entries = entries
        self.tz = tz

    def compose(self) -> ComposeResult:
        """One block per entry."""
        text = Text()
        text.append("Audit log of the rules file\n", style="bold")
        if not self.entries:
            text.append("No changes recorded yet.")
        for e in self.entries:
            when = e.at.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")
            text.append(f"\n{when}  {e.user}  {e.action}\n", style="bold")
            text.append(e.diff or "(no textual change)\n")
        with VerticalScroll():
            yield Static(text)

    def action_close(self) -> None:
        """Back to the rules."""
        self.dismiss(None)


# -- the rule form -----------------------------------------------------------------------------


class RuleFormScreen(Screen[LoadedRules | None]):
    """Edit (or add) one alert rule; validated in the whole file as you type."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2,ctrl+o", "save", "Save", id="rule-save"),
        Binding("ctrl+r", "reload_file", "Reload file", id="rule-reload"),
        Binding("escape", "cancel", "Cancel", id="rule-cancel"),
    ]
    DEFAULT_CSS = """
    RuleFormScreen { layout: vertical; }
    RuleFormScreen #form-title { height: 1; padding: 0 1; background: $panel; }
    RuleFormScreen #form-grid {
        grid-size: 2; grid-columns: 12 1fr; grid-rows: 1; height: auto; padding: 0 1;
    }
    RuleFormScreen #form-grid Label { color: $text-muted; }
    RuleFormScreen #form-check { height: auto; padding: 0 1; }
    RuleFormScreen #form-check.-error { color: $text-error; }
    RuleFormScreen #form-status { height: auto; padding: 0 1; background: $error 15%; }
    RuleFormScreen #form-status.-empty { display: none; }
    """

    def __init__(
        self,
        *,
        editor: RulesEditor,
        base: LoadedRules,
        index: int | None,
        samples_fn: Callable[[], list[Sample] | None] = lambda: None,
    ) -> None:
        """A form for the alert at ``index`` of ``base`` (None: a new rule).

        Args:
            editor: Validates and saves.
            base: The file as it was when the form opened (conflicts are checked against it).
            index: The ``[[alert]]`` position, or None to add one.
            samples_fn: The current samples, for "would fire now".
        """
        super().__init__()
        self.editor = editor
        self.base = base
        self.index = index
        self.samples_fn = samples_fn
        if index is None:
            self.original = {
                "id": "",
                "metric": "fulfillment.late",
                "matchers": "scope=location",
                "op": ">",
                "threshold": "10",
                "clear": "",
                "for": "5m",
                "severity": "warning",
                "no_data": "keep",
                "labels": "",
                "description": "",
                "enabled": "yes",
            }
        else:
            self.original = rule_form_fields(base.rules.alert[index])
        self.rule: AlertRule | None = None
        """The rule the form describes, when valid."""
        self.check_text = ""
        self.status_text = ""
        self.saving = False

    @property
    def can_edit(self) -> bool:
        """Whether this user may save."""
        return self.editor.permissions.can_edit_rules

    def compose(self) -> ComposeResult:
        """Title, the fields, the check line, the status line, the footer."""
        title = "New alert rule" if self.index is None else f"Alert rule {self.original['id']}"
        if not self.can_edit:
            title += "  (read-only)"
        yield Static(Content.assemble((title, "bold")), id="form-title")
        with Grid(id="form-grid"):
            for name in FORM_FIELDS:
                yield Label(_FIELD_LABELS[name])
                suggestions = _SUGGESTIONS.get(name)
                yield Input(
                    value=self.original.get(name, ""),
                    placeholder=_PLACEHOLDERS.get(name, ""),
                    id=f"field-{name}",
                    compact=True,
                    disabled=not self.can_edit,
                    suggester=SuggestFromList(suggestions) if suggestions else None,
                    select_on_focus=False,
                )
        yield Static("", id="form-check")
        yield Static("", id="form-status", classes="-empty")
        yield Footer()

    def on_mount(self) -> None:
        """Check the initial values and focus the first field."""
        for field in self.query(Input):
            field.cursor_blink = False
        if self.can_edit:
            self.query_one("#field-threshold" if self.index is not None else "#field-id").focus()
        self.validate_form()

    def field(self, name: str) -> Input:
        """The input of one form field."""
        return self.query_one(f"#field-{name}", Input)

    def raw_values(self) -> dict[str, str]:
        """The text of every field."""
        return {name: self.field(name).value for name in FORM_FIELDS}

    def changed_values(self) -> dict[str, Any]:
        """The file values of the fields the operator changed (all of them for a new rule).

        Raises:
            FormError: a field that cannot be read.
        """
        raw = self.raw_values()
        values = form_values(raw)
        if self.index is None:
            return values
        return {k: v for k, v in values.items() if raw[k].strip() != self.original[k].strip()}

    def validate_form(self) -> AlertRule | None:
        """Validate the form in the whole file; show the problem or what it would do now."""
        check = self.query_one("#form-check", Static)
        try:
            values = self.changed_values()
            rule = self.editor.check_alert(self.base, self.index, values)
        except FormError as exc:
            return self._invalid(check, str(exc))
        except RulesFileError as exc:
            return self._invalid(check, _first_problem(exc))
        self.rule = rule
        current = self.samples_fn()
        condition = rule.condition_text()
        if current is None:
            text = f"OK: {condition}. No snapshot yet to preview it on."
        else:
            preview: RulePreview = preview_rule(rule, current)
            text = f"OK: {condition}; {preview.text(rule)}"
            if not rule.enabled:
                text += " (disabled)"
        self.check_text = text
        check.update(text)
        check.remove_class("-error")
        return rule

    def _invalid(self, check: Static, message: str) -> AlertRule | None:
        self.rule = None
        self.check_text = f"INVALID {message}"
        check.update(Content.assemble(("INVALID ", "bold"), message))
        check.add_class("-error")
        return None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.validate_form()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.focus_next()

    def _set_status(self, text: str) -> None:
        self.status_text = text
        status = self.query_one("#form-status", Static)
        status.update(text)
        status.set_class(not text, "-empty")

    def action_save(self) -> None:
        """Save the rule (refused when invalid, read-only, or changed on disk)."""
        if not self.can_edit:
            p = self.editor.permissions
            who = "this console is read-only" if p.read_only else f"{p.user} is a {p.role}"
            self._set_status(f"NOT SAVED: {who}; editing rules needs the editor role.")
            return
        if self.validate_form() is None:
            self._set_status("NOT SAVED: fix the field shown above first.")
            return
        if self.saving:
            return
        self.saving = True
        self._save(self.changed_values())

    @work(thread=True, exclusive=True, exit_on_error=False, group="rule-save")
    def _save(self, values: dict[str, Any]) -> LoadedRules:
        return self.editor.save_alert(self.base, self.index, values)

    @work(thread=True, exclusive=True, exit_on_error=False, group="rule-reload")
    def _reload(self) -> LoadedRules:
        return self.editor.load()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "rule-save" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR):
            self.saving = False
            if event.state == WorkerState.SUCCESS:
                self.dismiss(worker.result)
                return
            error = worker.error
            if isinstance(error, ConflictError):
                self._set_status(
                    f"CONFLICT: {error}  Your values are still in the form; ctrl+r loads the "
                    "file's new version into the form."
                )
            else:
                self._set_status(f"NOT SAVED: {_describe(error)}")
        elif worker.group == "rule-reload":
            if event.state == WorkerState.SUCCESS and isinstance(worker.result, LoadedRules):
                self._use_file(worker.result)
            elif event.state == WorkerState.ERROR:
                self._set_status(f"NOT RELOADED: {_describe(worker.error)}")

    def _use_file(self, loaded: LoadedRules) -> None:
        self.base = loaded
        if self.index is not None:
            rule_id = self.original["id"]
            found = next((i for i, r in enumerate(loaded.rules.alert) if r.id == rule_id), None)
            if found is None:
                self._set_status(f"Rule {rule_id} is no longer in the file; saving adds it.")
                self.index = None
                self.validate_form()
                return
            self.index = found
            self.original = rule_form_fields(loaded.rules.alert[found])
            for name, value in self.original.items():
                self.field(name).value = value
        self._set_status("")
        self.notify("Loaded the file's current version.", title="Rules")
        self.validate_form()

    def action_reload_file(self) -> None:
        """Load the file as it is on disk now (the form takes its values)."""
        self._reload()

    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(None)


class NotifyFormScreen(Screen[LoadedRules | None]):
    """Edit the ``[notify]`` section (routing tree, receivers, inhibition) as TOML text."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2,ctrl+o", "save", "Save", id="notify-save"),
        Binding("escape", "cancel", "Cancel", id="notify-cancel"),
    ]
    DEFAULT_CSS = """
    NotifyFormScreen { layout: vertical; }
    NotifyFormScreen #notify-title { height: 1; padding: 0 1; background: $panel; }
    NotifyFormScreen TextArea { height: 1fr; }
    NotifyFormScreen #notify-check { height: auto; padding: 0 1; }
    NotifyFormScreen #notify-check.-error { color: $text-error; }
    """

    def __init__(self, *, editor: RulesEditor, base: LoadedRules) -> None:
        """Edit the notify section of ``base``."""
        super().__init__()
        self.editor = editor
        self.base = base
        self.valid = True
        self.check_text = ""

    def compose(self) -> ComposeResult:
        """Title, text editor, check line, footer."""
        title = "Notification routing [notify]"
        if not self.editor.permissions.can_edit_rules:
            title += "  (read-only)"
        yield Static(Content.assemble((title, "bold")), id="notify-title")
        yield TextArea(
            self.editor.notify_text(self.base),
            id="notify-text",
            read_only=not self.editor.permissions.can_edit_rules,
            soft_wrap=False,
            tab_behavior="indent",
        )
        yield Static("", id="notify-check")
        yield Footer()

    def on_mount(self) -> None:
        """Check and focus the text."""
        self.query_one(TextArea).focus()
        self._check()

    @on(TextArea.Changed)
    def _changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self._check()

    def _check(self) -> bool:
        check = self.query_one("#notify-check", Static)
        try:
            self.editor.replace_notify(self.base, self.query_one(TextArea).text, save=False)
        except RulesFileError as exc:
            p = exc.first
            where = f"line {p.line}: " if p.line is not None and p.path.name == "[notify]" else ""
            self.check_text = f"INVALID {where}{_first_problem(exc)}"
            check.update(self.check_text)
            check.add_class("-error")
            self.valid = False
            return False
        self.check_text = "OK"
        check.update("OK · f2 saves · escape cancels · w in the rules table tests routes")
        check.remove_class("-error")
        self.valid = True
        return True

    def action_save(self) -> None:
        """Save the section."""
        if not self.editor.permissions.can_edit_rules:
            self.notify("Read-only: editing rules needs the editor role.", severity="error")
            return
        if self._check():
            self._save(self.query_one(TextArea).text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="notify-save")
    def _save(self, text: str) -> LoadedRules:
        return self.editor.replace_notify(self.base, text)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "notify-save":
            return
        if event.state == WorkerState.SUCCESS:
            self.dismiss(event.worker.result)
        elif event.state == WorkerState.ERROR:
            check = self.query_one("#notify-check", Static)
            self.check_text = f"NOT SAVED: {_describe(event.worker.error)}"
            check.update(self.check_text)
            check.add_class("-error")

    def action_cancel(self) -> None:
        """Close without saving."""
        self.dismiss(None)


# -- the rules table ---------------------------------------------------------------------------


class RulesScreen(Screen[None]):
    """Every alert rule, with how often it fired in 24 h and how many scopes it hits now."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "Edit (enter)", id="rules-edit"),
        Binding("n", "new", "New", id="rules-new"),
        Binding("c", "duplicate", "Duplicate", id="rules-duplicate"),
        Binding("t", "toggle_rule", "On/off", id="rules-toggle"),
        Binding("x", "delete", "Delete", id="rules-delete"),
        Binding("g", "edit_routing", "Routing", id="rules-notify"),
        Binding("w", "route_test", "Route test", id="rules-route-test"),
        Binding("l", "audit", "Audit log", id="rules-audit"),
        Binding("r", "reload", "Reload", id="rules-reload", show=False),
        Binding("escape", "back", "Back", id="rules-back"),
    ]
    DEFAULT_CSS = """
    RulesScreen { layout: vertical; }
    RulesScreen #rules-header { height: 1; padding: 0 1; background: $panel; }
    RulesScreen #rules-table { height: 1fr; }
    RulesScreen #rules-status { height: auto; padding: 0 1; background: $error 15%; }
    RulesScreen #rules-status.-empty { display: none; }
    """

    def __init__(
        self,
        *,
        editor: RulesEditor,
        tz: tzinfo,
        snapshots: SnapshotsFn = lambda: None,
        fired_counts: Callable[[], Mapping[str, int]] | None = None,
        on_saved: Callable[[LoadedRules], None] | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        """Create the rules view.

        Args:
            editor: Reads and changes the rules file for the console user.
            tz: The operator's zone (audit log times).
            snapshots: The latest panel snapshots (for "would fire now").
            fired_counts: Blocking; how often each rule fired in the last 24 h.
            on_saved: Called with the new rules after every save from this console (the
                watcher also picks the change up, in every process).
            name: Textual name of the screen.
            id: Textual id of the screen.
        """
        super().__init__(name=name, id=id)
        self.editor = editor
        self.tz = tz
        self.sample_cache = _SampleCache(snapshots)
        self.fired_counts_fn = fired_counts
        self.on_saved = on_saved
        self.loaded: LoadedRules | None = None
        self.fired: Mapping[str, int] = {}
        self.status_text = ""

    def compose(self) -> ComposeResult:
        """Header, table, status line, footer."""
        yield Static("Rules", id="rules-header")
        table: DataTable[Any] = DataTable(id="rules-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="rules-status", classes="-empty")
        yield Footer()

    def on_mount(self) -> None:
        """Columns and the first load."""
        table = self.table
        # Short, decisive columns first: at 80 columns the long ones scroll off to the right.
        for key, label in (
            ("on", "On"),
            ("id", "Id"),
            ("now", "Now"),
            ("fired", "24h"),
            ("severity", "Sev"),
            ("condition", "Condition"),
            ("for", "For"),
            ("metric", "Metric"),
            ("scope", "Scope"),
        ):
            table.add_column(label, key=key)
        table.focus()
        self.reload()

    @property
    def table(self) -> DataTable[Any]:
        """The rules table."""
        return self.query_one("#rules-table", DataTable)

    # -- loading -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Read the file (and the fired counts) again, in a thread worker."""
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="rules-load")
    def _load(self) -> tuple[LoadedRules, Mapping[str, int]]:
        loaded = self.editor.load()
        fired = self.fired_counts_fn() if self.fired_counts_fn is not None else {}
        return loaded, fired

    @work(thread=True, exclusive=True, exit_on_error=False, group="rules-change")
    def _change(self, action: Callable[[], LoadedRules]) -> LoadedRules:
        return action()

    @work(thread=True, exit_on_error=False, group="rules-audit")
    def _audit(self) -> list[AuditEntry]:
        return self.editor.audit()

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if worker.group == "rules-load":
            if state == WorkerState.SUCCESS and isinstance(worker.result, tuple):
                loaded, fired = worker.result
                self.fired = fired
                self.set_rules(loaded)
                self._set_status("")
            elif state == WorkerState.ERROR:
                kept = "showing the rules read before" if self.loaded else "no rules shown"
                self._set_status(f"RULES FILE REFUSED: {_describe(worker.error)}; {kept}.")
        elif worker.group == "rules-change":
            if state == WorkerState.SUCCESS and isinstance(worker.result, LoadedRules):
                self.saved(worker.result)
            elif state == WorkerState.ERROR:
                error = worker.error
                if isinstance(error, ConflictError):
                    self._set_status(f"CONFLICT: {error}  Press r to reload.")
                else:
                    self._set_status(f"NOT SAVED: {_describe(error)}")
        elif worker.group == "rules-audit":
            if state == WorkerState.SUCCESS and isinstance(worker.result, list):
                self.app.push_screen(AuditScreen(worker.result, self.tz))
            elif state == WorkerState.ERROR:
                self._set_status(f"AUDIT LOG NOT READ: {_describe(worker.error)}")

    def set_rules(self, loaded: LoadedRules) -> None:
        """Show ``loaded`` (also what the app calls when the watcher reloaded the file)."""
        self.loaded = loaded
        self._render_rules()

    def saved(self, loaded: LoadedRules) -> None:
        """After a save from this console: show it, tell the app, confirm."""
        self.set_rules(loaded)
        self._set_status("")
        if self.on_saved is not None:
            self.on_saved(loaded)
        self.notify("Rules saved.", title="Rules")

    def refresh_preview(self) -> None:
        """Recompute the "Now" column (call after a snapshot refresh)."""
        self._render_rules()

    def _render_rules(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        p = self.editor.permissions
        role = "read-only" if not p.can_edit_rules else "editor"
        enabled = sum(1 for r in loaded.rules.alert if r.enabled)
        self.query_one("#rules-header", Static).update(
            Content.assemble(
                ("RULES ", "bold"),
                f"{len(loaded.rules.alert)} alert rules, {enabled} enabled · {loaded.path}",
                (f"   {p.user} ({role})", "$text-muted"),
            )
        )
        current = self.sample_cache.get()
        table = self.table
        cursor = table.cursor_row
        with self.app.batch_update():
            table.clear()
            for i, rule in enumerate(loaded.rules.alert):
                now = "-"
                if current is not None:
                    preview = preview_rule(rule, current)
                    firing = preview.firing + (preview.no_data if rule.no_data == "alert" else 0)
                    now = f"{firing}/{preview.scopes}"
                condition = f"{rule.op} {rule.threshold:g}"
                if rule.clear is not None and rule.clear != rule.threshold:
                    condition += f" (clear {rule.clear:g})"
                table.add_row(
                    "on" if rule.enabled else "off",
                    Text(rule.id, style="bold" if rule.enabled else "dim"),
                    now,
                    str(self.fired.get(rule.id, 0)),
                    rule.severity[:4],
                    condition,
                    format_duration(rule.for_),
                    rule.metric,
                    format_matchers(rule.matchers) or "(all)",
                    key=f"{i}:{rule.id}",
                )
            if table.row_count:
                table.move_cursor(row=min(max(cursor, 0), table.row_count - 1))

    def _set_status(self, text: str) -> None:
        self.status_text = text
        status = self.query_one("#rules-status", Static)
        status.update(text)
        status.set_class(not text, "-empty")

    # -- selection and roles -------------------------------------------------------------------

    def selected_index(self) -> int | None:
        """The ``[[alert]]`` position under the cursor."""
        if self.loaded is None or not self.loaded.rules.alert or self.table.row_count == 0:
            return None
        return min(self.table.cursor_row, len(self.loaded.rules.alert) - 1)

    def _can_change(self) -> bool:
        if self.loaded is None:
            self._set_status("No valid rules file loaded; fix the file first (see above).")
            return False
        p = self.editor.permissions
        if p.can_edit_rules:
            return True
        who = "this console is read-only" if p.read_only else f"{p.user} is a {p.role}"
        self._set_status(f"NOT ALLOWED: {who}; editing rules needs the editor role.")
        return False

    # -- actions -------------------------------------------------------------------------------

    def _open_form(self, index: int | None) -> None:
        assert self.loaded is not None
        self.app.push_screen(
            RuleFormScreen(
                editor=self.editor, base=self.loaded, index=index, samples_fn=self.sample_cache.get
            ),
            callback=self._form_closed,
        )

    def _form_closed(self, result: LoadedRules | None) -> None:
        if result is not None:
            self.saved(result)

    @on(DataTable.RowSelected, "#rules-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def action_edit(self) -> None:
        """Edit the selected rule (read-only users see it without saving)."""
        index = self.selected_index()
        if index is None:
            self.notify("No rule selected.", severity="warning")
            return
        self._open_form(index)

    def action_new(self) -> None:
        """Add a rule."""
        if self._can_change():
            self._open_form(None)

    def action_duplicate(self) -> None:
        """Copy the selected rule (as ``<id>_copy``)."""
        index = self.selected_index()
        if index is None or not self._can_change():
            return
        base = self.loaded
        assert base is not None
        self._change(lambda: self.editor.duplicate_alert(base, index))

    def action_toggle_rule(self) -> None:
        """Enable or disable the selected rule."""
        index = self.selected_index()
        if index is None or not self._can_change():
            return
        base = self.loaded
        assert base is not None
        enabled = not base.rules.alert[index].enabled
        self._change(lambda: self.editor.set_enabled(base, index, enabled))

    def action_delete(self) -> None:
        """Delete the selected rule (asks first)."""
        index = self.selected_index()
        if index is None or not self._can_change():
            return
        base = self.loaded
        assert base is not None
        rule_id = base.rules.alert[index].id

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(lambda: self.editor.delete_alert(base, index))

        self.app.push_screen(ConfirmScreen(f"Delete alert rule {rule_id}?"), callback=answered)

    def action_edit_routing(self) -> None:
        """Edit the routing tree, receivers and inhibition rules."""
        if self.loaded is None:
            self._set_status("No valid rules file loaded; fix the file first.")
            return
        self.app.push_screen(
            NotifyFormScreen(editor=self.editor, base=self.loaded), callback=self._form_closed
        )

    def action_route_test(self) -> None:
        """Open the route tester."""
        if self.loaded is None:
            self._set_status("No valid rules file loaded; fix the file first.")
            return
        labels = ""
        index = self.selected_index()
        if index is not None:
            rule = self.loaded.rules.alert[index]
            extra = " ".join(f"{k}={v}" for k, v in rule.labels.items())
            labels = f"alertname={rule.id} severity={rule.severity} {extra}".strip()
        self.app.push_screen(RouteTestScreen(self.loaded, labels))

    def action_audit(self) -> None:
        """Show the audit log."""
        self._audit()

    def action_reload(self) -> None:
        """Read the file again."""
        self.reload()

    def action_back(self) -> None:
        """Leave the rules view (when it was pushed over the console)."""
        if len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()
