"""Rule preview: what a rule would do on the current snapshot, before it is saved."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rules.alerts.rule import AlertRule
from rules.alerts.samples import Sample, guard_lookup, index_samples
from rules.alerts.state import fmt_value
from rules.labels import labels_text
from rules.matchers import matches_all


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
            text += ": " + "; ".join(f"{s or '(all)'} {fmt_value(v)}" for s, v in self.examples)
        return text


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
