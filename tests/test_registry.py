"""The metric registry: README table, catalogue, shipped defaults, and rule-following highlights."""

from __future__ import annotations

import argparse
import io
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from console.widgets.bars import sales_content
from console.widgets.panels import FulfillmentPanel
from rules.alerts.samples import samples
from rules.cli import run_rules
from rules.file import default_rules_text, parse_rules
from rules.highlights import Highlights, RulesHighlights
from store.registry import METRICS, markdown_table
from tests.snapshot_factory import TZ, build_snapshots

README = Path(__file__).resolve().parent.parent / "README.md"
_TABLE = re.compile(r"<!-- metric-table:begin[^>]*-->\n(.*?)<!-- metric-table:end -->", re.S)


def _rules(text: str) -> Highlights:
    return Highlights.from_rules(parse_rules(text, Path("rules.toml")))


def _rule(metric: str, op: str, threshold: float, matchers: str = "", enabled: bool = True) -> str:
    return (
        f'[[alert]]\nid = "r"\nmetric = "{metric}"\nmatchers = \'{matchers}\'\n'
        f'op = "{op}"\nthreshold = {threshold}\nenabled = {str(enabled).lower()}\n'
    )


def test_readme_metric_table_is_the_registry() -> None:
    found = _TABLE.search(README.read_text(encoding="utf-8"))
    assert found is not None, "README lost its metric table markers"
    assert found.group(1) == markdown_table(), (
        "README's metric table differs from store/registry.py; regenerate it with "
        "`omniops rules metrics --markdown`"
    )


def test_table_has_one_row_per_metric_with_its_levels() -> None:
    rows = [line for line in markdown_table().splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == list(METRICS)
    on_time = next(r for r in rows if "`fulfillment.on_time_rate`" in r)
    assert on_time.endswith("| < 0.9 / < 0.9 |")


def test_rules_metrics_command_reads_the_registry() -> None:
    out = io.StringIO()
    assert run_rules(argparse.Namespace(rules_command="metrics", markdown=False), out=out) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) == len(METRICS)
    assert any(
        line.startswith("carrier.delay_hours") and "mean delay vs estimate" in line
        for line in lines
    )
    md = io.StringIO()
    run_rules(argparse.Namespace(rules_command="metrics", markdown=True), out=md)
    assert md.getvalue() == markdown_table()


def test_every_sampled_metric_is_declared_and_every_declared_one_sampled() -> None:
    sampled = {s.metric for s in samples(build_snapshots())}
    assert sampled == set(METRICS)


def test_registry_alert_levels_are_the_shipped_default_rules() -> None:
    shipped = parse_rules(default_rules_text(), Path("defaults.toml"))
    for rule in shipped.alert:
        info = METRICS[rule.metric]
        assert (info.op, info.alert) == (rule.op, rule.threshold), rule.id
    with_alert = {m.id for m in METRICS.values() if m.alert is not None}
    assert with_alert == {r.metric for r in shipped.alert}


def test_level_in_force_is_the_first_matching_enabled_rule_else_the_default() -> None:
    location = {"scope": "location", "location": "WH-TX"}
    channel = {"scope": "channel", "channel": "web"}
    none = Highlights()
    default = none.level("fulfillment.on_time_rate", location)
    assert default is not None and (default.op, default.level, default.source) == (
        "<",
        0.9,
        "default",
    )
    hl = _rules(_rule("fulfillment.on_time_rate", "<", 0.85, "scope=location"))
    level = hl.level("fulfillment.on_time_rate", location)
    assert level is not None and (level.level, level.source) == (0.85, "rule r")
    fallback = hl.level("fulfillment.on_time_rate", channel)  # the rule does not select it
    assert fallback is not None and fallback.source == "default"
    off = _rules(_rule("fulfillment.on_time_rate", "<", 0.5, enabled=False))
    disabled = off.level("fulfillment.on_time_rate", location)
    assert disabled is not None and disabled.source == "default"
    assert none.level("fulfillment.open_orders", location) is None  # no default level
    assert not none.flags("fulfillment.on_time_rate", location, None)  # no data: no flag


def test_sales_low_follows_the_rule_threshold() -> None:
    headline = build_snapshots().headline  # 26 % below rolling (ratio 0.744)
    assert "LOW" in sales_content(headline).plain  # the default: 20 % below
    looser = _rules(_rule("headline.net_sales_vs_rolling", "<", 0.70))
    assert "LOW" not in sales_content(headline, highlights=looser).plain
    stricter = _rules(_rule("headline.net_sales_vs_rolling", "<", 0.75))
    assert "LOW" in sales_content(headline, highlights=stricter).plain


def _on_time_flagged(highlights: Highlights) -> set[str]:
    panel = FulfillmentPanel(tz=TZ)
    panel.highlights = highlights
    views = panel.build_rows(build_snapshots())
    return {v.key for v in views if v.cells["on_time"][1] == panel.palette.warn}


def test_on_time_highlight_follows_the_rule_threshold() -> None:
    # WH-TX 0.871, UPS 0.912, marketplace 0.934, STORE-AUS-01 0.953, web 0.962
    assert _on_time_flagged(Highlights()) == {"location:WH-TX"}
    assert _on_time_flagged(_rules(_rule("fulfillment.on_time_rate", "<", 0.85))) == set()
    stricter = _rules(_rule("fulfillment.on_time_rate", "<", 0.95, "scope=carrier"))
    assert _on_time_flagged(stricter) == {"location:WH-TX", "carrier:UPS"}


def test_rules_highlights_follow_the_file_and_keep_the_last_good(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(_rule("fulfillment.on_time_rate", "<", 0.8), encoding="utf-8")
    follower = RulesHighlights(path)
    first = follower.refresh().level("fulfillment.on_time_rate")
    assert first is not None and first.level == 0.8
    path.write_text(_rule("fulfillment.on_time_rate", "<", 0.7), encoding="utf-8")
    os.utime(path, ns=(1, 2))  # a different mtime even on coarse file systems
    second = follower.refresh().level("fulfillment.on_time_rate")
    assert second is not None and second.level == 0.7
    path.write_text("[[alert]]\nid = 3\n", encoding="utf-8")
    os.utime(path, ns=(3, 4))
    kept = follower.refresh().level("fulfillment.on_time_rate")
    assert kept is not None and kept.level == 0.7
    assert follower.current().level("fulfillment.on_time_rate") == kept


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_every_metric_has_a_definition_unit_and_panel(metric: str) -> None:
    info = METRICS[metric]
    assert info.definition and info.unit and info.panel
    assert (info.op is None) == (info.default_level is None)


def test_the_fulfillment_title_says_carrier_lateness_apart_from_order_lateness() -> None:
    """Totals are orders against their promise; a carrier row's late is past its estimate."""
    snapshots = build_snapshots()
    panel = FulfillmentPanel(tz=TZ)
    overdue = sum(r.late for r in snapshots.fulfillment.rows if r.scope == "carrier")
    assert overdue > 0  # the fixture has parcels past the carrier's estimate
    title = panel.summary(snapshots, panel.build_rows(snapshots)).plain
    assert f"{snapshots.fulfillment.total_late:,} LATE" in title
    assert title.endswith(f"· {overdue:,} in transit past estimate")
    quiet = replace(
        snapshots,
        fulfillment=replace(
            snapshots.fulfillment,
            rows=tuple(
                replace(r, late=0) if r.scope == "carrier" else r
                for r in snapshots.fulfillment.rows
            ),
        ),
    )
    assert "past estimate" not in panel.summary(quiet, panel.build_rows(quiet)).plain
