"""The console's alert-rule form: its text fields to rules-file values and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rules.alerts.rule import AlertRule
from rules.labels import format_duration, parse_duration, parse_matcher_field
from rules.matchers import format_matchers

FORM_FIELDS = (
    "id",
    "metric",
    "matchers",
    "op",
    "threshold",
    "clear",
    "for",
    "severity",
    "no_data",
    "labels",
    "description",
    "enabled",
)
"""The fields of an alert rule the console's form edits (``only_when`` is kept as is)."""


class FormError(ValueError):
    """A form field that cannot be turned into a value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _number(field: str, text: str) -> float | int:
    try:
        value = float(text.strip())
    except ValueError:
        raise FormError(field, f"not a number: {text.strip()!r}") from None
    return (
        int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    )


def form_values(fields: Mapping[str, str]) -> dict[str, Any]:
    """Turn the form's text fields into rule-file values (the TOML types).

    ``clear`` left empty means "no clear level" (the key is removed); ``labels`` is
    ``key=value, key=value``; ``enabled`` is yes/no/true/false.

    Raises:
        FormError: naming the field that cannot be read.
    """
    values: dict[str, Any] = {}
    for name in FORM_FIELDS:
        if name not in fields:
            continue
        text = fields[name].strip()
        if name in ("threshold", "clear"):
            values[name] = _number(name, text) if text else None
        elif name == "for":
            try:
                parse_duration(text or "0")
            except ValueError as exc:
                raise FormError(name, str(exc)) from None
            values[name] = text or "0s"
        elif name == "matchers":
            try:
                parse_matcher_field(text)
            except ValueError as exc:
                raise FormError(name, str(exc)) from None
            values[name] = text
        elif name == "labels":
            labels: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, value = part.partition("=")
                if not sep or not key.strip():
                    raise FormError(name, f"expected key=value, got {part!r}")
                labels[key.strip()] = value.strip()
            values[name] = labels
        elif name == "enabled":
            if text.lower() in ("", "yes", "true", "on", "1"):
                values[name] = True
            elif text.lower() in ("no", "false", "off", "0"):
                values[name] = False
            else:
                raise FormError(name, "yes or no")
        else:
            values[name] = text
    return values


def rule_form_fields(rule: AlertRule) -> dict[str, str]:
    """The text of each form field for an existing rule."""
    return {
        "id": rule.id,
        "metric": rule.metric,
        "matchers": format_matchers(rule.matchers),
        "op": rule.op,
        "threshold": f"{rule.threshold:g}",
        "clear": "" if rule.clear is None else f"{rule.clear:g}",
        "for": format_duration(rule.for_),
        "severity": rule.severity,
        "no_data": rule.no_data,
        "labels": ", ".join(f"{k}={v}" for k, v in rule.labels.items()),
        "description": rule.description,
        "enabled": "yes" if rule.enabled else "no",
    }
