"""Alert rules: the ``[[alert]]`` tables of the rules file, validated field by field.

Field validators (not one model validator) so an error carries the field's location and
the rules file can name its line.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationInfo, field_validator

from rules.labels import Duration, MatcherList, check_label_names, format_duration
from rules.matchers import Matcher
from store.registry import METRICS

Op = Literal[">", ">=", "<", "<="]
NoData = Literal["alert", "ok", "keep"]
Severity = Literal["critical", "warning", "info"]


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def holds(op: Op | str, value: float, level: float) -> bool:
    """Whether ``value op level`` (``op`` one of ``> >= < <=``)."""
    return _OPS[op](value, level)


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
    threshold: FiniteFloat

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
    threshold: FiniteFloat
    clear: FiniteFloat | None = None
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
