"""The what-if report of a routing draft: today's orders replayed under both rule sets."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable

from console.widgets.footer import FittedFooter
from console.widgets.formatting import DASH
from console.widgets.plain import Plain, PlainTable
from rules.whatif import WhatIfReport


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
    CSS_PATH = "routing.tcss"

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
        yield Plain(f"What-if: current rules vs draft   {hint}", id="whatif-title")
        if self.report.assigned_too:
            yield Plain(
                "No order today was the rules' to route (each came with its node):"
                " replayed as if each were routed anew.",
                id="whatif-assigned",
            )
        summary: DataTable[str] = PlainTable(
            id="whatif-summary", cursor_type="none", show_cursor=False
        )
        yield summary
        yield Plain(self._load_text(), id="whatif-load")
        changes: DataTable[str] = PlainTable(
            id="whatif-changes", cursor_type="row", zebra_stripes=True
        )
        yield changes
        yield FittedFooter()

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
