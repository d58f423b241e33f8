"""Debezium change events → canonical events, by a table mapping in the mapping file.

A Debezium record value is a change envelope, with or without the JSON converter's
schema wrapper (``{"schema": ..., "payload": {...}}``)::

    {"before": {...} | null, "after": {...} | null, "op": "c" | "u" | "d" | "r" | "t",
     "source": {"db": "magento", "table": "sales_order", ...}, "ts_ms": 1465491411815}

The ``[debezium.tables.<table>]`` sections of the mapping file say which canonical event
one changed row becomes.  Every value of ``body`` is a template: ``"{column}"`` alone
keeps the column's value as it is (number, string); text with ``{column}`` inside is
formatted; anything else is a constant.  Example (Magento)::

    [debezium]
    source = "magento"
    [debezium.tables.cataloginventory_stock_item]
    type = "stock.snapshot"
    body = { sku = "{sku}", location_id = "WH-NJ", on_hand = "{qty}" }
    [debezium.tables.sales_shipment_track]
    type = "fulfillment.updated"
    ts_column = "created_at"
    [debezium.tables.sales_shipment_track.body]
    order_id = "{order_increment_id}"
    status = "shipped"
    carrier = "{carrier_code}"
    tracking = "{track_number}"
    [debezium.tables.sales_order]
    type = "order.cancelled"
    when = { state = "canceled" }          # only rows in this state
    body = { order_id = "{increment_id}", reason = "cancelled in Magento" }

Deletes (``op = d``) and tombstones carry no fact and are skipped; rows that do not match
``when`` are skipped; a table without a section, a missing column or a body that is not a
valid canonical event is quarantined with the reason.  The event id is derived from the
change itself (table, op, the row and the source position), so a redelivered record is
a duplicate, never a second fact.
"""

from __future__ import annotations

import hashlib
import json
import string
from datetime import UTC, datetime
from typing import Any

from feeds.webhooks import PayloadError
from feeds.webhooks.mapping import DebeziumMapping
from store.model import Event, parse_event

_FORMATTER = string.Formatter()


def unwrap(value: Any) -> dict[str, Any]:
    """The envelope of a record value, with or without the schema wrapper."""
    if not isinstance(value, dict):
        raise PayloadError("(value)", "expected a JSON object (a Debezium envelope)")
    if "payload" in value and "schema" in value:
        value = value["payload"]
        if not isinstance(value, dict):
            raise PayloadError("payload", "expected an object")
    if "op" not in value:
        raise PayloadError("op", "required field is missing (not a Debezium change event)")
    return value


def _time(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise PayloadError(where, "expected a time, got boolean")
    if isinstance(value, int | float):  # io.debezium.time.Timestamp: epoch milliseconds
        seconds = value / 1000 if value > 10**11 else value
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and value:
        text = value.strip().replace(" ", "T")
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(where, f"expected a time, got {value!r}") from None
        if moment.tzinfo is None:  # MySQL DATETIME: Magento stores UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise PayloadError(where, f"expected a time, got {value!r}")


def _fill(template: Any, row: dict[str, Any], where: str) -> Any:
    if not isinstance(template, str):
        return template
    parts = list(_FORMATTER.parse(template))
    names = [name for _, name, _, _ in parts if name is not None]
    for name in names:
        if name not in row or row[name] is None:
            raise PayloadError(f"{where}.{name}", "column is missing or null")
    if len(parts) == 1 and parts[0][0] == "" and names and parts[0][2] == "":
        return row[names[0]]
    return template.format_map(row) if names else template


def map_change(value: Any, mapping: DebeziumMapping, *, fallback_table: str = "") -> list[Event]:
    """Canonical events of one Debezium record value (empty: nothing to apply).

    Raises :class:`PayloadError` (naming the field) when the change cannot be mapped,
    :class:`pydantic.ValidationError` when the mapped body is not a valid event.
    """
    if value is None:  # a tombstone after a delete
        return []
    envelope = unwrap(value)
    op = envelope.get("op")
    source = envelope.get("source") if isinstance(envelope.get("source"), dict) else {}
    assert isinstance(source, dict)
    table = str(source.get("table") or fallback_table)
    if not table:
        raise PayloadError("source.table", "required field is missing")
    spec = mapping.tables.get(table)
    if spec is None and op in ("d", "t", "m"):  # deletes, truncates, messages: no fact
        return []
    if spec is None:
        raise PayloadError("source.table", f"no [debezium.tables.{table}] in the mapping file")
    if op not in spec.ops:
        return []
    row = envelope.get("after")
    if not isinstance(row, dict):
        raise PayloadError("after", f"expected the row after the change (op {op!r})")
    for column, wanted in spec.when.items():
        if str(row.get(column)) != wanted:
            return []
    body = {key: _fill(tmpl, row, f"after[{key}]") for key, tmpl in spec.body.items()}
    if spec.ts_column is not None:
        if row.get(spec.ts_column) is None:
            raise PayloadError(f"after.{spec.ts_column}", "column is missing or null")
        ts = _time(row[spec.ts_column], f"after.{spec.ts_column}")
    else:
        moment = source.get("ts_ms") or envelope.get("ts_ms")
        if moment is None:
            raise PayloadError("ts_ms", "required field is missing")
        ts = _time(moment, "source.ts_ms")
    position = {k: source.get(k) for k in ("file", "pos", "row", "lsn", "txId", "change_lsn")}
    digest = hashlib.sha256(
        json.dumps([table, op, row, position], sort_keys=True, default=str).encode()
    ).hexdigest()[:20]
    event = parse_event(
        {
            "id": f"dbz-{table}-{digest}",
            "type": spec.type,
            "ts": ts,
            "source": mapping.source,
            "body": body,
        }
    )
    return [event]
