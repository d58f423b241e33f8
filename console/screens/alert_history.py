"""The recorded transitions of one alert (read-only), over the alerts view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen

from console.widgets.plain import Plain
from rules.alerts.actions import Transition


class HistoryScreen(ModalScreen[None]):
    """The recorded transitions of one alert (read-only)."""

    CSS_PATH = "alerts.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="history-close"),
    ]

    def __init__(self, title: str, transitions: Sequence[Transition], tz: tzinfo) -> None:
        """Show ``transitions`` of the alert named ``title``, times in ``tz``."""
        super().__init__()
        self.title_text = title
        self.transitions = tuple(transitions)
        self.tz = tz

    def compose(self) -> ComposeResult:
        """One line per transition."""
        lines: list[str] = []
        newest = max((t.at for t in self.transitions), default=None)
        this_year = newest.astimezone(self.tz).year if newest is not None else 0
        for t in self.transitions:
            local = t.at.astimezone(self.tz)
            day = local.strftime("%b %d %Y" if local.year != this_year else "%b %d")
            when = f"{day} {local.strftime('%H:%M:%S')}"
            what = f"{t.from_state or '-'} → {t.to_state}" if t.kind == "state" else t.kind
            lines.append(f"{when}  {what:22}  by {t.by}  {t.note}")
        body = "\n".join(lines) or "No transitions recorded."
        with VerticalScroll():
            yield Plain(Content.assemble((self.title_text, "bold"), "\n", body))

    def action_close(self) -> None:
        """Back to the alerts."""
        self.dismiss(None)
