"""The canonical model: good payloads parse, bad ones fail naming the field."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from rules.errors import describe_validation_error
from store.model import EVENT_TYPES, OrderPlaced, dump_event, event_json_schema, parse_event

ROOT = Path(__file__).resolve().parent.parent

ORDER: dict[str, Any] = {
    "id": "web-1",
    "type": "order.placed",
    "ts": "2026-11-18T09:05:00-05:00",
    "source": "webshop",
    "body": {
        "order_id": "#1001",
        "channel": "webshop",
        "method": "bopis",
        "destination_region": "NY",
        "location_id": "ST-NYC",
        "promised_by": "2026-11-18T16:05:00Z",
        "lines": [{"sku": "APP-1", "quantity": 2, "unit_price": "19.99", "discount": "1.50"}],
    },
}


def error_for(payload: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_event(payload)
    return describe_validation_error(info.value)


def test_good_order_parses_and_is_stored_in_utc() -> None:
    event = parse_event(json.dumps(ORDER))
    assert isinstance(event, OrderPlaced)
    assert event.ts.tzinfo == UTC and event.ts.hour == 14
    assert str(event.body.lines[0].unit_price) == "19.99"
    assert parse_event(dump_event(event)) == event  # round trip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["body"]["lines"][0].update(quantity=0), "body.lines.0.quantity"),
        (lambda p: p["body"]["lines"][0].update(unit_price="-1"), "body.lines.0.unit_price"),
        (lambda p: p["body"].update(method="drone"), "body.method"),
        (lambda p: p["body"].update(customer_email="x@example.com"), "body.customer_email"),
        (lambda p: p.update(ts="2026-11-18T09:05:00"), "ts"),
        (lambda p: p["body"].update(promised_by="tomorrow"), "body.promised_by"),
        (lambda p: p.pop("id"), "id"),
    ],
)
def test_bad_order_names_the_field(change: Any, field: str) -> None:
    payload = json.loads(json.dumps(ORDER))
    change(payload)
    assert f"order.placed.{field}:" in error_for(payload)


def test_unknown_type_and_bad_location_values() -> None:
    assert "type" in error_for({**ORDER, "type": "order.teleported"})
    location = {
        "id": "l1",
        "type": "location.upserted",
        "ts": "2026-11-18T00:00:00Z",
        "source": "c",
        "body": {
            "location_id": "S",
            "kind": "store",
            "region": "NE",
            "lat": 95,
            "lon": 0,
            "timezone": "Mars/Olympus",
            "hours": {"opens": "9am"},
        },
    }
    message = error_for(location)
    assert "body.lat" in message and "body.timezone" in message and "body.hours.opens" in message


def test_schema_command_prints_the_event_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "schema"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    schema = json.loads(out)
    assert schema == json.loads(json.dumps(event_json_schema()))
    assert set(schema["discriminator"]["mapping"]) == set(EVENT_TYPES)
