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


@dataclass(frozen=True)
class SilenceView:
    """A silence in force and the active alerts it matches right now (what it mutes)."""

    silence: Silence
    mutes: tuple[AlertRecord, ...] = ()
    """Active alerts whose labels its matchers match, worst state first."""


_STATE_ORDER = {"firing": 0, "nodata": 1, "pending": 2}


def silence_views(
    silences: Iterable[Silence], records: Sequence[AlertRecord], now: datetime
) -> list[SilenceView]:
    """Each silence in force at ``now`` with the active alerts it matches, ending soonest first.

    An alert matched by two silences is listed under both (either one mutes it); a silence
    whose matchers no longer parse is listed muting nothing (:func:`silencing` ignores it).
    """
    active = [r for r in records if r.active]
    views: list[SilenceView] = []
    for s in sorted(silences, key=lambda s: (s.ends_at, s.id)):
        if not s.active_at(now):
            continue
        try:
            matchers = parse_matchers(s.matchers)
        except ValueError:
            matchers = []
        muted = [r for r in active if matchers and matches_all(matchers, r.labels)]
        muted.sort(key=lambda r: (_STATE_ORDER.get(r.state, 9), r.rule_id, r.scope))
        views.append(SilenceView(s, tuple(muted)))
    return views
