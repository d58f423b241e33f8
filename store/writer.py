"""The store's single writer: one task, one connection, batched transactions.

Feeds hand validated events (or quarantined payloads) to :meth:`StoreWriter.submit`,
which returns a future that resolves once the batch holding the item has committed, so a
webhook can answer 2xx only when its event is durable.  The writer task drains the queue
into batches (up to ``batch_size`` items or ``batch_wait`` seconds after the first one)
and applies each batch in one ``BEGIN IMMEDIATE`` transaction on the aiosqlite
connection's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosqlite

from store.apply import Outcome, apply_batch, epoch
from store.clock import Clock, SystemClock
from store.model import Event, Quarantined
from store.risk import MetricParams
from store.schema import migrate
from store.snapshots import FeedHealthRow

log = logging.getLogger(__name__)

T = TypeVar("T")

Item = Event | Quarantined


class AfterCommit(Protocol):
    """A hook the writer runs on its connection after each committed batch.

    The store does not know the fulfilment router: the runtime that owns the writer hands
    it one (``feeds.runtime.routing.router_hook``), so the layers point one way.
    """

    def __call__(
        self,
        db: sqlite3.Connection,
        items: Sequence[Item],
        *,
        decided_at: datetime,
        timezone: str,
    ) -> object:
        """Run after ``items`` are durable; a failure is logged and counted, never fatal."""


def configure_connection(db: sqlite3.Connection) -> None:
    """Pragmas every connection to a store uses (WAL, a busy timeout, foreign data types)."""
    db.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode survives a process crash (SIGKILL) with every committed batch;
    # only an OS crash or power loss can drop the last transactions.
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA busy_timeout = 5000")


@dataclass
class WriterStats:
    """Running totals of what the writer did since it started."""

    applied: int = 0
    duplicate: int = 0
    quarantined: int = 0
    batches: int = 0

    def add(self, outcome: Outcome) -> None:
        """Count one outcome."""
        setattr(self, outcome, getattr(self, outcome) + 1)


class StoreWriter:
    """The one writer of a store file.  Use as ``async with StoreWriter(path) as w``."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        batch_size: int = 1000,
        batch_wait: float = 0.02,
        queue_size: int = 20_000,
        params: MetricParams | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.params = params or MetricParams()
        self.after_commit = after_commit
        """Runs after each committed batch (the router, when the runtime hands one)."""
        self.routing_errors = 0
        self.sweep_every = 60.0
        """Wall seconds between sweeps of the stock-risk flags (see store.apply)."""
        self._last_sweep = -math.inf
        self.stats = WriterStats()
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future[Outcome]] | None] = asyncio.Queue(
            maxsize=queue_size
        )
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    async def __aenter__(self) -> StoreWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open (creating and migrating) the store and start the writer task."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        self._conn = conn
        await self._run(configure_connection)
        await self._run(migrate)
        self._task = asyncio.create_task(self._loop(), name=f"store-writer:{self.path.name}")

    async def submit(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue one item; the returned future resolves to its outcome once committed.

        Waits when the queue is full (back-pressure on the feed, never a dropped event).
        """
        if self._failure is not None:
            raise RuntimeError("store writer stopped") from self._failure
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return future

    async def write(self, items: Iterable[Item]) -> list[Outcome]:
        """Submit ``items`` and wait until all are committed; return their outcomes."""
        futures = [await self.submit(item) for item in items]
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        """Commit everything queued, stop the task and close the connection."""
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def set_cursor(self, feed: str, cursor: str) -> None:
        """Store a feed's resume cursor (e.g. a stream's Last-Event-ID, a file offset)."""

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO feed_state (feed, cursor) VALUES (?, ?)"
                " ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor",
                (feed, cursor),
            )

        await self._run(run)

    async def save_feed_health(self, rows: Iterable[FeedHealthRow]) -> None:
        """Record the live state of the feed adapters (``serve``), for every console."""
        values = [
            (
                r.feed,
                r.kind,
                r.state,
                r.detail,
                r.events_per_minute,
                r.errors,
                r.quarantined,
                None if r.last_event_at is None else epoch(r.last_event_at),
                epoch(r.updated_at),
            )
            for r in rows
        ]

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO feed_health (feed, kind, state, detail, events_per_minute,"
                " errors, quarantined, last_event_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

        await self._run(run)

    async def get_cursor(self, feed: str) -> str | None:
        """A feed's stored resume cursor, or None."""

        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT cursor FROM feed_state WHERE feed = ?", (feed,)).fetchone()
            return None if row is None else cast(str | None, row[0])

        return await self._run(run)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the connection's own thread: one hop per batch, not per statement."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("store writer is not started")
        # aiosqlite serialises work on one thread per connection; _execute is how its own
        # methods reach it.  A whole batch as one call keeps the event loop free and fast.
        runner = cast(Any, conn)
        return cast(T, await runner._execute(fn, runner._conn))

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.batch_wait
            while len(batch) < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - asyncio.get_running_loop().time()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                await self._commit(batch)
            except Exception as exc:
                # The writer cannot go on: fail this batch and everything queued, so feeds
                # and webhooks see an error instead of waiting forever.
                self._failure = exc
                log.exception("store writer stopped")
                self._fail_all(batch, exc)
                return

    def _fail_all(
        self, batch: list[tuple[Item, asyncio.Future[Outcome]]], exc: BaseException
    ) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
        while True:
            try:
                queued = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if queued is not None and not queued[1].done():
                queued[1].set_exception(exc)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Outcome]]]) -> None:
        items = [item for item, _ in batch]
        received_at = epoch(self.clock.now())
        try:
            sweep = time.monotonic() - self._last_sweep >= self.sweep_every
            outcomes = await self._run(
                lambda db: apply_batch(db, items, received_at, self.params, sweep=sweep)
            )
            if sweep:
                self._last_sweep = time.monotonic()
        except sqlite3.IntegrityError:
            if len(batch) == 1:
                outcomes = await self._quarantine_poison(items[0], received_at)
            else:
                # One item the schema refuses must not sink its neighbours: retry one by one.
                for single in batch:
                    await self._commit([single])
                return
        except Exception as exc:  # the batch rolled back: fail its futures, keep running
            log.exception("store batch of %d items failed", len(items))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.stats.batches += 1
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            self.stats.add(outcome)
            if not future.done():
                future.set_result(outcome)
        await self._route(items)

    async def _route(self, items: list[Item]) -> None:
        """Route orders that arrived without a node; release finished orders' reservations.

        After the batch is durable (its futures already resolved), in a transaction of its
        own: a routing failure is logged and counted, never loses the events.
        """
        hook = self.after_commit
        if hook is None:
            return
        decided_at = self.clock.now()
        timezone = self.params.timezone
        try:
            await self._run(lambda db: hook(db, items, decided_at=decided_at, timezone=timezone))
        except Exception:
            self.routing_errors += 1
            log.exception("routing after a batch of %d items failed", len(items))

    async def _quarantine_poison(self, item: Item, received_at: int) -> list[Outcome]:
        """Keep an event the database refused, in quarantine with the database's reason."""
        if isinstance(item, Quarantined):
            raise RuntimeError("quarantine insert failed")
        kept = Quarantined(
            source=item.source, raw=item.model_dump_json(), error="store refused the event"
        )
        return await self._run(lambda db: apply_batch(db, [kept], received_at, self.params))
