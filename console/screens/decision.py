"""A stored routing decision with its full trace: which rule, which nodes, and why."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.messages import EditedLines
from console.widgets.footer import FittedFooter
from console.widgets.formatting import DASH
from console.widgets.plain import Plain, PlainTable
from rules.routing.orders import Decision


def _fmt_time(moment: datetime | None, tz: tzinfo) -> str:
    return DASH if moment is None else moment.astimezone(tz).strftime("%a %H:%M")


def _fmt_km(km: float | None) -> str:
    return DASH if km is None else f"{km:,.0f} km"


def decision_header(
    decision: Decision, tz: tzinfo, edited: EditedLines | None = None
) -> list[tuple[str, str]]:
    """Labelled lines of what was decided, and of an edit since (``edited``)."""
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
    if edited is not None:
        at, now = edited
        held = ", ".join(f"{sku} ×{qty} @ {node or DASH}" for _, sku, qty, node in now)
        when = _fmt_time(datetime.fromtimestamp(at, UTC), tz)
        lines.append(("Edited", f"{when}, not re-routed; lines now: {held or 'none'}"))
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
    CSS_PATH = "routing.tcss"

    def __init__(
        self, *, decision: Decision, tz: tzinfo, edited: EditedLines | None = None
    ) -> None:
        """Show ``decision`` (and an edit since, ``edited``), times in ``tz``."""
        super().__init__()
        self.decision = decision
        self.tz = tz
        self.edited = edited
        self.rows: list[tuple[str, str, str, str]] = []

    def compose(self) -> ComposeResult:
        """Header lines, the trace table, the footer."""
        lines = decision_header(self.decision, self.tz, self.edited)
        width = max(len(label) for label, _ in lines)
        parts: list[str | tuple[str, str]] = []
        for index, (label, value) in enumerate(lines):
            if index:
                parts.append("\n")
            parts.append((label.ljust(width) + "  ", "$text-muted"))
            parts.append(value)
        yield Plain(Content.assemble(*parts), id="decision-head")
        table: DataTable[str] = PlainTable(
            id="decision-trace", cursor_type="row", zebra_stripes=True
        )
        yield table
        yield Plain("", id="decision-why")
        yield FittedFooter()

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
