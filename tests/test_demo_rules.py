"""The demo ships its retailer's fulfillment routing: orders go by it, and a what-if moves them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from feeds.runtime.demo_rules import ensure_demo_rules
from rules.file import load_rules
from rules.routing.config import NodeSettings
from rules.routing.router import route_sequence
from rules.whatif import what_if
from tests.routing_world import FIXTURE_DAY, fixture_day_inputs


def test_the_demo_rules_file_carries_routing_and_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    assert ensure_demo_rules(path, FIXTURE_DAY)
    routing = load_rules(path).rules.fulfillment
    assert routing.rules[0].id == "bopis-nearest-store"
    assert {"northeast", "west"} <= set(routing.regions)
    path.write_text(path.read_text() + "\n# the operator's edit\n")
    assert not ensure_demo_rules(path, FIXTURE_DAY)  # never overwrites an existing file
    assert path.read_text().endswith("# the operator's edit\n")


def test_without_a_routing_file_beside_the_fixtures_the_defaults_alone(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    ensure_demo_rules(path, tmp_path / "elsewhere" / "day")
    assert load_rules(path).rules.fulfillment.rules == []


def test_the_fixture_day_is_routed_by_the_demo_rules_and_a_draft_moves_orders(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.toml"
    ensure_demo_rules(path, FIXTURE_DAY)
    current = load_rules(path).rules.fulfillment
    inputs = fixture_day_inputs()
    decisions = route_sequence(inputs.orders, inputs.inventory, inputs.nodes, current)
    by_rule = Counter(d.rule_id for d in decisions)
    # every rule of the file takes part; nothing falls through to the built-in defaults
    assert set(by_rule) == {r.id for r in current.rules}
    assert all(d.status == "routed" for d in decisions)
    draft = current.model_copy(update={"nodes": {"WH-NJ": NodeSettings(enabled=False)}})
    report = what_if(inputs, current, draft)
    assert report.current.load["WH-NJ"] > 0 and "WH-NJ" not in report.draft.load
    assert len(report.changed) >= report.current.load["WH-NJ"]
