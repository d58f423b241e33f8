"""The rules view: alert rules in a table, an edit form validated as you type, routing.

The screen is handed a :class:`rules.file.RulesEditor` (which reads and writes the file,
checks the role, detects conflicts and writes the audit log) and a ``snapshots`` callable
(the latest panel snapshots, for "would fire now"); it reads no file and runs no SQL of its
own.  Editor calls that touch the disk run in thread workers, which post their results
(:mod:`console.messages`).  The forms, the route tester and the audit log are screens of
their own modules.

Keys in the table: ``enter``/``e`` edit, ``n`` new, ``c`` duplicate, ``t`` enable/disable,
``x`` delete (asks), ``g`` edit notification routing ([notify] as text), ``w`` route
tester, ``l`` audit log, ``r`` reload from disk, ``escape`` back.  In a form: ``f2`` or
``ctrl+o`` saves, ``ctrl+r`` reloads the file (after a conflict), ``escape`` cancels.

Saving never overwrites a file that changed on disk since the form was opened: the form
says so and keeps the operator's values on screen.  A read-only console, or a user without
the editor role, can look at everything and change nothing (the editor checks again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.errors import describe_error
from console.messages import AuditRead, RulesRead, RulesSaved, WorkFailed
from console.screens.audit import AuditScreen
from console.screens.dialogs import ConfirmScreen
from console.screens.notify_form import NotifyFormScreen
from console.screens.route_test import RouteTestScreen
from console.screens.rule_form import AlertRuleFormScreen
from console.widgets.cursor import place_cursor
from console.widgets.footer import FittedFooter
from console.widgets.plain import Plain, PlainTable
from rules.alerts.preview import preview_rule
from rules.alerts.samples import Sample, samples
from rules.editor import ConflictError, RulesEditor
from rules.file import LoadedRules
from rules.labels import format_duration
from rules.matchers import format_matchers
from store.snapshots import Snapshots

SnapshotsFn = Callable[[], Snapshots | None]
"""Returns the latest snapshots the panels show (None before the first refresh)."""


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
    FOOTER_PRIORITY: ClassVar[tuple[str, ...]] = (
        "help",
        "rules-edit",
        "rules-new",
        "rules-back",
        "rules-toggle",
        "rules-route-test",
        "rules-notify",
        "rules-duplicate",
        "rules-delete",
        "rules-audit",
    )
    """Keys kept first when the footer is narrow (the rest are in ``?``)."""
    CSS_PATH = "rules.tcss"

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
        yield Plain("Rules", id="rules-header")
        table: DataTable[Any] = PlainTable(id="rules-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Plain("", id="rules-status", classes="-empty")
        yield FittedFooter()

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
    def _load(self) -> None:
        """Thread worker: read the file and the fired counts, post :class:`RulesRead`."""
        try:
            loaded = self.editor.load()
            fired = self.fired_counts_fn() if self.fired_counts_fn is not None else {}
        except Exception as exc:  # the last rules read stay on screen
            self.post_message(WorkFailed("RULES FILE REFUSED", exc))
            return
        self.post_message(RulesRead(loaded, fired))

    @work(thread=True, exclusive=True, exit_on_error=False, group="rules-change")
    def _change(self, action: Callable[[], LoadedRules]) -> None:
        """Thread worker: one change to the file, post :class:`RulesSaved`."""
        try:
            loaded = action()
        except Exception as exc:  # nothing was written
            self.post_message(WorkFailed("NOT SAVED", exc))
            return
        self.post_message(RulesSaved(loaded))

    @work(thread=True, exit_on_error=False, group="rules-audit")
    def _audit(self) -> None:
        """Thread worker: read the audit log, post :class:`AuditRead`."""
        try:
            entries = self.editor.audit()
        except Exception as exc:  # said on the status line
            self.post_message(WorkFailed("AUDIT LOG NOT READ", exc))
            return
        self.post_message(AuditRead(entries))

    @on(RulesRead)
    def _rules_read(self, message: RulesRead) -> None:
        message.stop()
        self.fired = message.fired
        self.set_rules(message.loaded)
        self._set_status("")

    @on(RulesSaved)
    def _rules_saved(self, message: RulesSaved) -> None:
        message.stop()
        self.saved(message.loaded)

    @on(AuditRead)
    def _audit_read(self, message: AuditRead) -> None:
        message.stop()
        self.app.push_screen(AuditScreen(message.entries, self.tz))

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        message.stop()
        error = message.error
        if isinstance(error, ConflictError):
            self._set_status(f"CONFLICT: {error}  Press r to reload.")
        elif message.what == "RULES FILE REFUSED":
            kept = "showing the rules read before" if self.loaded else "no rules shown"
            self._set_status(f"{message.what}: {describe_error(error)}; {kept}.")
        else:
            self._set_status(f"{message.what}: {describe_error(error)}")

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
            place_cursor(table, row=cursor)

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
            AlertRuleFormScreen(
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
        """Enable or disable the selected rule (disabling a critical one asks first)."""
        index = self.selected_index()
        if index is None or not self._can_change():
            return
        base = self.loaded
        assert base is not None
        rule = base.rules.alert[index]
        enabled = not rule.enabled

        def toggle() -> None:
            self._change(lambda: self.editor.set_enabled(base, index, enabled))

        if enabled or rule.severity != "critical":
            toggle()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                toggle()

        self.app.push_screen(
            ConfirmScreen(
                f"Disable critical alert rule {rule.id}? It stops paging until enabled again."
            ),
            callback=answered,
        )

    def action_delete(self) -> None:
        """Delete the selected rule (asks first)."""
        index = self.selected_index()
        if index is None or not self._can_change():
            return
        base = self.loaded
        assert base is not None
        rule = base.rules.alert[index]
        question = f"Delete alert rule {rule.id}?"
        if rule.severity == "critical":
            question = f"Delete CRITICAL alert rule {rule.id}? It stops paging for good."

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(lambda: self.editor.delete_alert(base, index))

        self.app.push_screen(ConfirmScreen(question), callback=answered)

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
        if self.is_active:
            self.dismiss()
