"""The routing rule form: one fulfillment routing rule, read field by field.

``rule_to_form`` and ``form_to_rule`` turn a rule into the text of each field and back,
naming the field that cannot be read; the form checks the rule in the whole draft before
it accepts it.  Escape with edits asks before dropping them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import ValidationError
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from console.screens.dialogs import TYPEAHEAD, ConfirmScreen
from console.widgets.plain import Plain
from rules.routing.config import RoutingRule

_FORM: tuple[tuple[str, str, str], ...] = (
    ("id", "Id", "letters, digits, _ . -"),
    ("description", "Description", "what the rule is for"),
    ("match", "Match", "region=~north.*, method=bopis, hazmat=true  (empty: every order)"),
    ("min_value", "Min value", "order value, e.g. 100  (empty: none)"),
    ("max_value", "Max value", "(empty: none)"),
    ("min_weight_kg", "Min weight kg", "(empty: none)"),
    ("max_weight_kg", "Max weight kg", "(empty: none)"),
    ("kinds", "Node kinds", "warehouse, store, dropship"),
    ("max_distance_km", "Max distance km", "service distance (empty: BOPIS default / none)"),
    ("window", "Window", "promise | today | any"),
    ("prep_minutes", "Prep minutes", "(empty: per node / per kind)"),
    ("rank_by", "Rank by", "fewest_splits, same_market, distance, manual_rank, ..."),
    ("max_splits", "Max splits", "0 = one node ships everything"),
    ("fallback", "Fallback", "next_rule | next_pickup_window | hold"),
    ("buffers", "Buffers", "store=2, warehouse=0  (empty: the section's)"),
)
_LISTS = {"kinds", "rank_by"}
_NUMBERS = {"min_value", "max_value", "min_weight_kg", "max_weight_kg", "max_distance_km"}
_INTEGERS = {"prep_minutes", "max_splits"}


class FormError(ValueError):
    """A form field that cannot be read; ``field`` is its name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def rule_to_form(rule: RoutingRule | None) -> dict[str, str]:
    """The text of each form field for ``rule`` (a new rule's defaults when None)."""
    base = rule or RoutingRule(id="new-rule")
    out: dict[str, str] = {}
    for name, _, _ in _FORM:
        value = getattr(base, name)
        if value is None:
            out[name] = ""
        elif name in _LISTS:
            out[name] = ", ".join(value)
        elif name == "buffers":
            out[name] = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float) and value.is_integer():
            out[name] = str(int(value))
        else:
            out[name] = str(value)
    if rule is None:
        out["id"] = ""
    return out


def form_to_rule(values: dict[str, str], *, enabled: bool = True) -> RoutingRule:
    """Read the form into a rule.

    Raises:
        FormError: naming the field that is wrong.
    """
    data: dict[str, Any] = {"enabled": enabled}
    for name, label, _ in _FORM:
        text = values.get(name, "").strip()
        if name in _LISTS:
            data[name] = [part.strip() for part in text.split(",") if part.strip()]
        elif name in _NUMBERS or name in _INTEGERS:
            if not text:
                if name == "max_splits":
                    data[name] = 0
                continue
            try:
                data[name] = int(text) if name in _INTEGERS else float(text)
            except ValueError:
                kind = "a whole number" if name in _INTEGERS else "a number"
                raise FormError(name, f"{label}: expected {kind}, got {text!r}") from None
        elif name == "buffers":
            buffers: dict[str, int] = {}
            for part in (p.strip() for p in text.split(",") if p.strip()):
                kind, sep, units = part.partition("=")
                if not sep or not units.strip().isdigit():
                    raise FormError(name, f"{label}: expected kind=units, got {part!r}")
                buffers[kind.strip()] = int(units)
            data[name] = buffers
        else:
            data[name] = text
    try:
        return RoutingRule.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = str(first["loc"][0]) if first["loc"] else "id"
        label = next((lbl for n, lbl, _ in _FORM if n == field), field)
        raise FormError(field, f"{label}: {first['msg']}") from None


class RoutingRuleFormScreen(ModalScreen[RoutingRule | None]):
    """Edit one routing rule; Enter accepts (after validation), Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2", "accept", "Accept", id="routing-form-accept"),
        Binding("escape", "cancel", "Cancel", id="routing-form-cancel"),
        Binding("down", "app.focus_next", "Next field", show=False, id="routing-form-next"),
        Binding("up", "app.focus_previous", "Prev field", show=False, id="routing-form-prev"),
        *TYPEAHEAD,
    ]
    CSS_PATH = "routing.tcss"

    def __init__(
        self,
        *,
        rule: RoutingRule | None,
        check: Callable[[RoutingRule], str | None],
    ) -> None:
        """Edit ``rule`` (None: a new one); ``check`` validates it in the whole draft."""
        super().__init__()
        self.rule = rule
        self.check = check

    def compose(self) -> ComposeResult:
        """A labelled input per field, an error line and the keys."""
        title = f"Edit rule {self.rule.id}" if self.rule else "New routing rule"
        values = rule_to_form(self.rule)
        with Vertical():
            yield Plain(title, id="routing-form-title")
            with VerticalScroll():
                for name, label, placeholder in _FORM:
                    with Vertical(classes="routing-form-row"):
                        yield Label(label)
                        yield Input(
                            value=values[name],
                            placeholder=placeholder,
                            id=f"rf-{name}",
                            compact=True,
                        )
            yield Plain("", id="routing-form-error")
            yield Plain("Enter or F2 accepts · ↑/↓ move · Escape cancels", id="routing-form-hint")

    def on_mount(self) -> None:
        """Cursor in the first field, steady."""
        for field in self.query(Input):
            field.cursor_blink = False
        self.query_one("#rf-id", Input).focus()

    def values(self) -> dict[str, str]:
        """The text of every field."""
        return {name: self.query_one(f"#rf-{name}", Input).value for name, _, _ in _FORM}

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_accept()

    def action_accept(self) -> None:
        """Validate; close with the rule, or say which field is wrong."""
        error = self.query_one("#routing-form-error", Static)
        try:
            rule = form_to_rule(self.values(), enabled=self.rule.enabled if self.rule else True)
        except FormError as exc:
            error.update(str(exc))
            self.query_one(f"#rf-{exc.field}", Input).focus()
            return
        problem = self.check(rule)
        if problem is not None:
            error.update(problem)
            return
        self.dismiss(rule)

    def action_cancel(self) -> None:
        """Close without a change; with edits in the fields, ask first."""
        if self.values() == rule_to_form(self.rule):
            self.dismiss(None)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.dismiss(None)

        self.app.push_screen(ConfirmScreen("Drop the edits of this routing rule?"), answered)
