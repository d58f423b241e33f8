"""Group commit: with no batch window, what queues while a batch commits is the next batch.

``serve``'s default ``batch_wait_ms`` is 0: the writer waits for nothing after the first
event, so a lone webhook commits at once, and a burst that arrives while a commit runs
still goes to the store in one transaction, not one each.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from feeds.settings import ServeConfig
from store.writer import StoreWriter
from tests.builders import at, rows, snapshot


async def test_events_queued_during_a_commit_share_the_next_transaction(db_path: Path) -> None:
    release = threading.Event()

    def hold(_: sqlite3.Connection) -> None:  # keeps the writer's one thread busy
        release.wait(10)

    async with StoreWriter(db_path, batch_wait=0) as writer:
        first = await writer.submit(snapshot("SKU0", "WH-NJ", 1, at()))
        assert await first == "applied"
        before = writer.stats.batches
        held = asyncio.create_task(writer.run(hold))
        await asyncio.sleep(0)  # the hold is on the thread before the next batch
        lone = await writer.submit(snapshot("SKU1", "WH-NJ", 2, at(minutes=1)))
        for _ in range(5000):  # until the writer took the lone event (it waits behind the hold)
            if writer._queue.empty():
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError("the writer never took the lone event")
        burst = [
            await writer.submit(snapshot(f"SKU{n}", "WH-NJ", n, at(minutes=n)))
            for n in range(2, 12)
        ]
        release.set()
        await held
        assert await lone == "applied"
        assert [await f for f in burst] == ["applied"] * 10
        assert writer.stats.batches - before == 2  # the lone event, then the whole burst
    assert rows(db_path, "SELECT COUNT(*) FROM event_log") == [(12,)]


def test_serve_commits_without_a_window_by_default(tmp_path: Path) -> None:
    config = ServeConfig(db=tmp_path / "store.db")
    assert config.batch_wait_ms == 0
