"""The ``?`` help screen: every key of the view it was opened over, from its bindings.

Nothing here is written by hand: the rows come from the ``active_bindings`` of the screen
below (its focused widget, the screen itself and the app), so a key added to a view shows
up in its help, and a key removed disappears; the help cannot drift from the keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable

from console.widgets.plain import Plain, PlainTable


@dataclass(frozen=True)
class HelpRow:
    """One action of the help table: its keys, what it does, and where it applies."""

    keys: str
    description: str
    where: str


def help_rows(screen: Screen[object], app: App[object]) -> list[HelpRow]:
    """The keys active on ``screen``, one row per action (keys of one action joined).

    The screen's own keys come first, then those of the console's widgets, then the
    app's, then the built-in widget keys (table navigation); ``where`` says which.
    """
    grouped: dict[tuple[int, str], tuple[list[str], str, str, int]] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        if binding.action in ("", "noop") or binding.system:
            continue
        node = active.node
        if node is app:
            where, rank = "everywhere", 2
        elif node is screen:
            where, rank = "this view", 0
        else:
            ours = type(node).__module__.startswith("console.")
            where, rank = f"in {type(node).__name__}", 1 if ours else 3
        description = binding.description or binding.action.replace("_", " ")
        group = (id(node), binding.action)
        keys, _, _, _ = grouped.setdefault(group, ([], description, where, rank))
        display = app.get_key_display(binding)
        if display not in keys:
            keys.append(display)
    rows = sorted(grouped.values(), key=lambda g: g[3])
    return [HelpRow(" ".join(keys), desc, where) for keys, desc, where, _ in rows]


class HelpScreen(ModalScreen[None]):
    """Every key of the view below, generated from its bindings; Escape or ``?`` closes."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close", id="help-close"),
    ]

    def __init__(self, over: Screen[object], title: str) -> None:
        """Help for the keys of ``over`` (the screen the operator was on), titled ``title``."""
        super().__init__()
        self.rows = help_rows(over, over.app)
        self.title_text = title

    def compose(self) -> ComposeResult:
        """Title, the key table, how to close."""
        with Vertical(id="help-dialog"):
            yield Plain(f"Keys · {self.title_text}", classes="prompt-title")
            table: DataTable[str] = PlainTable(id="help-keys", cursor_type="row")
            yield table
            yield Plain("Escape or ? closes · ctrl+p lists every command", id="prompt-hint")

    def on_mount(self) -> None:
        """Fill the table, one row per action."""
        table = self.query_one(DataTable)
        table.add_columns("Key", "Does", "Where")
        for row in self.rows:
            table.add_row(row.keys, row.description, row.where)
        table.focus()

    def action_close(self) -> None:
        """Back to the view."""
        self.dismiss(None)
