"""Silences and inhibition: which alerts are muted (notifications only, never evaluation)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from rules.matchers import matches_all, parse_matchers
from rules.notify import InhibitRule, inhibiting_source
from store.alerts import AlertRecord, Silence

log = logging.getLogger(__name__)


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
