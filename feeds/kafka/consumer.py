"""The Kafka feed adapter: a consumer-group member whose cursor is the committed offset.

Delivery is at least once, and each fact is applied once: offsets are committed to the
group only after the writer has committed the events read before them to SQLite (the
pump's durability hook, :meth:`KafkaFeed.durable`), and the store drops a redelivered
event by its id.  So after a crash or a rebalance the group resumes at or before what the
store holds, never after it.

* **Assign**: the group hands out partitions; the consumer resumes from their committed
  offsets (or ``auto_offset_reset`` for a new group).
* **Revoke**: before giving a partition away, the adapter waits (bounded) until what it
  read from it is durable and commits that.
* **Cluster unreachable**: the state is ``retrying`` with exponential back-off
  (:class:`rules.backoff.Backoff`); the consumer is rebuilt and rejoins by itself.
* **Held**: a record that was quarantined (in whole or in part), or stored with an
  unmapped id (a Shopify order without a node), is also kept, redacted,
  for ``omniops quarantine replay`` (:mod:`feeds.kafka.held`), once its items are
  committed and before its offset is: the store has it, so the offset moves on.
* **Lag**: per partition, the end offset (the larger of the fetch high-water mark and the
  broker's ``ListOffsets`` answer) minus the committed offset, and the age of the newest
  record consumed; on ``/health``, ``/metrics`` and, summarised, in the feeds view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from feeds.base import Feed, FeedState, PartitionHealth
from feeds.kafka.config import KafkaSubscription
from feeds.kafka.formats import (
    MethodLookup,
    Record,
    TrackingLookup,
    decode,
    no_lookup,
    no_method,
)
from feeds.kafka.held import hold_record
from feeds.kafka.scope import Scope
from feeds.stream import Sleep
from feeds.webhooks.mapping import Mapping
from rules.backoff import Backoff
from store.apply import epoch
from store.held import HeldDelivery, record_held
from store.model import Event, Quarantined
from store.writer import StoreWriter

log = logging.getLogger(__name__)

REVOKE_WAIT_SECONDS = 20.0
"""Longest a revoke waits for the store before committing what is durable so far."""


COMMIT_EVERY = 0.5
"""Seconds between offset commits while records keep coming."""

YIELD_EVERY = 64
"""Records decoded between two yields to the event loop (about 3 ms of parsing)."""


Holder = Callable[[list[HeldDelivery]], Awaitable[None]]
"""Keeps held records in the store (:func:`store_holder`)."""


def store_holder(writer: StoreWriter, on_kept: Callable[[], None] | None = None) -> Holder:
    """A :data:`Holder` writing through ``writer`` (``on_kept`` is called after each write)."""

    async def keep(held: list[HeldDelivery]) -> None:
        at = epoch(writer.clock.now())

        def run(db: Any) -> None:
            for delivery in held:
                record_held(db, delivery, at)

        await writer.run(run)
        if on_kept is not None:
            on_kept()

    return keep


def partition_key(tp: TopicPartition) -> str:
    """``topic/partition``: how a partition is named in health and metrics."""
    return f"{tp.topic}/{tp.partition}"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, feed: KafkaFeed, consumer: AIOKafkaConsumer) -> None:
        self.feed = feed
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.feed._on_revoked(self.consumer, set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.feed._on_assigned(self.consumer, set(assigned))


class KafkaFeed(Feed):
    """One ``[[serve.kafka]]`` subscription as a live feed (see the module docstring)."""

    kind = "kafka"

    def __init__(
        self,
        sub: KafkaSubscription,
        *,
        mapping: Callable[[], Mapping] = Mapping,
        order_for_tracking: TrackingLookup | None = None,
        order_method: MethodLookup | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        max_records: int = 500,
        holder: Holder | None = None,
    ) -> None:
        super().__init__(f"kafka:{sub.name}")
        self.sub = sub
        self.mapping = mapping
        self.order_for_tracking = order_for_tracking
        self.order_method = order_method
        self.backoff = backoff or Backoff(cap=sub.max_backoff_seconds)
        self.sleep = sleep
        self.max_records = max_records
        self.holder = holder
        """Where quarantined records are kept for a replay (None: not kept)."""
        self._holds: deque[tuple[int, HeldDelivery]] = deque()
        """(last item seq, what to keep) per quarantined record, in reading order."""
        self.scope = Scope(sub.locations, sub.regions)
        self.filtered = 0
        """Events left out by the location scope."""
        self._seq = 0
        self._durable_seq = 0
        self._pending: deque[tuple[int, TopicPartition, int]] = deque()
        """(last item seq, partition, next offset) per record read, in reading order."""
        self._durable: dict[TopicPartition, int] = {}
        """Next offset per partition whose records are all in the store."""
        self._committed: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}
        self._last_record_ms: dict[TopicPartition, int] = {}
        self._progress = asyncio.Event()
        self._at_yield = False
        self.connections = 0
        self.sources: set[str] = set()
        """The event sources (channels, systems) this feed has delivered."""
        self.lagging: str | None = None
        """Why the feed counts as stale for alerts (lag over its limits), or None."""
        self.stale_for_alerts: frozenset[str] = frozenset()
        """What counts as stale while it lags: its sources and the feed itself (read by the
        alert loop's thread: replaced whole, never changed in place)."""

    def attach(
        self,
        mapping: Callable[[], Mapping],
        order_for_tracking: TrackingLookup | None,
        holder: Holder | None = None,
        order_method: MethodLookup | None = None,
    ) -> None:
        """Use the server's hot-reloaded mapping, its store lookups and its store."""
        self.mapping = mapping
        if order_for_tracking is not None:
            self.order_for_tracking = order_for_tracking
        if order_method is not None:
            self.order_method = order_method
        if holder is not None:
            self.holder = holder

    # -- durability ----------------------------------------------------------------------

    async def durable(self, cursor: str) -> None:
        """The pump's hook: every item up to ``cursor`` is committed to the store."""
        seq = int(cursor.split(" ", 1)[0])
        ready: list[HeldDelivery] = []
        while self._holds and self._holds[0][0] <= seq:
            ready.append(self._holds.popleft()[1])
        if ready and self.holder is not None:
            # Kept before the offsets move: the quarantine rows are committed already.
            try:
                await self.holder(ready)
            except Exception:
                log.exception("%s: could not keep %d records for a replay", self.name, len(ready))
        self._durable_seq = max(self._durable_seq, seq)
        self._settle()

    def _settle(self) -> None:
        while self._pending and self._pending[0][0] <= self._durable_seq:
            _, tp, offset = self._pending.popleft()
            self._durable[tp] = max(offset, self._durable.get(tp, 0))
        self._progress.set()

    async def _commit(self, consumer: AIOKafkaConsumer, only: set[TopicPartition]) -> None:
        offsets = {
            tp: OffsetAndMetadata(offset, "")
            for tp, offset in self._durable.items()
            if tp in only and offset > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        await consumer.commit(offsets)
        for tp, meta in offsets.items():
            self._committed[tp] = meta.offset

    async def _on_revoked(self, consumer: AIOKafkaConsumer, revoked: set[TopicPartition]) -> None:
        deadline = time.monotonic() + REVOKE_WAIT_SECONDS
        while any(self._durable.get(tp, -1) < self._read.get(tp, -1) for tp in revoked):
            self._progress.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning("%s: revoke before the store caught up; committing less", self.name)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        try:
            # Bounded like the loop's commits: aiokafka retries a commit while the group's
            # coordinator is gone, which would hold the rebalance (and this feed) forever.
            await asyncio.wait_for(self._commit(consumer, revoked), self.sub.probe_timeout_seconds)
        except (KafkaError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {self.sub.probe_timeout_seconds:g} s"
            log.warning("%s: commit on revoke failed (%s); the next owner re-reads", self.name, why)
        for tp in revoked:
            self.health.partitions.pop(partition_key(tp), None)
            self._read.pop(tp, None)
            self._committed.pop(tp, None)

    async def _on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        timeout = self.sub.probe_timeout_seconds
        for tp in assigned:
            try:  # bounded as every call to the coordinator (see _on_revoked)
                committed = await asyncio.wait_for(consumer.committed(tp), timeout)
            except (KafkaError, TimeoutError) as exc:
                # Unknown: nothing is committed for it until records read from it are
                # stored (they start at the group's offset, so a commit never goes back).
                why = str(exc) or f"no answer within {timeout:g} s"
                log.warning("%s: committed offset of %s unknown (%s)", self.name, tp, why)
                self._committed[tp] = -1
                self._durable.pop(tp, None)
                self.health.partitions[partition_key(tp)] = PartitionHealth()
                continue
            self._committed[tp] = committed if committed is not None else -1
            # What another member stored since we last held it is not ours to re-commit.
            self._durable[tp] = max(self._committed[tp], 0)
            self.health.partitions[partition_key(tp)] = PartitionHealth(
                committed=committed, position=committed
            )
        log.info("%s: assigned %s", self.name, sorted(partition_key(tp) for tp in assigned))

    # -- health --------------------------------------------------------------------------

    async def _measure(self, consumer: AIOKafkaConsumer) -> None:
        """Lag per assigned partition; raises when the cluster does not answer."""
        assigned = sorted(consumer.assignment())
        timeout = self.sub.probe_timeout_seconds
        ends: dict[TopicPartition, int] = {}
        if assigned:
            ends = await asyncio.wait_for(consumer.end_offsets(assigned), timeout)
        else:
            await asyncio.wait_for(consumer.topics(), timeout)
        # A rebalance may have happened during the await: report what is assigned now.
        current = consumer.assignment()
        assigned = [tp for tp in assigned if tp in current]
        for key in set(self.health.partitions) - {partition_key(tp) for tp in current}:
            del self.health.partitions[key]
        total = 0
        for tp in assigned:
            highwater = consumer.highwater(tp)
            end = max(ends.get(tp, 0), highwater or 0)
            committed = self._committed.get(tp, -1)
            base = committed if committed >= 0 else self._read.get(tp, 0)
            lag = max(0, end - base)
            total += lag
            last_ms = self._last_record_ms.get(tp)
            self.health.partitions[partition_key(tp)] = PartitionHealth(
                lag=lag,
                committed=committed if committed >= 0 else None,
                position=self._read.get(tp),
                end=end,
                last_record_at=None
                if last_ms is None
                else datetime.fromtimestamp(last_ms / 1000, UTC),
            )
        ages = [p.last_record_at for p in self.health.partitions.values() if p.last_record_at]
        newest = ""
        if ages:
            age = (datetime.now(UTC) - max(ages)).total_seconds()
            newest = f"; newest record {age:.0f} s old"
        self.assess_lag()
        lagging = f"; stale for alerts: {self.lagging}" if self.lagging else ""
        self.health.detail = f"lag {total} over {len(assigned)} partitions{newest}{lagging}"

    def assess_lag(self, now: datetime | None = None) -> str | None:
        """Judge the partitions' lag against ``stale_lag`` / ``stale_lag_seconds``.

        Sets :attr:`lagging` and :attr:`stale_for_alerts`, and returns the reason.
        """
        now = now or datetime.now(UTC)
        parts = self.health.partitions.values()
        total = sum(p.lag or 0 for p in parts)
        reason: str | None = None
        if total > self.sub.stale_lag:
            reason = f"lag {total} > stale_lag {self.sub.stale_lag}"
        else:
            behind = [
                (now - p.last_record_at).total_seconds()
                for p in parts
                if p.lag and p.last_record_at is not None
            ]
            if behind and max(behind) > self.sub.stale_lag_seconds:
                reason = (
                    f"{max(behind):.0f} s behind > stale_lag_seconds {self.sub.stale_lag_seconds:g}"
                )
        self.lagging = reason
        self.stale_for_alerts = frozenset({*self.sources, self.name}) if reason else frozenset()
        return reason

    # -- the feed ------------------------------------------------------------------------

    def _consumer(self) -> AIOKafkaConsumer:
        sub = self.sub
        return AIOKafkaConsumer(
            bootstrap_servers=sub.bootstrap_servers,
            group_id=sub.group_id,
            client_id=f"omniops-{sub.name}",
            enable_auto_commit=False,
            auto_offset_reset=sub.auto_offset_reset,
            session_timeout_ms=sub.session_timeout_ms,
            heartbeat_interval_ms=max(300, sub.session_timeout_ms // 5),
            request_timeout_ms=max(5000, sub.session_timeout_ms + 1000),
            retry_backoff_ms=200,
            **sub.security.client_options(),
        )

    async def items(self) -> AsyncIterator[Event | Quarantined]:
        """Events from the group's committed offsets on, across reconnects, until cancelled."""
        while True:
            delay = 0.0
            consumer = self._consumer()
            listener = _Listener(self, consumer)
            started = False
            inner = self._consume(consumer)
            try:
                await consumer.start()
                started = True
                consumer.subscribe(self.sub.topics, listener=listener)
                self.connections += 1
                async for item in inner:
                    self._at_yield = True
                    yield item
                    self._at_yield = False
            except (KafkaError, OSError, TimeoutError) as exc:
                self.health.errors += 1
                delay = self.backoff.next_delay()
                self.health.state = FeedState.RETRYING
                self.health.detail = f"{type(exc).__name__}: {exc}; retrying in {delay:.1f} s"
                log.warning("%s: %s", self.name, self.health.detail)
            finally:
                await inner.aclose()
                if started:
                    await self._close(consumer)
                else:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(consumer.stop(), 5.0)
            await self.sleep(delay)

    async def _close(self, consumer: AIOKafkaConsumer) -> None:
        """Commit what is durable (waiting briefly for the store), then leave the group."""
        # The item handed out last may never have reached the writer (closed at the yield).
        target = self._seq - (1 if self._at_yield else 0)
        deadline = time.monotonic() + REVOKE_WAIT_SECONDS
        while self._durable_seq < target and time.monotonic() < deadline:
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), deadline - time.monotonic())
        self._settle()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._commit(consumer, set(consumer.assignment())),
                self.sub.probe_timeout_seconds,
            )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 2 * self.sub.probe_timeout_seconds)

    async def _consume(
        self, consumer: AIOKafkaConsumer
    ) -> AsyncGenerator[Event | Quarantined, None]:
        next_measure = 0.0
        next_commit = 0.0
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
            for tp, records in batch.items():
                for n, message in enumerate(records, start=1):
                    if n % YIELD_EVERY == 0:
                        # Decoding is CPU work on the loop: let heartbeats and requests in.
                        await asyncio.sleep(0)
                    record = Record(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.value,
                        tuple(message.headers or ()),
                    )
                    unmapped: list[tuple[str, str]] = []
                    items = await decode(
                        record,
                        self.sub.format,
                        feed=self.name,
                        mapping=self.mapping(),
                        channel_header=self.sub.channel_header,
                        unmapped=unmapped,
                        order_for_tracking=self.order_for_tracking or no_lookup,
                        order_method=self.order_method or no_method,
                    )
                    kept = [
                        item
                        for item in items
                        if isinstance(item, Quarantined) or self.scope.keeps(item)
                    ]
                    self.filtered += len(items) - len(kept)
                    if self.holder is not None:
                        held = hold_record(
                            record,
                            self.sub.format,
                            items,
                            feed=self.name,
                            channel_header=self.sub.channel_header,
                            # Stored with an unmapped id: held unless scope kept none of it.
                            unmapped=unmapped if kept else (),
                        )
                        if held is not None:
                            # Queued before its items go out: it is kept as soon as the
                            # last of them is durable, before the offset can be committed.
                            self._holds.append((self._seq + len(kept), held))
                    for item in kept:
                        if not isinstance(item, Quarantined):
                            self.sources.add(item.source)
                        self._seq += 1
                        self.cursor = f"{self._seq} {partition_key(tp)}@{message.offset}"
                        yield item
                    self._pending.append((self._seq, tp, message.offset + 1))
                    self._read[tp] = message.offset + 1
                    self._last_record_ms[tp] = message.timestamp
            self._settle()
            now = time.monotonic()
            # Under load, commit at most every COMMIT_EVERY s (a round trip each); when
            # idle, at once.  Revoke and close commit what is durable either way.
            if not batch or now >= next_commit:
                # Bounded like the probe: aiokafka retries a commit whose coordinator is
                # gone until it answers, so an unbounded one kept an unreachable cluster
                # "connected".  A commit cut short is made again (records re-read are
                # duplicates by event id).
                await asyncio.wait_for(
                    self._commit(consumer, set(consumer.assignment())),
                    self.sub.probe_timeout_seconds,
                )
                next_commit = now + COMMIT_EVERY
            if now >= next_measure:
                await self._measure(consumer)
                next_measure = now + self.sub.lag_every_seconds
                if consumer.assignment() or self.health.state != FeedState.CONNECTED:
                    self.health.state = FeedState.STALE if self.lagging else FeedState.CONNECTED
                self.backoff.reset()


def kafka_feeds(
    subscriptions: list[KafkaSubscription],
    mapping: Callable[[], Mapping] = Mapping,
) -> list[Feed]:
    """The ``[[serve.kafka]]`` subscriptions as feeds."""
    return [KafkaFeed(sub, mapping=mapping) for sub in subscriptions]
