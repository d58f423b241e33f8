"""The alert rule form: one ``[[alert]]``, validated in the whole file as you type.

It shows what the rule would do on the latest snapshots while it is edited.

Saving never overwrites a file that changed on disk since the form was opened: the form
says so and keeps the operator's values on screen (``ctrl+r`` loads the file's new
version).  Escape with unsaved edits asks before dropping them; a save that changes
nothing writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.content import Content
from textual.screen import Screen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Label, Static

from console.errors import describe_error
from console.messages import RulesReread, RulesSaved, WorkFailed
from console.screens.dialogs import TYPEAHEAD, ConfirmScreen
from console.widgets.footer import FittedFooter
from console.widgets.plain import Plain
from rules.alerts.preview import RulePreview, preview_rule
from rules.alerts.rule import AlertRule
from rules.alerts.samples import Sample
from rules.editor import ConflictError, RulesEditor
from rules.file import LoadedRules, RulesFileError
from rules.rule_form import FORM_FIELDS, FormError, form_values, rule_form_fields
from store.registry import METRICS

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


class AlertRuleFormScreen(Screen[LoadedRules | None]):
    """Edit (or add) one alert rule; validated in the whole file as you type."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2,ctrl+o", "save", "Save", id="rule-save"),
        Binding("ctrl+r", "reload_file", "Reload file", id="rule-reload"),
        Binding("escape", "cancel", "Cancel", id="rule-cancel"),
        *TYPEAHEAD,
    ]
    CSS_PATH = "rules.tcss"

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
        yield Plain(Content.assemble((title, "bold")), id="form-title")
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
        yield Plain("", id="form-check")
        yield Plain("", id="form-status", classes="-empty")
        yield FittedFooter()

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
            return self._invalid(check, describe_error(exc))
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
        values = self.changed_values()
        if self.index is not None and not values:
            self.notify("Nothing changed; nothing was written.", title="Rules")
            self.dismiss(None)
            return
        self.saving = True
        self._save(values)

    @work(thread=True, exclusive=True, exit_on_error=False, group="rule-save")
    def _save(self, values: dict[str, Any]) -> None:
        """Thread worker: write the rule, post :class:`RulesSaved` or :class:`WorkFailed`."""
        try:
            loaded = self.editor.save_alert(self.base, self.index, values)
        except Exception as exc:  # nothing written; the values stay in the form
            self.post_message(WorkFailed("NOT SAVED", exc))
            return
        self.post_message(RulesSaved(loaded))

    @work(thread=True, exclusive=True, exit_on_error=False, group="rule-reload")
    def _reload(self) -> None:
        """Thread worker: read the file again, post :class:`RulesReread`."""
        try:
            loaded = self.editor.load()
        except Exception as exc:  # the form keeps the version it had
            self.post_message(WorkFailed("NOT RELOADED", exc))
            return
        self.post_message(RulesReread(loaded))

    @on(RulesSaved)
    def _saved(self, message: RulesSaved) -> None:
        message.stop()
        self.saving = False
        self.dismiss(message.loaded)

    @on(RulesReread)
    def _reread(self, message: RulesReread) -> None:
        message.stop()
        self._use_file(message.loaded)

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        message.stop()
        self.saving = False
        if isinstance(message.error, ConflictError):
            self._set_status(
                f"CONFLICT: {message.error}  Your values are still in the form; ctrl+r loads "
                "the file's new version into the form."
            )
        else:
            self._set_status(f"{message.what}: {describe_error(message.error)}")

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

    @property
    def dirty(self) -> bool:
        """Whether a field differs from what the form opened with."""
        raw = self.raw_values()
        return any(raw[k].strip() != self.original.get(k, "").strip() for k in FORM_FIELDS)

    def action_cancel(self) -> None:
        """Close without saving; with unsaved edits, ask first."""
        if not self.dirty or not self.can_edit:
            self.dismiss(None)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Drop the unsaved edits of this rule?"), answered)
