"""The ``[notify]`` section (routing tree, receivers, inhibition) edited as TOML text."""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static, TextArea

from console.errors import describe_error
from console.messages import RulesSaved, WorkFailed
from console.screens.dialogs import ConfirmScreen
from console.widgets.footer import FittedFooter
from console.widgets.plain import Plain
from rules.editor import RulesEditor
from rules.file import LoadedRules, RulesFileError


class NotifyFormScreen(Screen[LoadedRules | None]):
    """Edit the ``[notify]`` section (routing tree, receivers, inhibition) as TOML text."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2,ctrl+o", "save", "Save", id="notify-save"),
        # priority: the TOML editor would otherwise take Escape (it moves focus there)
        Binding("escape", "cancel", "Cancel", id="notify-cancel", priority=True),
    ]
    CSS_PATH = "rules.tcss"

    def __init__(self, *, editor: RulesEditor, base: LoadedRules) -> None:
        """Edit the notify section of ``base``."""
        super().__init__()
        self.editor = editor
        self.base = base
        self.valid = True
        self.check_text = ""
        self.original_text = editor.notify_text(base)
        """The section's text when the form opened (no change: nothing to save)."""

    def compose(self) -> ComposeResult:
        """Title, text editor, check line, footer."""
        title = "Notification routing [notify]"
        if not self.editor.permissions.can_edit_rules:
            title += "  (read-only)"
        yield Plain(Content.assemble((title, "bold")), id="notify-title")
        yield TextArea(
            self.original_text,
            id="notify-text",
            read_only=not self.editor.permissions.can_edit_rules,
            soft_wrap=False,
            tab_behavior="indent",
        )
        yield Plain("", id="notify-check")
        yield FittedFooter()

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
            self.check_text = f"INVALID {where}{describe_error(exc)}"
            check.update(self.check_text)
            check.add_class("-error")
            self.valid = False
            return False
        self.check_text = "OK"
        check.update("OK · f2 saves · escape cancels · w in the rules table tests routes")
        check.remove_class("-error")
        self.valid = True
        return True

    @property
    def dirty(self) -> bool:
        """Whether the text differs from the section as it was opened."""
        return self.query_one(TextArea).text != self.original_text

    def action_save(self) -> None:
        """Save the section (a text with no change writes nothing)."""
        if not self.editor.permissions.can_edit_rules:
            self.notify("Read-only: editing rules needs the editor role.", severity="error")
            return
        if not self.dirty:
            self.notify("Nothing changed; nothing was written.", title="Rules")
            self.dismiss(None)
            return
        if self._check():
            self._save(self.query_one(TextArea).text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="notify-save")
    def _save(self, text: str) -> None:
        """Thread worker: write the section, post :class:`RulesSaved` or :class:`WorkFailed`."""
        try:
            loaded = self.editor.replace_notify(self.base, text)
        except Exception as exc:  # nothing written; the text stays
            self.post_message(WorkFailed("NOT SAVED", exc))
            return
        self.post_message(RulesSaved(loaded))

    @on(RulesSaved)
    def _saved(self, message: RulesSaved) -> None:
        message.stop()
        self.dismiss(message.loaded)

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        message.stop()
        check = self.query_one("#notify-check", Static)
        self.check_text = f"{message.what}: {describe_error(message.error)}"
        check.update(self.check_text)
        check.add_class("-error")

    def action_cancel(self) -> None:
        """Close without saving; with unsaved edits, ask first."""
        if not self.dirty:
            self.dismiss(None)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Drop the unsaved edits of [notify]?"), answered)
