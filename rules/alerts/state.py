"""The alert state machine: one evaluation of one rule × scope, as a pure function.

Per rule and scope (one set of scope labels), an alert moves::

    (none) ──condition true──▶ pending ──held for `for`──▶ firing ──below clear──▶ resolved
                                  │                          │  ▲
                                  └──condition false──▶ resolved   no data (no_data="alert")
                                                             ▼  │
                                                            nodata

* **Hysteresis**: a firing alert resolves only once the value is back past ``clear``
  (for ``>`` / ``>=``: ``value`` no longer ``op clear``), so a value hovering at the
  threshold does not flap.  Pending needs the condition itself to hold throughout.
* **No data** (the snapshot row has no value, or the scope vanished from the snapshot) is
  never a silent all-clear: the rule says what it means.  ``alert``: it counts as the
  condition holding (pending, then the ``nodata`` state, which notifies like firing);
  ``ok``: it counts as healthy (an active alert resolves); ``keep``: the alert keeps its
  state and shows "no data since …".
* Acknowledgements end when the alert resolves; silences and inhibition mute
  notifications, never evaluation: a silenced alert still resolves.

Time is the caller's (the injected clock's).  State lives in the store
(:mod:`store.alerts`), so alerts survive a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from rules.alerts.rule import AlertRule, holds
from rules.labels import format_duration, labels_text
from rules.matchers import parse_matchers
from rules.receivers import NotifyAlert
from store.alerts import AlertRecord, AlertState


@dataclass(frozen=True)
class Observation:
    """What one evaluation saw for one rule × scope."""

    value: float | None
    """The metric's value; None when the snapshot had no value or no row for the scope."""
    present: bool = True
    """False when the scope is gone from the snapshot (treated as no data)."""
    guard: bool = True
    """False when the rule's ``only_when`` does not hold (treated as healthy)."""


def fingerprint(rule_id: str, scope: Mapping[str, str]) -> str:
    """``late_orders|location=WH-NJ, scope=location``: one alert per rule and scope."""
    return f"{rule_id}|{labels_text(scope)}"


def alert_labels(rule: AlertRule, scope: Mapping[str, str]) -> dict[str, str]:
    """Every label of an alert: alertname, severity, the rule's labels, then the scope's."""
    return {"alertname": rule.id, "severity": rule.severity, **rule.labels, **scope}


def fmt_value(value: float | None) -> str:
    """A metric value as shown (``no data`` for None)."""
    return "no data" if value is None else f"{value:g}"


def step(
    rule: AlertRule,
    prev: AlertRecord | None,
    obs: Observation,
    now: datetime,
    scope: Mapping[str, str],
) -> tuple[AlertRecord | None, str | None]:
    """One evaluation of one rule × scope: the new record and, if the state changed, a note.

    Returns ``(None, None)`` when there is nothing to store (no alert, none started);
    ``(record, None)`` when only the value or rule fields changed.  Pure.
    """
    value = obs.value if obs.present else None
    active = prev is not None and prev.active
    verdict: Literal["breach", "hold", "ok", "keep"]
    if not obs.guard:
        verdict = "ok"
    elif value is None:
        verdict = {"alert": "breach", "ok": "ok", "keep": "keep"}[rule.no_data]  # type: ignore[assignment]
    elif rule.breaches(value):
        verdict = "breach"
    elif rule.still_bad(value):
        verdict = "hold"
    else:
        verdict = "ok"

    if not active:
        if verdict != "breach":
            return None, None
        fires = rule.for_ <= timedelta(0)
        state: AlertState = ("nodata" if value is None else "firing") if fires else "pending"
        record = AlertRecord(
            fingerprint=fingerprint(rule.id, scope),
            rule_id=rule.id,
            metric=rule.metric,
            scope=labels_text(scope),
            labels=alert_labels(rule, scope),
            state=state,
            severity=rule.severity,
            op=rule.op,
            threshold=rule.threshold,
            clear=rule.clear_level,
            value=value,
            description=rule.description,
            started_at=now,
            fired_at=now if fires else None,
            resolved_at=None,
            updated_at=now,
            no_data_since=now if value is None else None,
        )
        why = "no data (no_data = alert)" if value is None else _breach_note(rule, value)
        return record, why

    assert prev is not None
    base = replace(
        prev,
        metric=rule.metric,
        labels=alert_labels(rule, scope),
        severity=rule.severity,
        op=rule.op,
        threshold=rule.threshold,
        clear=rule.clear_level,
        description=rule.description,
        updated_at=now,
        value=value,
        no_data_since=(prev.no_data_since or now) if value is None else None,
    )
    if verdict == "keep":
        return base, None
    if verdict in ("ok", "hold") and (prev.state == "pending" or verdict == "ok"):
        if not obs.guard:
            why = "only_when no longer holds"
        elif value is None:
            why = "no data (no_data = ok)"
        elif prev.state == "pending":
            why = f"condition no longer holds ({fmt_value(value)}) before {rule.id} fired"
        else:
            why = f"{fmt_value(value)} is back past the clear level {rule.clear_level:g}"
        return resolve_record(base, now), why
    if prev.state == "pending":
        assert verdict == "breach"
        if now - prev.started_at >= rule.for_:
            fired: AlertState = "nodata" if value is None else "firing"
            held = format_for(now - prev.started_at)
            note = "no data" if value is None else _breach_note(rule, value)
            return replace(base, state=fired, fired_at=now), f"{note}, held {held}"
        return base, None
    # firing or nodata: breach, or hold (within the hysteresis band)
    new_state: AlertState = "nodata" if value is None else "firing"
    if new_state != prev.state:
        why = "no data (no_data = alert)" if value is None else f"data again: {fmt_value(value)}"
        return replace(base, state=new_state), why
    return base, None


def format_for(value: timedelta) -> str:
    """A ``for`` duration as written in the file."""
    return format_duration(value)


def _breach_note(rule: AlertRule, value: float) -> str:
    return f"{value:g} {rule.op} {rule.threshold:g}"


def resolve_record(record: AlertRecord, now: datetime) -> AlertRecord:
    """``record`` resolved at ``now``."""
    return replace(
        record,
        state="resolved",
        resolved_at=now,
        no_data_since=None,
        acked_by=None,
        acked_at=None,
        ack_comment="",
    )


_CLEARS_WHEN = {">": "≤", ">=": "<", "<": "≥", "<=": ">"}
"""For each comparison, how a value must compare with the clear level to resolve."""


def condition_text(record: AlertRecord) -> str:
    """The value against the level that matters now, as the operator reads it.

    ``14 > 10`` while the value breaches the threshold; ``6 (clears ≤ 5)`` while a firing
    alert is held by hysteresis (past the clear level, no longer past the threshold);
    ``no data (> 10)`` without a value.  A resolved alert shows its last value as
    ``4 (cleared ≤ 5)``.
    """
    if record.value is None:
        return f"no data ({record.op} {record.threshold:g})"
    value = f"{record.value:.4g}"
    if record.state == "resolved":
        return f"{value} (cleared {_CLEARS_WHEN.get(record.op, '')} {record.clear:g})"
    if record.state in ("firing", "nodata") and not holds(
        record.op, record.value, record.threshold
    ):
        return f"{value} (clears {_CLEARS_WHEN.get(record.op, '')} {record.clear:g})"
    return f"{value} {record.op} {record.threshold:g}"


def notify_alert(record: AlertRecord) -> NotifyAlert:
    """The notification form of an alert record."""
    resolved = record.state == "resolved"
    return NotifyAlert(
        fingerprint=record.fingerprint,
        status="resolved" if resolved else "firing",
        state=record.state,
        labels=dict(record.labels),
        description=record.description,
        summary=f"{record.rule_id} {record.scope or '(all)'}: {condition_text(record)}",
        value=record.value,
        threshold=record.threshold,
        op=record.op,
        starts_at=record.fired_at or record.started_at,
        ends_at=record.resolved_at if resolved else None,
        acked_by=record.acked_by,
    )


def scope_of(record: AlertRecord) -> dict[str, str]:
    """The scope labels of a stored alert (parsed back from its scope text)."""
    return {m.name: m.value for m in parse_matchers(record.scope)}
