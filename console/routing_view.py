"""The routing view: fulfilment routing rules as an ordered list, what-if, and "why there?".

The screen edits a *draft* of the ``[fulfilment]`` rules: ``n`` adds a rule after the
cursor, ``e``/Enter edits it in a form (validated as a whole before it is accepted),
``t`` enables or disables it, ``u``/``d`` move it up or down, ``x`` removes it.  ``w``
replays today's orders under the draft and under the current rules and shows the
difference (orders that change node, splits, mean distance, newly late / held /
unfulfillable, load per node); ``s`` does the same and offers to save from there, so a
draft is never saved unseen.  ``y`` asks for an order id and shows its stored decision
trace.  Escape goes back (twice when the draft has unsaved changes).

It reads no file and runs no SQL: everything comes through :class:`RoutingServices`,
whose blocking calls run in thread workers that never touch widgets (the screen reacts to
``Worker.StateChanged``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any, ClassVar

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Input, Label, Static
from textual.worker import Worker, WorkerState

from rules.routing.config import DEFAULT_RULES, FulfilmentRouting, RoutingRule
from rules.routing.orders import Decision
from rules.whatif import WhatIfReport

DASH = "—"


@dataclass(frozen=True)
class RoutingServices:
    """What the routing view may do; every call is blocking and runs in a thread worker."""

    load_rules: Callable[[], FulfilmentRouting]
    """The ``[fulfilment]`` section in force (from the rules file)."""
    what_if: Callable[[FulfilmentRouting, FulfilmentRouting], WhatIfReport]
    """``what_if(current, draft)``: replay today's orders both ways."""
    explain: Callable[[str], Decision | None]
    """The stored decision of an order id, or None."""
    save_rules: Callable[[FulfilmentRouting], FulfilmentRouting] | None = None
    """Save the draft (atomic, comment-keeping, audited) and return what is now in force;
    raises with a message naming what is wrong.  None: a read-only console."""


def _fmt_time(moment: datetime | None, tz: tzinfo) -> str:
    return DASH if moment is None else moment.astimezone(tz).strftime("%a %H:%M")


def _fmt_km(km: float | None) -> str:
    return DASH if km is None else f"{km:,.0f} km"


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    if isinstance(error, ValidationError):
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "rules"
        return f"{where}: {first['msg']}"
    return str(error).strip() or type(error).__name__


# -- the rule form ---------------------------------------------------------------------------

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


class RuleFormScreen(ModalScreen[RoutingRule | None]):
    """Edit one routing rule; Enter accepts (after validation), Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f2", "accept", "Accept", id="routing-form-accept"),
        Binding("escape", "cancel", "Cancel", id="routing-form-cancel"),
        Binding("down", "app.focus_next", "Next field", show=False, id="routing-form-next"),
        Binding("up", "app.focus_previous", "Prev field", show=False, id="routing-form-prev"),
    ]
    DEFAULT_CSS = """
    RuleFormScreen { align: center middle; }
    RuleFormScreen > Vertical {
        width: 100%; max-width: 100; height: 100%; max-height: 40;
        background: $panel; border: round $primary; padding: 0 1;
    }
    RuleFormScreen #routing-form-title { height: 1; text-style: bold; }
    RuleFormScreen VerticalScroll { height: 1fr; }
    RuleFormScreen .routing-form-row { height: 1; layout: horizontal; }
    RuleFormScreen .routing-form-row Label { width: 17; color: $text-muted; }
    RuleFormScreen .routing-form-row Input { width: 1fr; }
    RuleFormScreen #routing-form-error { height: auto; color: $error; }
    RuleFormScreen #routing-form-hint { height: 1; color: $text-muted; }
    """

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
            yield Static(title, id="routing-form-title")
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
            yield Static("", id="routing-form-error")
            yield Static("Enter or F2 accepts · ↑/↓ move · Escape cancels", id="routing-form-hint")

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
        """Close without a change."""
        self.dismiss(None)


# -- small dialogs ---------------------------------------------------------------------------


class OrderPromptScreen(ModalScreen[str | None]):
    """Ask for an order id ("why did it go there?")."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="routing-order-cancel"),
    ]
    DEFAULT_CSS = """
    OrderPromptScreen { align: center middle; }
    OrderPromptScreen > Vertical {
        width: 60; max-width: 100%; height: auto; padding: 0 1;
        background: $panel; border: round $primary;
    }
    """

    def compose(self) -> ComposeResult:
        """A title, the input and the keys."""
        with Vertical():
            yield Static("Why did it go there? Order id:")
            yield Input(id="routing-order-id", compact=True, placeholder="#41001")
            yield Static("Enter shows its decision · Escape cancels")

    def on_mount(self) -> None:
        """Focus the input."""
        field = self.query_one(Input)
        field.cursor_blink = False
        field.focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        """No order."""
        self.dismiss(None)


# -- what-if ----------------------------------------------------------------------------------


def whatif_lines(report: WhatIfReport) -> list[tuple[str, str, str]]:
    """(measure, current, draft) rows of a what-if summary."""
    c, d = report.current, report.draft

    def km(value: float | None) -> str:
        return DASH if value is None else f"{value:,.0f} km"

    return [
        ("Orders replayed", f"{report.orders:,}", f"{report.orders:,}"),
        ("Routed", f"{c.routed:,}", f"{d.routed:,}"),
        ("Held", f"{c.held:,}", f"{d.held:,}"),
        ("Unfulfillable", f"{c.unfulfillable:,}", f"{d.unfulfillable:,}"),
        ("Late vs promise", f"{c.late:,}", f"{d.late:,}"),
        (
            "Splits (orders)",
            f"{c.splits:,} ({c.split_orders:,})",
            f"{d.splits:,} ({d.split_orders:,})",
        ),
        ("Mean distance", km(c.mean_distance_km), km(d.mean_distance_km)),
        ("Orders changing node", "", f"{len(report.changed):,}"),
        ("Newly late", "", f"{len(report.newly_late):,}"),
        ("Newly held", "", f"{len(report.newly_held):,}"),
        ("Newly unfulfillable", "", f"{len(report.newly_unfulfillable):,}"),
    ]


class WhatIfScreen(Screen[bool]):
    """A what-if report; ``s`` answers "save the draft", Escape "not now"."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "save", "Save draft", id="routing-whatif-save"),
        Binding("escape", "back", "Back", id="routing-whatif-back"),
    ]
    DEFAULT_CSS = """
    WhatIfScreen { layout: vertical; }
    WhatIfScreen #whatif-title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    WhatIfScreen #whatif-summary { height: auto; max-height: 13; }
    WhatIfScreen #whatif-load { height: auto; max-height: 4; padding: 0 1; }
    WhatIfScreen #whatif-changes { height: 1fr; }
    """

    MAX_ROWS = 500
    """Changed orders listed (the counts above cover all of them)."""

    def __init__(self, *, report: WhatIfReport, can_save: bool) -> None:
        """Show ``report``; ``can_save`` enables ``s``."""
        super().__init__()
        self.report = report
        self.can_save = can_save

    def compose(self) -> ComposeResult:
        """Title, summary table, load per node, changed orders."""
        hint = "s saves the draft · Escape back" if self.can_save else "read-only · Escape back"
        yield Static(f"What-if: current rules vs draft   {hint}", id="whatif-title")
        summary: DataTable[str] = DataTable(
            id="whatif-summary", cursor_type="none", show_cursor=False
        )
        yield summary
        yield Static(self._load_text(), id="whatif-load")
        changes: DataTable[str] = DataTable(
            id="whatif-changes", cursor_type="row", zebra_stripes=True
        )
        yield changes
        yield Footer()

    def _load_text(self) -> Content:
        parts: list[str | tuple[str, str]] = [("Load per node  ", "$text-muted")]
        for index, (node, (now, draft)) in enumerate(self.report.load_change.items()):
            if index:
                parts.append("  ")
            delta = draft - now
            style = "$error" if delta > 0 else "$success" if delta < 0 else ""
            parts.append(f"{node} {now}→")
            parts.append((str(draft), style) if style else str(draft))
        return Content.assemble(*parts)

    def on_mount(self) -> None:
        """Fill both tables."""
        summary = self.query_one("#whatif-summary", DataTable)
        summary.add_columns("Measure", "Current", "Draft")
        for row in whatif_lines(self.report):
            summary.add_row(*row)
        changes = self.query_one("#whatif-changes", DataTable)
        changes.add_columns("Order", "Current", "Draft", "Status", "Late")
        for diff in self.report.changed[: self.MAX_ROWS]:
            late = f"{'yes' if diff.current_late else 'no'}→{'yes' if diff.draft_late else 'no'}"
            changes.add_row(
                diff.order_id,
                "+".join(diff.current_nodes) or diff.current_status,
                "+".join(diff.draft_nodes) or diff.draft_status,
                f"{diff.current_status}→{diff.draft_status}",
                late,
                key=diff.order_id,
            )
        changes.focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """``s`` only where saving is possible."""
        if action == "save":
            return self.can_save
        return True

    def action_save(self) -> None:
        """Answer: save."""
        self.dismiss(True)

    def action_back(self) -> None:
        """Answer: not now."""
        self.dismiss(False)


# -- decision trace ---------------------------------------------------------------------------


def decision_header(decision: Decision, tz: tzinfo) -> list[tuple[str, str]]:
    """Labelled lines of what was decided."""
    lines = [
        ("Order", f"{decision.order_id} ({decision.requested_method})"),
        ("Outcome", f"{decision.status} · rule {decision.rule_id or DASH}"),
        ("Why", decision.summary),
        ("Nodes", ", ".join(decision.nodes) or DASH),
        ("Carrier", decision.carrier or ("pickup" if decision.method == "bopis" else DASH)),
        ("Promise", _fmt_time(decision.promised_by, tz) + ("  LATE" if decision.late else "")),
    ]
    if decision.pickup_window is not None:
        start, end = decision.pickup_window
        lines.append(("Pickup", f"{_fmt_time(start, tz)} – {_fmt_time(end, tz)}"))
    for note in decision.notes:
        lines.append(("Note", note))
    return lines


def trace_rows(decision: Decision) -> list[tuple[str, str, str, str]]:
    """(rule, node, outcome, why) per trace line: each rule, then each node it considered."""
    rows: list[tuple[str, str, str, str]] = []
    for rule in decision.trace:
        label = rule.rule_id + (" (next window)" if rule.relaxed else "")
        if rule.method != decision.requested_method:
            label += f" ({rule.method})"
        rows.append((label, "", rule.outcome, rule.detail))
        for cand in rule.candidates:
            why = cand.detail if cand.reason is None else f"{cand.reason}: {cand.detail}"
            rows.append(
                ("", cand.location_id, cand.outcome, f"{_fmt_km(cand.distance_km)} · {why}")
            )
    return rows


class DecisionScreen(Screen[None]):
    """A stored routing decision with its full trace; Escape goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="routing-decision-back"),
    ]
    DEFAULT_CSS = """
    DecisionScreen { layout: vertical; }
    DecisionScreen #decision-head { height: auto; max-height: 10; padding: 0 1; }
    DecisionScreen #decision-trace { height: 1fr; }
    DecisionScreen #decision-why { height: 3; padding: 0 1; background: $panel; }
    """

    def __init__(self, *, decision: Decision, tz: tzinfo) -> None:
        """Show ``decision``, times in ``tz``."""
        super().__init__()
        self.decision = decision
        self.tz = tz
        self.rows: list[tuple[str, str, str, str]] = []

    def compose(self) -> ComposeResult:
        """Header lines, the trace table, the footer."""
        lines = decision_header(self.decision, self.tz)
        width = max(len(label) for label, _ in lines)
        parts: list[str | tuple[str, str]] = []
        for index, (label, value) in enumerate(lines):
            if index:
                parts.append("\n")
            parts.append((label.ljust(width) + "  ", "$text-muted"))
            parts.append(value)
        yield Static(Content.assemble(*parts), id="decision-head")
        table: DataTable[str] = DataTable(
            id="decision-trace", cursor_type="row", zebra_stripes=True
        )
        yield table
        yield Static("", id="decision-why")
        yield Footer()

    def on_mount(self) -> None:
        """Fill the trace table."""
        table = self.query_one("#decision-trace", DataTable)
        table.add_columns("Rule", "Node", "Outcome", "Why")
        self.rows = trace_rows(self.decision)
        for row in self.rows:
            table.add_row(*row)
        table.focus()

    @on(DataTable.RowHighlighted, "#decision-trace")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """The whole reason of the highlighted line (the table cuts it at 80 columns)."""
        rule, node, outcome, why = self.rows[event.cursor_row]
        self.query_one("#decision-why", Static).update(f"{node or rule} {outcome}: {why}")

    def action_back(self) -> None:
        """Back to the rules."""
        self.dismiss()


# -- the rules list -----------------------------------------------------------------------------


_KIND_SHORT = {"warehouse": "wh", "store": "store", "dropship": "ds"}
_FALLBACK_SHORT = {"next_rule": "next rule", "next_pickup_window": "next window", "hold": "hold"}


def rule_cells(rule: RoutingRule) -> tuple[str, str, str, str, str]:
    """(on, id, match, kinds, fallback) of a rule row, short enough for 80 columns."""
    match = rule.match or "every order"
    extras = []
    if rule.min_value is not None or rule.max_value is not None:
        extras.append(f"value {rule.min_value or 0:g}–{rule.max_value or '∞'}")
    if rule.min_weight_kg is not None or rule.max_weight_kg is not None:
        extras.append(f"kg {rule.min_weight_kg or 0:g}–{rule.max_weight_kg or '∞'}")
    if extras:
        match += " · " + ", ".join(extras)
    kinds = ",".join(_KIND_SHORT[k] for k in rule.kinds)
    return ("on" if rule.enabled else "off", rule.id, match, kinds, _FALLBACK_SHORT[rule.fallback])


def rule_detail(rule: RoutingRule) -> str:
    """Everything a rule says, on a few lines."""
    distance = f"{rule.max_distance_km:g} km" if rule.max_distance_km else "default"
    prep = f"{rule.prep_minutes} min" if rule.prep_minutes is not None else "per node/kind"
    buffers = ", ".join(f"{k}={v}" for k, v in rule.buffers.items()) or "section's"
    return (
        f"{rule.id}: {rule.match or 'every order'} → {', '.join(rule.kinds)} · "
        f"{rule.description or '(no description)'}\n"
        f"window {rule.window} · max distance {distance} · prep {prep} · "
        f"max splits {rule.max_splits} · capacity {'on' if rule.respect_capacity else 'off'}\n"
        f"rank by {', '.join(rule.rank_by) or 'node id'} · buffers {buffers}"
    )


class RoutingScreen(Screen[None]):
    """The fulfilment routing rules as an ordered list, edited as a draft."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,e", "edit", "Edit", id="routing-edit"),
        Binding("n", "new", "New", id="routing-new"),
        Binding("t", "toggle_rule", "On/off", id="routing-toggle"),
        Binding("u", "move(-1)", "Up", id="routing-up"),
        Binding("d", "move(1)", "Down", id="routing-down"),
        Binding("x", "delete", "Delete", id="routing-delete"),
        Binding("w", "what_if", "What-if", id="routing-what-if"),
        Binding("s", "save", "Save…", id="routing-save"),
        Binding("y", "why", "Why there?", id="routing-why"),
        Binding("escape", "back", "Back", id="routing-back"),
    ]
    DEFAULT_CSS = """
    RoutingScreen { layout: vertical; }
    RoutingScreen #routing-title { height: 1; padding: 0 1; background: $panel; }
    RoutingScreen #routing-rules { height: 1fr; }
    RoutingScreen #routing-detail { height: 4; padding: 0 1; color: $text-muted; }
    RoutingScreen #routing-status { height: auto; padding: 0 1; background: $warning 15%; }
    RoutingScreen #routing-status.-empty { display: none; }
    """

    def __init__(
        self,
        *,
        services: RoutingServices,
        tz: tzinfo,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        """Create the view.

        Args:
            services: Loading, what-if, explaining and (unless read-only) saving.
            tz: The operator's zone, for decision times.
            name: Textual name of the screen.
            id: Textual id of the screen.
        """
        super().__init__(name=name, id=id)
        self.services = services
        self.tz = tz
        self.current: FulfilmentRouting | None = None
        """The rules in force (None until loaded)."""
        self.draft: FulfilmentRouting = FulfilmentRouting()
        """The rules being edited."""
        self._discard_armed = False
        self._save_after_whatif = False

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Title, rules table, detail of the highlighted rule, status line, footer."""
        yield Static("Routing rules: loading…", id="routing-title")
        table: DataTable[str] = DataTable(id="routing-rules", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="routing-detail")
        yield Static("", id="routing-status", classes="-empty")
        yield Footer()

    def on_mount(self) -> None:
        """Columns and the first load."""
        table = self.table
        # Fixed widths: the whole row fits 80 columns; the detail lines below say the rest.
        for key, label, width in (
            ("n", "#", 2),
            ("on", "On", 3),
            ("id", "Id", 16),
            ("match", "Match", 26),
            ("kinds", "Kinds", 12),
            ("fallback", "Fallback", 11),
        ):
            table.add_column(label, key=key, width=width)
        table.focus()
        self._load()

    @property
    def table(self) -> DataTable[str]:
        """The rules table."""
        return self.query_one("#routing-rules", DataTable)

    @property
    def dirty(self) -> bool:
        """The draft differs from the rules in force."""
        return self.current is not None and self.draft != self.current

    def set_status(self, text: str) -> None:
        """Show (or with "" hide) the status line."""
        status = self.query_one("#routing-status", Static)
        status.update(text)
        status.set_class(not text, "-empty")

    def render_rules(self, cursor: int | None = None) -> None:
        """Redraw the table from the draft, the cursor on row ``cursor``."""
        table = self.table
        row = table.cursor_row if cursor is None else cursor
        table.clear()
        for index, rule in enumerate(self.draft.rules, 1):
            table.add_row(str(index), *rule_cells(rule), key=rule.id)
        if not self.draft.rules:
            for rule in DEFAULT_RULES:
                table.add_row("·", *rule_cells(rule), key=f"builtin:{rule.id}")
        if table.row_count:
            table.move_cursor(row=max(0, min(row, table.row_count - 1)))
        count = len(self.draft.rules)
        state = "draft, unsaved" if self.dirty else "in force"
        where = "built-in defaults (no rules configured)" if not count else f"{count} rules"
        ro = " · read-only" if self.services.save_rules is None else ""
        self.query_one("#routing-title", Static).update(f"Routing rules: {where} · {state}{ro}")
        self._show_detail()

    def _selected(self) -> int | None:
        if not self.draft.rules or not self.table.row_count:
            return None
        return min(self.table.cursor_row, len(self.draft.rules) - 1)

    def _show_detail(self) -> None:
        table = self.table
        rules = self.draft.rules or list(DEFAULT_RULES)
        if not table.row_count:
            text = ""
        else:
            text = rule_detail(rules[min(table.cursor_row, len(rules) - 1)])
        self.query_one("#routing-detail", Static).update(text)

    @on(DataTable.RowHighlighted, "#routing-rules")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    # -- workers -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-load")
    def _load(self) -> FulfilmentRouting:
        return self.services.load_rules()

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-whatif")
    def _what_if(self, current: FulfilmentRouting, draft: FulfilmentRouting) -> WhatIfReport:
        return self.services.what_if(current, draft)

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-save")
    def _save(self, draft: FulfilmentRouting) -> FulfilmentRouting:
        save = self.services.save_rules
        if save is None:
            raise PermissionError("this console is read-only")
        return save(draft)

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-explain")
    def _explain(self, order_id: str) -> tuple[str, Decision | None]:
        return order_id, self.services.explain(order_id)

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        worker, state = event.worker, event.state
        if state == WorkerState.ERROR:
            what = {
                "routing-load": "Could not load the routing rules",
                "routing-whatif": "What-if failed",
                "routing-save": "Not saved",
                "routing-explain": "Could not read the decision",
            }.get(worker.group, "Failed")
            self.set_status(f"{what}: {_describe(worker.error)}")
            return
        if state != WorkerState.SUCCESS:
            return
        result = worker.result
        if worker.group == "routing-load" and isinstance(result, FulfilmentRouting):
            self.current = result
            self.draft = result
            self.render_rules(0)
        elif worker.group == "routing-whatif" and isinstance(result, WhatIfReport):
            can_save = self.services.save_rules is not None and self.dirty
            self.app.push_screen(WhatIfScreen(report=result, can_save=can_save), self._after_whatif)
        elif worker.group == "routing-save" and isinstance(result, FulfilmentRouting):
            self.current = result
            self.draft = result
            self.render_rules()
            self.set_status("")
            self.notify("Routing rules saved; every process picks them up within seconds.")
        elif worker.group == "routing-explain" and isinstance(result, tuple):
            order_id, decision = result
            if decision is None:
                self.set_status(f"No routing decision stored for order {order_id!r}.")
            else:
                self.set_status("")
                self.app.push_screen(DecisionScreen(decision=decision, tz=self.tz))

    # -- editing -----------------------------------------------------------------------------

    def _check(self, index: int | None, at: int = 0) -> Callable[[RoutingRule], str | None]:
        def check(rule: RoutingRule) -> str | None:
            try:
                self._with_rule(index, rule, at)
            except ValidationError as exc:
                return _describe(exc)
            return None

        return check

    def _with_rule(self, index: int | None, rule: RoutingRule, at: int = 0) -> FulfilmentRouting:
        """The draft with ``rule`` replacing rule ``index`` (None: inserted at ``at``).

        Raises:
            ValidationError: when the whole draft would be invalid (e.g. a duplicate id).
        """
        rules = list(self.draft.rules)
        if index is None:
            rules.insert(at, rule)
        else:
            rules[index] = rule
        return FulfilmentRouting.model_validate(
            {**self.draft.model_dump(exclude={"rules"}), "rules": [r.model_dump() for r in rules]}
        )

    def _set_draft(self, draft: FulfilmentRouting, cursor: int | None = None) -> None:
        self.draft = draft
        self._discard_armed = False
        self.render_rules(cursor)

    def action_edit(self) -> None:
        """Edit the highlighted rule in a form."""
        index = self._selected()
        if index is None:
            self.action_new()
            return
        rule = self.draft.rules[index]

        def done(result: RoutingRule | None) -> None:
            if result is not None:
                self._set_draft(self._with_rule(index, result), index)

        self.app.push_screen(RuleFormScreen(rule=rule, check=self._check(index)), done)

    def action_new(self) -> None:
        """Add a rule after the highlighted one."""
        selected = self._selected()
        at = 0 if selected is None else selected + 1

        def done(result: RoutingRule | None) -> None:
            if result is not None:
                self._set_draft(self._with_rule(None, result, at), at)

        self.app.push_screen(RuleFormScreen(rule=None, check=self._check(None, at)), done)

    def action_toggle_rule(self) -> None:
        """Enable or disable the highlighted rule."""
        index = self._selected()
        if index is None:
            return
        rule = self.draft.rules[index]
        self._set_draft(
            self._with_rule(index, rule.model_copy(update={"enabled": not rule.enabled})), index
        )

    def action_move(self, step: int) -> None:
        """Move the highlighted rule up (-1) or down (+1)."""
        index = self._selected()
        if index is None:
            return
        target = index + step
        if not 0 <= target < len(self.draft.rules):
            return
        rules = list(self.draft.rules)
        rules[index], rules[target] = rules[target], rules[index]
        self._set_draft(self.draft.model_copy(update={"rules": rules}), target)

    def action_delete(self) -> None:
        """Remove the highlighted rule from the draft."""
        index = self._selected()
        if index is None:
            return
        rules = list(self.draft.rules)
        removed = rules.pop(index)
        self._set_draft(self.draft.model_copy(update={"rules": rules}), index)
        self.set_status(f"Removed {removed.id} from the draft (s to review and save).")

    # -- what-if, save, why --------------------------------------------------------------------

    def action_what_if(self) -> None:
        """Replay today's orders under the draft and the current rules."""
        if self.current is None:
            self.set_status("The rules are not loaded yet.")
            return
        self.set_status("Replaying today's orders under both rule sets…")
        self._what_if(self.current, self.draft)

    def action_save(self) -> None:
        """Show the what-if of the draft, from which ``s`` saves it."""
        if self.services.save_rules is None:
            self.set_status("Read-only console: rules cannot be saved here.")
            return
        if not self.dirty:
            self.set_status("Nothing to save: the draft equals the rules in force.")
            return
        self.action_what_if()

    def _after_whatif(self, save: bool | None) -> None:
        if save and self.dirty:
            self.set_status("Saving…")
            self._save(self.draft)
        else:
            self.set_status("")

    def action_why(self) -> None:
        """Ask for an order id and show its stored decision trace."""

        def chosen(order_id: str | None) -> None:
            if order_id:
                self._explain(order_id)

        self.app.push_screen(OrderPromptScreen(), chosen)

    def action_back(self) -> None:
        """Leave; with unsaved changes, the first Escape only warns."""
        if self.dirty and not self._discard_armed:
            self._discard_armed = True
            self.set_status("The draft has unsaved changes: Escape again discards them, s saves.")
            return
        self.dismiss()
