"""Panel highlights that follow the operator's alert rules.

A panel cell is highlighted when its value is past the threshold *in force* for that
metric and row: the threshold of the first enabled ``[[alert]]`` rule on the metric whose
matchers select the row (file order), else the registry's default level
(:attr:`store.registry.Metric.default_level`).  So an operator who moves the on-time
rule to 85 % sees the panel flag rows below 85 %, not below a hard-coded 90 %.

:class:`Highlights` is pure; :class:`RulesHighlights` keeps one up to date with a rules
file (blocking: call :meth:`RulesHighlights.refresh` from a worker thread).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rules.matchers import matches_all
from store.registry import METRICS, Op

if TYPE_CHECKING:  # the rules' models load with the warm-up, not before the first paint
    from rules.alerts.rule import AlertRule
    from rules.file import RulesFile

log = logging.getLogger(__name__)

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
"""``rules.alerts.rule.holds``' table: this module does not import the rules' models."""


@dataclass(frozen=True)
class Level:
    """The threshold in force for one metric and row, and where it comes from."""

    metric: str
    op: Op
    level: float
    source: str
    """``rule <id>`` or ``default`` (the registry's level)."""

    def breached(self, value: float | None) -> bool:
        """Whether ``value op level`` (no data never is)."""
        return value is not None and _OPS[self.op](value, self.level)


@dataclass(frozen=True)
class Highlights:
    """The thresholds panels highlight at, from a set of alert rules (none: the defaults)."""

    rules: tuple[AlertRule, ...] = ()

    @classmethod
    def from_rules(cls, rules: RulesFile | Sequence[AlertRule] | None) -> Highlights:
        """The highlights of a rules file (or of its alert rules)."""
        if rules is None:
            return cls()
        if isinstance(rules, Sequence):
            return cls(tuple(rules))
        return cls(tuple(rules.alert))

    def level(self, metric: str, labels: Mapping[str, str] | None = None) -> Level | None:
        """The threshold in force for ``metric`` on the row with these scope labels.

        Args:
            metric: A registry metric id, e.g. ``fulfillment.on_time_rate``.
            labels: The row's scope labels, as rules see them (e.g. ``{"scope":
                "location", "location": "WH-NJ"}``; none for the headline).

        Returns:
            The first enabled rule's threshold whose matchers select the row, else the
            registry's default level, else None (nothing to highlight).
        """
        scope = labels or {}
        for rule in self.rules:
            if rule.enabled and rule.metric == metric and matches_all(rule.matchers, scope):
                return Level(metric, rule.op, rule.threshold, f"rule {rule.id}")
        info = METRICS.get(metric)
        if info is None or info.op is None or info.default_level is None:
            return None
        return Level(metric, info.op, info.default_level, "default")

    def flags(self, metric: str, labels: Mapping[str, str] | None, value: float | None) -> bool:
        """Whether the row's ``value`` of ``metric`` is past the threshold in force."""
        level = self.level(metric, labels)
        return level is not None and level.breached(value)


class RulesHighlights:
    """The highlights of one rules file, reloaded when the file changes (last good kept)."""

    def __init__(self, path: Path) -> None:
        """Follow ``path`` (nothing is read until :meth:`refresh`)."""
        self.path = Path(path)
        self._mtime_ns: int | None = None
        self._current = Highlights()

    def current(self) -> Highlights:
        """The highlights in force (cheap: for the event loop)."""
        return self._current

    def refresh(self) -> Highlights:
        """Re-read the file if it changed since the last call; blocking.

        An unreadable or invalid file keeps the last good highlights (the rules watcher
        reports the error; this only follows).
        """
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            return self._current
        if mtime == self._mtime_ns:
            return self._current
        from rules.file import RulesFileError, load_rules

        try:
            loaded = load_rules(self.path)
        except RulesFileError as exc:
            log.warning("highlights keep the last good rules: %s", exc.first)
        else:
            self._current = Highlights.from_rules(loaded.rules)
        self._mtime_ns = mtime
        return self._current
