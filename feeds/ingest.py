"""``omniops ingest``: canonical JSON Lines files through the same writer a live feed uses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from feeds.jsonl import feed_files, read_items
from store.apply import Outcome, count_outcomes
from store.writer import StoreWriter


async def ingest_paths(paths: Sequence[Path], db: Path) -> dict[Outcome, int]:
    """Validate and write every line of ``paths`` (files or folders) into the store at ``db``.

    Returns how many events were applied, were duplicates, and were quarantined.
    """
    files = [f for p in paths for f in feed_files(Path(p))]
    outcomes: list[Outcome] = []
    async with StoreWriter(db) as writer:
        for path in files:
            futures = [await writer.submit(item) for item in read_items(path)]
            for future in futures:
                outcomes.append(await future)
    return count_outcomes(outcomes)
