"""The audit log of the rules file: who changed it, when, and the diff."""

from __future__ import annotations

from datetime import tzinfo
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from console.widgets.plain import Plain
from rules.audit import AuditEntry


class AuditScreen(ModalScreen[None]):
    """The audit log: who changed the rules file, when, and the diff."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="audit-close"),
    ]
    CSS_PATH = "rules.tcss"

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
            yield Plain(text)

    def action_close(self) -> None:
        """Back to the rules."""
        self.dismiss(None)
