"""The routing view in a tiny app, driven by Pilot at 80×24."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from textual.app import App
from textual.widgets import DataTable, Input, Static

from console.screens.decision import DecisionScreen
from console.screens.routing import RoutingScreen, RoutingServices
from console.screens.routing_form import RoutingRuleFormScreen, form_to_rule, rule_to_form
from console.screens.whatif import WhatIfScreen
from rules.routing.config import FulfillmentRouting, RoutingRule
from rules.routing.orders import Decision, RouteLine, RouteOrder
from rules.routing.router import route
from rules.whatif import ReplayInputs, WhatIfReport, what_if
from store.reservations import EditedLines
from tests.routing_world import NODES, inventory, ny

START = FulfillmentRouting.model_validate(
    {
        "rules": [
            {"id": "nj-first", "kinds": ["warehouse"], "rank_by": ["distance"], "window": "any"},
            {"id": "stores", "kinds": ["store"], "window": "any", "description": "last resort"},
        ]
    }
)
STOCK = inventory({("TEE", "WH-NJ"): 9, ("TEE", "WH-TX"): 9, ("TEE", "ST-NYC"): 9})
ORDERS = [
    (
        RouteOrder(
            order_id=f"o{n}",
            destination_region="northeast",
            lines=[RouteLine(sku="TEE", quantity=1)],
        ),
        ny(9 + n),
    )
    for n in range(3)
]


class Fake:
    def __init__(self, *, read_only: bool = False, edited: EditedLines | None = None) -> None:
        self.rules = START
        self.saved: list[FulfillmentRouting] = []
        self.read_only = read_only
        self.edited = edited

    def services(self) -> RoutingServices:
        return RoutingServices(
            load_rules=lambda: self.rules,
            what_if=self.what_if,
            explain=self.explain,
            edited=lambda order_id: self.edited if order_id == "o1" else None,
            save_rules=None if self.read_only else self.save,
        )

    def what_if(self, current: FulfillmentRouting, draft: FulfillmentRouting) -> WhatIfReport:
        return what_if(ReplayInputs(orders=ORDERS, inventory=STOCK, nodes=NODES), current, draft)

    def explain(self, order_id: str) -> Decision | None:
        if order_id != "o1":
            return None
        return route(ORDERS[1][0], STOCK, NODES, self.rules, ORDERS[1][1])

    def save(self, draft: FulfillmentRouting) -> FulfillmentRouting:
        if draft.rules and draft.rules[0].id == "boom":
            raise ValueError("rules.toml changed on disk since you opened it")
        self.saved.append(draft)
        self.rules = draft
        return draft


class Host(App[None]):
    def __init__(self, fake: Fake) -> None:
        super().__init__()
        self.fake = fake

    def on_mount(self) -> None:
        self.push_screen(RoutingScreen(services=self.fake.services(), tz=UTC))


async def settle(pilot: Any) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def screen(app: App[None]) -> Any:
    return app.screen


def rows(app: App[None], table_id: str) -> list[list[str]]:
    table = app.screen.query_one(table_id, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text(app: App[None], widget_id: str) -> str:
    return str(app.screen.query_one(widget_id, Static).render())


async def test_list_toggle_reorder_delete_and_back() -> None:
    app = Host(Fake())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = screen(app)
        assert isinstance(view, RoutingScreen)
        assert [r[:3] for r in rows(app, "#routing-rules")] == [
            ["1", "on", "nj-first"],
            ["2", "on", "stores"],
        ]
        assert "2 rules · in force" in text(app, "#routing-title")
        await pilot.press("t")
        assert rows(app, "#routing-rules")[0][1] == "off"
        assert "draft, unsaved" in text(app, "#routing-title")
        await pilot.press("d")  # move nj-first down
        assert [r[2] for r in rows(app, "#routing-rules")] == ["stores", "nj-first"]
        assert view.table.cursor_row == 1
        await pilot.press("u")
        assert [r[2] for r in rows(app, "#routing-rules")] == ["nj-first", "stores"]
        await pilot.press("down", "x")
        assert [r[2] for r in rows(app, "#routing-rules")] == ["nj-first"]
        await pilot.press("escape")  # warns: unsaved draft
        assert app.screen is view
        assert "Escape again discards" in text(app, "#routing-status")
        await pilot.press("escape")
        assert not isinstance(app.screen, RoutingScreen)


async def test_edit_form_validates_and_changes_the_draft() -> None:
    fake = Fake()
    app = Host(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, RoutingRuleFormScreen)
        match = form.query_one("#rf-match", Input)
        match.value = "regoin=west"
        await pilot.press("enter")
        assert app.screen is form
        assert "unknown label 'regoin'" in text(app, "#routing-form-error")
        match.value = "region=west"
        form.query_one("#rf-max_splits", Input).value = "two"
        form.action_accept()
        assert "Max splits: expected a whole number" in text(app, "#routing-form-error")
        form.query_one("#rf-max_splits", Input).value = "1"
        form.action_accept()
        await pilot.pause()
        view = screen(app)
        assert isinstance(view, RoutingScreen)
        assert view.draft.rules[0].match == "region=west"
        assert view.draft.rules[0].max_splits == 1
        assert fake.saved == []  # a draft, not saved


async def test_new_rule_with_a_duplicate_id_is_refused() -> None:
    app = Host(Fake())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("n")
        form = app.screen
        assert isinstance(form, RoutingRuleFormScreen)
        form.query_one("#rf-id", Input).value = "stores"
        form.action_accept()
        assert "rule id 'stores' is used twice" in text(app, "#routing-form-error")
        form.query_one("#rf-id", Input).value = "dropship"
        form.query_one("#rf-kinds", Input).value = "dropship"
        form.action_accept()
        await pilot.pause()
        view = screen(app)
        assert [r.id for r in view.draft.rules] == ["nj-first", "dropship", "stores"]


async def test_what_if_then_save() -> None:
    fake = Fake()
    app = Host(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = screen(app)
        await pilot.press("t")  # nj-first off: everything goes to the stores
        await pilot.press("s")
        await settle(pilot)
        report_screen = app.screen
        assert isinstance(report_screen, WhatIfScreen)
        summary = {r[0]: r[1:] for r in rows(app, "#whatif-summary")}
        assert summary["Orders replayed"] == ["3", "3"]
        assert summary["Orders changing node"] == ["", "3"]
        assert rows(app, "#whatif-changes")[0][:3] == ["o0", "WH-NJ", "ST-NYC"]
        assert "WH-NJ 3→0" in text(app, "#whatif-load")
        await pilot.press("s")
        await settle(pilot)
        assert app.screen is view
        assert len(fake.saved) == 1 and not fake.saved[0].rules[0].enabled
        assert "in force" in text(app, "#routing-title")


async def test_failed_save_keeps_the_draft_and_says_why() -> None:
    fake = Fake()
    app = Host(fake)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = screen(app)
        boom = RoutingRule(id="boom", window="any")
        view.draft = view.draft.model_copy(update={"rules": [boom, *view.draft.rules]})
        view.action_save()
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert app.screen is view
        assert fake.saved == [] and view.dirty
        assert "Not saved: rules.toml changed on disk" in text(app, "#routing-status")


async def test_read_only_console_cannot_save() -> None:
    app = Host(Fake(read_only=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("t", "s")
        assert "Read-only console" in text(app, "#routing-status")
        await pilot.press("w")
        await settle(pilot)
        assert isinstance(app.screen, WhatIfScreen)
        assert app.screen.check_action("save", ()) is False


async def test_why_did_it_go_there() -> None:
    app = Host(Fake())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("y")
        await pilot.press(*"nope", "enter")
        await settle(pilot)
        assert "No routing decision stored for order 'nope'" in text(app, "#routing-status")
        await pilot.press("y")
        await pilot.press("o", "1", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DecisionScreen)
        trace = rows(app, "#decision-trace")
        assert trace[0][:3] == ["nj-first", "", "chosen"]
        outcomes = {r[1]: r[2] for r in trace if r[1]}
        assert outcomes["WH-NJ"] == "chosen" and outcomes["ST-NYC"] == "rejected"
        assert "routed · rule nj-first" in text(app, "#decision-head")
        await pilot.press("escape")
        assert isinstance(app.screen, RoutingScreen)


def test_form_round_trip() -> None:
    rule = RoutingRule(
        id="r",
        match="method=bopis",
        kinds=["store"],
        max_distance_km=25,
        buffers={"store": 2},
        rank_by=["distance"],
        min_value=10.5,
    )
    assert form_to_rule(rule_to_form(rule)) == rule


async def test_an_edited_order_shows_its_lines_now_beside_the_decision() -> None:
    at = datetime(2026, 11, 18, 16, 30, tzinfo=UTC)
    app = Host(Fake(edited=(int(at.timestamp()), [(0, "TEE", 3, "WH-NJ"), (1, "MUG", 1, None)])))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("y")
        await pilot.press("o", "1", "enter")
        await settle(pilot)
        assert isinstance(app.screen, DecisionScreen)
        head = text(app, "#decision-head")
        assert "routed · rule nj-first" in head
        assert "Edited" in head and "Wed 16:30, not re-routed" in head, head
        assert "TEE ×3 @ WH-NJ, MUG ×1 @ —" in head, head
