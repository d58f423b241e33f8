"""The rules file: located errors, the shipped defaults, comment-keeping atomic saves, the
audit log, conflicts, roles, and the ``omniops rules`` commands."""

from __future__ import annotations

import argparse
import io
from datetime import timedelta
from pathlib import Path

import pytest

from rules.cli import add_rules_arguments, run_rules
from rules.editor import ConflictError, RulesEditor
from rules.file import (
    RulesFileError,
    default_rules_text,
    ensure_rules_file,
    load_rules,
    parse_rules,
)
from rules.labels import format_duration, parse_duration
from rules.roles import PermissionDenied, Permissions
from rules.routing.config import FulfillmentRouting
from rules.rule_form import FormError, form_values, rule_form_fields
from rules.toml_lines import key_lines
from store.clock import FixedClock
from tests.snapshot_factory import AS_OF

GOOD = """\
# Our rules.
[[alert]]
id = "late_orders"          # pages the warehouse
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 10
clear = 5
for = "5m"
description = \"\"\"
Too many late orders.
threshold = 3 is not a key here\"\"\"

# The second rule.
[[alert]]
id = "stale_feed"
metric = "feed.stale"
op = ">="
threshold = 1
no_data = "alert"

[notify.route]
receiver = "console"   # the root

[[notify.route.routes]]
matchers = 'severity=critical'
receiver = "hook"

[[notify.route.routes.routes]]
matchers = 'location=~WH-.*'

[[notify.receivers]]
name = "hook"
type = "webhook"
url = "http://127.0.0.1:9/hook"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(RulesFileError) as caught:
        parse_rules(text, Path("rules.toml"))
    return [str(p) for p in caught.value.problems]


def test_the_shipped_defaults_are_valid_and_cover_the_issue() -> None:
    rules = parse_rules(default_rules_text(), Path("defaults.toml"))
    assert {r.id for r in rules.alert} == {
        "return_spike",
        "stockout_risk_best_sellers",
        "late_orders",
        "on_time_rate_low",
        "pick_time_p90_high",
        "carrier_delay",
        "net_sales_drop",
        "aov_drop",
        "stale_feed",
    }
    assert rules.rule("net_sales_drop") is not None
    assert rules.notify.inhibit[0].equal == ("channel",)


def test_key_lines_follow_arrays_of_tables_and_skip_multiline_strings() -> None:
    lines = key_lines(GOOD)
    assert lines[("alert", 0, "threshold")] == 7
    assert lines[("alert", 1, "threshold")] == 19
    assert ("alert", 0, "description", "threshold") not in lines
    assert lines[("notify", "route", "routes", 0, "receiver")] == 27
    assert lines[("notify", "route", "routes", 0, "routes", 0, "matchers")] == 30
    assert lines[("notify", "receivers", 0, "url")] == 35


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("threshold = 10", 'threshold = "ten"', "rules.toml:7: alert[late_orders].threshold: "),
        (
            'metric = "feed.stale"',
            'metric = "feed.stail"',
            "rules.toml:17: alert[stale_feed].metric: unknown metric 'feed.stail'",
        ),
        (
            "clear = 5",
            "clear = 5\nthreshhold = 3",
            "rules.toml:9: alert[late_orders].threshhold: unknown field",
        ),
        ('op = ">"', 'op = "=>"', "rules.toml:6: alert[late_orders].op: Input should be"),
        ('for = "5m"', 'for = "5 min"', "rules.toml:9: alert[late_orders].for: bad duration"),
        # Non-finite levels would make a rule that never fires (nan) or never clears.
        ("threshold = 10", "threshold = nan", "rules.toml:7: alert[late_orders].threshold: "),
        ("clear = 5", "clear = -inf", "rules.toml:8: alert[late_orders].clear: "),
        # Durations that would overflow the engine's arithmetic are refused, located.
        ('for = "5m"', "for = inf", "rules.toml:9: alert[late_orders].for: a duration is at most"),
        ('for = "5m"', "for = nan", "rules.toml:9: alert[late_orders].for: a duration is text"),
        (
            'for = "5m"',
            "for = 100000000000000000000",
            "rules.toml:9: alert[late_orders].for: a duration is at most 36500d",
        ),
        (
            'for = "5m"',
            'for = "99999999999999d"',
            "rules.toml:9: alert[late_orders].for: a duration is at most 36500d",
        ),
        ("clear = 5", "clear = 12", "rules.toml:8: alert[late_orders].clear: clear 12 is above"),
        (
            "matchers = 'scope=location'",
            "matchers = 'location=~WH-(['",
            "rules.toml:5: alert[late_orders].matchers: bad regular expression",
        ),
        (
            'id = "stale_feed"',
            'id = "late_orders"',
            "rules.toml:16: alert[late_orders].id: duplicate alert id 'late_orders'",
        ),
        (
            'receiver = "hook"',
            'receiver = "hoook"',
            "rules.toml:27: notify.route.routes[#1].receiver: unknown receiver 'hoook'",
        ),
        (
            'url = "http://127.0.0.1:9/hook"',
            'url = "ftp://x"',
            "rules.toml:35: notify.receivers[hook].url: ",
        ),
        ('op = ">="', 'op = ">=\nthreshold = 2', "rules.toml:18:"),
    ],
)
def test_errors_name_the_file_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    found = problems(GOOD.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_a_table_defined_twice_around_an_array_of_tables_is_located() -> None:
    # tomlkit reports this one only when the document is read, and without a line (another
    # table in between, so the first one's parent is defined out of order).
    text = GOOD + "\n[f.r.m]\na = 1\n\n[g.r.w]\na = 2\n\n[[f.rules]]\nid = 1\n\n[f.r.m]\nb = 2\n"
    last = len(text.splitlines()) - 1
    assert problems(text) == [f'rules.toml:{last}: TOML syntax: Key "m" already exists.']


def test_a_missing_field_points_at_its_table() -> None:
    found = problems(GOOD.replace('op = ">="\n', ""))
    assert found == ["rules.toml:15: alert[stale_feed].op: missing: this field is required"]


def test_durations_round_trip() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("0") == timedelta(0)
    assert format_duration(timedelta(minutes=90)) == "1h30m"
    assert format_duration(timedelta(0)) == "0s"
    with pytest.raises(ValueError):
        parse_duration("5 minutes")
    assert parse_duration("36500d") == timedelta(days=36_500)  # the longest allowed
    with pytest.raises(ValueError, match="at most 36500d"):
        parse_duration("36500d1s")


def test_form_values_say_which_field_is_wrong() -> None:
    fields = rule_form_fields(parse_rules(GOOD, Path("r.toml")).alert[0])
    assert form_values(fields)["threshold"] == 10
    with pytest.raises(FormError, match="threshold: not a number"):
        form_values({**fields, "threshold": "ten"})
    with pytest.raises(FormError, match="labels: expected key=value"):
        form_values({**fields, "labels": "team"})


# -- the editor ------------------------------------------------------------------------------


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD)
    return path


def editor_for(path: Path, role: str = "editor", read_only: bool = False) -> RulesEditor:
    return RulesEditor(
        path,
        permissions=Permissions("erin", role, read_only),  # type: ignore[arg-type]
        clock=FixedClock(AS_OF),
    )


def test_saving_changes_only_the_field_and_keeps_comments_and_audits(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    base = editor.load()
    saved = editor.save_alert(base, 0, {"threshold": 12.5, "for": "10m"})
    text = rules_path.read_text()
    assert text == GOOD.replace("threshold = 10", "threshold = 12.5").replace(
        'for = "5m"', 'for = "10m"'
    )
    assert saved.rules.alert[0].threshold == 12.5
    assert load_rules(rules_path).digest == saved.digest
    assert [p.name for p in rules_path.parent.iterdir() if p.name.endswith(".tmp")] == []
    (entry,) = editor.audit()
    assert (entry.user, entry.action, entry.at) == ("erin", "edited alert late_orders", AS_OF)
    assert "-threshold = 10\n+threshold = 12.5" in entry.diff


def test_add_duplicate_disable_delete(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    base = editor.load()
    base = editor.save_alert(
        base,
        None,
        form_values(
            {
                "id": "aov_drop",
                "metric": "headline.aov_vs_rolling",
                "matchers": "",
                "op": "<",
                "threshold": "0.8",
                "clear": "0.9",
                "for": "30m",
                "severity": "warning",
                "no_data": "keep",
                "labels": "team=web",
                "description": "AOV fell.",
                "enabled": "yes",
            }
        ),
    )
    assert base.rules.alert[2].labels == {"team": "web"}
    base = editor.duplicate_alert(base, 0)
    assert base.rules.alert[3].id == "late_orders_copy"
    base = editor.set_enabled(base, 3, False)
    assert not base.rules.alert[3].enabled
    base = editor.delete_alert(base, 3)
    assert [r.id for r in base.rules.alert] == ["late_orders", "stale_feed", "aov_drop"]
    assert "# The second rule." in rules_path.read_text()
    assert len(editor.audit()) == 4


def test_a_new_key_goes_after_the_tables_last_key_not_after_the_next_tables_comment(
    rules_path: Path,
) -> None:
    """The comment before a table stays with it when a key is added to the table above."""
    text = GOOD.replace(
        '[[alert]]\nid = "late_orders"', '[[alert]]  # header note\nid = "late_orders"'
    )
    rules_path.write_text(text)
    editor = editor_for(rules_path)
    base = editor.set_enabled(editor.load(), 0, False)  # a key the table did not have
    assert not base.rules.alert[0].enabled
    written = rules_path.read_text()
    assert written == text.replace(
        'threshold = 3 is not a key here"""\n',
        'threshold = 3 is not a key here"""\nenabled = false\n',
    )
    assert "[[alert]]  # header note\n" in written
    editor.set_enabled(base, 0, True)  # and back: the key goes, the file is as it was
    assert rules_path.read_text() == text


def test_a_file_changed_on_disk_is_not_overwritten(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    base = editor.load()
    by_hand = GOOD.replace("threshold = 10", "threshold = 11")
    rules_path.write_text(by_hand)
    with pytest.raises(ConflictError, match="changed on disk since you opened it"):
        editor.save_alert(base, 0, {"threshold": 20})
    assert rules_path.read_text() == by_hand
    assert editor.audit() == []


def test_an_invalid_change_or_a_viewer_writes_nothing(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    base = editor.load()
    with pytest.raises(RulesFileError, match="unknown metric"):
        editor.save_alert(base, 0, {"metric": "nope"})
    with pytest.raises(RulesFileError, match="duplicate alert id"):
        editor.save_alert(base, 1, {"id": "late_orders"})
    for who in (editor_for(rules_path, "viewer"), editor_for(rules_path, "editor", True)):
        with pytest.raises(PermissionDenied):
            who.save_alert(base, 0, {"threshold": 1})
        with pytest.raises(PermissionDenied):
            who.delete_alert(base, 0)
    assert rules_path.read_text() == GOOD


@pytest.mark.parametrize(
    ("role", "read_only"), [("viewer", False), ("operator", False), ("editor", True)]
)
def test_every_mutating_editor_method_checks_the_role(
    rules_path: Path, role: str, read_only: bool
) -> None:
    base = editor_for(rules_path).load()
    who = editor_for(rules_path, role, read_only)
    routing = FulfillmentRouting(default_carrier="UPS Ground")
    calls = {
        "save_alert": lambda: who.save_alert(base, 0, {"threshold": 1}),
        "duplicate_alert": lambda: who.duplicate_alert(base, 0),
        "delete_alert": lambda: who.delete_alert(base, 0),
        "set_enabled": lambda: who.set_enabled(base, 0, False),
        "replace_notify": lambda: who.replace_notify(base, who.notify_text(base)),
        "save_fulfillment": lambda: who.save_fulfillment(base, routing),
    }
    for name, call in calls.items():
        with pytest.raises(PermissionDenied, match="read-only" if read_only else role):
            call()
        assert rules_path.read_text() == GOOD, name
    assert who.audit() == []
    saved = editor_for(rules_path).save_fulfillment(base, routing)  # an editor may
    assert saved.rules.fulfillment.default_carrier == "UPS Ground"


def test_notify_section_edited_as_text_keeps_its_comments(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    base = editor.load()
    text = editor.notify_text(base)
    assert "# the root" in text
    with pytest.raises(RulesFileError, match="unknown receiver"):
        editor.replace_notify(base, text.replace('receiver = "hook"', 'receiver = "x"'), save=False)
    saved = editor.replace_notify(base, text.replace("severity=critical", "severity=warning"))
    assert saved.rules.notify.route.routes[0].matchers[0].value == "warning"
    assert "# the root" in rules_path.read_text()
    assert "# Our rules." in rules_path.read_text()


def test_the_defaults_are_written_once(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "rules.toml"
    assert ensure_rules_file(path)
    assert path.read_text() == default_rules_text()
    path.write_text(GOOD)
    assert not ensure_rules_file(path)
    assert path.read_text() == GOOD


# -- the command line ---------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="omniops")
    add_rules_arguments(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = run_rules(parser.parse_args(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_rules_check_exits_non_zero_with_the_located_error(rules_path: Path) -> None:
    code, out, _ = run("rules", "check", str(rules_path))
    assert code == 0 and "OK, 2 alert rules" in out
    rules_path.write_text(GOOD.replace("threshold = 10", "threshold = = 10"))
    code, _, err = run("rules", "check", str(rules_path))
    assert code == 1
    assert f"{rules_path}:7" in err and "refused" in err
    code, _, err = run("rules", "check", str(rules_path.with_name("missing.toml")))
    assert code == 1 and "cannot read" in err


def test_route_test_prints_receivers_and_path(rules_path: Path) -> None:
    code, out, _ = run(
        "rules", "route-test", "--file", str(rules_path), "severity=critical", "location=WH-NJ"
    )
    assert code == 0
    assert "→ hook  via root > routes[0] {severity=critical} > routes[0] {location=~WH-.*}" in out
    code, _, err = run("rules", "route-test", "--file", str(rules_path), "severity")
    assert code == 2 and "key=value" in err


def test_fulfillment_kinds_and_known_nodes_and_carriers_are_checked_with_their_line() -> None:
    text = (
        "alert = []\n"
        "[fulfillment]\n"
        'default_carrier = "ground"\n'
        "[[fulfillment.rules]]\n"
        'id = "stores"\n'
        'kinds = ["store", "shop"]\n'
        "[[fulfillment.carriers]]\n"
        'match = "node_kind=wherehouse"\n'
        'carrier = "UPS"\n'
    )
    found = problems(text)
    assert any(p.startswith("rules.toml:6: fulfillment.rules[stores].kinds") for p in found)
    assert any("rules.toml:8:" in p and "unknown node kind 'wherehouse'" in p for p in found)
    references = (
        "alert = []\n"
        "[fulfillment]\n"
        'default_carrier = "ground"\n'
        "[[fulfillment.carriers]]\n"
        'match = "node=WH-XX"\n'
        'carrier = "Pigeon"\n'
        "[fulfillment.nodes.STORE-9]\n"
        "rank = 1\n"
    )
    rules = parse_rules(references, Path("rules.toml"))  # ids unknown to a static check
    assert rules.fulfillment.carriers[0].carrier == "Pigeon"
    with pytest.raises(RulesFileError) as caught:
        parse_rules(
            references,
            Path("rules.toml"),
            known_nodes={"WH-NJ"},
            known_carriers={"UPS", "ground"},
        )
    found = sorted((p.line, p.message.split(";")[0]) for p in caught.value.problems)
    assert found == [
        (5, "unknown node 'WH-XX' in 'node=WH-XX'"),
        (6, "unknown carrier 'Pigeon'"),
        (7, "unknown node 'STORE-9'"),
    ]


def test_deleting_the_last_alert_writes_an_explicit_empty_list(rules_path: Path) -> None:
    editor = editor_for(rules_path)
    first = editor.delete_alert(editor.load(), 1)
    emptied = editor.delete_alert(first, 0)
    assert emptied.rules.alert == ()
    text = rules_path.read_text()
    assert "alert = []" in text and text.index("alert = []") < text.index("[notify.route]")
    again = editor.save_alert(
        emptied, None, {"id": "x", "metric": "feed.stale", "op": ">=", "threshold": 1}
    )
    assert [r.id for r in again.rules.alert] == ["x"]
    assert "alert = []" not in rules_path.read_text()


@pytest.mark.parametrize("days", [float("inf"), float("nan"), 400.0])
def test_a_carriers_transit_time_is_finite_and_at_most_a_year(days: float) -> None:
    # Infinity reached the router's ship-by + transit sum (an OverflowError per order).
    with pytest.raises(ValueError, match="transit_days") as caught:
        FulfillmentRouting.model_validate({"carriers": [{"carrier": "UPS", "transit_days": days}]})
    assert "carriers.0.transit_days" in str(caught.value).replace("\n", ".")
    FulfillmentRouting.model_validate({"carriers": [{"carrier": "UPS", "transit_days": 365}]})
