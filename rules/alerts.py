"""Alert rules and their evaluation: samples, the state machine, the engine, roles.

Every rule reads the same frozen :class:`~store.snapshots.Snapshots` the panels show,
through one pure function, :func:`samples`.  Per rule and scope (one set of scope labels),
an alert moves::

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

Time is the injected clock's.  State lives in the store (:mod:`store.alerts`), so alerts
survive a restart; every transition is recorded with its time and the OS user.

Metric names (what ``metric =`` in a rule may say), with the labels of their scopes.
Each is a field of a panel row; ``None`` in the snapshot is "no data".

Fulfilment health (labels ``scope`` plus one of ``location`` / ``channel`` / ``carrier``;
e.g. ``scope=location, location=WH-NJ``):

* ``fulfillment.open_orders``, ``fulfillment.late``, ``fulfillment.oldest_open_minutes``,
  ``fulfillment.on_time_rate`` (0–1) — every scope (for carriers: shipments in transit,
  overdue against the carrier's estimate, share delivered by the estimate);
* ``fulfillment.at_risk``, ``fulfillment.exceptions``, ``fulfillment.pick_p50_minutes``,
  ``fulfillment.pick_p90_minutes``, ``fulfillment.bopis_ready_rate`` (0–1) — locations and
  channels;
* ``carrier.delay_hours`` — carriers (``scope=carrier, carrier=UPS``): mean delivered −
  estimate over the last 24 h.

Stockout risk (labels ``sku``, ``location``, ``category``):

* ``stock.available``, ``stock.days_of_cover`` (no data when nothing sold),
  ``stock.velocity_per_day``, ``stock.inbound_qty``, ``stock.status_out`` (1 when
  OUT), ``stock.at_risk`` (1 when OUT, OVERSELL or AT RISK), ``stock.oversell`` (1 when
  OVERSELL).  Only the rows the panel keeps (its top N) are evaluated.

Return spike (labels ``sku``, ``category``): ``returns.rate`` (0–1+), ``returns.z_score``,
``returns.spike`` (1 when a spike), ``returns.returned`` (units).

Headline (no labels unless said): ``headline.net_sales``, ``headline.net_sales_vs_rolling``
(net ÷ rolling, e.g. 0.8 = 20 % below), ``headline.orders_per_hour``,
``headline.orders_per_hour_vs_rolling``; per ``channel``: ``headline.aov``,
``headline.aov_vs_rolling`` (AOV ÷ rolling AOV).

Feeds (labels ``feed`` and ``channel``, both the feed's name): ``feed.stale_minutes``
(minutes since the last event; no data when the feed never delivered), ``feed.stale``
(1 when the panel flags it stale), ``feed.quarantined``.
"""

from __future__ import annotations

import getpass
import logging
import operator
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from rules.labels import Duration, MatcherList, check_label_names, format_duration, labels_text
from rules.matchers import Matcher, matches_all, parse_matchers
from rules.notify import InhibitRule, inhibiting_source
from rules.receivers import NotifyAlert
from store import alerts as store
from store.alerts import AlertRecord, AlertState, ReceiverStatus, Silence, Transition
from store.clock import Clock
from store.snapshots import Snapshots

log = logging.getLogger(__name__)

Op = Literal[">", ">=", "<", "<="]
NoData = Literal["alert", "ok", "keep"]
Severity = Literal["critical", "warning", "info"]
Role = Literal["viewer", "operator", "editor"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


# -- metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """What a metric name means and which labels its scopes carry."""

    name: str
    labels: tuple[str, ...]
    description: str
    panel: str
    """The console panel showing its rows: fulfillment, stockout, returns or overview."""


def _m(name: str, labels: tuple[str, ...], description: str, panel: str) -> MetricInfo:
    return MetricInfo(name, labels, description, panel)


_FUL = ("scope", "location", "channel", "carrier")
_STOCK = ("sku", "location", "category")
_RET = ("sku", "category")
_FEED = ("feed", "channel")

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        _m("fulfillment.open_orders", _FUL, "open orders (carriers: in transit)", "fulfillment"),
        _m("fulfillment.late", _FUL, "late open orders (carriers: overdue)", "fulfillment"),
        _m("fulfillment.oldest_open_minutes", _FUL, "age of the oldest open order", "fulfillment"),
        _m("fulfillment.on_time_rate", _FUL, "on-time share, last 24 h (0-1)", "fulfillment"),
        _m("fulfillment.at_risk", _FUL, "open orders due soon, not packed", "fulfillment"),
        _m("fulfillment.exceptions", _FUL, "open orders with an exception", "fulfillment"),
        _m("fulfillment.pick_p50_minutes", _FUL, "median pick time", "fulfillment"),
        _m("fulfillment.pick_p90_minutes", _FUL, "p90 pick time", "fulfillment"),
        _m("fulfillment.bopis_ready_rate", _FUL, "BOPIS ready within promise (0-1)", "fulfillment"),
        _m("carrier.delay_hours", ("scope", "carrier"), "mean delay vs estimate", "fulfillment"),
        _m("stock.available", _STOCK, "on hand - reserved - buffer", "stockout"),
        _m("stock.days_of_cover", _STOCK, "days of cover (no data: no sales)", "stockout"),
        _m("stock.velocity_per_day", _STOCK, "units sold per day", "stockout"),
        _m("stock.inbound_qty", _STOCK, "open inbound quantity", "stockout"),
        _m("stock.status_out", _STOCK, "1 when OUT", "stockout"),
        _m("stock.at_risk", _STOCK, "1 when OUT, OVERSELL or AT RISK", "stockout"),
        _m("stock.oversell", _STOCK, "1 when a channel advertises too much", "stockout"),
        _m("returns.rate", _RET, "return rate in the window", "returns"),
        _m("returns.z_score", _RET, "rate test z vs baseline", "returns"),
        _m("returns.spike", _RET, "1 when a return spike", "returns"),
        _m("returns.returned", _RET, "units returned in the window", "returns"),
        _m("headline.net_sales", (), "net sales today", "overview"),
        _m("headline.net_sales_vs_rolling", (), "net sales / rolling average", "overview"),
        _m("headline.orders_per_hour", (), "orders in the last hour", "overview"),
        _m("headline.orders_per_hour_vs_rolling", (), "orders/h / rolling", "overview"),
        _m("headline.aov", ("channel",), "average order value today", "overview"),
        _m("headline.aov_vs_rolling", ("channel",), "AOV / rolling AOV", "overview"),
        _m("feed.stale_minutes", _FEED, "minutes since the feed's last event", "overview"),
        _m("feed.stale", _FEED, "1 when the feed is flagged stale", "overview"),
        _m("feed.quarantined", _FEED, "payloads quarantined from the feed", "overview"),
    )
}
"""Every metric a rule may reference."""


@dataclass(frozen=True)
class Sample:
    """One value of one metric for one scope, read from a snapshot."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    """Sorted (name, value) pairs: the scope."""
    value: float | None
    """None: no data."""

    @property
    def label_map(self) -> dict[str, str]:
        """The scope labels as a dict."""
        return dict(self.labels)


def _sample(metric: str, labels: Mapping[str, str], value: float | None) -> Sample:
    return Sample(metric, tuple(sorted(labels.items())), value)


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def samples(snapshots: Snapshots) -> list[Sample]:
    """Every metric value of one refresh, as rules see it (see the module docstring).

    Pure: the panels and the rules read the same snapshot, so an alert always agrees with
    the row it points at.
    """
    out: list[Sample] = []
    add = out.append
    for row in snapshots.fulfillment.rows:
        labels = {"scope": row.scope, row.scope: row.key}
        add(_sample("fulfillment.open_orders", labels, row.open_orders))
        add(_sample("fulfillment.late", labels, row.late))
        add(_sample("fulfillment.oldest_open_minutes", labels, row.oldest_open_minutes))
        add(_sample("fulfillment.on_time_rate", labels, row.on_time_rate))
        if row.scope == "carrier":
            add(_sample("carrier.delay_hours", labels, row.carrier_delay_hours))
            continue
        add(_sample("fulfillment.at_risk", labels, row.at_risk))
        add(_sample("fulfillment.exceptions", labels, row.exceptions))
        add(_sample("fulfillment.pick_p50_minutes", labels, row.pick_p50_minutes))
        add(_sample("fulfillment.pick_p90_minutes", labels, row.pick_p90_minutes))
        add(_sample("fulfillment.bopis_ready_rate", labels, row.bopis_ready_rate))
    for s in snapshots.stockout.rows:
        labels = {"sku": s.sku, "location": s.location_id, "category": s.category}
        add(_sample("stock.available", labels, s.available))
        add(_sample("stock.days_of_cover", labels, s.days_of_cover))
        add(_sample("stock.velocity_per_day", labels, s.velocity_per_day))
        add(_sample("stock.inbound_qty", labels, s.inbound_qty))
        add(_sample("stock.status_out", labels, 1.0 if s.status == "OUT" else 0.0))
        at_risk = s.status in ("OUT", "OVERSELL", "AT RISK")
        add(_sample("stock.at_risk", labels, 1.0 if at_risk else 0.0))
        add(_sample("stock.oversell", labels, 1.0 if s.status == "OVERSELL" else 0.0))
    for r in snapshots.returns.rows:
        labels = {"sku": r.sku, "category": r.category}
        add(_sample("returns.rate", labels, r.rate))
        add(_sample("returns.z_score", labels, r.z_score))
        add(_sample("returns.spike", labels, 1.0 if r.spike else 0.0))
        add(_sample("returns.returned", labels, r.returned))
    h = snapshots.headline
    add(_sample("headline.net_sales", {}, h.net_sales))
    add(_sample("headline.net_sales_vs_rolling", {}, _ratio(h.net_sales, h.net_sales_rolling)))
    add(_sample("headline.orders_per_hour", {}, h.orders_per_hour))
    add(
        _sample(
            "headline.orders_per_hour_vs_rolling",
            {},
            _ratio(h.orders_per_hour, h.orders_per_hour_rolling),
        )
    )
    for c in h.channels:
        labels = {"channel": c.channel}
        add(_sample("headline.aov", labels, c.aov))
        add(_sample("headline.aov_vs_rolling", labels, _ratio(c.aov, c.aov_rolling)))
    for f in h.feeds:
        labels = {"feed": f.feed, "channel": f.feed}
        minutes = (
            None
            if f.last_event_at is None
            else max(0.0, (snapshots.as_of - f.last_event_at).total_seconds() / 60)
        )
        add(_sample("feed.stale_minutes", labels, minutes))
        add(_sample("feed.stale", labels, 1.0 if f.stale else 0.0))
        add(_sample("feed.quarantined", labels, f.quarantined))
    return out


# -- rules -------------------------------------------------------------------------------------


def _check_metric(name: str) -> str:
    if name not in METRICS:
        known = ", ".join(sorted(METRICS))
        raise ValueError(f"unknown metric {name!r}; known metrics: {known}")
    return name


def _check_scope_labels(metric: str, matchers: Sequence[Matcher]) -> None:
    known = METRICS[metric].labels
    for m in matchers:
        if m.name not in known:
            have = ", ".join(known) or "no labels"
            raise ValueError(f"metric {metric} has no label {m.name!r} (it has {have})")


class Condition(BaseModel):
    """A condition on another metric of the same scope (``only_when``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str
    """A metric with the same labels as the rule's, e.g. ``stock.velocity_per_day``."""
    op: Op
    threshold: float

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _check_metric(value)

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` satisfies the condition (no data never does)."""
        return value is not None and _OPS[self.op](value, self.threshold)


class AlertRule(BaseModel):
    """One ``[[alert]]`` table of the rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", max_length=64)
    """Unique name; becomes the ``alertname`` label."""
    metric: str
    """A metric name (see :data:`METRICS`), e.g. ``fulfillment.late``."""
    matchers: MatcherList = ()
    """The scope as label matchers, e.g. ``'scope=location, location=~WH-.*'``."""
    op: Op
    """The comparison that makes the condition true: ``value op threshold``."""
    threshold: float
    clear: float | None = None
    """Hysteresis: a firing alert resolves once ``value op clear`` no longer holds.
    Default: the threshold.  Must not be past the threshold (for ``>``: clear ≤ threshold)."""
    for_: Duration = Field(default=timedelta(0), alias="for")
    """How long the condition must hold before the alert fires (``0s``: at once)."""
    severity: Severity = "warning"
    labels: dict[str, str] = {}
    """Extra labels for routing (e.g. ``team = "warehouse"``)."""
    description: str = ""
    """What operators read: what it means and what to do."""
    no_data: NoData = "keep"
    """What no data means: ``alert`` (fire), ``ok`` (resolve) or ``keep`` (hold the state)."""
    only_when: Condition | None = None
    """Evaluate a scope only while this condition on another metric holds (e.g. best-sellers)."""
    enabled: bool = True

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return _check_metric(value)

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        check_label_names(value)
        reserved = {"alertname", "severity"} & set(value)
        if reserved:
            raise ValueError(f"label {sorted(reserved)[0]!r} is set by omniops; use another name")
        return value

    # Field validators (not one model validator) so an error carries the field's location
    # and the rules file can name its line.  Fields validate in declaration order.

    @field_validator("matchers")
    @classmethod
    def _scope_labels(cls, value: tuple[Matcher, ...], info: ValidationInfo) -> tuple[Matcher, ...]:
        metric = info.data.get("metric")
        if metric is not None:
            _check_scope_labels(metric, value)
        return value

    @field_validator("clear")
    @classmethod
    def _clear_side(cls, value: float | None, info: ValidationInfo) -> float | None:
        op, threshold = info.data.get("op"), info.data.get("threshold")
        if value is None or op is None or threshold is None:
            return value
        if op in (">", ">=") and value > threshold:
            raise ValueError(
                f"clear {value:g} is above the threshold {threshold:g}; with "
                f"'{op}' the clear level must be at or below it"
            )
        if op in ("<", "<=") and value < threshold:
            raise ValueError(
                f"clear {value:g} is below the threshold {threshold:g}; with "
                f"'{op}' the clear level must be at or above it"
            )
        return value

    @field_validator("only_when")
    @classmethod
    def _same_labels(cls, value: Condition | None, info: ValidationInfo) -> Condition | None:
        metric = info.data.get("metric")
        if (
            value is not None
            and metric is not None
            and METRICS[value.metric].labels != METRICS[metric].labels
        ):
            raise ValueError(f"metric {value.metric} has other labels than {metric}")
        return value

    @property
    def clear_level(self) -> float:
        """The level the value must get back past to resolve."""
        return self.threshold if self.clear is None else self.clear

    def breaches(self, value: float) -> bool:
        """The firing condition: ``value op threshold``."""
        return _OPS[self.op](value, self.threshold)

    def still_bad(self, value: float) -> bool:
        """The hysteresis condition: ``value op clear`` (a firing alert stays firing)."""
        return _OPS[self.op](value, self.clear_level)

    def condition_text(self) -> str:
        """``fulfillment.late > 10 (clear 8) for 5m``."""
        text = f"{self.metric} {self.op} {self.threshold:g}"
        if self.clear is not None and self.clear != self.threshold:
            text += f" (clear {self.clear:g})"
        if self.for_:
            text += f" for {format_duration(self.for_)}"
        return text


# -- the state machine -------------------------------------------------------------------------


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


def _fmt(value: float | None) -> str:
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
            why = f"condition no longer holds ({_fmt(value)}) before {rule.id} fired"
        else:
            why = f"{_fmt(value)} is back past the clear level {rule.clear_level:g}"
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
        why = "no data (no_data = alert)" if value is None else f"data again: {_fmt(value)}"
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


# -- roles -------------------------------------------------------------------------------------


class Roles(BaseModel):
    """Who may do what, by OS user (an SSH login): the ``[roles]`` section of the config.

    ``viewer`` reads; ``operator`` also acknowledges and silences; ``editor`` also edits
    the rules file.  Users not listed get ``default_role`` (read-only unless changed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    editors: tuple[str, ...] = ()
    """OS users who may edit rules, acknowledge and silence."""
    operators: tuple[str, ...] = ()
    """OS users who may acknowledge and silence."""
    default_role: Role = "viewer"
    """The role of anyone not listed."""

    def role_of(self, user: str) -> Role:
        """The role of ``user``."""
        if user in self.editors:
            return "editor"
        if user in self.operators:
            return "operator"
        return self.default_role


class PermissionDenied(PermissionError):
    """A mutating action the current user's role does not allow."""


def current_user() -> str:
    """The OS user running this process (who did it, unless a caller says otherwise)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass(frozen=True)
class Permissions:
    """What the current user may do; every mutating path calls :meth:`require`."""

    user: str
    role: Role
    read_only: bool = False
    """``--read-only``: nothing may change, whatever the role."""

    @classmethod
    def for_user(
        cls, roles: Roles, user: str | None = None, *, read_only: bool = False
    ) -> Permissions:
        """The permissions of ``user`` (default: the OS user) under ``roles``."""
        who = user or current_user()
        return cls(user=who, role=roles.role_of(who), read_only=read_only)

    @property
    def can_edit_rules(self) -> bool:
        """May save the rules file."""
        return not self.read_only and self.role == "editor"

    @property
    def can_acknowledge(self) -> bool:
        """May acknowledge, silence and expire silences."""
        return not self.read_only and self.role in ("operator", "editor")

    def require(self, action: Literal["edit", "acknowledge", "silence"]) -> None:
        """Raise :class:`PermissionDenied` unless ``action`` is allowed."""
        allowed = self.can_edit_rules if action == "edit" else self.can_acknowledge
        if allowed:
            return
        if self.read_only:
            raise PermissionDenied(f"read-only console: cannot {action}")
        needed = "editor" if action == "edit" else "operator or editor"
        raise PermissionDenied(
            f"user {self.user!r} is a {self.role} and may not {action} (needs {needed}; "
            "roles are set per OS user in the [roles] section of the config)"
        )


# -- silences, inhibition, views ---------------------------------------------------------------


def silencing(labels: Mapping[str, str], silences: Iterable[Silence], now: datetime) -> int | None:
    """The id of a silence in force that matches ``labels``, or None."""
    for s in silences:
        if not s.active_at(now):
            continue
        try:
            matchers = parse_matchers(s.matchers)
        except ValueError:
            log.warning("silence %d has bad matchers %r; ignored", s.id, s.matchers)
            continue
        if matchers and matches_all(matchers, labels):
            return s.id
    return None


@dataclass(frozen=True)
class AlertView:
    """An alert as the console and the notifier see it: the record and what mutes it."""

    record: AlertRecord
    silenced_by: int | None = None
    """The id of the silence that matches it."""
    inhibited_by: str | None = None
    """The fingerprint of the firing alert that inhibits it."""

    @property
    def muted(self) -> bool:
        """Silenced or inhibited: no notification is sent."""
        return self.silenced_by is not None or self.inhibited_by is not None


def build_views(
    records: Sequence[AlertRecord],
    silences: Sequence[Silence],
    inhibit: Sequence[InhibitRule],
    now: datetime,
) -> list[AlertView]:
    """Mark which alerts are silenced and which a firing alert inhibits."""
    sources = [(r.fingerprint, r.labels) for r in records if r.state in ("firing", "nodata")]
    views: list[AlertView] = []
    for r in records:
        inhibitor = None
        if r.active:
            inhibitor = inhibiting_source(r.fingerprint, r.labels, sources, inhibit)
        views.append(AlertView(r, silencing(r.labels, silences, now), inhibitor))
    return views


def notify_alert(record: AlertRecord) -> NotifyAlert:
    """The notification form of an alert record."""
    resolved = record.state == "resolved"
    return NotifyAlert(
        fingerprint=record.fingerprint,
        status="resolved" if resolved else "firing",
        state=record.state,
        labels=dict(record.labels),
        description=record.description,
        summary=(
            f"{record.rule_id} {record.scope or '(all)'}: {_fmt(record.value)} "
            f"{record.op} {record.threshold:g}"
        ),
        value=record.value,
        threshold=record.threshold,
        op=record.op,
        starts_at=record.fired_at or record.started_at,
        ends_at=record.resolved_at if resolved else None,
        acked_by=record.acked_by,
    )


# -- preview -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RulePreview:
    """What a rule would do on the current snapshot, before it is saved."""

    scopes: int
    """Scopes the rule's matchers select (with only_when holding)."""
    firing: int
    """Scopes whose value breaches the threshold now (``for`` not counted)."""
    no_data: int
    """Scopes with no value."""
    examples: tuple[tuple[str, float | None], ...]
    """Up to five breaching scopes and their values, worst first."""

    def text(self, rule: AlertRule) -> str:
        """``would fire for 3 of 12 scopes now (location=WH-TX 9, …)``."""
        nodata_fires = rule.no_data == "alert"
        firing = self.firing + (self.no_data if nodata_fires else 0)
        text = f"would fire for {firing} of {self.scopes} scope(s) now"
        if self.no_data:
            text += f"; {self.no_data} with no data ({rule.no_data})"
        if self.examples:
            text += ": " + "; ".join(f"{s or '(all)'} {_fmt(v)}" for s, v in self.examples)
        return text


def index_samples(all_samples: Iterable[Sample]) -> dict[str, list[Sample]]:
    """Samples grouped by metric."""
    by_metric: dict[str, list[Sample]] = defaultdict(list)
    for s in all_samples:
        by_metric[s.metric].append(s)
    return by_metric


def guard_lookup(
    by_metric: Mapping[str, list[Sample]], metric: str
) -> dict[tuple[tuple[str, str], ...], float | None]:
    """The values of ``metric`` by their label tuples (a guard rule's lookup)."""
    return {s.labels: s.value for s in by_metric.get(metric, [])}


def preview_rule(rule: AlertRule, all_samples: Sequence[Sample]) -> RulePreview:
    """How many scopes ``rule`` selects and would fire for on these samples.  Pure."""
    by_metric = index_samples(all_samples)
    guard = guard_lookup(by_metric, rule.only_when.metric) if rule.only_when else None
    scopes = firing = no_data = 0
    hits: list[tuple[str, float | None]] = []
    for s in by_metric.get(rule.metric, []):
        labels = s.label_map
        if not matches_all(rule.matchers, labels):
            continue
        if (
            rule.only_when is not None
            and guard is not None
            and not rule.only_when.holds(guard.get(s.labels))
        ):
            continue
        scopes += 1
        if s.value is None:
            no_data += 1
            if rule.no_data == "alert":
                hits.append((labels_text(labels), None))
        elif rule.breaches(s.value):
            firing += 1
            hits.append((labels_text(labels), s.value))
    descending = rule.op in (">", ">=")

    def worst(item: tuple[str, float | None]) -> float:
        v = item[1]
        if v is None:
            return float("-inf")
        return -v if descending else v

    hits.sort(key=worst)
    return RulePreview(scopes, firing, no_data, tuple(hits[:5]))


def scope_of(record: AlertRecord) -> dict[str, str]:
    """The scope labels of a stored alert (parsed back from its scope text)."""
    return {m.name: m.value for m in parse_matchers(record.scope)}


# -- operator actions (what the console is handed) ---------------------------------------------


class AlertActions:
    """Acknowledge, silence and list alerts for one console user; checks the role every time.

    Every method is blocking (SQLite): the console calls them from thread workers.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        clock: Clock,
        permissions: Permissions,
        *,
        inhibit_rules: Callable[[], Sequence[InhibitRule]] | None = None,
    ) -> None:
        """Create the actions.

        Args:
            connect: Opens a writable store connection; called once, on first use.
            clock: "now" for acknowledgements, silences and expiry.
            permissions: The console user's role; checked by every mutating method.
            inhibit_rules: The inhibition rules in force (to show what is inhibited).
        """
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self.clock = clock
        self.permissions = permissions
        self._inhibit = inhibit_rules or (lambda: ())

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        """Close the store connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def alerts(self, *, resolved_within: timedelta | None = None) -> list[AlertView]:
        """Active alerts (and those resolved within the given time), with mute markers."""
        now = self.clock.now()
        with self._lock:
            conn = self._db()
            since = None if resolved_within is None else now - resolved_within
            records = store.list_alerts(conn, resolved_since=since)
            silences = store.list_silences(conn, now)
        return build_views(records, silences, tuple(self._inhibit()), now)

    def acknowledge(self, fingerprint: str, comment: str = "") -> AlertRecord:
        """Acknowledge an active alert as the console user."""
        self.permissions.require("acknowledge")
        with self._lock:
            return store.acknowledge(
                self._db(),
                fingerprint,
                by=self.permissions.user,
                at=self.clock.now(),
                comment=comment,
            )

    def unacknowledge(self, fingerprint: str) -> None:
        """Withdraw an acknowledgement."""
        self.permissions.require("acknowledge")
        with self._lock:
            store.unacknowledge(
                self._db(), fingerprint, by=self.permissions.user, at=self.clock.now()
            )

    def silence(self, matchers: str, duration: timedelta, comment: str = "") -> Silence:
        """Silence alerts matching ``matchers`` for ``duration`` from now.

        Raises:
            ValueError: bad matchers, an empty matcher list, or a non-positive duration.
        """
        self.permissions.require("silence")
        parsed = parse_matchers(matchers)
        if not parsed:
            raise ValueError("a silence needs at least one matcher (it would mute everything)")
        if duration <= timedelta(0):
            raise ValueError("a silence needs a positive duration, e.g. 2h")
        now = self.clock.now()
        text = ", ".join(str(m) for m in parsed)
        with self._lock:
            return store.add_silence(
                self._db(),
                text,
                by=self.permissions.user,
                at=now,
                ends_at=now + duration,
                comment=comment,
            )

    def expire_silence(self, silence_id: int) -> None:
        """End a silence now."""
        self.permissions.require("silence")
        with self._lock:
            store.expire_silence(
                self._db(), silence_id, by=self.permissions.user, at=self.clock.now()
            )

    def silences(self) -> list[Silence]:
        """Silences in force now."""
        with self._lock:
            return store.list_silences(self._db(), self.clock.now())

    def history(self, fingerprint: str, limit: int = 50) -> list[Transition]:
        """The recorded transitions of one alert, newest first."""
        with self._lock:
            return store.transitions(self._db(), fingerprint=fingerprint, limit=limit)

    def fired_counts(self, window: timedelta = timedelta(hours=24)) -> dict[str, int]:
        """How often each rule fired in the last ``window``."""
        with self._lock:
            return store.fired_counts(self._db(), self.clock.now() - window)

    def receiver_status(self) -> list[ReceiverStatus]:
        """Delivery counters per receiver, as the writing process last stored them."""
        with self._lock:
            return store.load_receiver_status(self._db())


# -- jumping from an alert to its panel row ----------------------------------------------------


@dataclass(frozen=True)
class PanelTarget:
    """Where an alert's data is shown: a console tab and a filter selecting its row."""

    panel: str
    """fulfillment, stockout, returns or overview."""
    filter: str
    """Matcher text for that panel's filter prompt (empty: no filter)."""


def panel_target(record: AlertRecord) -> PanelTarget:
    """The panel row behind an alert, as a tab and a filter the panel understands."""
    info = METRICS.get(record.metric)
    panel = info.panel if info is not None else "overview"
    scope = scope_of(record)
    if panel == "fulfillment":
        kind = scope.get("scope", "")
        key = scope.get(kind, "")
        parts = [Matcher("scope", "=", kind), Matcher("key", "=", key)] if kind else []
        return PanelTarget(panel, ", ".join(str(p) for p in parts))
    if panel == "stockout":
        parts = [Matcher(n, "=", scope[n]) for n in ("sku", "location") if n in scope]
        return PanelTarget(panel, ", ".join(str(p) for p in parts))
    if panel == "returns":
        parts = [Matcher("sku", "=", scope["sku"])] if "sku" in scope else []
        return PanelTarget(panel, ", ".join(str(p) for p in parts))
    return PanelTarget("overview", "")


__all__ = [
    "METRICS",
    "AlertActions",
    "AlertRecord",
    "AlertRule",
    "AlertView",
    "Condition",
    "Observation",
    "PanelTarget",
    "PermissionDenied",
    "Permissions",
    "ReceiverStatus",
    "Roles",
    "RulePreview",
    "Sample",
    "Silence",
    "Transition",
    "panel_target",
    "preview_rule",
    "samples",
    "step",
]
