"""``omniops ingest`` and ``omniops import-history``: files through the writer a live feed uses.

A canonical line that fails validation is quarantined and also *held* (source ``ingest``,
:func:`hold_line`), so ``omniops quarantine replay`` validates it
again once the cause is fixed; ingesting the same line again counts, never duplicates.
``import-history`` holds each invoice it quarantined the same way (source ``history``,
:func:`feeds.csv_import.remap_history`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import itertools
import json
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from pydantic import ValidationError

from feeds.csv_import import HistoryReport, read_history
from feeds.jsonl import feed_files, parse_line, read_lines, source_of
from feeds.runtime.routing import router_hook
from feeds.webhooks.redact import keep_raw
from store.apply import Outcome, count_outcomes, epoch
from store.held import HeldDelivery, quarantine_mark, record_held_many
from store.model import Event, OrderPlaced, Quarantined, parse_event
from store.writer import StoreWriter

Item = Event | Quarantined

Progress = Callable[[int], None]
"""Called with the number of items committed so far, after each chunk."""

IN_FLIGHT = 4
"""Chunks handed to the writer ahead of the oldest uncommitted one (reading overlaps writing)."""

INGEST_MERGE = 4
"""Writer batches per transaction for ``ingest`` when the router has nothing to decide
(see :func:`write_stream`): 20,000 events at the writer's 5,000, ``COMMIT`` 0.8 -> 0.45
CPU-s on the fixture day, peak RSS 204 -> 273 MiB."""


class NoEventFiles(FileNotFoundError):
    """``ingest`` was given folders that hold no event files (``*.jsonl``, ``*.jsonl.gz``)."""


STOP_EVERY = 256
"""Items the reader parses between two looks at the stop flag (about a millisecond)."""

STOP_POLL = 0.05
"""Seconds between two looks at the stop flag while waiting for a chunk to commit."""


async def write_stream(
    writer: StoreWriter,
    items: Iterable[Item],
    *,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    merge: int = 1,
) -> dict[Outcome, int]:
    """Write ``items`` through the writer's bulk path; return the tally of outcomes.

    Items are read (parsed, validated) a chunk at a time in a worker thread while the
    writer commits earlier chunks on its own thread; up to :data:`IN_FLIGHT` chunks wait.

    With ``merge`` > 1, chunks are ``merge`` writer batches long, and one holding no order
    the router would route (see :func:`routable`) commits in one transaction: fewer
    commits, each writing the pages its batch dirtied once.  A chunk with such an order is
    committed in the writer's own batches, as without ``merge``, so the router decides
    after the same events it always did.  (Risk flags, an over-approximation refreshed by
    the console, are scored per transaction.)

    When ``stop`` is set (from any thread) the load ends soon after: the reader drops the
    chunk it is reading (it looks every :data:`STOP_EVERY` items), chunks queued but not
    started are withdrawn from the writer, and only the batch the writer is applying
    commits.  The tally then counts what was committed.  Leaving early by an exception
    (a ``progress`` that raises) withdraws the queued chunks too.
    """
    source: Iterator[Item] = iter(items)
    batch = writer.bulk_batch_size
    size = batch * max(1, merge)
    ahead = max(1, IN_FLIGHT // max(1, merge))  # about as many items in flight either way

    def stopped() -> bool:
        return stop is not None and stop.is_set()

    def next_chunk() -> list[Item]:
        if stop is None:
            return list(itertools.islice(source, size))
        chunk: list[Item] = []
        while len(chunk) < size:
            step = list(itertools.islice(source, min(STOP_EVERY, size - len(chunk))))
            if stop.is_set():
                return []
            chunk += step
            if len(step) < STOP_EVERY:
                break
        return chunk

    tally: dict[Outcome, int] = {"applied": 0, "duplicate": 0, "quarantined": 0}
    in_flight: deque[list[asyncio.Future[list[Outcome]]]] = deque()
    done = 0

    async def settle() -> None:
        nonlocal done
        oldest = in_flight[0]
        if stop is not None:
            while not stop.is_set():
                _, pending = await asyncio.wait(oldest, timeout=STOP_POLL)
                if not pending:
                    break
            if stop.is_set():
                return
        in_flight.popleft()
        for chunk in await asyncio.gather(*oldest):
            for outcome, n in count_outcomes(chunk).items():
                tally[outcome] += n
            done += len(chunk)
        if progress is not None:
            progress(done)

    try:
        with bulk_gc():
            while not stopped() and (chunk := await asyncio.to_thread(next_chunk)):
                whole = size > batch and not routable(chunk)
                in_flight.append(await writer.submit_many(chunk, size=size if whole else None))
                if len(in_flight) > ahead:
                    await settle()
            while in_flight and not stopped():
                await settle()
    finally:
        await _withdraw(writer, in_flight, tally)
    return tally


def routable(items: Iterable[Item]) -> bool:
    """True if ``items`` hold an order placed without a node (what the router routes).

    The same test as :func:`feeds.runtime.routing.routing_after_batch`'s, duplicates
    included, so a chunk without one gives the router nothing to decide.
    """
    return any(isinstance(i, OrderPlaced) and i.body.location_id is None for i in items)


async def _withdraw(
    writer: StoreWriter,
    in_flight: deque[list[asyncio.Future[list[Outcome]]]],
    tally: dict[Outcome, int],
) -> None:
    """Withdraw chunks the writer has not started; wait for (and count) the ones it has.

    A chunk the writer is applying commits whatever happens, so it is awaited and
    counted, never abandoned half-way.
    """
    futures = [future for chunk in in_flight for future in chunk]
    in_flight.clear()
    writer.withdraw(futures)
    for future in futures:
        if future.cancelled():
            continue
        with contextlib.suppress(Exception):
            for outcome, n in count_outcomes(await future).items():
                tally[outcome] += n


BULK_GC_THRESHOLD = (500_000, 20, 100)
"""Collector thresholds while a bulk load runs.

A load allocates millions of short-lived, acyclic objects (parsed events, row tuples);
at the default thresholds the cycle collector's full passes over the heap cost about a
third of an ingest's CPU (measured: 30 -> 20 CPU-s on the fixture day).  The young
generation counts live objects: with 50,000, chunks in flight (tens of thousands of
parsed events) set it off every few milliseconds for nothing, 0.9 CPU-s of the fixture
day's ingest; at 500,000 the collections cost 0.01 CPU-s."""


@contextlib.contextmanager
def bulk_gc() -> Iterator[None]:
    """Raise the collector's thresholds for the duration of a bulk load, then restore."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(before, BULK_GC_THRESHOLD, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


def event_files(paths: Sequence[Path]) -> list[Path]:
    """The event files of ``paths``; raises :class:`NoEventFiles` when there are none."""
    files = [f for p in paths for f in feed_files(Path(p))]
    if not files:
        names = ", ".join(str(p) for p in paths)
        raise NoEventFiles(
            f"{names}: no event files (*.jsonl, *.jsonl.gz, *.ndjson) in "
            f"{'this folder' if len(paths) == 1 else 'these folders'}"
        )
    return files


def estimate_events(files: Sequence[Path]) -> int:
    """How many events ``files`` hold, for a progress bar's total and time left.

    A folder's ``manifest.json`` with per-file ``counts`` (the fixture generator writes one)
    answers at once; other files have their lines counted, a pass at disk speed (a
    compressed file is decompressed to count, about 1 % of what storing it costs).
    """
    manifests: dict[Path, dict[str, object]] = {}
    total = 0
    for path in files:
        folder = path.parent
        if folder not in manifests:
            manifests[folder] = _manifest_counts(folder)
        known = manifests[folder].get(path.name)
        if isinstance(known, int):
            total += known
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            total += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
    return total


def _manifest_counts(folder: Path) -> dict[str, object]:
    try:
        counts = json.loads((folder / "manifest.json").read_text(encoding="utf-8")).get("counts")
    except (OSError, ValueError, AttributeError):
        return {}
    return counts if isinstance(counts, dict) else {}


async def ingest_paths(
    paths: Sequence[Path],
    db: Path,
    *,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> dict[Outcome, int]:
    """Validate and write every line of ``paths`` (files or folders) into the store at ``db``.

    Returns how many events were applied, were duplicates, and were quarantined.  Raises
    :class:`NoEventFiles` when the folders hold no event files.  ``on_total`` is told the
    expected number of events (:func:`estimate_events`) before the first is written.
    """
    files = event_files(paths)
    if on_total is not None:
        on_total(await asyncio.to_thread(estimate_events, files))
    held: list[HeldDelivery] = []
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        mark = await writer.run(quarantine_mark)
        complete = False
        try:
            tally = await write_stream(
                writer, _holding(files, held), progress=progress, merge=INGEST_MERGE
            )
            complete = True
        finally:
            # Keep the quarantined lines for a replay, linked to their quarantine rows (a
            # load that ended early keeps only those whose rows committed).
            at = epoch(writer.clock.now())
            await writer.run(
                lambda conn: record_held_many(conn, held, at, after=mark, linked_only=not complete)
            )
        return tally


def hold_line(item: Quarantined, line: str, *, feed: str, where: str) -> HeldDelivery:
    """What ``omniops ingest`` keeps of a canonical line that was quarantined.

    Source ``ingest``; ``feed`` is the feed its file stands for, ``where`` its
    ``file:line``; ``quarantine replay`` validates the kept line again.
    """
    return HeldDelivery.of_line(item, keep_raw(line), source="ingest", topic=feed, where=where)


def _holding(files: Sequence[Path], held: list[HeldDelivery]) -> Iterator[Item]:
    """Every line of ``files``, validated or quarantined; each quarantined one also in ``held``."""
    for path in files:
        feed = source_of(path)
        name = path.name
        for number, text in read_lines(path):
            item: Item
            try:
                item = parse_event(text)
            except ValidationError:
                # Only a refused line needs its place named: parse_line validates it again
                # and quarantines it with the reason.
                where = f"{name}:{number}"
                item = parse_line(text, source=feed, where=where)
                if isinstance(item, Quarantined):
                    held.append(hold_line(item, text, feed=feed, where=where))
            yield item


async def import_history(
    csv_path: Path,
    db: Path,
    channel: str,
    location_id: str,
    tz: str,
    *,
    order_prefix: str = "",
    writer: StoreWriter | None = None,
    progress: Progress | None = None,
    on_total: Callable[[int], None] | None = None,
) -> HistoryReport:
    """Import an order-history CSV into the store at ``db`` (or through ``writer``).

    Parsing runs in a thread; events go through the single writer like any feed's, so
    importing the same file twice applies nothing the second time.  ``on_total`` is told
    how many events the file made once it is parsed; ``progress`` how many are stored.
    """
    report = HistoryReport()
    held: list[HeldDelivery] = []

    def parse() -> list[Event | Quarantined]:
        return list(
            read_history(
                Path(csv_path),
                channel=channel,
                location_id=location_id,
                tz=tz,
                order_prefix=order_prefix,
                report=report,
                held=held,
            )
        )

    with bulk_gc():
        items = await asyncio.to_thread(parse)
    if on_total is not None:
        on_total(len(items))
    if writer is None:
        async with StoreWriter(db, after_commit=router_hook()) as own:
            tally = await _write_holding(own, items, held, progress)
    else:
        tally = await _write_holding(writer, items, held, progress)
    report.applied = tally["applied"]
    report.duplicate = tally["duplicate"]
    report.quarantined = tally["quarantined"]
    return report


async def _write_holding(
    writer: StoreWriter, items: list[Item], held: list[HeldDelivery], progress: Progress | None
) -> dict[Outcome, int]:
    """Write ``items``, then keep the invoices in ``held`` for a replay (source ``history``)."""
    mark = await writer.run(quarantine_mark) if held else 0
    complete = False
    try:
        tally = await write_stream(writer, items, progress=progress)
        complete = True
    finally:
        if held:
            at = epoch(writer.clock.now())
            await writer.run(
                lambda conn: record_held_many(conn, held, at, after=mark, linked_only=not complete)
            )
    return tally
