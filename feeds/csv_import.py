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

import codecs
import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from store.clock import within_calendar
from store.held import HeldDelivery
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


ALIASES = {
    "invoiceno": "InvoiceNo",
    "invoice": "InvoiceNo",
    "invoicenumber": "InvoiceNo",
    "stockcode": "StockCode",
    "description": "Description",
    "quantity": "Quantity",
    "invoicedate": "InvoiceDate",
    "unitprice": "UnitPrice",
    "price": "UnitPrice",
    "customerid": "CustomerID",
    "country": "Country",
}
"""Header names, compared without case, spaces or underscores, and the column they are.

Both UCI shapes read: "Online Retail" (``InvoiceNo``, ``UnitPrice``, ``CustomerID``) and
"Online Retail II" (``Invoice``, ``Price``, ``Customer ID``)."""

FALLBACK_ENCODING = "cp1252"
"""A file that is not UTF-8 is read as Windows-1252 (Excel's "CSV" on Western Windows;
its ISO-8859-1 letters are the same bytes), or ISO-8859-1 where cp1252 has no letter."""


def _alias(name: str) -> str:
    key = "".join(name.split()).replace("_", "").lower()
    return ALIASES.get(key, name.strip())


def canonical_header(header: Sequence[str]) -> list[str]:
    """The header's names as the columns they are (:data:`ALIASES`).

    The first of two names for one column wins; the other keeps its own name.
    """
    out: list[str] = []
    for name in header:
        column = _alias(name)
        out.append(column if column not in out else name.strip())
    return out


def is_history_header(header: list[str]) -> bool:
    """True if a CSV header has the order-history columns (under any :data:`ALIASES`)."""
    return set(COLUMNS) <= set(canonical_header(header))


def _shown(text: str, limit: int = 120) -> str:
    """``text`` safe to print: control characters as ``?``, cut at ``limit`` characters."""
    safe = "".join(c if c.isprintable() else "?" for c in text)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written: its text encoding and field delimiter."""

    encoding: str
    delimiter: str


def sniff(path: Path) -> CsvFormat:
    """The file's encoding and field delimiter.

    The encoding is UTF-8 (with or without BOM), else :data:`FALLBACK_ENCODING`, else
    ISO-8859-1; the delimiter the most frequent of ``,`` ``;`` and tab in its header.
    Reads the file once in blocks (the whole file must decode for UTF-8 to be chosen).
    """
    encoding = "utf-8-sig"
    decoder = codecs.getincrementaldecoder("utf-8")()
    first = b""
    with path.open("rb") as handle:
        try:
            while block := handle.read(1 << 20):
                if len(first) < 65536:
                    first += block[:65536]
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            encoding = FALLBACK_ENCODING
            try:
                handle.seek(0)
                handle.read().decode(FALLBACK_ENCODING)
            except UnicodeDecodeError:
                encoding = "latin-1"
    text = first.decode(encoding, errors="replace").lstrip("\ufeff")
    head = text.splitlines()[0] if text else ""
    delimiter = max((",", ";", "\t"), key=lambda d: (head.count(d), d == ","))
    return CsvFormat(encoding, delimiter)


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


class HistoryFileError(ValueError):
    """The file is not an order-history CSV (the message names the file and its header)."""


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
    if within_calendar(moment) is None:  # near year 1 or 9999 nothing can be shifted
        raise RowError(f"{column}: a time from 1900 to 8999, got {value!r}")
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


MAX_AMOUNT = Decimal(10) ** 12
"""Prices and discounts stop below a trillion (the store keeps cents in 64 bits)."""

_DECIMAL_COMMA = re.compile(r"\s*\d+,\d{1,2}\s*")


def parse_price(value: str, column: str) -> Decimal:
    """A non-negative amount with at most two decimals (more is refused, never rounded).

    A decimal comma (``2,55``, as a European spreadsheet writes it) reads as ``2.55``;
    ``1,234`` (a thousands separator or three decimals) is refused, never guessed.
    """
    if _DECIMAL_COMMA.fullmatch(value):
        value = value.replace(",", ".")
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        raise RowError(f"{column}: expected an amount, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise RowError(f"{column}: expected a non-negative amount, got {value!r}")
    if amount >= MAX_AMOUNT:  # (and quantize would overflow the context's precision)
        raise RowError(f"{column}: more than {MAX_AMOUNT:,} is not a price: {value!r}")
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
    rows: list[HistoryRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


HistoryRow = tuple[int, dict[str, str], int]
"""``(line number, row, rows of its invoice and stock code counted before it)``.

The count numbers a return or write-off (``...:<StockCode>:<n>``); a held row keeps it, so
its replay gets the id a re-import of the fixed file would give it."""

HELD_SOURCE = "history"
"""The ``held`` source of the rows ``omniops import-history`` quarantined (the drop
folder's are ``dropfolder``)."""

FIELDS = {
    "ts": "InvoiceDate",
    "promised_by": "InvoiceDate",
    "order_id": "InvoiceNo",
    "return_id": "InvoiceNo",
    "sku": "StockCode",
    "quantity": "Quantity",
    "delta": "Quantity",
    "unit_price": "UnitPrice",
    "refund": "UnitPrice",
    "destination_region": "Country",
}
"""The CSV column a canonical field comes from (a validation error names the column)."""


@dataclass(frozen=True)
class HistoryContext:
    """How an order-history file is read: what a held row's replay must be told again."""

    file: str
    channel: str
    location_id: str
    tz: str
    order_prefix: str = ""
    sla_hours: float = 48.0
    source: str = SOURCE

    def topic(self) -> str:
        """The held row's ``topic`` (:meth:`of_topic` reads it)."""
        return json.dumps(
            {
                "kind": "history",
                "file": self.file,
                "channel": self.channel,
                "location_id": self.location_id,
                "tz": self.tz,
                "order_prefix": self.order_prefix,
                "sla_hours": self.sla_hours,
                "source": self.source,
            },
            sort_keys=True,
        )

    @classmethod
    def of_topic(cls, topic: str) -> HistoryContext:
        """The context a held row's ``topic`` names."""
        data = json.loads(topic)
        return cls(
            file=str(data["file"]),
            channel=str(data["channel"]),
            location_id=str(data["location_id"]),
            tz=str(data["tz"]),
            order_prefix=str(data.get("order_prefix", "")),
            sla_hours=float(data.get("sla_hours", 48.0)),
            source=str(data.get("source", SOURCE)),
        )


def _validation(exc: ValidationError, where: str, lines: Sequence[str] = ()) -> list[str]:
    """``file:line: Column: message`` per failing field of a refused event.

    ``where`` is the ``file:line`` of the row the event is stamped by, ``lines[n]`` that
    of the row of order line ``n``.
    """
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"] if str(p) != "body"]
        index = next((int(p) for p in loc if p.isdigit()), None) if "lines" in loc else None
        name = next((FIELDS[p] for p in reversed(loc) if p in FIELDS), ".".join(loc))
        at = lines[index] if index is not None and index < len(lines) else where
        out.append(f"{at}: {name or 'row'}: {err['msg']}")
    return out


def _refused(exc: ValidationError, where: str) -> RowError:
    """A row whose event validation refused, as the row's error (``Column: message``)."""
    return RowError("; ".join(p.split(": ", 1)[1] for p in _validation(exc, where)))


def _counts(row: dict[str, str], invoice_no: str) -> bool:
    """Whether a row that cannot be read would number a return or write-off."""
    if invoice_no.upper().startswith("C"):
        return True
    try:
        return parse_quantity(row.get("Quantity") or "", "Quantity") < 0
    except RowError:
        return False


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
    held: list[HeldDelivery] | None = None,
    held_source: str = HELD_SOURCE,
) -> Iterator[Event | Quarantined]:
    """Canonical events (and quarantined rows) of an order-history CSV, in file order.

    ``held``: each invoice that was quarantined is added to it (source ``held_source``),
    its rows and how the file was read, for ``omniops quarantine replay``.  Blocking (CSV
    parsing): run it off the event loop.
    """
    report = report if report is not None else HistoryReport()
    context = HistoryContext(path.name, channel, location_id, tz, order_prefix, sla_hours, source)
    fmt = sniff(path)
    with path.open(newline="", encoding=fmt.encoding) as handle:
        reader = csv.reader(handle, delimiter=fmt.delimiter)
        header = next(reader, None)
        if header is None or not is_history_header(header):
            found = _shown(", ".join(h.strip() for h in header or [])) or "no header"
            raise HistoryFileError(
                f"{path.name}: not an order-history file (needs {', '.join(COLUMNS)};"
                f" found {found})"
            )
        names = canonical_header(header)
        rows = (
            (reader.line_num, dict(zip(names, values, strict=False)), -1)
            for values in reader
            if values
        )
        yield from history_items(rows, context, report, held, held_source)


def remap_history(topic: str, delivery_id: str, raw: str) -> list[Event | Quarantined]:
    """Read a held invoice's rows again (``quarantine replay``), as the file was read."""
    context = HistoryContext.of_topic(topic)
    rows = [
        (int(n), {str(k): str(v) for k, v in row.items()}, int(seen))
        for n, row, seen in json.loads(raw)
    ]
    return list(history_items(rows, context, HistoryReport(), None, HELD_SOURCE))


def history_items(
    rows: Iterable[HistoryRow],
    context: HistoryContext,
    report: HistoryReport,
    held: list[HeldDelivery] | None,
    held_source: str,
) -> Iterator[Event | Quarantined]:
    """The items of order-history rows (a file's, or a held invoice's on replay).

    A row's count (:data:`HistoryRow`) below 0 is counted here, in file order.
    """
    zone = ZoneInfo(context.tz)
    source, channel, location_id = context.source, context.channel, context.location_id
    name = context.file
    invoices: dict[str, _Invoice] = {}
    seen: dict[tuple[str, str], int] = {}
    for line, row, counted in rows:
        report.rows += 1
        where = f"{name}:{line}"
        invoice_no = (row.get("InvoiceNo") or "").strip()
        code = (row.get("StockCode") or "").strip()
        if code and not is_product(code):
            report.skipped[code.upper()] += 1
            continue
        sku = code.upper()
        key = (invoice_no, sku)
        before = seen.get(key, 0)
        if counted > before:
            seen[key] = before = counted
        event: Event | None = None
        sold: OrderLine | None = None
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
            if quantity > 0:
                try:
                    sold = OrderLine(sku=sku, quantity=quantity, unit_price=price)
                except ValidationError as exc:
                    raise _refused(exc, where) from None
            else:
                n = before + 1
                cancelled = invoice_no.upper().startswith("C")
                try:
                    if not cancelled and price == 0:
                        event = StockAdjusted(
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
                    else:
                        event = ReturnReceived(
                            id=f"{source}:{channel}:{invoice_no}:{sku}:{n}",
                            type="return.received",
                            ts=ts,
                            source=source,
                            body=ReturnBody(
                                return_id=f"{context.order_prefix}{invoice_no}-{sku}-{n}",
                                order_id=None,
                                sku=sku,
                                location_id=location_id,
                                channel=channel,
                                quantity=-quantity,
                                reason="cancelled invoice" if cancelled else "negative quantity",
                                refund=price * -quantity,
                            ),
                        )
                except ValidationError as exc:
                    raise _refused(exc, where) from None
        except RowError as exc:
            if _counts(row, invoice_no):
                # Its number is kept for it, so the rows after it keep theirs.
                seen[key] = before + 1
            report.quarantined_rows += 1
            report.problems.append(f"{where}: {exc}")
            bad = invoices.setdefault(invoice_no, _Invoice(invoice_no, line))
            bad.errors.append(f"{where}: {exc}")
            bad.rows.append((line, row, before))
            continue
        if event is not None:
            seen[key] = before + 1
            if isinstance(event, StockAdjusted):
                report.write_offs += 1
            else:
                report.returns += 1
            yield event
            continue
        invoice = invoices.setdefault(invoice_no, _Invoice(invoice_no, line))
        if invoice.ts is None:
            invoice.ts, invoice.country = ts, row.get("Country") or ""
        invoice.rows.append((line, row, before))
        assert sold is not None  # a positive quantity: read above
        invoice.lines.append(sold)
    for invoice in invoices.values():
        events: list[Event] = []
        if not invoice.errors and invoice.ts is not None and invoice.lines:
            try:
                events = _order(invoice, context)
            except ValidationError as exc:
                lines = [f"{name}:{n}" for n, _, _ in invoice.rows]
                invoice.errors = _validation(exc, lines[0], lines)
                report.quarantined_rows += len(invoice.errors)
                report.problems.extend(invoice.errors)
        if invoice.errors:
            report.quarantined_rows += len(invoice.rows) - len(invoice.errors)
            reason = "; ".join(invoice.errors)
            items: list[Quarantined] = []
            for line, row, _ in invoice.rows:
                own = "; ".join(e for e in invoice.errors if e.startswith(f"{name}:{line}:"))
                items.append(
                    Quarantined(
                        source=source,
                        raw=_safe_row(row),
                        error=own
                        or f"{name}:{line}: invoice {invoice.number} held back by {reason}",
                    )
                )
            if held is not None:
                held.append(
                    HeldDelivery(
                        source=held_source,
                        raw=json.dumps(
                            [[n, _kept_row(row), c] for n, row, c in invoice.rows],
                            ensure_ascii=False,
                        ),
                        reason=reason,
                        topic=context.topic(),
                        delivery_id=f"{name}: invoice {invoice.number}",
                        quarantined=tuple((q.source, q.error, q.raw) for q in items),
                    )
                )
            yield from items
            continue
        if not events:
            continue
        report.orders += 1
        report.lines += len(invoice.lines)
        yield from events


def _kept_row(row: dict[str, str]) -> dict[str, str]:
    """A held row: the columns read, as text (no customer id or description)."""
    return {k: v for k, v in row.items() if k in COLUMNS}


def _order(invoice: _Invoice, context: HistoryContext) -> list[Event]:
    """An invoice's placement and its shipped step (raises the model's ValidationError)."""
    assert invoice.ts is not None
    source, channel, location_id = context.source, context.channel, context.location_id
    order_id = f"{context.order_prefix}{invoice.number}"
    return [
        OrderPlaced(
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
                promised_by=invoice.ts + timedelta(hours=context.sla_hours),
                lines=invoice.lines,
            ),
        ),
        FulfillmentUpdated(
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
        ),
    ]
