"""Order-line history import (the UCI "Online Retail" CSV shape), so baselines exist on day one.

Columns: ``InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice,
CustomerID, Country`` (one row per invoice line).  What each row becomes:

* a sale (positive ``Quantity``): the rows of one invoice form one ``order.placed`` (id
  ``history:<channel>:<InvoiceNo>:placed``, order id ``<order_prefix><InvoiceNo>``, ``ts`` =
  ``InvoiceDate`` in the file's time zone ``tz``), at ``location_id``, method ``ship``,
  destination region = ``Country``, ``promised_by`` = invoice time + ``sla_hours``; and,
  because history is closed business, a ``shipped`` step at the invoice time (id
  ``...:shipped``) so imported orders never show as open or late;
* a stock write-off (a negative ``Quantity`` at a zero ``UnitPrice`` on an invoice that
  does not start with ``C``: the shop's own record of stock damaged, lost or thrown away,
  no customer and no refund): one ``stock.adjusted`` per row (id
  ``history:<channel>:<InvoiceNo>:<StockCode>:<n>``) at ``location_id``, delta = Quantity,
  reason :data:`WRITE_OFF_REASON`; never a return;
* a return (an invoice starting with ``C``, or a negative ``Quantity`` at a price): one
  ``return.received`` per row (id ``history:<channel>:<InvoiceNo>:<StockCode>:<n>``), reason
  ``cancelled invoice`` or ``negative quantity``, refund = |Quantity| × UnitPrice;
* not a product (``POST``, ``DOT``, ``M``, ``D``, ``C2``, ``BANK CHARGES``, ``AMAZONFEE``,
  ``CRUK``, ``PADS``, ``B``, ``S``, ``gift_*``): skipped and counted by code.

``CustomerID`` is never read into an event or a quarantined row (PII), nor is
``Description`` (the catalogue comes from ``sku.upserted``).  A row that cannot be read
(bad number or date) is quarantined with ``<file>:<line>`` and the field; the other rows
of its invoice go to quarantine with it (an order placed without one of its lines
could never be completed by re-importing that line: the order id would be a duplicate).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from store.model import (
    Event,
    FulfillmentBody,
    FulfillmentUpdated,
    OrderLine,
    OrderPlaced,
    OrderPlacedBody,
    Quarantined,
    ReturnBody,
    ReturnReceived,
    StockAdjusted,
    StockAdjustedBody,
)

COLUMNS = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country")
"""Columns an order-history file must have (``Description`` and ``CustomerID`` are ignored)."""

NON_PRODUCT = frozenset(
    {"POST", "DOT", "M", "D", "C2", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B", "S"}
)
"""Stock codes that are postage, fees, discounts or adjustments, not products."""

WRITE_OFF_REASON = "write-off"
"""The ``stock.adjusted`` reason of a history row that wrote stock off (not a return)."""

SOURCE = "history"
DATE_FORMATS = ("%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M")


def is_product(code: str) -> bool:
    """False for postage, fees, manual adjustments and gift vouchers."""
    return code.upper() not in NON_PRODUCT and not code.lower().startswith("gift_")


def is_history_header(header: list[str]) -> bool:
    """True if a CSV header has the order-history columns."""
    return set(COLUMNS) <= {h.strip() for h in header}


@dataclass
class HistoryReport:
    """What an import read and what the store did with it."""

    rows: int = 0
    orders: int = 0
    lines: int = 0
    returns: int = 0
    write_offs: int = 0
    """Rows that wrote stock off (negative quantity, zero price, not a ``C`` invoice)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Non-product rows skipped, by stock code."""
    quarantined_rows: int = 0
    problems: list[str] = field(default_factory=list)
    """One ``file:line: reason`` per quarantined row."""
    applied: int = 0
    duplicate: int = 0
    quarantined: int = 0


class RowError(ValueError):
    """One row cannot be read; the message names the column."""


def parse_local_time(value: str, tz: ZoneInfo, column: str) -> datetime:
    """An ISO time (with or without offset) or ``m/d/Y H:M``; naive times are in ``tz``."""
    value = value.strip()
    moment: datetime | None = None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        for fmt in DATE_FORMATS:
            try:
                moment = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if moment is None:
        raise RowError(f"{column}: expected a date and time, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment


def parse_quantity(value: str, column: str) -> int:
    """A whole number (``"6"``, ``"-1"``, ``"6.0"``)."""
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise RowError(f"{column}: expected a whole number, got {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise RowError(f"{column}: expected a whole number, got {value!r}")
    return int(number)


def parse_price(value: str, column: str) -> Decimal:
    """A non-negative amount with at most two decimals (more is refused, never rounded)."""
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise RowError(f"{column}: expected an amount, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise RowError(f"{column}: expected a non-negative amount, got {value!r}")
    if amount != amount.quantize(Decimal("0.01")):
        raise RowError(f"{column}: more than two decimal places: {value!r}")
    return amount.quantize(Decimal("0.01"))


def _safe_row(row: dict[str, str]) -> str:
    """A quarantined row without the customer id or description."""
    return json.dumps({k: v for k, v in row.items() if k in COLUMNS}, ensure_ascii=False)


@dataclass
class _Invoice:
    number: str
    first_line: int
    ts: datetime | None = None
    country: str = ""
    lines: list[OrderLine] = field(default_factory=list)
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_history(
    path: Path,
    *,
    channel: str,
    location_id: str,
    tz: str,
    order_prefix: str = "",
    sla_hours: float = 48.0,
    source: str = SOURCE,
    report: HistoryReport | None = None,
) -> Iterator[Event | Quarantined]:
    """Canonical events (and quarantined rows) of an order-history CSV, in file order.

    Blocking (CSV parsing): run it off the event loop.
    """
    report = report if report is not None else HistoryReport()
    zone = ZoneInfo(tz)
    invoices: dict[str, _Invoice] = {}
    seen: Counter[tuple[str, str]] = Counter()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not is_history_header(list(reader.fieldnames)):
            raise ValueError(f"{path.name}: not an order-history file (needs {', '.join(COLUMNS)})")
        for row in reader:
            line = reader.line_num
            report.rows += 1
            where = f"{path.name}:{line}"
            invoice_no = (row.get("InvoiceNo") or "").strip()
            code = (row.get("StockCode") or "").strip()
            if code and not is_product(code):
                report.skipped[code.upper()] += 1
                continue
            try:
                if not invoice_no:
                    raise RowError("InvoiceNo: empty")
                if not code:
                    raise RowError("StockCode: empty")
                quantity = parse_quantity(row.get("Quantity") or "", "Quantity")
                ts = parse_local_time(row.get("InvoiceDate") or "", zone, "InvoiceDate")
                price = parse_price(row.get("UnitPrice") or "", "UnitPrice")
                if quantity == 0:
                    raise RowError("Quantity: zero")
                if invoice_no.upper().startswith("C") and quantity > 0:
                    raise RowError("Quantity: positive on a cancellation invoice")
            except RowError as exc:
                report.quarantined_rows += 1
                report.problems.append(f"{where}: {exc}")
                held = invoices.setdefault(invoice_no, _Invoice(invoice_no, line))
                held.errors.append(f"{where}: {exc}")
                held.rows.append((line, row))
                continue
            sku = code.upper()
            if quantity < 0:
                seen[(invoice_no, sku)] += 1
                n = seen[(invoice_no, sku)]
                cancelled = invoice_no.upper().startswith("C")
                if not cancelled and price == 0:
                    report.write_offs += 1
                    yield StockAdjusted(
                        id=f"{source}:{channel}:{invoice_no}:{sku}:{n}",
                        type="stock.adjusted",
                        ts=ts,
                        source=source,
                        body=StockAdjustedBody(
                            sku=sku,
                            location_id=location_id,
                            delta=quantity,
                            reason=WRITE_OFF_REASON,
                            source_system=source,
                        ),
                    )
                    continue
                report.returns += 1
                yield ReturnReceived(
                    id=f"{source}:{channel}:{invoice_no}:{sku}:{n}",
                    type="return.received",
                    ts=ts,
                    source=source,
                    body=ReturnBody(
                        return_id=f"{order_prefix}{invoice_no}-{sku}-{n}",
                        order_id=None,
                        sku=sku,
                        location_id=location_id,
                        channel=channel,
                        quantity=-quantity,
                        reason="cancelled invoice" if cancelled else "negative quantity",
                        refund=price * -quantity,
                    ),
                )
                continue
            invoice = invoices.setdefault(invoice_no, _Invoice(invoice_no, line))
            if invoice.ts is None:
                invoice.ts, invoice.country = ts, row.get("Country") or ""
            invoice.rows.append((line, row))
            invoice.lines.append(OrderLine(sku=sku, quantity=quantity, unit_price=price))
    for invoice in invoices.values():
        if invoice.errors:
            report.quarantined_rows += len(invoice.rows) - len(invoice.errors)
            reason = "; ".join(invoice.errors)
            for line, row in invoice.rows:
                own = next(
                    (e for e in invoice.errors if e.startswith(f"{path.name}:{line}:")), None
                )
                yield Quarantined(
                    source=source,
                    raw=_safe_row(row),
                    error=own
                    or f"{path.name}:{line}: invoice {invoice.number} held back by {reason}",
                )
            continue
        if invoice.ts is None or not invoice.lines:
            continue
        report.orders += 1
        report.lines += len(invoice.lines)
        order_id = f"{order_prefix}{invoice.number}"
        yield OrderPlaced(
            id=f"{source}:{channel}:{invoice.number}:placed",
            type="order.placed",
            ts=invoice.ts,
            source=source,
            body=OrderPlacedBody(
                order_id=order_id,
                channel=channel,
                method="ship",
                destination_region=invoice.country.strip() or "unknown",
                location_id=location_id,
                promised_by=invoice.ts + timedelta(hours=sla_hours),
                lines=invoice.lines,
            ),
        )
        yield FulfillmentUpdated(
            id=f"{source}:{channel}:{invoice.number}:shipped",
            type="fulfillment.updated",
            ts=invoice.ts,
            source=source,
            body=FulfillmentBody(
                order_id=order_id,
                status="shipped",
                location_id=location_id,
                detail="imported history",
            ),
        )
