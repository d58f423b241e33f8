"""The route tester: type an alert's labels, see which receivers it reaches and why."""

from __future__ import annotations

import re
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from console.screens.dialogs import TYPEAHEAD
from console.widgets.plain import Plain
from rules.file import LoadedRules
from rules.notify import parse_label_args, route_test


class RouteTestScreen(ModalScreen[None]):
    """Type labels, see which receivers an alert with them reaches and by which path."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Back", id="route-test-close"),
        *TYPEAHEAD,
    ]
    CSS_PATH = "rules.tcss"

    def __init__(self, loaded: LoadedRules, labels: str = "") -> None:
        """Test against the routing tree of ``loaded``."""
        super().__init__()
        self.loaded = loaded
        self.initial = labels or "alertname=late_orders severity=warning scope=location"

    def compose(self) -> ComposeResult:
        """Labels input and the answer."""
        with Vertical():
            yield Plain(Content.assemble(("Route tester", "bold"), "  key=value key=value …"))
            yield Input(value=self.initial, id="route-labels", compact=True)
            yield Plain("", id="route-result")

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
