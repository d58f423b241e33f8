"""The alert engine: evaluates the alert rules on each refresh's snapshots.

It persists every transition (:mod:`store.alerts`) and hands firing and resolved alerts
to the notifier.  The rules, the state machine and the operator actions it builds on
live in :mod:`rules.alerts` (its modules) and :mod:`rules.roles`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from rules.alerts.rule import AlertRule
from rules.alerts.samples import Sample, guard_lookup, index_samples, samples
from rules.alerts.silences import AlertView, build_views
from rules.alerts.state import (
    Observation,
    fingerprint,
    notify_alert,
    resolve_record,
    scope_of,
    step,
)
from rules.file import RulesFile
from rules.matchers import matches_all
from rules.notify import InhibitRule
from rules.receivers import NotifyAlert
from rules.roles import current_user
from store import alerts as store
from store.alerts import AlertRecord, Transition
from store.clock import Clock
from store.snapshots import Snapshots

log = logging.getLogger(__name__)


class NotifierLike(Protocol):
    """What the engine hands notifications to (:class:`rules.notify.Notifier`)."""

    def submit(self, firing: Sequence[NotifyAlert], resolved: Sequence[NotifyAlert]) -> None:
        """Take the complete set of alerts to notify now; must not block."""
        ...


@dataclass(frozen=True)
class EvaluationResult:
    """What one evaluation did."""

    at: datetime
    alerts: tuple[AlertView, ...]
    """Every active alert after this evaluation, plus those it resolved."""
    transitions: tuple[Transition, ...]
    """The state changes it recorded."""
    rules: int
    """Enabled rules evaluated."""
    samples: int

    @property
    def newly_firing(self) -> tuple[AlertView, ...]:
        """Alerts that started firing (or firing on no data) in this evaluation."""
        fps = {
            t.fingerprint
            for t in self.transitions
            if t.to_state in ("firing", "nodata") and t.from_state in (None, "pending", "resolved")
        }
        return tuple(a for a in self.alerts if a.record.fingerprint in fps)

    @property
    def firing(self) -> tuple[AlertView, ...]:
        """Alerts firing now (including no-data)."""
        return tuple(a for a in self.alerts if a.record.state in ("firing", "nodata"))


@dataclass
class _Rules:
    alerts: tuple[AlertRule, ...] = ()
    inhibit: tuple[InhibitRule, ...] = ()


class AlertEngine:
    """Evaluates the alert rules on each refresh's snapshots and persists the transitions.

    ``evaluate`` is blocking (SQLite): call it from a thread (``asyncio.to_thread``) after
    every refresh in the process that writes the store.  It hands the alerts to the
    notifier, which delivers asynchronously and never blocks evaluation.
    """

    def __init__(
        self,
        rules: RulesFile | None,
        connect: Callable[[], sqlite3.Connection],
        clock: Clock,
        notifier: NotifierLike | None = None,
        *,
        user: str | None = None,
    ) -> None:
        """Create the engine.

        Args:
            rules: The rules in force (``None``: none yet); replace with :meth:`set_rules`.
            connect: Opens a writable store connection (e.g. ``lambda:
                store.alerts.connect(path)``); called once, on first use.
            clock: "now" for every transition.
            notifier: Receives firing and resolved alerts after each evaluation.
            user: Recorded as who made state changes (default: the OS user).
        """
        self._rules = _Rules()
        if rules is not None:
            self.set_rules(rules)
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self.clock = clock
        self.notifier = notifier
        self.user = user or current_user()
        self._lock = threading.Lock()

    def set_rules(self, rules: RulesFile) -> None:
        """Use new rules from the next evaluation on (the watcher's reload callback)."""
        self._rules = _Rules(tuple(rules.alert), tuple(rules.notify.inhibit))

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The alert rules in force."""
        return self._rules.alerts

    def close(self) -> None:
        """Close the store connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def evaluate(self, snapshots: Snapshots) -> EvaluationResult:
        """Evaluate every enabled rule on ``snapshots``; persist; notify.  Blocking."""
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            now = self.clock.now()
            current = self._rules
            all_samples = samples(snapshots)
            with store.immediate(conn):
                prev = store.load_active(conn)
                changes, touched = self._step_all(current.alerts, all_samples, prev, now)
                store.write_changes(conn, changes)
                silences = store.list_silences(conn, now)
            records = [r for r in touched if r.active or r.fingerprint in _resolved(changes)]
            views = build_views(records, silences, current.inhibit, now)
        self._notify(views, changes)
        enabled = sum(1 for r in current.alerts if r.enabled)
        return EvaluationResult(
            now, tuple(views), tuple(changes.transitions), enabled, len(all_samples)
        )

    def _step_all(
        self,
        rules: Sequence[AlertRule],
        all_samples: Sequence[Sample],
        prev: Mapping[str, AlertRecord],
        now: datetime,
    ) -> tuple[store.AlertChanges, list[AlertRecord]]:
        changes = store.AlertChanges()
        touched: list[AlertRecord] = []
        by_metric = index_samples(all_samples)
        enabled = {r.id: r for r in rules if r.enabled}
        by_rule: dict[str, dict[str, AlertRecord]] = defaultdict(dict)
        for fp, record in prev.items():
            by_rule[record.rule_id][fp] = record

        def record_change(new: AlertRecord, old: AlertRecord | None, note: str | None) -> None:
            changes.alerts.append(new)
            touched.append(new)
            if note is not None:
                changes.transitions.append(
                    Transition(
                        fingerprint=new.fingerprint,
                        rule_id=new.rule_id,
                        at=now,
                        kind="state",
                        from_state=None if old is None or not old.active else old.state,
                        to_state=new.state,
                        value=new.value,
                        by=self.user,
                        note=note,
                    )
                )

        # Alerts of rules that were removed or disabled resolve, saying why.
        all_ids = {r.id for r in rules}
        for rule_id, records in by_rule.items():
            if rule_id in enabled:
                continue
            why = "rule disabled" if rule_id in all_ids else "rule removed from the rules file"
            for old in records.values():
                record_change(resolve_record(replace(old, updated_at=now), now), old, why)

        for rule in enabled.values():
            existing = by_rule.get(rule.id, {})
            guard = guard_lookup(by_metric, rule.only_when.metric) if rule.only_when else None
            seen: set[str] = set()
            for s in by_metric.get(rule.metric, []):
                scope = s.label_map
                if not matches_all(rule.matchers, scope):
                    continue
                fp = fingerprint(rule.id, scope)
                seen.add(fp)
                ok = True
                if rule.only_when is not None and guard is not None:
                    ok = rule.only_when.holds(guard.get(s.labels))
                before = existing.get(fp)
                new, note = step(rule, before, Observation(s.value, True, ok), now, scope)
                if new is not None:
                    record_change(new, before, note)
            for fp, old in existing.items():
                if fp in seen:
                    continue
                # The scope vanished from the snapshot (or the rule's matchers changed).
                scope = scope_of(old)
                if not matches_all(rule.matchers, scope):
                    resolved = resolve_record(replace(old, updated_at=now), now)
                    record_change(resolved, old, "scope no longer matches the rule")
                    continue
                new, note = step(rule, old, Observation(None, present=False), now, scope)
                if new is not None:
                    record_change(new, old, note)
        return changes, touched

    def _notify(self, views: Sequence[AlertView], changes: store.AlertChanges) -> None:
        if self.notifier is None:
            return
        resolved_now = _resolved(changes)
        fired_before = {
            t.fingerprint for t in changes.transitions if t.from_state in ("firing", "nodata")
        }
        firing = [
            notify_alert(v.record)
            for v in views
            if v.record.state in ("firing", "nodata") and not v.muted
        ]
        resolved = [
            notify_alert(v.record)
            for v in views
            if v.record.fingerprint in resolved_now and v.record.fingerprint in fired_before
        ]
        try:
            self.notifier.submit(firing, resolved)
        except Exception:  # a notifier problem must never stop evaluation
            log.exception("handing alerts to the notifier failed")


def _resolved(changes: store.AlertChanges) -> set[str]:
    return {a.fingerprint for a in changes.alerts if a.state == "resolved"}
