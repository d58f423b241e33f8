"""``POST /events``: canonical events from systems omniops has no adapter for.

The body is one canonical event (a JSON object), a JSON array of them, or JSON Lines
(one event per line, ``application/x-ndjson``).  Every line is validated on its own:
a bad line is quarantined (redacted, with ``POST /events line N`` and the failing field
in the reason) and the others are still written, so the answer reports one outcome per
line: ``applied``, ``duplicate`` (the id is already stored; resending is harmless) or
``quarantined`` with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import ValidationError

from feeds.webhooks import PayloadError
from feeds.webhooks.bounded import ShapeError, check_shape
from feeds.webhooks.redact import keep_raw
from rules.errors import describe_validation_error
from store.model import EVENT_ADAPTER, Event, Quarantined, parse_event

SOURCE = "events"
"""Quarantine source of a line that names no valid ``source`` of its own."""

BOM = "\ufeff"
"""A byte-order mark some Windows tools put before UTF-8 text: not part of the body."""


@dataclass(frozen=True)
class Line:
    """One event of a ``POST /events`` body: its 1-based number and what it became."""

    number: int
    item: Event | Quarantined


MAX_EVENTS = 10_000
"""Events (lines, or items of an array) one ``POST /events`` body may hold: each refused
one is a quarantine row on the one writer, so the work a request can cause is bounded."""


def _one(data: object, number: int, raw: str) -> Line:
    # A refused line is quarantined under ``events``, never under the ``source`` it
    # claims: a claimed name would become a feed of its own (a metric label, a stale-feed
    # alert) that nothing ever delivers on.
    where = f"POST /events line {number}"
    if not isinstance(data, dict):
        error = f"{where}: expected a JSON object, got {type(data).__name__}"
        return Line(number, Quarantined(source=SOURCE, raw=keep_raw(raw), error=error))
    try:
        return Line(number, parse_event(data))
    except ValidationError as exc:
        error = f"{where}: {describe_validation_error(exc)}"
        return Line(number, Quarantined(source=SOURCE, raw=keep_raw(raw), error=error))


def _too_many(count: int) -> PayloadError:
    return PayloadError(
        "(body)",
        f"{count} events in one body, more than {MAX_EVENTS:,}: send smaller batches",
        status=413,
    )


def parse_events_body(body: bytes) -> list[Line]:
    """Split and validate a ``POST /events`` body; :class:`PayloadError` if it is unreadable."""
    try:
        text = body.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        mixed = _lines_of_bytes(body)
        if mixed is None:
            raise PayloadError("(body)", f"not UTF-8 (byte {exc.start})", status=400) from None
        return mixed
    if not text.strip():
        raise PayloadError("(body)", "empty: send a canonical event or JSON Lines", status=400)
    try:
        check_shape(text)
    except ShapeError as exc:
        raise PayloadError(exc.field, exc.message, status=400) from None
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    else:
        if isinstance(whole, list):
            if len(whole) > MAX_EVENTS:
                raise _too_many(len(whole))
            return [_one(item, n, json.dumps(item)) for n, item in enumerate(whole, start=1)]
        return [_one(whole, 1, text)]
    lines: list[Line] = []
    split = json_lines(text)
    if len(split) > MAX_EVENTS and sum(1 for raw in split if raw.strip()) > MAX_EVENTS:
        raise _too_many(sum(1 for raw in split if raw.strip()))
    for number, raw in enumerate(split, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            error = f"POST /events line {number}: not JSON ({exc})"
            lines.append(Line(number, Quarantined(source=SOURCE, raw=keep_raw(raw), error=error)))
            continue
        lines.append(_one(data, number, raw))
    return lines


def json_lines(text: str) -> list[str]:
    r"""``text`` split into JSON Lines: on ``\n`` (and ``\r\n``) only.

    ``str.splitlines`` also splits on U+2028, U+2029 and U+0085, which JSON allows raw
    inside a string: a valid line holding one would be cut in two.
    """
    return [line.removesuffix("\r") for line in text.split("\n")]


def _lines_of_bytes(body: bytes) -> list[Line] | None:
    r"""A JSON Lines body with lines that are not UTF-8: those quarantined, the rest read.

    ``None`` when the body is not two lines or more (one document that is not UTF-8 is
    refused whole, as before).  A bad line is kept with its bytes as ``\xNN``.
    """
    numbered = [(n, raw) for n, raw in enumerate(body.split(b"\n"), start=1) if raw.strip()]
    if len(numbered) < 2:
        return None
    if len(numbered) > MAX_EVENTS:
        raise _too_many(len(numbered))
    lines: list[Line] = []
    for number, raw in numbered:
        where = f"POST /events line {number}"
        try:
            text = raw.decode("utf-8")
            if number == 1:
                text = text.removeprefix(BOM)
            check_shape(text)
        except UnicodeDecodeError as exc:
            kept = keep_raw(raw.decode("utf-8", "backslashreplace"))
            error = f"{where}: not UTF-8 (byte {exc.start} of the line)"
            lines.append(Line(number, Quarantined(source=SOURCE, raw=kept, error=error)))
            continue
        except ShapeError as exc:
            error = f"{where}: {exc.field}: {exc.message}"
            lines.append(Line(number, Quarantined(source=SOURCE, raw="", error=error)))
            continue
        try:
            data = json.loads(text)
        except ValueError as exc:
            error = f"{where}: not JSON ({exc})"
            lines.append(Line(number, Quarantined(source=SOURCE, raw=keep_raw(text), error=error)))
            continue
        lines.append(_one(data, number, text))
    return lines


def read_events(body: bytes) -> list[Event | Quarantined]:
    """What a ``POST /events`` body becomes: an event or a quarantined line per line.

    :class:`PayloadError` if the body is unreadable (see :func:`parse_events_body`).
    """
    items = valid_json_lines(body)
    if items is None:
        items = [line.item for line in parse_events_body(body)]
    return items


def valid_json_lines(body: bytes) -> list[Event | Quarantined] | None:
    """The events of a JSON Lines body whose every line is valid; ``None`` otherwise.

    The common batch, read in one step a line (pydantic parses and validates the JSON
    text itself, no decoded dict in between): about half the time of
    :func:`parse_events_body`, which reads every other body (one event, an array, a bad
    line, a refused shape) and so answers exactly as before.  Two lines or more that are
    each an event are never one JSON document, so they are JSON Lines there too.
    """
    try:
        text = body.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError:
        return None
    lines = [raw for raw in json_lines(text) if raw.strip()]
    if not 2 <= len(lines) <= MAX_EVENTS:
        return None
    try:
        check_shape(text)
    except ShapeError:
        return None
    validate = EVENT_ADAPTER.validate_json
    try:
        return [validate(raw) for raw in lines]
    except (ValidationError, ValueError):
        return None
