"""Alert-quality benchmark: the shipped default rules replayed over known incidents (not a test).

``python -m tests.bench_alerts [--days N | --seeds 1,2,3] [--step 5m] [--no-fixture-day]
[--grace 60m] [--cache DIR]``

Replays the fixture day (``fixtures/day``) and generated days
(``fixtures/generate.py --seed N --random-incidents``: every incident at a random time and
magnitude, the truth in the manifest's ``incidents.truth``) the way ``omniops demo`` does:
the history before the replay start goes into a store through the writer's bulk path
(cached, see :mod:`feeds.runtime.demo`), then the replay clock steps every ``--step`` to
the end of the trading day.  At each step the events stamped up to the new moment are
written through the real :class:`~store.writer.StoreWriter` (with the demo's routing hook
and metric parameters), then the panels are computed as of that moment and the rules file
the demo writes (the shipped defaults plus the demo retailer's routing) is evaluated by the
real :class:`~rules.engine.AlertEngine`, exactly as serve's alert loop does.  The alerts
firing after each step (state ``firing`` or ``nodata``, not inhibited) are recorded.

The default step is 5 minutes, not serve's per-minute refresh: one evaluation (writing
the new events, every panel, the rules) costs about a second on a shared 2-core machine,
so a per-minute day (960 steps) takes ~16 min against ~3 min at 5 minutes; ``--step 1m``
is the faithful setting when there is time.  A coarser step delays detections by up to
one step and merges flaps shorter than it.

Scoring (:func:`score`): a firing episode is one rule × scope from the step it starts firing
to the step it stops.  An episode is a *true detection* when its rule is meant for the
incident's kind (:data:`RULE_TARGETS`), its scope labels agree with every scope key of the
incident, and it starts within [incident start, incident end + grace] (an incident that
began before the replay counts from the replay start).  Every other episode is a *false
alarm*, counted once, except a stockout-rule episode that the day's own raw events show to
be a real low-cover best-seller (:func:`verified_stockout_risks`): that one is counted as
*verified* (a true alert outside the injected truth), in a column of its own.  The
detection delay is the first matching episode's start minus the
incident's start.  The table prints, per rule: incidents detected / incidents of its kind,
delay median and max, and false alarms per replayed day.

The goal stated in issue 11: every injected incident detected, at most 1 false alarm a
day across all default rules, return-spike median delay within 30 minutes.  This script
only reports; it asserts nothing.

Generated days are cached in ``--cache`` (default ``$XDG_CACHE_HOME/omniops/bench-alerts``)
keyed by a digest of the generator, so a second run skips the ~25-150 s generation each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DAY = ROOT / "fixtures" / "day"
GENERATOR = ROOT / "fixtures" / "generate.py"
DEMO_ROUTING = ROOT / "fixtures" / "demo-fulfillment.toml"

RULE_TARGETS: dict[str, tuple[str, ...]] = {
    "return_spike": ("return_spike",),
    "stockout_risk_best_sellers": ("store_stockout",),
    "carrier_delay": ("carrier_slip",),
    "late_orders": ("slow_picks",),
    "on_time_rate_low": ("slow_picks",),
    "pick_time_p90_high": ("slow_picks",),
    "stale_feed": ("silent_feed",),
}
"""Which incident kinds each default rule is meant to catch (the others catch none here)."""


@dataclass(frozen=True)
class Incident:
    """One injected incident: its kind, the scope labels it affects, and its span."""

    kind: str
    scope: Mapping[str, str]
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Episode:
    """One rule × scope firing from ``onset`` until ``offset`` (None: still at the end)."""

    rule_id: str
    scope: Mapping[str, str]
    onset: datetime
    offset: datetime | None = None


@dataclass
class DayResult:
    """What one replayed day produced: its incidents, its firing episodes, its window."""

    name: str
    incidents: list[Incident]
    episodes: list[Episode]
    start: datetime
    """The first evaluation (the replay start)."""
    end: datetime
    seconds: float = 0.0
    verified: frozenset[int] = frozenset()
    """Indices of episodes that match no injected incident but are true alerts all the same,
    checked from the day's own events (:func:`verified_stockout_risks`)."""


@dataclass
class RuleScore:
    """One rule's figures over all replayed days."""

    rule_id: str
    targets: int = 0
    detected: int = 0
    delays: list[float] = field(default_factory=list)
    """Detection delays in minutes, one per detected incident."""
    false_alarms: int = 0
    verified: int = 0
    """Episodes outside the injected truth verified as true from the day's events."""
    missed: list[str] = field(default_factory=list)
    """``day: kind scope`` of each incident of its kind it did not detect."""

    @property
    def delay_median(self) -> float | None:
        """Median detection delay in minutes (None when nothing was detected)."""
        return statistics.median(self.delays) if self.delays else None

    @property
    def delay_max(self) -> float | None:
        """Longest detection delay in minutes."""
        return max(self.delays) if self.delays else None


# ---------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------


def _utc(text: object) -> datetime:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def incidents_from_manifest(manifest: Mapping[str, Any]) -> list[Incident]:
    """The incidents of a fixture manifest.

    A generated day's ``incidents.truth`` list is used as written; the fixture day (whose
    manifest predates it and must stay byte-identical) is read from its per-incident
    figures with the same definitions (:func:`legacy_incidents`).
    """
    incidents = manifest["incidents"]
    if "truth" in incidents:
        return [
            Incident(
                kind=str(t["kind"]),
                scope={str(k): str(v) for k, v in t["scope"].items()},
                start=_utc(t["start_utc"]),
                end=_utc(t["end_utc"]),
            )
            for t in incidents["truth"]
        ]
    return legacy_incidents(manifest)


def legacy_incidents(manifest: Mapping[str, Any]) -> list[Incident]:
    """Truth read from the documented per-incident fields (``fixtures/README.md``).

    The stockout starts at the day-start count that reveals it; it and the slow picks last
    to the end of the day.
    """
    inc = manifest["incidents"]
    day_end = _utc(manifest["day_end_utc"])
    spike, out = inc["return_spike"], inc["store_stockout"]
    slip, picks, silent = inc["carrier_slip"], inc["slow_picks"], inc["silent_feed"]
    return [
        Incident(
            "return_spike", {"sku": spike["sku"]}, _utc(spike["from_utc"]), _utc(spike["until_utc"])
        ),
        Incident(
            "store_stockout",
            {"sku": out["sku"], "location": out["location_id"]},
            _utc(out["count_utc"]),
            day_end,
        ),
        Incident(
            "carrier_slip",
            {"carrier": slip["carrier"]},
            _utc(slip["from_utc"]),
            _utc(slip["until_utc"]),
        ),
        Incident(
            "slow_picks", {"location": picks["location_id"]}, _utc(picks["from_utc"]), day_end
        ),
        Incident(
            "silent_feed",
            {"feed": silent["feed"]},
            _utc(silent["from_utc"]),
            _utc(silent["until_utc"]),
        ),
    ]


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def episodes_from_steps(
    steps: Sequence[tuple[datetime, Mapping[tuple[str, str], Mapping[str, str]]]],
) -> list[Episode]:
    """Firing episodes from what fired after each step.

    ``steps`` is, in time order, (moment, {(rule id, scope text): scope labels}) of the
    alerts firing after that evaluation.  An episode ends at the first step it is absent.
    """
    open_: dict[tuple[str, str], Episode] = {}
    done: list[Episode] = []
    for at, firing in steps:
        for key in [k for k in open_ if k not in firing]:
            ep = open_.pop(key)
            done.append(Episode(ep.rule_id, ep.scope, ep.onset, at))
        for key, scope in firing.items():
            if key not in open_:
                open_[key] = Episode(key[0], dict(scope), at)
    done.extend(open_.values())
    return sorted(done, key=lambda e: (e.onset, e.rule_id, sorted(e.scope.items())))


def matches(episode: Episode, incident: Incident, day_start: datetime, grace: timedelta) -> bool:
    """Whether ``episode`` is a true detection of ``incident`` (see the module docstring)."""
    if incident.kind not in RULE_TARGETS.get(episode.rule_id, ()):
        return False
    if any(episode.scope.get(k) != v for k, v in incident.scope.items()):
        return False
    start = max(incident.start, day_start)
    return start <= episode.onset <= incident.end + grace


def score(days: Sequence[DayResult], rule_ids: Sequence[str], grace: timedelta) -> list[RuleScore]:
    """Per-rule detections, delays and false alarms over ``days`` (one row per rule id)."""
    scores = {r: RuleScore(r) for r in rule_ids}
    for day in days:
        matched: set[int] = set()
        for incident in day.incidents:
            start = max(incident.start, day.start)
            for rule_id, kinds in RULE_TARGETS.items():
                if incident.kind not in kinds or rule_id not in scores:
                    continue
                row = scores[rule_id]
                row.targets += 1
                hits = [
                    i
                    for i, ep in enumerate(day.episodes)
                    if ep.rule_id == rule_id and matches(ep, incident, day.start, grace)
                ]
                matched.update(hits)
                if hits:
                    row.detected += 1
                    first = min(day.episodes[i].onset for i in hits)
                    row.delays.append((first - start).total_seconds() / 60)
                else:
                    scope = ",".join(f"{k}={v}" for k, v in sorted(incident.scope.items()))
                    row.missed.append(f"{day.name}: {incident.kind} {scope}")
        for i, ep in enumerate(day.episodes):
            if i in matched:
                continue
            row = scores.setdefault(ep.rule_id, RuleScore(ep.rule_id))
            if i in day.verified:
                row.verified += 1
            else:
                row.false_alarms += 1
    return list(scores.values())


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_table(scores: Sequence[RuleScore], n_days: int) -> str:
    """The per-rule table, a total row, and the goal check."""
    lines = [
        f"{'rule':<28} {'detected':>9} {'delay med':>10} {'delay max':>10} {'false/day':>10}"
        f" {'verified':>9}",
        "-" * 81,
    ]
    for s in scores:
        detected = f"{s.detected}/{s.targets}" if s.targets else "-"
        lines.append(
            f"{s.rule_id:<28} {detected:>9} {_minutes(s.delay_median):>10} "
            f"{_minutes(s.delay_max):>10} {s.false_alarms / max(n_days, 1):>10.2f}"
            f" {s.verified:>9}"
        )
    total_false = sum(s.false_alarms for s in scores)
    total_verified = sum(s.verified for s in scores)
    lines.append("-" * 81)
    lines.append(
        f"{'all rules':<28} {'':>9} {'':>10} {'':>10} {total_false / max(n_days, 1):>10.2f}"
        f" {total_verified:>9}"
    )
    return "\n".join(lines)


def incident_detections(
    days: Sequence[DayResult], grace: timedelta
) -> list[tuple[str, Incident, float | None]]:
    """Each incident with the delay (minutes) of its first detection by any of its rules."""
    out: list[tuple[str, Incident, float | None]] = []
    for day in days:
        for incident in day.incidents:
            onsets = [ep.onset for ep in day.episodes if matches(ep, incident, day.start, grace)]
            start = max(incident.start, day.start)
            delay = (min(onsets) - start).total_seconds() / 60 if onsets else None
            out.append((day.name, incident, delay))
    return out


def false_alarms(days: Sequence[DayResult], grace: timedelta) -> list[tuple[str, Episode]]:
    """Every episode that detects no incident, with its day's name."""
    return [
        (day.name, ep)
        for day in days
        for i, ep in enumerate(day.episodes)
        if i not in day.verified
        and not any(matches(ep, inc, day.start, grace) for inc in day.incidents)
    ]


def false_alarm_lines(days: Sequence[DayResult], grace: timedelta, top: int = 15) -> str:
    """The most frequent false alarms by rule and scope (how many episodes, on how many days)."""
    episodes: dict[str, int] = {}
    on_days: dict[str, set[str]] = {}
    for name, ep in false_alarms(days, grace):
        scope = ",".join(f"{k}={v}" for k, v in sorted(ep.scope.items()) if k != "scope")
        key = f"{ep.rule_id} {scope}"
        episodes[key] = episodes.get(key, 0) + 1
        on_days.setdefault(key, set()).add(name)
    ranked = sorted(episodes, key=lambda k: (-episodes[k], k))
    lines = [f"false alarms by rule and scope (episodes, days), top {top}:"]
    lines += [f"  {episodes[k]:>3} {len(on_days[k]):>3}  {k}" for k in ranked[:top]]
    return "\n".join(lines)


def goal_lines(scores: Sequence[RuleScore], days: Sequence[DayResult], grace: timedelta) -> str:
    """The issue's goal, line by line, with what this run measured."""
    per_incident = incident_detections(days, grace)
    found = sum(1 for _, _, d in per_incident if d is not None)
    false_per_day = sum(s.false_alarms for s in scores) / max(len(days), 1)
    spike = next((s for s in scores if s.rule_id == "return_spike"), None)
    median = spike.delay_median if spike else None
    ok = "met" if found == len(per_incident) else "NOT met"
    lines = [
        f"incidents detected by one of their rules: {found}/{len(per_incident)} ({ok})",
        f"false alarms per day, all rules: {false_per_day:.2f} "
        f"({'met' if false_per_day <= 1 else 'NOT met'}: goal <= 1)",
        f"return_spike median delay: {_minutes(median)} min "
        f"({'met' if median is not None and median <= 30 else 'NOT met'}: goal <= 30)",
    ]
    for name, incident, delay in per_incident:
        if delay is None:
            scope = ",".join(f"{k}={v}" for k, v in sorted(incident.scope.items()))
            lines.append(f"  missed: {name} {incident.kind} {scope}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# True alerts outside the injected truth
# ---------------------------------------------------------------------------

STOCKOUT_RULE = "stockout_risk_best_sellers"
COVER_DAYS = 3.0
"""The default stockout rule's definition, re-checked here from the raw events: a pair
selling ``BEST_SELLER_PER_DAY`` or more a day with under ``COVER_DAYS`` of cover."""
BEST_SELLER_PER_DAY = 5.0
VELOCITY_DAYS = 7


@dataclass
class _Pair:
    """One SKU × location's raw stock history, read from the day's feed files."""

    snapshots: list[tuple[datetime, int, int]] = field(default_factory=list)
    """(ts, on hand, reserved) of every count."""
    adjustments: list[tuple[datetime, int, str]] = field(default_factory=list)
    """(ts, delta, reason) of every adjustment."""
    inbound: list[tuple[datetime, str, int, datetime, str]] = field(default_factory=list)
    """(ts, po id, quantity, eta, status) of every inbound update."""


def _read_pairs(
    fixtures: Path, wanted: set[tuple[str, str]]
) -> tuple[dict[tuple[str, str], _Pair], dict[str, int]]:
    """The raw stock, adjustments and inbound of ``wanted`` pairs, and safety buffers."""
    import gzip

    pairs: dict[tuple[str, str], _Pair] = {k: _Pair() for k in wanted}
    buffers: dict[str, int] = {}
    with gzip.open(fixtures / "catalog.jsonl.gz", "rt") as fh:
        for line in fh:
            e = json.loads(line)
            if e["type"] == "location.upserted":
                buffers[e["body"]["location_id"]] = int(e["body"].get("safety_buffer", 0))
    for name in ("inventory", "purchasing"):
        with gzip.open(fixtures / f"{name}.jsonl.gz", "rt") as fh:
            for line in fh:
                e = json.loads(line)
                b = e["body"]
                pair = pairs.get((b.get("sku"), b.get("location_id")))
                if pair is None:
                    continue
                ts = _utc(e["ts"])
                if e["type"] == "stock.snapshot":
                    pair.snapshots.append((ts, int(b["on_hand"]), int(b.get("reserved", 0))))
                elif e["type"] == "stock.adjusted":
                    pair.adjustments.append((ts, int(b["delta"]), str(b["reason"])))
                elif e["type"] == "inbound.updated":
                    pair.inbound.append(
                        (ts, str(b["po_id"]), int(b["quantity"]), _utc(b["eta"]), b["status"])
                    )
    return pairs, buffers


def raw_cover(pair: _Pair, buffer: int, at: datetime) -> tuple[float, float | None]:
    """(velocity per day, days of cover) of a pair at ``at``, from its raw events alone.

    Available = the latest count at or before ``at`` plus the adjustments after it, less
    reserved and the safety buffer; velocity = units of ``sale`` adjustments less
    ``cancellation`` ones over the previous 7 days, ÷ 7; cover = (max(available, 0) + each
    open inbound whose ETA falls before the projected stockout, an overdue one counting as
    landing now) ÷ velocity.  The README's definitions, computed without the store.
    """
    counts = [c for c in pair.snapshots if c[0] <= at]
    base_ts, on_hand, reserved = (
        max(counts) if counts else (datetime.min.replace(tzinfo=at.tzinfo), 0, 0)
    )
    on_hand += sum(d for ts, d, _ in pair.adjustments if base_ts < ts <= at)
    since = at - timedelta(days=VELOCITY_DAYS)
    sold = sum(-d for ts, d, r in pair.adjustments if since < ts <= at and r == "sale")
    sold -= sum(d for ts, d, r in pair.adjustments if since < ts <= at and r == "cancellation")
    velocity = max(sold, 0) / VELOCITY_DAYS
    if velocity <= 0:
        return velocity, None
    latest: dict[str, tuple[datetime, int, datetime, str]] = {}
    for ts, po, qty, eta, status in sorted(pair.inbound):
        if ts <= at:
            latest[po] = (ts, qty, eta, status)
    stock = float(max(on_hand - reserved - buffer, 0))
    for _, qty, eta, _ in sorted(
        (v for v in latest.values() if v[3] == "open"), key=lambda v: v[2]
    ):
        if eta <= at + timedelta(days=stock / velocity):
            stock += qty
    return velocity, stock / velocity


def verified_stockout_risks(
    fixtures: Path, episodes: Sequence[Episode], incidents: Sequence[Incident]
) -> frozenset[int]:
    """Stockout-rule episodes that are true alerts though no incident was injected there.

    The generated worlds have, besides the injected store stockout, best-sellers whose
    replenishment runs short (``fixtures/README.md``, "Also in the data": low-cover
    best-sellers); the stockout rule is right to flag them.  An episode of that rule on a
    pair that is not an incident's counts as verified when, at its onset, the pair's cover
    computed from the day's raw inventory and purchasing events (:func:`raw_cover`) is
    under 3 days at 5+ units a day: the rule's definition holds without the store's word
    for it.  Anything else stays a false alarm.
    """
    truth = {
        (i.scope.get("sku"), i.scope.get("location"))
        for i in incidents
        if i.kind in RULE_TARGETS[STOCKOUT_RULE]
    }
    candidates = {
        i: (str(ep.scope.get("sku")), str(ep.scope.get("location")))
        for i, ep in enumerate(episodes)
        if ep.rule_id == STOCKOUT_RULE
        and (ep.scope.get("sku"), ep.scope.get("location")) not in truth
    }
    if not candidates:
        return frozenset()
    pairs, buffers = _read_pairs(fixtures, set(candidates.values()))
    out = set()
    for i, key in candidates.items():
        velocity, cover = raw_cover(pairs[key], buffers.get(key[1], 0), episodes[i].onset)
        if velocity >= BEST_SELLER_PER_DAY and cover is not None and cover < COVER_DAYS:
            out.add(i)
    return frozenset(out)


# ---------------------------------------------------------------------------
# Days
# ---------------------------------------------------------------------------


def cache_root(cache: Path | None) -> Path:
    """Where generated days and history stores are kept."""
    if cache is not None:
        return cache
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "omniops" / "bench-alerts"


def generator_digest() -> str:
    """A digest of the generator and the store model it writes with (the cache key)."""
    digest = hashlib.sha256(GENERATOR.read_bytes())
    digest.update((ROOT / "store" / "model.py").read_bytes())
    return digest.hexdigest()[:12]


def generated_day(seed: int, cache: Path, say: Any = print) -> Path:
    """The folder of seed ``seed``'s random-incident day, generated into the cache if missing."""
    folder = cache / f"days-{generator_digest()}" / f"seed-{seed}"
    if (folder / "manifest.json").exists():
        return folder
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    say(f"generating seed {seed} into {folder} ...")
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            str(GENERATOR),
            "--seed",
            str(seed),
            "--random-incidents",
            "--no-check",
            "--out",
            str(tmp),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tmp.replace(folder)
    say(f"  generated in {time.monotonic() - started:.0f} s")
    return folder


def load_bench_rules() -> Any:
    """The demo rules file, parsed (a :class:`rules.file.RulesFile`)."""
    from rules.file import parse_rules

    return parse_rules(rules_text(), Path("demo-rules.toml"))


def rules_text() -> str:
    """The rules file the demo writes: the shipped defaults plus the demo routing."""
    from rules.file import default_rules_text

    text = default_rules_text()
    if DEMO_ROUTING.is_file():
        text = text.rstrip("\n") + "\n\n" + DEMO_ROUTING.read_text(encoding="utf-8")
    return text


def _day_items(fixtures: Path, since: datetime) -> Iterator[Any]:
    from feeds.jsonl import feed_files, parse_line
    from feeds.replay import merged_lines

    for ts, number, text, name, source in merged_lines(feed_files(fixtures)):
        if ts < since:
            continue
        yield ts, parse_line(text, source=source, where=f"{name}:{number}")


def replay_day(
    name: str, fixtures: Path, work: Path, step: timedelta, cache: Path, say: Any = print
) -> DayResult:
    """Replay one fixture folder on a stepped clock; the alert episodes it produced."""
    from feeds.replay import load_manifest
    from feeds.runtime.demo import prepare_demo_store

    manifest = load_manifest(fixtures)
    start = _utc(manifest["replay_start_utc"])
    db = work / f"{name}.db"
    began = time.monotonic()
    prepare_demo_store(fixtures, start, db, cache=cache / "history", say=lambda _m: None)
    say(f"  {name}: history ready in {time.monotonic() - began:.0f} s, replaying ...")
    steps = asyncio.run(_replay(fixtures, db, manifest, step))
    incidents = incidents_from_manifest(manifest)
    episodes = episodes_from_steps(steps)
    return DayResult(
        name=name,
        incidents=incidents,
        episodes=episodes,
        start=start,
        end=_utc(manifest["day_end_utc"]),
        seconds=time.monotonic() - began,
        verified=verified_stockout_risks(fixtures, episodes, incidents),
    )


async def _replay(
    fixtures: Path, db: Path, manifest: Mapping[str, Any], step: timedelta
) -> list[tuple[datetime, dict[tuple[str, str], Mapping[str, str]]]]:
    from feeds.runtime.routing import router_hook
    from rules.alerts.silences import build_views
    from rules.alerts.state import scope_of
    from rules.engine import AlertEngine
    from store import alerts as alert_store
    from store.clock import FixedClock
    from store.metrics import compute_snapshots, open_reader
    from store.risk import MetricParams
    from store.writer import StoreWriter

    start = _utc(manifest["replay_start_utc"])
    end = _utc(manifest["day_end_utc"])
    rules = load_bench_rules()
    params = MetricParams(
        timezone=str(manifest.get("timezone", "America/New_York")),
        stale_overrides={"catalog": 45 * 24 * 60, "purchasing": 24 * 60, "returns": 120},
    )  # the demo's (console/cli.py, demo)
    clock = FixedClock(start)
    engine = AlertEngine(rules, lambda: alert_store.connect(db), clock, None)
    steps: list[tuple[datetime, dict[tuple[str, str], Mapping[str, str]]]] = []
    items = _day_items(fixtures, start)
    pending = next(items, None)
    reader = open_reader(db)
    status = alert_store.connect(db)
    try:
        async with StoreWriter(
            db, clock=clock, params=params, after_commit=router_hook(lambda: rules.fulfillment)
        ) as writer:
            writer.sweep_every = 0.0  # the store's own 15-minute risk sweep, in replay time
            at = start
            while at < end:
                chunk = []
                while pending is not None and pending[0] <= at:
                    chunk.append(pending[1])
                    pending = next(items, None)
                clock.set(at)
                if chunk:
                    await writer.write_many(chunk)
                engine.evaluate(compute_snapshots(reader, at, params))
                active = list(alert_store.load_active(status).values())
                views = build_views(active, [], tuple(rules.notify.inhibit), at)
                steps.append(
                    (
                        at,
                        {
                            (v.record.rule_id, v.record.scope): scope_of(v.record)
                            for v in views
                            if v.record.state in ("firing", "nodata") and not v.muted
                        },
                    )
                )
                at += step
    finally:
        engine.close()
        reader.close()
        status.close()
    return steps


REPLAY_WINDOW = ("2026-11-18T13:00:00Z", "2026-11-19T05:00:00Z")
"""The generator's replay start and day end: for saved runs that did not record them."""


def day_folder(name: str, cache: Path) -> Path | None:
    """The fixture folder a saved day was replayed from, if it is still there."""
    if name == "fixture":
        return FIXTURE_DAY
    if name.startswith("seed-"):
        folder = cache / f"days-{generator_digest()}" / name
        if (folder / "manifest.json").exists():
            return folder
    return None


def days_from_json(path: Path, cache: Path | None = None) -> list[DayResult]:
    """The days of a file an earlier ``--json`` run wrote.

    A file written before verified episodes were recorded has them re-checked from the
    day's folder when it is still at hand (``cache``: where generated days are kept).
    """
    data = json.loads(path.read_text())
    days = []
    for d in data["days"]:
        incidents = [
            Incident(i["kind"], i["scope"], _utc(i["start"]), _utc(i["end"]))
            for i in d["incidents"]
        ]
        episodes = [
            Episode(
                e["rule"], e["scope"], _utc(e["onset"]), _utc(e["offset"]) if e["offset"] else None
            )
            for e in d["episodes"]
        ]
        if "verified" in d:
            verified = frozenset(int(i) for i in d["verified"])
        else:
            folder = day_folder(d["name"], cache) if cache is not None else None
            verified = (
                verified_stockout_risks(folder, episodes, incidents)
                if folder is not None
                else frozenset()
            )
        days.append(
            DayResult(
                name=d["name"],
                incidents=incidents,
                episodes=episodes,
                start=_utc(d.get("start", REPLAY_WINDOW[0])),
                end=_utc(d.get("end", REPLAY_WINDOW[1])),
                verified=verified,
            )
        )
    return days


def parse_step(text: str) -> timedelta:
    """``1m``, ``5m``, ``30s``, ``1h`` to a timedelta."""
    units = {"s": 1, "m": 60, "h": 3600}
    if text and text[-1] in units:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    return timedelta(minutes=float(text))


def write_json(path: Path, days: Sequence[DayResult], scores: Sequence[RuleScore]) -> None:
    """Save the days' episodes and the scores (``--json``; re-scored by ``--from-json``)."""
    path.write_text(
        json.dumps(
            {
                "days": [
                    {
                        "name": d.name,
                        "start": d.start.isoformat(),
                        "end": d.end.isoformat(),
                        "incidents": [
                            {
                                "kind": i.kind,
                                "scope": dict(i.scope),
                                "start": i.start.isoformat(),
                                "end": i.end.isoformat(),
                            }
                            for i in d.incidents
                        ],
                        "episodes": [
                            {
                                "rule": e.rule_id,
                                "scope": dict(e.scope),
                                "onset": e.onset.isoformat(),
                                "offset": e.offset.isoformat() if e.offset else None,
                            }
                            for e in d.episodes
                        ],
                        "verified": sorted(d.verified),
                    }
                    for d in days
                ],
                "scores": [
                    {
                        "rule": s.rule_id,
                        "detected": s.detected,
                        "targets": s.targets,
                        "delay_median_min": s.delay_median,
                        "delay_max_min": s.delay_max,
                        "false_alarms": s.false_alarms,
                        "verified": s.verified,
                        "missed": s.missed,
                    }
                    for s in scores
                ],
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=10, help="generated days (seeds 1..N)")
    parser.add_argument("--seeds", help="comma-separated generator seeds (overrides --days)")
    parser.add_argument("--step", default="5m", help="replay clock step (default 5m)")
    parser.add_argument("--grace", default="60m", help="detections accepted after an incident")
    parser.add_argument("--no-fixture-day", action="store_true", help="skip fixtures/day")
    parser.add_argument("--cache", type=Path, help="cache folder for generated days")
    parser.add_argument("--json", type=Path, help="also write the episodes and scores here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="score the days saved by earlier --json runs together (no replay)",
    )
    args = parser.parse_args(argv)
    step, grace = parse_step(args.step), parse_step(args.grace)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(1, args.days + 1))
    cache = cache_root(args.cache)
    days: list[DayResult] = []
    if args.from_json:
        days = [d for path in args.from_json for d in days_from_json(path, cache)]
    else:
        names: list[str | int] = [] if args.no_fixture_day else ["fixture"]
        names += seeds
        with tempfile.TemporaryDirectory(prefix="omniops-bench-alerts-") as tmp:
            for entry in names:
                name = entry if isinstance(entry, str) else f"seed-{entry}"
                folder = FIXTURE_DAY if isinstance(entry, str) else generated_day(entry, cache)
                day = replay_day(name, folder, Path(tmp), step, cache)
                print(f"  {name}: {len(day.episodes)} firing episodes, {day.seconds:.0f} s")
                days.append(day)
                if args.json:  # after every day: a run cut short keeps what it replayed
                    rule_ids = [r.id for r in load_bench_rules().alert if r.enabled]
                    write_json(args.json, days, score(days, rule_ids, grace))
    rule_ids = [r.id for r in load_bench_rules().alert if r.enabled]
    scores = score(days, rule_ids, grace)
    print()
    print(
        f"{len(days)} days ({', '.join(d.name for d in days)}), "
        f"step {'(saved runs)' if args.from_json else args.step}, grace {args.grace}"
    )
    print(format_table(scores, len(days)))
    print()
    print(goal_lines(scores, days, grace))
    print()
    print(false_alarm_lines(days, grace))
    if args.json:
        write_json(args.json, days, scores)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
