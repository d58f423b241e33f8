"""A watched drop folder for exports from legacy systems (CSV and JSON Lines).

Put a file in the folder (write it elsewhere or under a name starting with ``.`` or
ending in ``.tmp``/``.part``/``.partial``, then rename it: a half-written file is never
read).  :class:`DropFolder` processes files already there at start, then every file
that appears (``watchfiles.awatch``), oldest name first, each exactly once:

1. the file is read in a thread and every row becomes a canonical event or, if it
   cannot be read, a quarantined item whose reason is ``<file>:<line>: <field>: ...``;
2. everything is written through the store's single writer and the folder waits for
   the commit;
3. the file moves to ``done/`` when every row was stored (or already was), to
   ``failed/`` otherwise, with ``<name>.reason.txt`` beside it: what was read, what
   was applied, each quarantined line and why, and that the rest of the file *was*
   processed (a fixed file can be dropped again whole: rows already stored are
   dropped as duplicates by their ids).  A file that cannot be read at all (unknown
   columns, not UTF-8) goes to ``failed/`` with nothing stored.

Formats, chosen by extension and CSV header (column order is free; extra columns ignored):

* ``.jsonl`` / ``.ndjson``: canonical events, one per line.
* POS end-of-day orders, CSV ``order_id, placed_at, store_id, region, sku, quantity,
  unit_price[, discount]``: one row per order line; the rows of an order become one
  ``order.placed`` (channel ``pos``, method ``bopis``, location ``store_id``,
  ``promised_by`` = ``placed_at``; id ``pos:<order_id>:placed``) and a ``picked_up`` step
  one second later (an over-the-counter sale is handed over at once).  A bad row holds
  back its whole order (quarantined with it).  Stock is not adjusted: the day's
  count file carries the stock after the sales, and adjusting too would count them twice.
* WMS stock counts, CSV ``sku, location_id, on_hand, counted_at[, reserved]``: one
  ``stock.snapshot`` per row (id ``wms:count:<location>:<sku>:<counted_at>``).
* Order history in the Online Retail shape (see :mod:`feeds.csv_import`).

Times without an offset are read in the folder's ``tz`` (default UTC).

What is quarantined is also *held* for ``omniops quarantine replay`` (source
``dropfolder``, :func:`remap_dropped`): a JSON line (redacted), a stock-count row, a POS
order's rows (redacted as quarantine keeps them), or an order-history invoice's rows
(the columns read, never ``CustomerID`` or ``Description``:
:func:`feeds.csv_import.remap_history`), with the file's kind, name and zone, so a replay
reads them again with today's code and windows.  Dropping the file again counts on the
same held rows.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import watchfiles
from pydantic import ValidationError

from feeds.base import FeedState
from feeds.csv_import import (
    HistoryReport,
    RowError,
    is_history_header,
    parse_local_time,
    parse_price,
    parse_quantity,
    read_history,
    remap_history,
    sniff,
)
from feeds.jsonl import parse_line, read_lines
from feeds.stream import FeedMonitor
from feeds.webhooks.redact import keep_raw, redact_payload
from rules.errors import describe_validation_error
from store.apply import Outcome, count_outcomes, epoch
from store.held import HeldDelivery, quarantine_mark, record_held_many
from store.model import (
    Event,
    FulfillmentBody,
    FulfillmentUpdated,
    OrderLine,
    OrderPlaced,
    OrderPlacedBody,
    Quarantined,
    StockSnapshot,
    StockSnapshotBody,
)
from store.writer import StoreWriter

log = logging.getLogger(__name__)

POS_COLUMNS = ("order_id", "placed_at", "store_id", "region", "sku", "quantity", "unit_price")
COUNT_COLUMNS = ("sku", "location_id", "on_hand", "counted_at")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".reason.txt", ".swp")


class FileError(ValueError):
    """A dropped file that cannot be read at all (nothing of it is stored)."""


@dataclass
class FileReport:
    """What became of one dropped file."""

    name: str
    kind: str = "unknown"
    rows: int = 0
    skipped: int = 0
    outcomes: dict[Outcome, int] = field(
        default_factory=lambda: {"applied": 0, "duplicate": 0, "quarantined": 0}
    )
    problems: list[str] = field(default_factory=list)
    error: str | None = None
    moved_to: Path | None = None

    @property
    def ok(self) -> bool:
        """True if every row was stored (or already was)."""
        return self.error is None and self.outcomes["quarantined"] == 0

    def reason(self) -> str:
        """The text of ``<name>.reason.txt``."""
        if self.error is not None:
            return (
                f"{self.name}: not processed, nothing was stored.\n{self.error}\n"
                "Fix the file and drop it again.\n"
            )
        o = self.outcomes
        lines = [
            f"{self.name} ({self.kind}): {self.rows} rows read, {o['applied']} events applied, "
            f"{o['duplicate']} already stored, {o['quarantined']} rows quarantined"
            + (f", {self.skipped} skipped (not products)" if self.skipped else "")
            + ".",
            "The rest of the file was processed; the quarantined rows are in the store's "
            "quarantine table:",
            *self.problems,
            "Fix these lines and drop the file again: rows already stored are dropped "
            "as duplicates.",
            "Or fix them in the store: they are held (`omniops quarantine list --source "
            "dropfolder`); `omniops quarantine edit ID` corrects one and places it, and "
            "`omniops quarantine replay` places those a fixed mapping now maps.",
        ]
        return "\n".join(lines) + "\n"


def _header(path: Path) -> list[str]:
    """The CSV header's names.

    An order-history file may be Windows-1252 or ``;``-separated
    (:func:`feeds.csv_import.sniff`); POS and count files are UTF-8 with commas.
    """
    fmt = sniff(path)
    with path.open(newline="", encoding=fmt.encoding) as handle:
        header = [h.strip() for h in next(csv.reader(handle, delimiter=fmt.delimiter), [])]
    if is_history_header(header):
        return header
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [h.strip() for h in next(csv.reader(handle), [])]
    except UnicodeDecodeError as exc:
        raise FileError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None


def _cells(row: dict[str | None, Any]) -> tuple[dict[str, str], str | None]:
    """A ``csv.DictReader`` row, names and values stripped, and what is wrong with its shape.

    Cells past the header (which ``DictReader`` keeps as a list under ``None``) are kept
    under ``""`` and make the row unreadable, never a crash.
    """
    extra = row.get(None)
    cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
    if not extra:
        return cells, None
    cells[""] = ",".join(str(v) for v in extra)
    return cells, f"{len(extra)} cell(s) more than the header has columns"


def _safe(row: dict[str, str]) -> str:
    return json.dumps(redact_payload(dict(row)), ensure_ascii=False)


PosRow = tuple[int, dict[str, str], OrderLine | None, str | None]
"""``(line number, row, its order line or None, why it cannot be read or None)``."""


def _pos_row(number: int, row: dict[str, str], tz: ZoneInfo) -> PosRow:
    try:
        for column in POS_COLUMNS:
            if not row.get(column):
                raise RowError(f"{column}: empty")
        quantity = parse_quantity(row["quantity"], "quantity")
        if quantity <= 0:
            raise RowError(f"quantity: must be positive, got {quantity}")
        line = OrderLine(
            sku=row["sku"],
            quantity=quantity,
            unit_price=parse_price(row["unit_price"], "unit_price"),
            discount=parse_price(row.get("discount") or "0", "discount"),
        )
        parse_local_time(row["placed_at"], tz, "placed_at")
    except RowError as exc:
        return number, row, None, str(exc)
    except ValidationError as exc:
        return number, row, None, describe_validation_error(exc)
    return number, row, line, None


def _pos_order(
    name: str, order_id: str, rows: list[PosRow], tz: ZoneInfo
) -> list[Event | Quarantined]:
    """The events of one POS order's rows, or every row quarantined when one is bad."""
    errors = [f"{name}:{n}: {err}" for n, _, _, err in rows if err]
    events: list[Event | Quarantined] = []
    if not errors:
        first = rows[0][1]
        try:
            placed = parse_local_time(first["placed_at"], tz, "placed_at")
            store = first["store_id"]
            events = [
                OrderPlaced(
                    id=f"pos:{order_id}:placed",
                    type="order.placed",
                    ts=placed,
                    source="pos",
                    body=OrderPlacedBody(
                        order_id=order_id,
                        channel="pos",
                        method="bopis",
                        destination_region=first["region"],
                        location_id=store,
                        promised_by=placed,
                        lines=[line for _, _, line, _ in rows if line is not None],
                    ),
                ),
                FulfillmentUpdated(
                    id=f"pos:{order_id}:picked_up",
                    type="fulfillment.updated",
                    ts=placed + timedelta(seconds=1),
                    source="pos",
                    body=FulfillmentBody(order_id=order_id, status="picked_up", location_id=store),
                ),
            ]
        except (RowError, ValidationError) as exc:
            why = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            errors = [f"{name}:{rows[0][0]}: {why}"]
            rows = [(rows[0][0], rows[0][1], None, why), *rows[1:]]
    if not errors:
        return events
    out: list[Event | Quarantined] = []
    for n, row, _, err in rows:
        reason = err or f"order {order_id!r} held back by " + "; ".join(errors)
        out.append(Quarantined(source="pos", raw=_safe(row), error=f"{name}:{n}: {reason}"))
    return out


def read_pos(
    path: Path,
    tz: ZoneInfo,
    report: FileReport,
    held: list[HeldDelivery] | None = None,
) -> Iterator[Event | Quarantined]:
    """Events of a POS end-of-day file (see the module docstring).

    ``held``: each order that was quarantined is added to it, to keep for a replay.
    """
    orders: dict[str, list[PosRow]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for raw in reader:
            row, shape = _cells(raw)
            report.rows += 1
            parsed = (
                _pos_row(reader.line_num, row, tz)
                if shape is None
                else (reader.line_num, row, None, shape)
            )
            orders.setdefault(row.get("order_id", ""), []).append(parsed)
            if parsed[3] is not None:
                report.problems.append(f"{path.name}:{reader.line_num}: {parsed[3]}")
    for order_id, rows in orders.items():
        items = _pos_order(path.name, order_id, rows, tz)
        errors = sum(1 for _, _, _, err in rows if err)
        if not errors and isinstance(items[0], Quarantined):  # the order itself was refused
            report.problems.append(items[0].error)
        if errors and errors < len(rows):
            report.problems.append(
                f"order {order_id}: its other {len(rows) - errors} lines held back too"
            )
        if held is not None and any(isinstance(i, Quarantined) for i in items):
            kept = [[n, redact_payload(dict(row))] for n, row, _, _ in rows]
            held.append(_hold(items, "pos", path.name, tz, f"{path.name}: order {order_id}", kept))
        yield from items


def _count_row(row: dict[str, str], where: str, tz: ZoneInfo) -> Event | Quarantined:
    try:
        for column in COUNT_COLUMNS:
            if not row.get(column):
                raise RowError(f"{column}: empty")
        on_hand = parse_quantity(row["on_hand"], "on_hand")
        reserved = parse_quantity(row.get("reserved") or "0", "reserved")
        if reserved < 0:
            raise RowError(f"reserved: must not be negative, got {reserved}")
        counted = parse_local_time(row["counted_at"], tz, "counted_at")
        stamp = counted.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return StockSnapshot(
            id=f"wms:count:{row['location_id']}:{row['sku']}:{stamp}",
            type="stock.snapshot",
            ts=counted,
            source="wms",
            body=StockSnapshotBody(
                sku=row["sku"],
                location_id=row["location_id"],
                on_hand=on_hand,
                reserved=reserved,
                source_system="wms",
            ),
        )
    except RowError as exc:
        why = str(exc)
    except ValidationError as exc:
        why = describe_validation_error(exc)
    return Quarantined(source="wms", raw=_safe(row), error=f"{where}: {why}")


def read_counts(
    path: Path,
    tz: ZoneInfo,
    report: FileReport,
    held: list[HeldDelivery] | None = None,
) -> Iterator[Event | Quarantined]:
    """Events of a WMS stock-count file (see the module docstring).

    ``held``: each row that was quarantined is added to it, to keep for a replay.
    """
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        for raw in reader:
            row, shape = _cells(raw)
            report.rows += 1
            where = f"{path.name}:{reader.line_num}"
            item = (
                _count_row(row, where, tz)
                if shape is None
                else Quarantined(source="wms", raw=_safe(row), error=f"{where}: {shape}")
            )
            if isinstance(item, Quarantined):
                report.problems.append(item.error)
                if held is not None:
                    kept = [[reader.line_num, redact_payload(dict(row))]]
                    held.append(_hold([item], "counts", path.name, tz, where, kept))
            yield item


SOURCE = "dropfolder"
"""The ``held`` source of a dropped file's quarantined rows."""


def _hold(
    items: list[Event | Quarantined],
    kind: str,
    name: str,
    tz: ZoneInfo,
    where: str,
    rows: list[list[object]],
) -> HeldDelivery:
    """What to keep of quarantined rows: their kind, file and zone, and the rows (redacted)."""
    quarantined = [item for item in items if isinstance(item, Quarantined)]
    return HeldDelivery(
        source=SOURCE,
        raw=json.dumps(rows, ensure_ascii=False),
        reason="; ".join(dict.fromkeys(item.error for item in quarantined)),
        topic=_context(kind, name, tz),
        delivery_id=where,
        quarantined=tuple((q.source, q.error, q.raw) for q in quarantined),
    )


def _context(kind: str, name: str, tz: ZoneInfo) -> str:
    """A held row's ``topic``: the file's kind, name and zone (:func:`remap_dropped` reads it)."""
    return json.dumps({"kind": kind, "file": name, "tz": tz.key}, sort_keys=True)


def remap_dropped(topic: str, delivery_id: str, raw: str) -> list[Event | Quarantined]:
    """Read held rows again (``quarantine replay``), as :func:`read_dropped` read them."""
    context = json.loads(topic)
    kind, name, zone = context["kind"], str(context["file"]), ZoneInfo(context["tz"])
    if kind == "jsonl":
        return [parse_line(raw, source="drop", where=delivery_id)]
    if kind == "history":
        return remap_history(topic, delivery_id, raw)
    rows = [(int(n), {str(k): str(v) for k, v in row.items()}) for n, row in json.loads(raw)]
    if kind == "counts":
        return [_count_row(row, f"{name}:{n}", zone) for n, row in rows]
    if kind == "pos":
        order_id = rows[0][1].get("order_id", "")
        return _pos_order(name, order_id, [_pos_row(n, row, zone) for n, row in rows], zone)
    raise ValueError(f"unknown kind of dropped file {kind!r}")


def read_dropped(
    path: Path,
    *,
    tz: str = "UTC",
    history_channel: str = "webshop",
    history_location: str = "WH1",
    report: FileReport | None = None,
    held: list[HeldDelivery] | None = None,
) -> list[Event | Quarantined]:
    """Every item of one dropped file; :class:`FileError` if it cannot be read at all.

    ``held``: what was quarantined is added to it, to keep for ``quarantine replay`` (a
    JSON line, a stock-count row, a POS order's or an order-history invoice's rows).
    Blocking: run it in a thread.
    """
    report = report if report is not None else FileReport(path.name)
    zone = ZoneInfo(tz)
    name = path.name.lower()
    try:
        if name.endswith(JSONL_SUFFIXES):
            report.kind = "jsonl"
            items: list[Event | Quarantined] = []
            for number, text in read_lines(path):
                report.rows += 1
                where = f"{path.name}:{number}"
                item = parse_line(text, source="drop", where=where)
                if isinstance(item, Quarantined):
                    report.problems.append(item.error)
                    if held is not None:
                        held.append(
                            HeldDelivery.of_line(
                                item,
                                keep_raw(text),
                                source=SOURCE,
                                topic=_context("jsonl", path.name, zone),
                                where=where,
                            )
                        )
                items.append(item)
            return items
        if not name.endswith(".csv"):
            raise FileError(f"{path.name}: unknown file type (expected .csv, .jsonl or .ndjson)")
        header = _header(path)
        if is_history_header(header):
            report.kind = "order history"
            history = HistoryReport()
            items = list(
                read_history(
                    path,
                    channel=history_channel,
                    location_id=history_location,
                    tz=tz,
                    report=history,
                    held=held,
                    held_source=SOURCE,
                )
            )
            report.rows = history.rows
            report.skipped = sum(history.skipped.values())
            report.problems.extend(history.problems)
            return items
        columns = set(header)
        if set(POS_COLUMNS) <= columns:
            report.kind = "POS end of day"
            return list(read_pos(path, zone, report, held))
        if set(COUNT_COLUMNS) <= columns:
            report.kind = "stock count"
            return list(read_counts(path, zone, report, held))
        raise FileError(
            f"{path.name}: unknown CSV columns {', '.join(header) or '(none)'}; expected "
            f"POS orders ({', '.join(POS_COLUMNS)}), stock counts ({', '.join(COUNT_COLUMNS)}) "
            "or order history (InvoiceNo, StockCode, Quantity, InvoiceDate, UnitPrice, Country)"
        )
    except UnicodeDecodeError as exc:
        raise FileError(f"{path.name}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise FileError(f"{path.name}: not a readable CSV file ({exc})") from None


def _wanted(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and not name.endswith(IGNORED_SUFFIXES)


def _unique(target: Path) -> Path:
    if not target.exists():
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{target.stem}.{stamp}{target.suffix}")


class DropFolder:
    """Processes every file dropped into ``folder`` once, through ``writer``."""

    kind = "dropfolder"

    def __init__(
        self,
        folder: Path,
        writer: StoreWriter,
        *,
        name: str = "dropfolder",
        tz: str = "UTC",
        history_channel: str = "webshop",
        history_location: str = "WH1",
        monitor: FeedMonitor | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.writer = writer
        self.name = name
        self.tz = tz
        self.history_channel = history_channel
        self.history_location = history_location
        self.monitor = monitor or FeedMonitor(name, self.kind)
        self.done = self.folder / "done"
        self.failed = self.folder / "failed"
        self.processed: asyncio.Queue[FileReport] = asyncio.Queue()
        """Every file's report, as it is moved (tests await these)."""

    def pending(self) -> list[Path]:
        """Files waiting in the folder, by name."""
        return sorted(p for p in self.folder.iterdir() if p.is_file() and _wanted(p))

    async def process(self, path: Path) -> FileReport:
        """Read, store and move one file; return what happened."""
        report = FileReport(path.name)
        held: list[HeldDelivery] = []
        try:
            items = await asyncio.to_thread(
                read_dropped,
                path,
                tz=self.tz,
                history_channel=self.history_channel,
                history_location=self.history_location,
                report=report,
                held=held,
            )
        except FileError as exc:
            report.error = str(exc)
            items = []
        except OSError as exc:  # vanished or unreadable: leave it, report it
            report.error = f"{path.name}: {exc.strerror or exc}"
            self.monitor.health.errors += 1
            self.monitor.health.detail = report.error
            await self.processed.put(report)
            return report
        except Exception as exc:  # a reader's bug must not end the watch: to failed/, kept
            log.exception("drop folder: reading %s failed", path.name)
            report.error = f"{path.name}: could not be read ({type(exc).__name__}: {exc})"
            items = []
            held = []
        mark = await self.writer.run(quarantine_mark) if held else 0
        futures = [await self.writer.submit(item) for item in items]
        outcomes: list[Outcome] = list(await asyncio.gather(*futures))
        if held:
            # Kept for ``quarantine replay`` once the rows' quarantine entries committed.
            at = epoch(self.writer.clock.now())
            try:
                await self.writer.run(lambda db: record_held_many(db, held, at, after=mark))
            except Exception:
                log.exception("drop folder: could not keep %s's rows for a replay", path.name)
        self.monitor.record(outcomes)
        report.outcomes = count_outcomes(outcomes)
        target_dir = self.done if report.ok else self.failed
        target_dir.mkdir(exist_ok=True)
        target = _unique(target_dir / path.name)
        await asyncio.to_thread(shutil.move, str(path), str(target))
        report.moved_to = target
        if not report.ok:
            self.monitor.health.errors += 1
            reason = target.with_name(target.name + ".reason.txt")
            await asyncio.to_thread(reason.write_text, report.reason(), "utf-8")
            self.monitor.health.detail = f"{path.name} → failed/ ({reason.name})"
        log.info("drop folder: %s → %s/ (%s)", path.name, target_dir.name, report.outcomes)
        await self.processed.put(report)
        return report

    async def run(self, *, stop: asyncio.Event | None = None) -> None:
        """Process what is there, then watch the folder until ``stop`` is set."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.done.mkdir(exist_ok=True)
        self.failed.mkdir(exist_ok=True)
        self.monitor.health.state = FeedState.CONNECTED
        for path in self.pending():
            await self.process(path)
        async for _changes in watchfiles.awatch(
            self.folder, stop_event=stop, recursive=False, debounce=200, step=50
        ):
            # Re-list rather than trust the change set: it also catches renames, and a
            # file that was already moved is simply not there any more.
            for path in self.pending():
                await self.process(path)
