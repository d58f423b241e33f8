"""The store's single writer: one task, one connection, batched transactions.

Feeds hand validated events (or quarantined payloads) to :meth:`StoreWriter.submit`
(one item) or :meth:`StoreWriter.write_many` (many at once: ingest, history imports,
``POST /events`` batches); both resolve once the batch holding the items has committed,
so a webhook can answer 2xx only when its event is durable.  The writer task drains the
queue into batches (up to ``batch_size`` items or ``batch_wait`` seconds after the first
one) and applies each batch set-wise (:func:`store.apply.apply_batch`) in one
``BEGIN IMMEDIATE`` transaction on the connection's own thread (a one-thread executor:
one hop per batch, never per statement).

A poison item (a value SQLite refuses to bind or store: an integer beyond 64 bits, a
string with a lone surrogate, a constraint it breaks) never fails its neighbours: the
batch is split until the item is alone, the item is quarantined with the database's
reason, and the rest commits.  Only errors a retry can fix (the store unavailable:
locked, full, I/O) fail a batch's futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

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

    The store does not know the fulfillment router: the runtime that owns the writer hands
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

    poison: int = 0
    """Items the database refused, isolated from their batch and quarantined."""

    def add(self, outcome: Outcome) -> None:
        """Count one outcome."""
        setattr(self, outcome, getattr(self, outcome) + 1)

    def add_all(self, outcomes: Sequence[Outcome]) -> None:
        """Count a batch's outcomes (one pass per kind in C, not a call per item)."""
        self.applied += outcomes.count("applied")
        self.duplicate += outcomes.count("duplicate")
        self.quarantined += outcomes.count("quarantined")


POISON_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    OverflowError,
    ValueError,  # UnicodeEncodeError (lone surrogates), serialisation errors
    TypeError,
    KeyError,
)
"""Errors caused by an item itself: retrying the same item can never succeed.

Anything else (``sqlite3.OperationalError``: locked, full, I/O; ``OSError``) is the store
being unavailable, and fails the batch so its senders retry."""


WRITER_CACHE_KIB = 64 * 1024
"""The writer's page cache: a bulk load touches orders, lines and roll-ups at random keys."""


@dataclass(eq=False, slots=True)
class _Job:
    """Items handed over together, and the future their outcomes resolve."""

    items: list[Item]
    future: asyncio.Future[Any]
    single: bool = False
    """Resolve the future with the one outcome (``submit``), not a list."""
    outcomes: list[Outcome] = field(default_factory=list)


def _safe_text(text: str) -> str:
    """``text`` with lone surrogates escaped, so SQLite can store it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class StoreWriter:
    """The one writer of a store file.  Use as ``async with StoreWriter(path) as w``."""

    def __init__(
        self,
        path: Path,
        *,
        clock: Clock | None = None,
        batch_size: int = 5000,
        bulk_batch_size: int = 5000,
        batch_wait: float = 0.02,
        queue_size: int = 20_000,
        params: MetricParams | None = None,
        after_commit: AfterCommit | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        """Items the writer task gathers into one transaction at most (a few queued requests'
        worth: each batch pays one risk pass over the pairs it touched and one commit, so
        ``POST /events`` batches of 100 from 64 clients run about 1.3x faster at 5,000 than at
        1,000: ``python -m tests.bench_webhooks --mode batch``)."""
        self.bulk_batch_size = max(batch_size, bulk_batch_size)
        """Items per transaction for :meth:`write_many` (fewer commits, roll-ups, risk passes)."""
        self.batch_wait = batch_wait
        self.params = params or MetricParams()
        self.after_commit = after_commit
        """Runs after each committed batch (the router, when the runtime hands one)."""
        self.routing_errors = 0
        self.sweep_every = 60.0
        """Wall seconds between sweeps of the stock-risk flags (see store.apply)."""
        self._last_sweep = -math.inf
        self.stats = WriterStats()
        self._queue: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=queue_size)
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._applying: list[_Job] = []
        """The jobs of the batch being committed (:meth:`withdraw` leaves them be)."""

    async def __aenter__(self) -> StoreWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open (creating and migrating) the store and start the writer task."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"store-writer:{self.path.name}")
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(
            self._executor,
            lambda: sqlite3.connect(self.path, isolation_level=None, check_same_thread=False),
        )
        await self._run(configure_connection)
        await self._run(lambda db: db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}"))
        await self._run(migrate)
        self._task = asyncio.create_task(self._loop(), name=f"store-writer:{self.path.name}")

    async def submit(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue one item; the returned future resolves to its outcome once committed.

        Waits when the queue is full (back-pressure on the feed, never a dropped event).
        """
        if self._failure is not None:
            raise RuntimeError("store writer stopped") from self._failure
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job([item], future, single=True))
        return future

    async def submit_many(
        self, items: Sequence[Item], *, size: int | None = None
    ) -> list[asyncio.Future[list[Outcome]]]:
        """Queue ``items`` in chunks of at most ``bulk_batch_size``; one future per chunk.

        Each future resolves to the chunk's outcomes, in order, once committed.  One queue
        entry and one future per chunk instead of per item.  ``size`` overrides the chunk
        size (a chunk is one transaction: ``ingest`` commits larger ones when it can).
        """
        if self._failure is not None:
            raise RuntimeError("store writer stopped") from self._failure
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[list[Outcome]]] = []
        size = size or self.bulk_batch_size
        for start in range(0, len(items), size):
            future: asyncio.Future[list[Outcome]] = loop.create_future()
            await self._queue.put(_Job(list(items[start : start + size]), future))
            futures.append(future)
        return futures

    async def write_many(self, items: Sequence[Item]) -> list[Outcome]:
        """Write ``items`` and wait until all are committed; return their outcomes in order."""
        futures = await self.submit_many(items)
        return [outcome for chunk in await asyncio.gather(*futures) for outcome in chunk]

    async def flush(self) -> None:
        """Wait until everything queued so far is committed and its after-commit hook ran.

        The writer handles jobs in order, so an empty job resolves only once every earlier
        batch (and the routing after it) is done.
        """
        if self._failure is not None:
            raise RuntimeError("store writer stopped") from self._failure
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job([], future))
        await future

    def withdraw(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        """Cancel the queued jobs of ``futures`` that the writer has not started.

        Their items are never applied (a stopped bulk load).  A job in the batch being
        committed is left to finish; its future resolves as usual.
        """
        applying = {id(job.future) for job in self._applying}
        for future in futures:
            if id(future) not in applying:
                future.cancel()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the writer's connection, between batches (a replay's replacement).

        ``fn`` opens and commits its own transaction; it runs on the writer thread, so it
        never races a batch.
        """
        return await self._run(fn)

    async def write(self, items: Iterable[Item]) -> list[Outcome]:
        """Submit ``items`` and wait until all are committed; return their outcomes."""
        return await self.write_many(list(items))

    async def close(self) -> None:
        """Commit everything queued, stop the task and close the connection."""
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

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
        db, executor = self._db, self._executor
        if db is None or executor is None:
            raise RuntimeError("store writer is not started")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, db)

    async def _loop(self) -> None:
        stopping = False
        loop = asyncio.get_running_loop()
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.items)
            deadline = loop.time() + self.batch_wait
            while size < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    timeout = deadline - loop.time()
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
                size += len(nxt.items)
            # Jobs withdrawn while queued are dropped; the rest cannot be withdrawn now.
            batch = [job for job in batch if not job.future.cancelled()]
            if not batch:
                continue
            self._applying = batch
            try:
                await self._commit(batch)
            except Exception as exc:
                # The writer cannot go on: fail this batch and everything queued, so feeds
                # and webhooks see an error instead of waiting forever.
                self._failure = exc
                log.exception("store writer stopped")
                self._fail_all(batch, exc)
                return
            finally:
                self._applying = []

    def _fail_all(self, batch: list[_Job], exc: BaseException) -> None:
        for job in batch:
            if not job.future.done():
                job.future.set_exception(exc)
        while True:
            try:
                queued = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if queued is not None and not queued.future.done():
                queued.future.set_exception(exc)

    async def _commit(self, batch: list[_Job]) -> None:
        items = [item for job in batch for item in job.items]
        received_at = epoch(self.clock.now())
        sweep = time.monotonic() - self._last_sweep >= self.sweep_every
        poisoned: set[int] = set()
        try:
            outcomes = await self._apply_isolating(items, 0, received_at, sweep, poisoned)
        except Exception as exc:  # the store is unavailable: fail the batch, keep running
            log.exception("store batch of %d items failed", len(items))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        if sweep:
            self._last_sweep = time.monotonic()
        self.stats.batches += 1
        self.stats.add_all(outcomes)
        position = 0
        for job in batch:
            mine = outcomes[position : position + len(job.items)]
            position += len(job.items)
            if not job.future.done():
                job.future.set_result(mine[0] if job.single else mine)
        if poisoned:
            items = [item for n, item in enumerate(items) if n not in poisoned]
        await self._route(items)

    async def _apply_isolating(
        self, items: list[Item], offset: int, received_at: int, sweep: bool, poisoned: set[int]
    ) -> list[Outcome]:
        """Apply ``items``; on an error an item causes, split until it is alone, quarantine it.

        ``offset`` is the position of ``items[0]`` in the batch; poisoned positions are added
        to ``poisoned``.  Halves commit in order, so arrival order (and so which of two
        copies of an id is the duplicate) is kept.
        """
        try:
            return await self._run(
                lambda db: apply_batch(db, items, received_at, self.params, sweep=sweep)
            )
        except POISON_ERRORS as exc:
            if len(items) == 1:
                poisoned.add(offset)
                return await self._quarantine_poison(items[0], received_at, exc)
            middle = len(items) // 2
            first = await self._apply_isolating(
                items[:middle], offset, received_at, sweep, poisoned
            )
            second = await self._apply_isolating(
                items[middle:], offset + middle, received_at, sweep, poisoned
            )
            return first + second

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

    async def _quarantine_poison(
        self, item: Item, received_at: int, error: BaseException
    ) -> list[Outcome]:
        """Keep an item the database refused, in quarantine with the database's reason."""
        reason = f"store refused the event: {type(error).__name__}: {error}"
        if isinstance(item, Quarantined):
            raw, source = item.raw, item.source
            reason = f"{item.error}; {reason}"
        else:
            source = item.source
            try:
                raw = item.model_dump_json()
            except ValueError:  # a string JSON cannot encode: keep what Python can show
                raw = repr(item.model_dump(mode="python"))
        log.warning("quarantined an item the store refused (%s): %s", source, reason)
        kept = Quarantined(
            source=_safe_text(source)[:200], raw=_safe_text(raw), error=_safe_text(reason)
        )
        self.stats.poison += 1
        return await self._run(lambda db: apply_batch(db, [kept], received_at, self.params))
