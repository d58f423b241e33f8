"""The routing view: fulfillment routing rules as an ordered list, what-if, and "why there?".

The screen edits a *draft* of the ``[fulfillment]`` rules: ``n`` adds a rule after the
cursor, ``e``/Enter edits it in a form (validated as a whole before it is accepted),
``t`` enables or disables it, ``u``/``d`` move it up or down, ``x`` removes it.  ``w``
replays today's orders under the draft and under the current rules and shows the
difference (orders that change node, splits, mean distance, newly late / held /
unfulfillable, load per node); ``s`` does the same and offers to save from there, so a
draft is never saved unseen.  ``y`` asks for an order id and shows its stored decision
trace.  Escape goes back (twice when the draft has unsaved changes).

It reads no file and runs no SQL: everything comes through :class:`RoutingServices`,
whose blocking calls run in thread workers that never touch widgets; each posts one
message of :mod:`console.messages`.  The rule form, the what-if report and the decision
trace are screens of their own modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import ClassVar

from pydantic import ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.errors import describe_error
from console.messages import (
    DecisionLooked,
    EditedLines,
    RoutingLoaded,
    RoutingSaved,
    WhatIfComputed,
    WorkFailed,
)
from console.screens.decision import DecisionScreen
from console.screens.dialogs import PromptField, PromptScreen
from console.screens.routing_form import RoutingRuleFormScreen
from console.screens.whatif import WhatIfScreen
from console.widgets.cursor import place_cursor
from console.widgets.footer import FittedFooter
from console.widgets.plain import Plain, PlainTable
from rules.routing.config import DEFAULT_RULES, FulfillmentRouting, RoutingRule
from rules.routing.orders import Decision
from rules.whatif import WhatIfReport


@dataclass(frozen=True)
class RoutingServices:
    """What the routing view may do; every call is blocking and runs in a thread worker."""

    load_rules: Callable[[], FulfillmentRouting]
    """The ``[fulfillment]`` section in force (from the rules file)."""
    what_if: Callable[[FulfillmentRouting, FulfillmentRouting], WhatIfReport]
    """``what_if(current, draft)``: replay today's orders both ways."""
    explain: Callable[[str], Decision | None]
    """The stored decision of an order id, or None."""
    edited: Callable[[str], EditedLines | None] | None = None
    """An edited order's latest edit time and current lines at their nodes (None: never
    edited; the service itself None: not shown)."""
    save_rules: Callable[[FulfillmentRouting], FulfillmentRouting] | None = None
    """Save the draft (atomic, comment-keeping, audited) and return what is now in force;
    raises with a message naming what is wrong.  None: a read-only console."""


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
    """The fulfillment routing rules as an ordered list, edited as a draft."""

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
    FOOTER_PRIORITY: ClassVar[tuple[str, ...]] = (
        "help",
        "routing-edit",
        "routing-why",
        "routing-what-if",
        "routing-save",
        "routing-back",
        "routing-new",
        "routing-toggle",
        "routing-up",
        "routing-down",
        "routing-delete",
    )
    """Keys kept first when the footer is narrow (the rest are in ``?``)."""
    CSS_PATH = "routing.tcss"

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
        self.current: FulfillmentRouting | None = None
        """The rules in force (None until loaded)."""
        self.draft: FulfillmentRouting = FulfillmentRouting()
        """The rules being edited."""
        self._discard_armed = False
        self._save_after_whatif = False

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """Title, rules table, detail of the highlighted rule, status line, footer."""
        yield Plain("Routing rules: loading…", id="routing-title")
        table: DataTable[str] = PlainTable(
            id="routing-rules", cursor_type="row", zebra_stripes=True
        )
        yield table
        yield Plain("", id="routing-detail")
        yield Plain("", id="routing-status", classes="-empty")
        yield FittedFooter()

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
        place_cursor(table, row=row)
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
    def _load(self) -> None:
        """Thread worker: read the rules in force, post :class:`RoutingLoaded`."""
        try:
            routing = self.services.load_rules()
        except Exception as exc:  # said on the status line
            self.post_message(WorkFailed("Could not load the routing rules", exc))
            return
        self.post_message(RoutingLoaded(routing))

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-whatif")
    def _what_if(self, current: FulfillmentRouting, draft: FulfillmentRouting) -> None:
        """Thread worker: replay both ways, post :class:`WhatIfComputed`."""
        try:
            report = self.services.what_if(current, draft)
        except Exception as exc:  # said on the status line
            self.post_message(WorkFailed("What-if failed", exc))
            return
        self.post_message(WhatIfComputed(report))

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-save")
    def _save(self, draft: FulfillmentRouting) -> None:
        """Thread worker: save the draft, post :class:`RoutingSaved`."""
        try:
            save = self.services.save_rules
            if save is None:
                raise PermissionError("this console is read-only")
            routing = save(draft)
        except Exception as exc:  # nothing saved; the draft stays
            self.post_message(WorkFailed("Not saved", exc))
            return
        self.post_message(RoutingSaved(routing))

    @work(thread=True, exclusive=True, exit_on_error=False, group="routing-explain")
    def _explain(self, order_id: str) -> None:
        """Thread worker: look the decision up, post :class:`DecisionLooked`."""
        try:
            decision = self.services.explain(order_id)
            lines_of = self.services.edited
            edited = None if decision is None or lines_of is None else lines_of(order_id)
        except Exception as exc:  # said on the status line
            self.post_message(WorkFailed("Could not read the decision", exc))
            return
        self.post_message(DecisionLooked(order_id, decision, edited))

    @on(WorkFailed)
    def _work_failed(self, message: WorkFailed) -> None:
        message.stop()
        self.set_status(f"{message.what}: {describe_error(message.error)}")

    @on(RoutingLoaded)
    def _loaded(self, message: RoutingLoaded) -> None:
        message.stop()
        self.current = message.routing
        self.draft = message.routing
        self.render_rules(0)

    @on(WhatIfComputed)
    def _what_if_computed(self, message: WhatIfComputed) -> None:
        message.stop()
        can_save = self.services.save_rules is not None and self.dirty
        self.app.push_screen(
            WhatIfScreen(report=message.report, can_save=can_save), self._after_whatif
        )

    @on(RoutingSaved)
    def _saved(self, message: RoutingSaved) -> None:
        message.stop()
        self.current = message.routing
        self.draft = message.routing
        self.render_rules()
        self.set_status("")
        self.notify("Routing rules saved; every process picks them up within seconds.")

    @on(DecisionLooked)
    def _decision_looked(self, message: DecisionLooked) -> None:
        message.stop()
        if message.decision is None:
            self.set_status(
                f"No routing decision stored for order {message.order_id!r}: the rules route"
                " only orders placed without a node (this one came with its own, or is unknown)."
            )
        else:
            self.set_status("")
            screen = DecisionScreen(decision=message.decision, tz=self.tz, edited=message.edited)
            self.app.push_screen(screen)

    # -- editing -----------------------------------------------------------------------------

    def _check(self, index: int | None, at: int = 0) -> Callable[[RoutingRule], str | None]:
        def check(rule: RoutingRule) -> str | None:
            try:
                self._with_rule(index, rule, at)
            except ValidationError as exc:
                return describe_error(exc)
            return None

        return check

    def _with_rule(self, index: int | None, rule: RoutingRule, at: int = 0) -> FulfillmentRouting:
        """The draft with ``rule`` replacing rule ``index`` (None: inserted at ``at``).

        Raises:
            ValidationError: when the whole draft would be invalid (e.g. a duplicate id).
        """
        rules = list(self.draft.rules)
        if index is None:
            rules.insert(at, rule)
        else:
            rules[index] = rule
        return FulfillmentRouting.model_validate(
            {**self.draft.model_dump(exclude={"rules"}), "rules": [r.model_dump() for r in rules]}
        )

    def _set_draft(self, draft: FulfillmentRouting, cursor: int | None = None) -> None:
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

        self.app.push_screen(RoutingRuleFormScreen(rule=rule, check=self._check(index)), done)

    def action_new(self) -> None:
        """Add a rule after the highlighted one."""
        selected = self._selected()
        at = 0 if selected is None else selected + 1

        def done(result: RoutingRule | None) -> None:
            if result is not None:
                self._set_draft(self._with_rule(None, result, at), at)

        self.app.push_screen(RoutingRuleFormScreen(rule=None, check=self._check(None, at)), done)

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

        def chosen(answer: dict[str, str] | None) -> None:
            order_id = (answer or {}).get("order", "").strip()
            if order_id:
                self._explain(order_id)

        self.app.push_screen(
            PromptScreen(
                "Why did it go there? Order id:",
                [PromptField("order", "", placeholder="#41001")],
                "Enter shows its decision · Escape cancels",
            ),
            chosen,
        )

    def action_back(self) -> None:
        """Leave; with unsaved changes, the first Escape only warns."""
        if self.dirty and not self._discard_armed:
            self._discard_armed = True
            self.set_status("The draft has unsaved changes: Escape again discards them, s saves.")
            return
        self.dismiss()
