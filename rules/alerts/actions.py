"""Operator actions on alerts (acknowledge, silence, list) and the jump to a panel row.

:class:`AlertActions` is what the console is handed; it checks the user's role on every
mutating call.  :func:`panel_target` finds the panel row behind an alert.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from rules.alerts.silences import AlertView, SilenceView, build_views, silence_views
from rules.alerts.state import scope_of
from rules.matchers import Matcher, parse_matchers
from rules.notify import InhibitRule
from rules.roles import Permissions
from store import alerts as store
from store.alerts import AlertRecord, ReceiverStatus, Silence, Transition
from store.clock import Clock
from store.registry import METRICS


@dataclass(frozen=True)
class Paging:
    """One alert paging now, as the console announces it when it starts."""

    fingerprint: str
    rule_id: str
    scope: str
    severity: str
    state: str
    """``firing`` or ``nodata``."""


@dataclass(frozen=True)
class AlertCount:
    """What the console's top bar says of the alerts: those paging now.

    ``firing`` counts active alerts in state firing or no-data that are neither silenced
    nor inhibited (the ones that notify); ``critical`` and ``acknowledged`` count among them.
    ``paging`` lists them (not compared: two counts are equal by their numbers).
    """

    firing: int
    critical: int
    acknowledged: int
    paging: tuple[Paging, ...] = field(default=(), compare=False)


def count_alerts(views: Iterable[AlertView]) -> AlertCount:
    """Count the alerts of ``views`` that page now (see :class:`AlertCount`)."""
    paging = [v.record for v in views if v.record.state in ("firing", "nodata") and not v.muted]
    listed = tuple(Paging(r.fingerprint, r.rule_id, r.scope, r.severity, r.state) for r in paging)
    return AlertCount(
        firing=len(paging),
        critical=sum(1 for r in paging if r.severity == "critical"),
        acknowledged=sum(1 for r in paging if r.acked_by is not None),
        paging=listed,
    )


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

    def count(self) -> AlertCount:
        """The alerts paging now, counted (the console's top bar)."""
        return count_alerts(self.alerts())

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

    def silence_views(self) -> list[SilenceView]:
        """Silences in force now, each with the active alerts it mutes."""
        now = self.clock.now()
        with self._lock:
            conn = self._db()
            silences = store.list_silences(conn, now)
            records = store.list_alerts(conn)
        return silence_views(silences, records, now)

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
    # What the actions hand the console: its own types and the store records it returns.
    "AlertActions",
    "AlertRecord",
    "PanelTarget",
    "ReceiverStatus",
    "Silence",
    "SilenceView",
    "Transition",
    "panel_target",
]
