"""Decisions out (``[serve.kafka_out]``): routing decisions and alert notifications to Kafka.

An OMS or WMS downstream consumes what ``serve`` decides:

* **Routing decisions** go to ``decisions_topic``, keyed by order id, one JSON
  :class:`rules.routing.Decision` per record.  :func:`publishing_hook` wraps the writer's
  after-commit hook (``feeds.runtime.routing.router_hook``): the decisions it returns,
  already committed to the store, are handed to a :class:`DecisionOutbox`, so the store
  imports nothing of this.  The outbox keeps the newest undelivered decision per order (a
  newer one supersedes a queued older one: the topic is a keyed, compactable stream) and
  sends in batches.
* **Alert notifications** go to ``alerts_topic``, one record per alert of a notification,
  keyed by the alert's fingerprint, in the generic JSON format of the other receivers
  (:func:`rules.receivers.generic_payload`, with ``alert`` holding the one alert).  The
  delivery is a receiver like any other (:class:`rules.receivers.ReceiverWorker`, named
  ``kafka_out``), tapped into the notifier so it sees every notification.

Delivery is at least once: a failed send (cluster unreachable, a timeout) is retried
with exponential back-off for as long as it takes (or ``max_attempts``), and a batch
partly acknowledged before a failure is sent again whole, so a consumer must take the
newest record per key.  Both streams are counted on ``/metrics``
(``omniops_kafka_out_*{stream="decisions"|"alerts"}``); the alert receiver's counters are
also stored with the other receivers'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from feeds.kafka.config import KafkaOut
from rules.backoff import Backoff
from rules.delivery_loop import DeliveryLoop
from rules.receivers import (
    DeliveryError,
    Notification,
    ReceiverStats,
    ReceiverWorker,
    generic_payload,
)
from rules.routing.orders import Decision
from store.writer import AfterCommit

log = logging.getLogger(__name__)

ALERTS_RECEIVER = "kafka_out"
"""The name the alert topic's receiver has among the receivers (status, logs)."""

BATCH = 500
"""Most decisions sent in one go."""

Gauge = tuple[str, str, dict[str, str], float]
"""``(name, help, labels, value)``, as ``serve``'s ``/metrics`` renders them."""

Record = tuple[str, bytes, bytes]
"""``(topic, key, value)``."""


class Producer:
    """One :class:`AIOKafkaProducer` shared by both streams, started on first use.

    A failure closes it, and the next send starts a new one: that is the reconnection.
    """

    def __init__(self, config: KafkaOut) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.connections = 0

    async def _get(self) -> AIOKafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.config.send_timeout_seconds * 1000)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id="omniops-out",
                acks="all",
                linger_ms=5,
                request_timeout_ms=timeout_ms,
                retry_backoff_ms=200,
                **self.config.security.client_options(),
            )
            try:
                await asyncio.wait_for(producer.start(), self.config.send_timeout_seconds)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 2.0)
                raise
            self._producer = producer
            self.connections += 1
        return self._producer

    async def send(self, records: Sequence[Record]) -> None:
        """Send ``records`` and wait for every acknowledgement; raises DeliveryError."""
        async with self._lock:
            try:
                producer = await self._get()
                futures = [
                    await producer.send(topic, value, key=key) for topic, key, value in records
                ]
                await asyncio.wait_for(asyncio.gather(*futures), self.config.send_timeout_seconds)
            except (KafkaError, OSError, TimeoutError) as exc:
                await self.close()
                where = self.config.bootstrap_servers
                raise DeliveryError(f"{type(exc).__name__} sending to {where}: {exc}") from exc

    async def close(self) -> None:
        """Stop the producer (bounded: an unreachable cluster does not hold the shutdown)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2.0)


def alert_records(notification: Notification, topic: str) -> list[Record]:
    """One record per alert of ``notification``, keyed by the alert's fingerprint."""
    payload = generic_payload(notification)
    alerts = payload.pop("alerts")
    return [
        (
            topic,
            alert["fingerprint"].encode(),
            json.dumps({**payload, "alert": alert}, ensure_ascii=False).encode(),
        )
        for alert in alerts
    ]


class KafkaAlertDelivery:
    """A receiver's delivery: a notification's alerts to the alerts topic."""

    def __init__(self, producer: Producer, topic: str, max_attempts: int = 0) -> None:
        self.producer = producer
        self.topic = topic
        self.max_attempts = max_attempts
        self._failures: dict[str, int] = {}

    async def send(self, notification: Notification) -> None:
        """Send or raise :class:`DeliveryError` (not retried after ``max_attempts``)."""
        try:
            await self.producer.send(alert_records(notification, self.topic))
        except DeliveryError as exc:
            key = notification.key  # the same across attempts (each reads the outbox)
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            if self.max_attempts and failures >= self.max_attempts:
                del self._failures[key]
                raise DeliveryError(
                    f"{exc} (gave up after {failures} attempts)", retry=False
                ) from exc
            raise
        self._failures.pop(notification.key, None)


class DecisionOutbox(DeliveryLoop):
    """Routing decisions waiting for the decisions topic, newest per order, sent in batches.

    ``start``/``stop``/``wait_idle`` are :class:`rules.delivery_loop.DeliveryLoop`'s; what
    is undelivered at ``stop`` is lost with the process (the decisions are in the store).
    """

    def __init__(
        self,
        producer: Producer,
        topic: str,
        *,
        retry: Backoff,
        max_attempts: int = 0,
        max_pending: int = 100_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.retry = retry
        self.max_attempts = max_attempts
        self.max_pending = max_pending
        self.now = now
        self.stats = ReceiverStats()
        self._queue: OrderedDict[bytes, bytes] = OrderedDict()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Decisions not yet acknowledged by the cluster."""
        return len(self._queue)

    def offer(self, decisions: Sequence[Decision]) -> None:
        """Queue ``decisions``; safe from any thread (the writer's hook runs on its own)."""
        records = [(d.order_id.encode(), d.model_dump_json().encode()) for d in decisions]
        if not records or self._loop is None or self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._add, records)

    def _add(self, records: list[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            if key in self._queue:
                self.stats.superseded += 1
                del self._queue[key]
            self._queue[key] = value
        while len(self._queue) > self.max_pending:
            self._queue.popitem(last=False)
            self.stats.dropped += 1
        self._idle.clear()
        self._wake.set()

    def _task_name(self) -> str:
        return "kafka-out:decisions"

    def _starting(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [item for item, _ in zip(self._queue.items(), range(BATCH), strict=False)]
            try:
                await self.producer.send([(self.topic, k, v) for k, v in batch])
            except DeliveryError as exc:
                attempt += 1
                self.stats.failed_attempts += 1
                self.stats.last_error = str(exc)
                self.stats.last_error_at = self.now()
                if self.max_attempts and attempt >= self.max_attempts:
                    log.error("kafka_out: %d decisions dropped: %s", len(batch), exc)
                    self._remove(batch)
                    self.stats.dropped += len(batch)
                    attempt = 0
                    continue
                delay = self.retry.delay(attempt)
                self.stats.retry_in = delay
                log.warning(
                    "kafka_out: sending decisions failed (%s); retrying in %.1f s (%d pending)",
                    exc,
                    delay,
                    self.pending,
                )
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self.stats.retry_in = None
            self.stats.delivered += len(batch)
            self.stats.last_delivered_at = self.now()
            self._remove(batch)

    def _remove(self, batch: list[tuple[bytes, bytes]]) -> None:
        for key, value in batch:
            # A newer decision for the order may have arrived during the send: keep it.
            if self._queue.get(key) is value:
                del self._queue[key]


def publishing_hook(hook: AfterCommit, outbox: DecisionOutbox) -> AfterCommit:
    """``hook`` (the router), with the decisions it returns handed to ``outbox``."""

    def wrapped(db: Any, items: Sequence[Any], *, decided_at: datetime, timezone: str) -> object:
        result = hook(db, items, decided_at=decided_at, timezone=timezone)
        if isinstance(result, list):
            outbox.offer([d for d in result if isinstance(d, Decision)])
        return result

    return wrapped


class KafkaPublisher:
    """Everything ``[serve.kafka_out]`` runs: one producer, the decisions outbox, the receiver."""

    def __init__(
        self, config: KafkaOut, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.config = config
        self.producer = Producer(config)
        retry = Backoff(
            base=config.retry_initial_seconds, cap=config.retry_max_seconds, jitter=False
        )
        self.decisions = (
            DecisionOutbox(
                self.producer,
                config.decisions_topic,
                retry=retry,
                max_attempts=config.max_attempts,
                max_pending=config.max_pending,
                now=now,
            )
            if config.decisions_topic
            else None
        )
        self.alerts = (
            ReceiverWorker(
                ALERTS_RECEIVER,
                KafkaAlertDelivery(self.producer, config.alerts_topic, config.max_attempts),
                retry,
                now,
            )
            if config.alerts_topic
            else None
        )

    def wrap(self, hook: AfterCommit) -> AfterCommit:
        """The writer's hook with routing decisions published (``hook`` if none are)."""
        return hook if self.decisions is None else publishing_hook(hook, self.decisions)

    @property
    def taps(self) -> list[ReceiverWorker]:
        """The receivers the notifier copies every notification to."""
        return [] if self.alerts is None else [self.alerts]

    async def start(self) -> None:
        """Start delivering (the first send connects; a cluster that is down is retried)."""
        if self.decisions is not None:
            self.decisions.start()
        if self.alerts is not None:
            self.alerts.start()

    async def stop(self) -> None:
        """Stop delivering and close the producer."""
        if self.decisions is not None:
            await self.decisions.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        await self.producer.close()

    def gauges(self) -> list[Gauge]:
        """The counters of both streams for ``/metrics``."""
        streams: list[tuple[str, ReceiverStats, int]] = []
        if self.decisions is not None:
            streams.append(("decisions", self.decisions.stats, self.decisions.pending))
        if self.alerts is not None:
            streams.append(("alerts", self.alerts.stats, self.alerts.pending))
        out: list[Gauge] = []
        for name, help_, value_of in _GAUGES:
            for stream, stats, pending in streams:
                out.append((name, help_, {"stream": stream}, float(value_of(stats, pending))))
        return out


_GAUGES: tuple[tuple[str, str, Callable[[ReceiverStats, int], int]], ...] = (
    (
        "omniops_kafka_out_delivered",
        "Decisions (records) or notifications acknowledged by the cluster.",
        lambda s, _: s.delivered,
    ),
    (
        "omniops_kafka_out_failed_attempts",
        "Sends that failed (retried).",
        lambda s, _: s.failed_attempts,
    ),
    ("omniops_kafka_out_pending", "Waiting to be delivered.", lambda _, pending: pending),
    (
        "omniops_kafka_out_dropped",
        "Given up, or superseded by a newer one before delivery.",
        lambda s, _: s.dropped + s.superseded,
    ),
)
