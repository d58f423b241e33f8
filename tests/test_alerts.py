"""Alert evaluation on a real store with a controllable clock: the lifecycle, end to end.

pending → firing → resolved, hysteresis, no-data semantics, acknowledgement, silences and
their expiry, a restart, removed rules, roles; plus the pure pieces (samples, preview,
panel targets) against hand-made snapshots.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rules.alerts.actions import AlertActions, panel_target
from rules.alerts.preview import preview_rule
from rules.alerts.rule import AlertRule
from rules.alerts.samples import samples
from rules.alerts.state import Observation, condition_text, step
from rules.engine import AlertEngine
from rules.file import RulesFile, default_rules_text, parse_rules
from rules.receivers import NotifyAlert
from rules.roles import PermissionDenied, Permissions, Roles
from store import alerts as store
from store.clock import FixedClock
from store.snapshots import FulfillmentRow, Snapshots
from tests.snapshot_factory import AS_OF, build_snapshots

BASE = build_snapshots()


def location_row(key: str, late: int, on_time: float | None = 0.95) -> FulfillmentRow:
    return FulfillmentRow(
        scope="location",
        key=key,
        open_orders=50,
        oldest_open_minutes=30.0,
        late=late,
        at_risk=0,
        on_time_rate=on_time,
        completed_24h=100,
        pick_p50_minutes=10.0,
        pick_p90_minutes=20.0,
        bopis_ready_rate=None,
        carrier_delay_hours=None,
        exceptions=0,
        status="LATE" if late else "OK",
    )


def snap(*rows: FulfillmentRow) -> Snapshots:
    """The hand-made snapshots with only the given fulfillment rows."""
    return replace(BASE, fulfillment=replace(BASE.fulfillment, rows=tuple(rows)))


def rule(**kw: Any) -> AlertRule:
    data: dict[str, Any] = {
        "id": "late_orders",
        "metric": "fulfillment.late",
        "matchers": "scope=location",
        "op": ">",
        "threshold": 10,
        "clear": 5,
        "for": "5m",
        "severity": "warning",
        "no_data": "ok",
    }
    data.update(kw)
    return AlertRule.model_validate(data)


def rules_file(*alerts: AlertRule, **notify: Any) -> RulesFile:
    return RulesFile.model_validate(
        {"alert": [a.model_dump(by_alias=True) for a in alerts], "notify": notify}
    )


class FakeNotifier:
    def __init__(self) -> None:
        self.calls: list[tuple[list[NotifyAlert], list[NotifyAlert]]] = []

    def submit(self, firing: Sequence[NotifyAlert], resolved: Sequence[NotifyAlert]) -> None:
        self.calls.append((list(firing), list(resolved)))

    @property
    def last_firing(self) -> list[str]:
        return [a.fingerprint for a in self.calls[-1][0]]

    @property
    def last_resolved(self) -> list[str]:
        return [a.fingerprint for a in self.calls[-1][1]]


@pytest.fixture
def connect(tmp_path: Path) -> Callable[[], sqlite3.Connection]:
    path = tmp_path / "store.db"
    return lambda: store.connect(path, create=True)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(AS_OF)


def engine_for(
    connect: Callable[[], sqlite3.Connection],
    clock: FixedClock,
    *alerts: AlertRule,
    notifier: FakeNotifier | None = None,
) -> AlertEngine:
    return AlertEngine(rules_file(*alerts), connect, clock, notifier, user="ops-bot")


def states(result: Any) -> dict[str, str]:
    return {v.record.scope: v.record.state for v in result.alerts}


WH_TX = "location=WH-TX, scope=location"
FP = f"late_orders|{WH_TX}"


# -- samples: the same numbers the panels show -------------------------------------------


def test_samples_read_the_panel_rows() -> None:
    by_key = {(s.metric, s.labels): s.value for s in samples(BASE)}
    assert by_key[("fulfillment.late", (("location", "WH-TX"), ("scope", "location")))] == 9
    assert by_key[("carrier.delay_hours", (("carrier", "UPS"), ("scope", "carrier")))] == 3.4
    assert (
        by_key[("feed.stale_minutes", (("channel", "marketplace"), ("feed", "marketplace")))] == 42
    )
    assert by_key[("feed.stale", (("channel", "marketplace"), ("feed", "marketplace")))] == 1.0
    h = BASE.headline
    assert h.net_sales_rolling is not None
    assert by_key[("headline.net_sales_vs_rolling", ())] == pytest.approx(
        h.net_sales / h.net_sales_rolling
    )
    # a SKU with no sales has no cover: no data, never zero
    no_sales = [s for s in samples(BASE) if s.metric == "stock.days_of_cover" and s.value is None]
    assert no_sales


def test_a_rule_can_name_delivered_late_against_the_promise() -> None:
    """``fulfillment.delivered_late`` and ``_rate`` are sampled from the rows the DlvLate
    column shows: 1 of 3 UPS deliveries late, none of 2 FedEx ones, a region row."""
    rows = list(BASE.fulfillment.rows)
    ups = next(i for i, r in enumerate(rows) if r.key == "UPS")
    rows[ups] = replace(rows[ups], delivered_late_24h=1, delivered_late_rate_24h=1 / 3)
    rows.append(
        replace(
            rows[ups], scope="region", key="NE", delivered_late_24h=0, delivered_late_rate_24h=0.0
        )
    )
    snaps = replace(BASE, fulfillment=replace(BASE.fulfillment, rows=tuple(rows)))
    by_key = {(s.metric, s.labels): s.value for s in samples(snaps)}
    assert by_key[("fulfillment.delivered_late", (("carrier", "UPS"), ("scope", "carrier")))] == 1
    assert (
        by_key[("fulfillment.delivered_late_rate", (("region", "NE"), ("scope", "region")))] == 0.0
    )
    late = rule(
        id="late_vs_promise",
        metric="fulfillment.delivered_late_rate",
        matchers="scope=~carrier|region",
        threshold=0.25,
        clear=None,
    )
    preview = preview_rule(late, samples(snaps))
    assert preview.firing == 1
    assert preview.examples[0] == ("carrier=UPS, scope=carrier", pytest.approx(1 / 3))


def test_preview_counts_scopes_that_would_fire_now() -> None:
    preview = preview_rule(rule(threshold=5, clear=None), samples(BASE))
    assert preview.scopes == 3  # three location rows
    assert preview.firing == 1
    assert preview.examples[0] == (WH_TX, 9)
    assert "would fire for 1 of 3" in preview.text(rule(threshold=5, clear=None))


def test_rule_validation_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'fulfillment\.lates'"):
        rule(metric="fulfillment.lates")
    with pytest.raises(ValueError, match="clear 12 is above the threshold 10"):
        rule(clear=12)
    with pytest.raises(ValueError, match="has no label 'sku'"):
        rule(matchers="sku=X")
    with pytest.raises(ValueError, match="bad duration"):
        rule(**{"for": "5 minutes"})
    assert rule(matchers=["scope=location", 'location=~"WH-.*"']).matchers[1].value == "WH-.*"


# -- the lifecycle ---------------------------------------------------------------------------


def test_pending_then_firing_after_for_then_resolved_below_clear(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    notifier = FakeNotifier()
    engine = engine_for(connect, clock, rule(), notifier=notifier)
    assert states(engine.evaluate(snap(location_row("WH-TX", 12)))) == {WH_TX: "pending"}
    assert notifier.last_firing == []  # pending is not notified

    clock.advance(timedelta(minutes=4, seconds=59))
    assert states(engine.evaluate(snap(location_row("WH-TX", 12)))) == {WH_TX: "pending"}

    clock.advance(timedelta(seconds=1))
    result = engine.evaluate(snap(location_row("WH-TX", 13)))
    assert states(result) == {WH_TX: "firing"}
    assert [a.record.fingerprint for a in result.newly_firing] == [FP]
    assert notifier.last_firing == [FP]

    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-TX", 4)))
    assert states(result) == {WH_TX: "resolved"}
    assert notifier.last_resolved == [FP]
    conn = connect()
    history = [(t.from_state, t.to_state, t.by) for t in store.transitions(conn, fingerprint=FP)]
    assert history == [
        ("firing", "resolved", "ops-bot"),
        ("pending", "firing", "ops-bot"),
        (None, "pending", "ops-bot"),
    ]
    assert store.fired_counts(conn, AS_OF - timedelta(hours=24)) == {"late_orders": 1}


def test_hysteresis_keeps_a_hovering_value_firing(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule(**{"for": "0s"}))
    assert states(engine.evaluate(snap(location_row("WH-TX", 11)))) == {WH_TX: "firing"}
    for value in (10, 9, 11, 6, 10, 7):  # around the threshold, never down to the clear level
        clock.advance(timedelta(minutes=1))
        assert states(engine.evaluate(snap(location_row("WH-TX", value)))) == {WH_TX: "firing"}
    clock.advance(timedelta(minutes=1))
    assert states(engine.evaluate(snap(location_row("WH-TX", 5)))) == {WH_TX: "resolved"}
    transitions = store.transitions(connect(), fingerprint=FP)
    assert [t.to_state for t in transitions] == ["resolved", "firing"]  # no flapping


def test_an_alert_held_by_hysteresis_shows_its_clear_level(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    notifier = FakeNotifier()
    engine = engine_for(connect, clock, rule(**{"for": "0s"}), notifier=notifier)

    def shown(late: int) -> tuple[str, str, str]:
        clock.advance(timedelta(minutes=1))
        (view,) = engine.evaluate(snap(location_row("WH-TX", late))).alerts
        summary = notifier.calls[-1][0][0].summary if notifier.calls[-1][0] else ""
        return view.record.state, condition_text(view.record), summary

    assert shown(14) == ("firing", "14 > 10", f"late_orders {WH_TX}: 14 > 10")
    assert shown(6) == ("firing", "6 (clears ≤ 5)", f"late_orders {WH_TX}: 6 (clears ≤ 5)")
    assert shown(10) == ("firing", "10 (clears ≤ 5)", f"late_orders {WH_TX}: 10 (clears ≤ 5)")
    assert shown(4)[:2] == ("resolved", "4 (cleared ≤ 5)")


@pytest.mark.parametrize(
    ("op", "threshold", "clear", "value", "text"),
    [
        ("<", 0.9, 0.93, 0.91, "0.91 (clears ≥ 0.93)"),
        ("<", 0.9, 0.93, 0.85, "0.85 < 0.9"),
        (">=", 10, 5, 7, "7 (clears < 5)"),
        ("<=", 0.8, 0.9, 0.85, "0.85 (clears > 0.9)"),
    ],
)
def test_condition_text_names_the_level_that_matters_now(
    op: str, threshold: float, clear: float, value: float, text: str
) -> None:
    r = rule(op=op, threshold=threshold, clear=clear, **{"for": "0s"})
    scope = {"scope": "location", "location": "WH-TX"}
    breach = threshold - 1 if op.startswith("<") else threshold + 1
    fired, _ = step(r, None, Observation(breach), AS_OF, scope)
    assert fired is not None
    record = replace(fired, state="firing", value=value)
    assert condition_text(record) == text
    assert condition_text(replace(record, value=None)) == f"no data ({op} {threshold:g})"


def test_pending_needs_the_condition_throughout(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule())
    engine.evaluate(snap(location_row("WH-TX", 12)))
    clock.advance(timedelta(minutes=3))
    # within the hysteresis band is not "the condition holds": pending ends, never fired
    assert states(engine.evaluate(snap(location_row("WH-TX", 8)))) == {WH_TX: "resolved"}
    clock.advance(timedelta(minutes=3))
    assert states(engine.evaluate(snap(location_row("WH-TX", 12)))) == {WH_TX: "pending"}
    assert store.fired_counts(connect(), AS_OF - timedelta(days=1)) == {}


@pytest.mark.parametrize(
    ("no_data", "expected"),
    [("alert", "nodata"), ("ok", "resolved"), ("keep", "firing")],
)
def test_no_data_is_what_the_rule_says(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock, no_data: str, expected: str
) -> None:
    engine = engine_for(
        connect,
        clock,
        rule(
            id="on_time",
            metric="fulfillment.on_time_rate",
            op="<",
            threshold=0.9,
            clear=None,
            no_data=no_data,
            **{"for": "0s"},
        ),
    )
    assert states(engine.evaluate(snap(location_row("WH-TX", 0, on_time=0.8)))) == {WH_TX: "firing"}
    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-TX", 0, on_time=None)))
    assert states(result) == {WH_TX: expected}
    record = result.alerts[0].record
    assert record.value is None
    if expected != "resolved":
        assert record.no_data_since == clock.now()


def test_no_data_alert_fires_a_scope_that_never_had_data(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(
        connect,
        clock,
        rule(
            id="on_time",
            metric="fulfillment.on_time_rate",
            op="<",
            threshold=0.9,
            clear=None,
            no_data="alert",
            **{"for": "2m"},
        ),
    )
    assert states(engine.evaluate(snap(location_row("WH-TX", 0, on_time=None)))) == {
        WH_TX: "pending"
    }
    clock.advance(timedelta(minutes=2))
    assert states(engine.evaluate(snap(location_row("WH-TX", 0, on_time=None)))) == {
        WH_TX: "nodata"
    }
    clock.advance(timedelta(minutes=1))
    # data comes back, healthy: resolved
    assert states(engine.evaluate(snap(location_row("WH-TX", 0, on_time=0.99)))) == {
        WH_TX: "resolved"
    }


def test_a_vanished_scope_is_no_data_not_all_clear(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule(no_data="keep", **{"for": "0s"}))
    engine.evaluate(snap(location_row("WH-TX", 12), location_row("WH-NJ", 0)))
    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-NJ", 0)))  # WH-TX row gone
    assert states(result) == {WH_TX: "firing"}
    assert result.alerts[0].record.no_data_since == clock.now()


def test_only_when_limits_to_best_sellers(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    best = rule(
        id="stockout",
        metric="stock.days_of_cover",
        matchers="",
        op="<",
        threshold=3,
        clear=4,
        only_when={"metric": "stock.velocity_per_day", "op": ">=", "threshold": 5},
        **{"for": "0s"},
    )
    slow = best.model_copy(update={"only_when": None})
    fast_low_cover = [
        s
        for s in BASE.stockout.rows
        if s.days_of_cover is not None and s.days_of_cover < 3 and s.velocity_per_day >= 5
    ]
    all_low_cover = [
        s for s in BASE.stockout.rows if s.days_of_cover is not None and s.days_of_cover < 3
    ]
    assert len(fast_low_cover) < len(all_low_cover)  # the fixture has a slow seller at risk
    assert len(engine_for(connect, clock, best).evaluate(BASE).alerts) == len(fast_low_cover)
    assert preview_rule(slow, samples(BASE)).firing == len(all_low_cover)


def test_acknowledgement_ends_when_the_alert_resolves(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule(**{"for": "0s"}))
    engine.evaluate(snap(location_row("WH-TX", 12)))
    actions = AlertActions(connect, clock, Permissions("alice", "operator"))
    acked = actions.acknowledge(FP, "on it")
    assert (acked.acked_by, acked.ack_comment) == ("alice", "on it")
    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-TX", 13)))
    assert result.alerts[0].record.acked_by == "alice"  # evaluation keeps the ack
    clock.advance(timedelta(minutes=1))
    engine.evaluate(snap(location_row("WH-TX", 2)))
    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-TX", 12)))  # the next incident
    assert states(result) == {WH_TX: "firing"}
    assert result.alerts[0].record.acked_by is None
    kinds = [(t.kind, t.by) for t in actions.history(FP)]
    assert ("ack", "alice") in kinds
    with pytest.raises(LookupError):
        actions.acknowledge("late_orders|location=NOPE", "")


def test_silence_mutes_notifications_until_it_expires_and_alerts_still_resolve(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    notifier = FakeNotifier()
    engine = engine_for(connect, clock, rule(**{"for": "0s"}), notifier=notifier)
    actions = AlertActions(connect, clock, Permissions("alice", "operator"))
    silence = actions.silence("alertname=late_orders, location=~WH-.*", timedelta(minutes=30))
    result = engine.evaluate(snap(location_row("WH-TX", 12)))
    assert result.alerts[0].silenced_by == silence.id
    assert notifier.last_firing == []
    assert actions.alerts()[0].silenced_by == silence.id

    clock.advance(timedelta(minutes=30))  # the silence ends
    engine.evaluate(snap(location_row("WH-TX", 12)))
    assert notifier.last_firing == [FP]
    assert actions.silences() == []

    # silenced again, by hand-expiry this time; it still resolves
    second = actions.silence("alertname=late_orders", timedelta(hours=1))
    clock.advance(timedelta(minutes=1))
    engine.evaluate(snap(location_row("WH-TX", 12)))
    assert notifier.last_firing == []
    actions.expire_silence(second.id)
    with pytest.raises(LookupError):
        actions.expire_silence(second.id)
    clock.advance(timedelta(minutes=1))
    result = engine.evaluate(snap(location_row("WH-TX", 1)))
    assert states(result) == {WH_TX: "resolved"}
    with pytest.raises(ValueError, match="at least one matcher"):
        actions.silence("", timedelta(hours=1))


def test_alerts_survive_a_restart(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    first = engine_for(connect, clock, rule())
    first.evaluate(snap(location_row("WH-TX", 12)))
    first.close()
    clock.advance(timedelta(minutes=5))
    second = engine_for(connect, clock, rule())  # a new process on the same store
    result = second.evaluate(snap(location_row("WH-TX", 12)))
    assert states(result) == {WH_TX: "firing"}
    assert result.alerts[0].record.started_at == AS_OF


def test_removed_or_disabled_rules_resolve_their_alerts(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule(**{"for": "0s"}))
    engine.evaluate(snap(location_row("WH-TX", 12)))
    engine.set_rules(rules_file(rule(enabled=False, **{"for": "0s"})))
    clock.advance(timedelta(minutes=1))
    assert states(engine.evaluate(snap(location_row("WH-TX", 12)))) == {WH_TX: "resolved"}
    assert store.transitions(connect(), fingerprint=FP)[0].note == "rule disabled"


def test_editing_the_threshold_fires_or_resolves_on_the_next_evaluation(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine = engine_for(connect, clock, rule(**{"for": "0s"}))
    assert states(engine.evaluate(snap(location_row("WH-TX", 9)))) == {}
    engine.set_rules(rules_file(rule(threshold=8, clear=None, **{"for": "0s"})))
    assert states(engine.evaluate(snap(location_row("WH-TX", 9)))) == {WH_TX: "firing"}
    engine.set_rules(rules_file(rule(threshold=20, clear=None, **{"for": "0s"})))
    assert states(engine.evaluate(snap(location_row("WH-TX", 9)))) == {WH_TX: "resolved"}


def test_inhibited_alerts_are_marked_and_not_notified(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    notifier = FakeNotifier()
    stale = rule(
        id="stale_feed",
        metric="feed.stale",
        matchers="",
        op=">=",
        threshold=1,
        clear=None,
        **{"for": "0s"},
    )
    aov = rule(
        id="aov_drop",
        metric="headline.aov_vs_rolling",
        matchers="",
        op="<",
        threshold=10,
        clear=None,
        **{"for": "0s"},
    )  # every channel "drops"
    engine = AlertEngine(
        rules_file(
            stale,
            aov,
            inhibit=[
                {
                    "source_matchers": "alertname=stale_feed",
                    "target_matchers": "alertname=aov_drop",
                    "equal": ["channel"],
                }
            ],
        ),
        connect,
        clock,
        notifier,
        user="ops-bot",
    )
    result = engine.evaluate(BASE)
    inhibited = {
        v.record.labels["channel"]: v.inhibited_by
        for v in result.alerts
        if v.record.rule_id == "aov_drop"
    }
    assert inhibited["marketplace"] == "stale_feed|channel=marketplace, feed=marketplace"
    assert inhibited["web"] is None
    notified = {
        a.labels.get("channel")
        for a in notifier.calls[-1][0]
        if a.labels["alertname"] == "aov_drop"
    }
    assert "marketplace" not in notified and "web" in notified


def test_roles_are_checked_on_every_mutation(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    engine_for(connect, clock, rule(**{"for": "0s"})).evaluate(snap(location_row("WH-TX", 12)))
    roles = Roles(editors=("erin",), operators=("olga",))
    assert Permissions.for_user(roles, "erin").can_edit_rules
    assert Permissions.for_user(roles, "olga").can_acknowledge
    assert not Permissions.for_user(roles, "olga").can_edit_rules
    viewer = AlertActions(connect, clock, Permissions.for_user(roles, "mallory"))
    with pytest.raises(PermissionDenied, match="viewer"):
        viewer.acknowledge(FP)
    with pytest.raises(PermissionDenied):
        viewer.silence("alertname=late_orders", timedelta(hours=1))
    read_only = AlertActions(connect, clock, Permissions.for_user(roles, "erin", read_only=True))
    with pytest.raises(PermissionDenied, match="read-only"):
        read_only.acknowledge(FP)
    assert viewer.alerts()[0].record.acked_by is None


def test_panel_target_points_at_the_row_behind_the_alert(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    result = engine_for(connect, clock, rule(**{"for": "0s"})).evaluate(
        snap(location_row("WH-TX", 12))
    )
    target = panel_target(result.alerts[0].record)
    assert (target.panel, target.filter) == ("fulfillment", "scope=location, key=WH-TX")


def test_the_shipped_on_time_rule_ignores_a_small_stores_handful_of_orders(
    connect: Callable[[], sqlite3.Connection], clock: FixedClock
) -> None:
    """1 late pickup of 3 is a 67 % on-time rate: no page; 8 late of 40 (80 %) is one."""
    shipped = parse_rules(default_rules_text(), Path("defaults.toml"))
    (on_time,) = [r for r in shipped.alert if r.id == "on_time_rate_low"]
    on_time = on_time.model_copy(update={"for_": timedelta(0)})
    engine = engine_for(connect, clock, on_time)
    small = replace(location_row("S-BKN", 0, on_time=2 / 3), completed_24h=3)
    busy = replace(location_row("WH-TX", 0, on_time=0.8), completed_24h=40)
    fired = engine.evaluate(snap(small, busy))
    assert {a.record.scope for a in fired.alerts if a.record.state == "firing"} == {WH_TX}
