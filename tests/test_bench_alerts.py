"""The alert benchmark's scoring, and the generator's random incidents (without generating).

Generating a day takes longer than a test may (~25-150 s), so the generator is tested
through its incident-picking function, and the manifest one real ``--random-incidents``
run wrote (``tests/data/random-incidents-seed-1.manifest.json``, from
``python fixtures/generate.py --seed 1 --random-incidents``) is checked against it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_alerts import (
    DayResult,
    Episode,
    Incident,
    days_from_json,
    episodes_from_steps,
    false_alarm_lines,
    format_table,
    incidents_from_manifest,
    legacy_incidents,
    score,
)

ROOT = Path(__file__).resolve().parents[1]
SEED_1 = ROOT / "tests" / "data" / "random-incidents-seed-1.manifest.json"
GRACE = timedelta(minutes=60)


def at(hhmm: str) -> datetime:
    """A UTC moment of the fixture day, ``HH:MM``."""
    h, m = hhmm.split(":")
    return datetime(2026, 11, 18, int(h), int(m), tzinfo=UTC)


@pytest.fixture(scope="module")
def generate() -> ModuleType:
    """``fixtures/generate.py`` as a module."""
    spec = importlib.util.spec_from_file_location("omniops_generate", ROOT / "fixtures/generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# -- episodes and scoring ---------------------------------------------------------------


def test_episodes_start_at_the_first_firing_step_and_end_at_the_first_absent_one() -> None:
    key = ("return_spike", "sku=A")
    scope = {"sku": "A", "category": "apparel"}
    other = ("stale_feed", "feed=pos")
    steps = [
        (at("13:00"), {other: {"feed": "pos"}}),
        (at("13:05"), {key: scope, other: {"feed": "pos"}}),
        (at("13:10"), {key: scope}),
        (at("13:15"), {}),
        (at("13:20"), {key: scope}),
    ]
    eps = episodes_from_steps(steps)
    assert [(e.rule_id, e.onset, e.offset) for e in eps] == [
        ("stale_feed", at("13:00"), at("13:10")),
        ("return_spike", at("13:05"), at("13:15")),
        ("return_spike", at("13:20"), None),
    ]
    assert eps[1].scope == scope


def test_score_counts_detections_delays_and_false_alarms() -> None:
    spike = Incident("return_spike", {"sku": "A"}, at("14:00"), at("18:00"))
    slow = Incident("slow_picks", {"location": "WH-TX"}, at("17:00"), at("23:59"))
    episodes = [
        # Before the spike started: a false alarm, even though it is the right SKU.
        Episode("return_spike", {"sku": "A", "category": "apparel"}, at("13:00"), at("13:30")),
        Episode("return_spike", {"sku": "A", "category": "apparel"}, at("14:25")),
        Episode("return_spike", {"sku": "A", "category": "apparel"}, at("15:00")),  # re-fire
        Episode("return_spike", {"sku": "B", "category": "toys"}, at("14:30")),  # wrong SKU
        # The right scope but a rule not meant for the incident's kind: a false alarm.
        Episode("stale_feed", {"feed": "WH-TX", "location": "WH-TX"}, at("17:10")),
        Episode("late_orders", {"scope": "location", "location": "WH-TX"}, at("19:40")),
        Episode("late_orders", {"scope": "location", "location": "WH-NJ"}, at("19:40")),
        Episode("pick_time_p90_high", {"scope": "location", "location": "WH-TX"}, at("17:30")),
    ]
    day = DayResult("d", [spike, slow], episodes, at("13:00"), at("23:59"))
    rules = ["return_spike", "late_orders", "pick_time_p90_high", "on_time_rate_low", "stale_feed"]
    rows = {s.rule_id: s for s in score([day], rules, GRACE)}
    assert (rows["return_spike"].detected, rows["return_spike"].targets) == (1, 1)
    assert rows["return_spike"].delays == [25.0]
    assert rows["return_spike"].false_alarms == 2
    assert rows["late_orders"].delays == [160.0] and rows["late_orders"].false_alarms == 1
    assert rows["pick_time_p90_high"].delays == [30.0]
    assert (rows["on_time_rate_low"].detected, rows["on_time_rate_low"].targets) == (0, 1)
    assert rows["on_time_rate_low"].missed == ["d: slow_picks location=WH-TX"]
    assert rows["stale_feed"].targets == 0 and rows["stale_feed"].false_alarms == 1
    table = format_table(list(rows.values()), 1)
    assert "return_spike                       1/1         25         25       2.00" in table


def test_grace_and_incidents_that_began_before_the_replay() -> None:
    silent = Incident("silent_feed", {"feed": "marketplace"}, at("19:00"), at("19:20"))
    stockout = Incident(
        "store_stockout", {"sku": "X", "location": "ST-CHI"}, at("10:00"), at("23:59")
    )
    episodes = [
        Episode("stale_feed", {"feed": "marketplace", "channel": "marketplace"}, at("20:25")),
        Episode("stockout_risk_best_sellers", {"sku": "X", "location": "ST-CHI"}, at("13:10")),
    ]
    day = DayResult("d", [silent, stockout], episodes, at("13:00"), at("23:59"))
    rows = {s.rule_id: s for s in score([day], ["stale_feed", "stockout_risk_best_sellers"], GRACE)}
    # 20:25 is past 19:20 + 60 min: too late to count.
    assert rows["stale_feed"].detected == 0 and rows["stale_feed"].false_alarms == 1
    wider = {s.rule_id: s for s in score([day], ["stale_feed"], timedelta(minutes=70))}
    assert wider["stale_feed"].delays == [85.0] and wider["stale_feed"].false_alarms == 0
    # The stockout began at the 05:00 count; the delay counts from the replay start.
    assert rows["stockout_risk_best_sellers"].delays == [10.0]


def test_saved_runs_are_scored_like_live_ones(tmp_path: Path) -> None:
    saved = {
        "days": [
            {
                "name": "seed-9",
                "incidents": [
                    {
                        "kind": "carrier_slip",
                        "scope": {"carrier": "UPS"},
                        "start": "2026-11-18T15:00:00+00:00",
                        "end": "2026-11-19T01:00:00+00:00",
                    }
                ],
                "episodes": [
                    {
                        "rule": "carrier_delay",
                        "scope": {"carrier": "UPS", "scope": "carrier"},
                        "onset": "2026-11-18T17:30:00+00:00",
                        "offset": None,
                    },
                    {
                        "rule": "carrier_delay",
                        "scope": {"carrier": "FedEx", "scope": "carrier"},
                        "onset": "2026-11-18T18:00:00+00:00",
                        "offset": "2026-11-18T19:00:00+00:00",
                    },
                ],
            }
        ]
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(saved))
    days = days_from_json(path)
    assert days[0].start == at("13:00")  # the generator's replay start when not saved
    (row,) = score(days, ["carrier_delay"], GRACE)
    assert (row.detected, row.delays, row.false_alarms) == (1, [150.0], 1)
    assert "  1   1  carrier_delay carrier=FedEx" in false_alarm_lines(days, GRACE)


# -- the generator's random incidents ---------------------------------------------------


def test_the_fixed_plan_is_the_documented_fixture_day(generate: ModuleType) -> None:
    plan = generate.IncidentPlan.fixed()
    assert plan.spike_from == int(at("18:00").timestamp())
    assert plan.slip_carrier == "FedEx" and plan.slip_share == 0.8
    assert plan.slow_pick_node == "WH-TX" and plan.slow_pick_from == int(at("18:00").timestamp())
    assert (plan.silent_from, plan.silent_to) == (
        int(at("19:00").timestamp()),
        int(at("19:20").timestamp()),
    )


def test_random_plans_are_seeded_within_bounds_and_differ_from_the_fixture(
    generate: ModuleType,
) -> None:
    fixed = generate.IncidentPlan.fixed()
    plans = [generate.pick_incidents(seed) for seed in range(1, 21)]
    assert generate.pick_incidents(3) == plans[2]  # the same seed, the same plan
    assert len({p.spike_from for p in plans}) > 5 and len({p.slip_from for p in plans}) > 5
    day = datetime(2026, 11, 18, tzinfo=generate.LOCAL_TZ)
    for p in plans:
        assert p != fixed
        start = datetime.fromtimestamp(p.spike_from, generate.LOCAL_TZ)
        until = datetime.fromtimestamp(p.spike_until, generate.LOCAL_TZ)
        assert day.replace(hour=12) <= start <= day.replace(hour=15, minute=30)
        assert until <= day.replace(hour=20, minute=45) and until - start >= timedelta(hours=3)
        assert 25 <= p.spike_returns <= 50 and 0 < p.spike_first_hour <= p.spike_returns
        assert p.slip_carrier in ("FedEx", "UPS") and 0.55 <= p.slip_share <= 0.9
        assert p.slow_pick_node in ("WH-TX", "WH-NJ") and 90 <= p.slow_pick_median <= 150
        lo, hi = p.slow_pick_bounds
        assert lo < p.slow_pick_median < hi
        assert 20 * 60 <= p.silent_to - p.silent_from <= 40 * 60


def test_a_random_manifest_records_its_plan_consistently(generate: ModuleType) -> None:
    manifest = json.loads(SEED_1.read_text())
    fixture = json.loads((ROOT / "fixtures" / "day" / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["random_incidents"] is True
    assert "truth" not in fixture["incidents"] and "random_incidents" not in fixture
    truth = incidents_from_manifest(manifest)
    # The truth list agrees with the per-incident figures written beside it ...
    assert truth == legacy_incidents(manifest)
    # ... and with the plan the seed draws.
    plan = generate.pick_incidents(1)
    kinds = {i.kind: i for i in truth}
    assert kinds["return_spike"].start.timestamp() == plan.spike_from
    assert kinds["return_spike"].end.timestamp() == plan.spike_until
    assert kinds["carrier_slip"].scope == {"carrier": plan.slip_carrier}
    assert kinds["carrier_slip"].start.timestamp() == plan.slip_from
    assert kinds["slow_picks"].scope == {"location": plan.slow_pick_node}
    assert kinds["slow_picks"].start.timestamp() == plan.slow_pick_from
    assert kinds["silent_feed"].start.timestamp() == plan.silent_from
    assert kinds["silent_feed"].end.timestamp() == plan.silent_to
    # The fixture day's incidents are elsewhere and at other times.
    documented = {i.kind: i for i in incidents_from_manifest(fixture)}
    assert documented["return_spike"].scope == {"sku": "APP-1056"}
    assert all(
        (kinds[k].scope, kinds[k].start) != (documented[k].scope, documented[k].start)
        for k in ("return_spike", "carrier_slip", "slow_picks", "silent_feed")
    )


# -- stockout episodes verified from the day's raw events -------------------------------


def _feed(folder: Path, name: str, events: list[tuple[str, str, dict[str, object]]]) -> None:
    import gzip

    with gzip.open(folder / f"{name}.jsonl.gz", "wt") as fh:
        for i, (ts, type_, body) in enumerate(events):
            line = {"id": f"{name}-{i}", "ts": ts, "source": name, "type": type_, "body": body}
            fh.write(json.dumps(line) + "\n")


def test_stockout_episodes_off_the_truth_are_verified_from_raw_cover(tmp_path: Path) -> None:
    def adj(ts: str, code: str, loc: str, delta: int, reason: str = "sale") -> tuple:
        body = {"sku": code, "location_id": loc, "delta": delta, "reason": reason}
        return (ts, "stock.adjusted", body)

    def count(ts: str, code: str, loc: str, on_hand: int, reserved: int = 0) -> tuple:
        body = {"sku": code, "location_id": loc, "on_hand": on_hand, "reserved": reserved}
        return (ts, "stock.snapshot", body)

    store = {"location_id": "S1", "safety_buffer": 2}
    _feed(tmp_path, "catalog", [("2026-11-01T00:00:00Z", "location.upserted", store)])
    inventory = [
        # LOW @ S1: in the 7 days to 13:00 on the 18th, 7 x 8 + 10 sold and 1 cancelled
        # back: 65/7 = 9.29/day; counted 30 (reserved 1) on the 18th, then the 10 sold:
        # available 30 - 10 - 1 - 2 (buffer) = 17, cover 17 / 9.29 = 1.83 d < 3: verified
        *[adj(f"2026-11-{d:02d}T15:00:00Z", "LOW", "S1", -8) for d in range(11, 18)],
        adj("2026-11-17T16:00:00Z", "LOW", "S1", +1, "cancellation"),
        count("2026-11-18T10:00:00Z", "LOW", "S1", 30, reserved=1),
        adj("2026-11-18T12:00:00Z", "LOW", "S1", -10),
        # SAVED @ S1: the same, but a 40-unit PO lands in time (ETA in 1.1 d < 1.83 d):
        # (17 + 40) / 9.29 = 6.1 d
        *[adj(f"2026-11-{d:02d}T15:00:00Z", "SAVED", "S1", -8) for d in range(11, 18)],
        adj("2026-11-17T16:00:00Z", "SAVED", "S1", +1, "cancellation"),
        count("2026-11-18T10:00:00Z", "SAVED", "S1", 30, reserved=1),
        adj("2026-11-18T12:00:00Z", "SAVED", "S1", -10),
        # SLOW @ S1: 3 units a day with 2 days of cover: not a best-seller
        *[adj(f"2026-11-{d:02d}T15:00:00Z", "SLOW", "S1", -3) for d in range(11, 18)],
        count("2026-11-18T10:00:00Z", "SLOW", "S1", 8),
    ]
    _feed(tmp_path, "inventory", inventory)
    po = {"po_id": "P1", "sku": "SAVED", "location_id": "S1", "quantity": 40}
    _feed(
        tmp_path,
        "purchasing",
        [
            (
                "2026-11-15T00:00:00Z",
                "inbound.updated",
                {**po, "eta": "2026-11-19T16:00:00Z", "status": "open"},
            ),
        ],
    )
    from tests.bench_alerts import _read_pairs, raw_cover, verified_stockout_risks

    onset = at("13:00")
    pairs, buffers = _read_pairs(tmp_path, {("LOW", "S1"), ("SAVED", "S1")})
    velocity, cover = raw_cover(pairs["LOW", "S1"], buffers["S1"], onset)
    assert velocity == pytest.approx(65 / 7) and cover == pytest.approx(17 / (65 / 7))
    assert raw_cover(pairs["SAVED", "S1"], 2, onset)[1] == pytest.approx(57 / (65 / 7))

    def ep(code: str) -> Episode:
        return Episode("stockout_risk_best_sellers", {"sku": code, "location": "S1"}, onset)

    episodes = [ep("LOW"), ep("SAVED"), ep("SLOW"), ep("LOW")]
    truth = [Incident("store_stockout", {"sku": "LOW", "location": "S1"}, onset, at("23:00"))]
    assert verified_stockout_risks(tmp_path, episodes, []) == {0, 3}
    assert verified_stockout_risks(tmp_path, episodes, truth) == set()  # the incident's own

    day = DayResult("d", [], episodes, at("13:00"), at("23:59"), verified=frozenset({0, 3}))
    (row,) = score([day], ["stockout_risk_best_sellers"], GRACE)
    assert (row.false_alarms, row.verified) == (2, 2)
