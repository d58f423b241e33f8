"""Channel webhook adapters: vendor payloads in, canonical events (or quarantine) out.

Each vendor module (:mod:`~feeds.webhooks.shopify`, :mod:`~feeds.webhooks.square`,
:mod:`~feeds.webhooks.easypost`, :mod:`~feeds.webhooks.amazon`,
:mod:`~feeds.webhooks.canonical`) is a pure function from a decoded, already
authenticated payload to a :class:`Mapped` result; the HTTP side (size limit,
signatures, status codes, waiting for the commit) lives in :mod:`feeds.runtime.serve`.

This module holds what they share: :class:`PayloadError` (the payload cannot be read;
the message names the field), :class:`Mapped`, and small typed accessors that raise
:class:`PayloadError` with the JSON path of the offending field, so a 4xx answer and the
quarantine row always say *which* field was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from store.model import Event, Quarantined


class PayloadError(ValueError):
    """A payload that cannot be turned into canonical events.

    ``field`` is the JSON path of the offending field (``line_items[0].quantity``) or a
    header name; the HTTP answer is ``status`` (400 for unreadable JSON or a missing
    header, 422 for a field of the wrong type or value).
    """

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message
        self.status = status


@dataclass
class Mapped:
    """What one payload became.

    ``items`` are the canonical events and quarantined parts to write; ``ignored``
    explains, one line each, the parts of the payload that carry no canonical fact
    (an unsupported state, an unmapped marketplace); they are counted and reported in
    the answer, never silently dropped.
    """

    items: list[Event | Quarantined] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unmapped: list[tuple[str, str]] = field(default_factory=list)
    """``(kind, external id)`` of every id the mapping file did not know (``location_id``,
    ``inventory_item_id``, ...): recorded for ``omniops mapping suggest`` and the replay."""

    def note_unmapped(self, kind: str, external_id: str | None) -> None:
        """Record an external id the mapping file has no entry for (once per payload)."""
        if external_id and (kind, external_id) not in self.unmapped:
            self.unmapped.append((kind, external_id))


JsonObject = dict[str, Any]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def join(path: str, key: str | int) -> str:
    """``path.key`` or ``path[index]`` (the JSON path used in error messages)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def require(data: JsonObject, key: str, path: str = "") -> Any:
    """``data[key]``, or :class:`PayloadError` naming the missing field."""
    if not isinstance(data, dict):
        raise PayloadError(path or "(body)", f"expected an object, got {_kind(data)}")
    if key not in data or data[key] is None:
        raise PayloadError(join(path, key), "required field is missing")
    return data[key]


def obj(data: JsonObject, key: str, path: str = "") -> JsonObject:
    """A required JSON object field."""
    value = require(data, key, path)
    if not isinstance(value, dict):
        raise PayloadError(join(path, key), f"expected an object, got {_kind(value)}")
    return value


def opt_obj(data: JsonObject, key: str, path: str = "") -> JsonObject | None:
    """An optional JSON object field (absent or null gives None)."""
    if data.get(key) is None:
        return None
    return obj(data, key, path)


def arr(data: JsonObject, key: str, path: str = "", *, required: bool = True) -> list[Any]:
    """A JSON array field; an absent optional one is empty."""
    if not required and data.get(key) is None:
        return []
    value = require(data, key, path)
    if not isinstance(value, list):
        raise PayloadError(join(path, key), f"expected an array, got {_kind(value)}")
    return value


def text(data: JsonObject, key: str, path: str = "") -> str:
    """A required non-empty string field."""
    value = require(data, key, path)
    if not isinstance(value, str):
        raise PayloadError(join(path, key), f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise PayloadError(join(path, key), "must not be empty")
    return value


def opt_text(data: JsonObject, key: str, path: str = "") -> str | None:
    """An optional string field; empty strings count as absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise PayloadError(join(path, key), f"expected a string, got {_kind(value)}")
    return value or None


def ident(data: JsonObject, key: str, path: str = "") -> str:
    """A required external id, given as a string or an integer (Shopify uses both)."""
    value = require(data, key, path)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(join(path, key), f"expected an id, got {_kind(value)}")
    out = str(value).strip()
    if not out:
        raise PayloadError(join(path, key), "must not be empty")
    return out


def opt_ident(data: JsonObject, key: str, path: str = "") -> str | None:
    """An optional external id."""
    if data.get(key) is None or data.get(key) == "":
        return None
    return ident(data, key, path)


_MAX_EXPONENT = 12
"""Numbers beyond ±10^12 (the canonical model's bound on counts) are refused as text."""


def integer(data: JsonObject, key: str, path: str = "") -> int:
    """A required whole number; a string of digits (Square's quantities) is accepted."""
    value = require(data, key, path)
    if isinstance(value, bool):
        raise PayloadError(join(path, key), "expected a whole number, got boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            number = Decimal("NaN")
        if number.is_finite() and number.adjusted() > _MAX_EXPONENT:
            # Refused before int(): int(Decimal("1e400000")) takes seconds (quadratic).
            raise PayloadError(join(path, key), f"out of range (beyond ±10^12): {value[:40]!r}")
        if number.is_finite() and number == number.to_integral_value():
            return int(number)
    raise PayloadError(join(path, key), f"expected a whole number, got {value!r}")


def priced_to_net(gross: Decimal, quantity: int, net: Decimal) -> tuple[Decimal, Decimal]:
    """A line's unit price and discount without tax, its ``net`` kept to the cent.

    ``gross`` is the line's value before discounts without tax; the unit price is
    ``gross`` / ``quantity`` rounded up to the cent and the discount what makes quantity ×
    unit price − discount the net, so it is never below the true discount's share.
    """
    unit = (gross / quantity).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
    return unit, unit * quantity - net


def money(data: JsonObject, key: str, path: str = "") -> Decimal:
    """A required amount (``"199.00"`` or ``199``) as a two-place decimal.

    More than two decimals (``"1.005"``) is refused with the field named, as the canonical
    model refuses it on ``/events``: money is never rounded on the way in.
    """
    value = require(data, key, path)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PayloadError(join(path, key), f"expected an amount, got {_kind(value)}")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PayloadError(join(path, key), f"expected an amount, got {value!r}") from None
    if not amount.is_finite():
        raise PayloadError(join(path, key), f"expected an amount, got {value!r}")
    if amount and amount.adjusted() > _MAX_EXPONENT:  # quantize() fails past 28 digits
        raise PayloadError(join(path, key), f"amount out of range: {str(value)[:40]!r}")
    if amount != amount.quantize(Decimal("0.01")):
        # The same rule as the canonical model (and /events): never round money silently.
        raise PayloadError(join(path, key), f"more than two decimal places: {value!r}")
    return amount.quantize(Decimal("0.01"))


def parse_time(value: object, where: str) -> datetime:
    """An ISO 8601 time with a zone offset, as UTC; :class:`PayloadError` otherwise."""
    if not isinstance(value, str):
        raise PayloadError(where, f"expected an ISO 8601 time, got {_kind(value)}")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PayloadError(where, f"expected an ISO 8601 time, got {value!r}") from None
    if moment.tzinfo is None:
        raise PayloadError(where, f"time {value!r} has no zone offset")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise PayloadError(where, f"time {value!r} is out of range") from None


def when(data: JsonObject, key: str, path: str = "") -> datetime:
    """A required time field."""
    return parse_time(require(data, key, path), join(path, key))


def opt_when(data: JsonObject, key: str, path: str = "") -> datetime | None:
    """An optional time field."""
    if data.get(key) in (None, ""):
        return None
    return when(data, key, path)


__all__ = [
    "JsonObject",
    "Mapped",
    "PayloadError",
    "arr",
    "ident",
    "integer",
    "join",
    "money",
    "obj",
    "opt_ident",
    "opt_obj",
    "opt_text",
    "opt_when",
    "parse_time",
    "require",
    "text",
    "when",
]
