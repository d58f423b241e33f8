"""The console's two small dialogs: one prompt (labelled inputs) and one yes/no question.

Every "type a value" moment of the console goes through :class:`PromptScreen`: an export's
file name, an acknowledgement's comment, a silence's matchers and duration, the order id
of "why did it go there?".  Each field may carry a check that is run as the operator
types; Enter answers only when every check passes, Escape answers None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from console.widgets.plain import Plain


@dataclass(frozen=True)
class PromptField:
    """One labelled input of a :class:`PromptScreen`."""

    name: str
    label: str
    value: str = ""
    check: Callable[[str], str | None] | None = None
    """Returns an error message for a bad value, or None."""
    placeholder: str = ""


TYPEAHEAD: list[BindingType] = [
    Binding("tab", "app.focus_next", "Next field", show=False, priority=True),
    Binding("shift+tab", "app.focus_previous", "Previous field", show=False, priority=True),
]
"""Tab and Shift-Tab of a form, as priority bindings: the app moves the focus the moment
the key arrives, so keys typed right behind it (a fast typist, a slow SSH link delivering a
burst) land in the next field.  As ordinary bindings Tab would first travel to the field
and back, and the keys queued behind it would reach the field being left."""


class PromptScreen(ModalScreen[dict[str, str] | None]):
    """A small dialog of labelled inputs, validated as you type; Enter confirms."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt-cancel"),
        *TYPEAHEAD,
    ]

    def __init__(self, title: str, fields: Sequence[PromptField], hint: str = "") -> None:
        """A dialog titled ``title`` asking for ``fields``."""
        super().__init__()
        self.title_text = title
        self.fields = tuple(fields)
        self.hint = hint or "Enter confirms · Escape cancels"

    def compose(self) -> ComposeResult:
        """Title, one label and input per field, error line, hint."""
        with Vertical(id="prompt-dialog"):
            yield Plain(self.title_text, classes="prompt-title")
            for f in self.fields:
                if f.label:
                    yield Label(f.label)
                yield Input(
                    value=f.value, placeholder=f.placeholder, id=f"prompt-{f.name}", compact=True
                )
            yield Plain("", id="prompt-error")
            yield Plain(self.hint, id="prompt-hint")

    def on_mount(self) -> None:
        """Focus the first input (steady cursor) and check the initial values."""
        for field in self.query(Input):
            field.cursor_blink = False
        self.query(Input).first().focus()
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
                    message = f"{f.label or f.name}: {problem}"
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


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question (``y`` / ``n`` or Escape)."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm-no"),
    ]

    def __init__(self, question: str) -> None:
        """Ask ``question``."""
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        """The question and the keys."""
        yield Plain(f"{self.question}\n\ny yes · n no", id="confirm-question")

    def action_answer(self, yes: bool) -> None:
        """Answer."""
        self.dismiss(yes)
