"""``omniops ingest`` and ``omniops import-history``: files through the writer a live feed uses."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from feeds.csv_import import HistoryReport, read_history
from feeds.jsonl import feed_files, read_items
from feeds.runtime.routing import router_hook
from store.apply import Outcome, count_outcomes
from store.model import Event, Quarantined
from store.writer import StoreWriter


async def ingest_paths(paths: Sequence[Path], db: Path) -> dict[Outcome, int]:
    """Validate and write every line of ``paths`` (files or folders) into the store at ``db``.

    Returns how many events were applied, were duplicates, and were quarantined.
    """
    files = [f for p in paths for f in feed_files(Path(p))]
    outcomes: list[Outcome] = []
    async with StoreWriter(db, after_commit=router_hook()) as writer:
        for path in files:
            futures = [await writer.submit(item) for item in read_items(path)]
            for future in futures:
                outcomes.append(await future)
    return count_outcomes(outcomes)


async def import_history(
    csv_path: Path,
    db: Path,
    channel: str,
    location_id: str,
    tz: str,
    *,
    order_prefix: str = "",
    writer: StoreWriter | None = None,
) -> HistoryReport:
    """Import an order-history CSV into the store at ``db`` (or through ``writer``).

    Parsing runs in a thread; events go through the single writer like any feed's, so
    importing the same file twice applies nothing the second time.
    """
    report = HistoryReport()

    def parse() -> list[Event | Quarantined]:
        return list(
            read_history(
                Path(csv_path),
                channel=channel,
                location_id=location_id,
                tz=tz,
                order_prefix=order_prefix,
                report=report,
            )
        )

    items = await asyncio.to_thread(parse)
    if writer is None:
        async with StoreWriter(db, after_commit=router_hook()) as own:
            outcomes = await own.write(items)
    else:
        outcomes = await writer.write(items)
    tally = count_outcomes(outcomes)
    report.applied = tally["applied"]
    report.duplicate = tally["duplicate"]
    report.quarantined = tally["quarantined"]
    return report
