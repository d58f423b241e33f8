"""The ``:`` command line: views, filters and sorts typed as words, with completion.

The screen knows no commands: it is handed ``complete(text) -> candidates`` and answers
with the line typed.  The console screen completes and runs them (``:alerts``,
``:stock location=WH-TX``, ``:sort cover``).  The first candidate is shown greyed after
the cursor (Tab or → takes it); up to eight more are listed under the line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Input, Static

from console.widgets.plain import Plain

CompleteFn = Callable[[str], list[str]]
"""Candidates for the whole line typed so far, best first (each a whole line)."""


class CommandSuggester(Suggester):
    """Suggests the first candidate of the completer (case-insensitive prefix)."""

    def __init__(self, complete: CompleteFn) -> None:
        """Suggest from ``complete``; recomputed on every keystroke (rows change)."""
        super().__init__(use_cache=False, case_sensitive=True)
        self.complete = complete

    async def get_suggestion(self, value: str) -> str | None:
        """The first candidate that extends ``value``, keeping what was typed."""
        for candidate in self.complete(value):
            if candidate.lower().startswith(value.lower()) and len(candidate) > len(value):
                return value + candidate[len(value) :]
        return None


class CommandScreen(ModalScreen[str | None]):
    """A one-line ``:`` prompt at the bottom; Enter runs it, Escape drops it."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="command-cancel"),
        Binding("tab", "complete", "Complete", id="command-complete", priority=True),
    ]
    MAX_LISTED = 8

    def __init__(self, complete: CompleteFn, text: str = "") -> None:
        """A command line completed by ``complete``, starting with ``text``."""
        super().__init__()
        self.complete = complete
        self.initial = text

    def compose(self) -> ComposeResult:
        """The prompt and the candidates under it."""
        with Vertical(id="command-dialog"):
            with Horizontal(id="command-line"):
                yield Plain(":", id="command-prompt")
                yield Input(
                    value=self.initial,
                    id="command-input",
                    compact=True,
                    suggester=CommandSuggester(self.complete),
                    placeholder="alerts · stock location=WH-TX · sort cover · at 14:00 · help",
                )
            yield Plain("", id="command-completions")

    def on_mount(self) -> None:
        """Cursor in the line, candidates listed."""
        field = self.query_one(Input)
        field.cursor_blink = False
        field.focus()
        self._list(field.value)

    @property
    def candidates_text(self) -> str:
        """The candidates listed under the line (tests read it)."""
        return str(self.query_one("#command-completions", Static).render())

    def _list(self, text: str) -> None:
        found = self.complete(text)
        listed = "  ".join(found[: self.MAX_LISTED])
        more = f"  (+{len(found) - self.MAX_LISTED})" if len(found) > self.MAX_LISTED else ""
        self.query_one("#command-completions", Static).update(listed + more)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self._list(event.value)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_complete(self) -> None:
        """Take the first candidate (Tab)."""
        field = self.query_one(Input)
        found = self.complete(field.value)
        if found:
            field.value = found[0]
            field.cursor_position = len(field.value)

    def action_cancel(self) -> None:
        """No command."""
        self.dismiss(None)
