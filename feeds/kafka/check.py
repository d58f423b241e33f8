"""``omniops kafka check``: what ``serve`` would consume, without consuming.

For every ``[[serve.kafka]]`` subscription: whether the brokers answer, each topic's
partitions, the group's committed offsets, the end offsets and the lag.  Nothing joins
the group and nothing is committed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from feeds.kafka.config import KafkaSubscription


@dataclass
class PartitionReport:
    """One partition as the group sees it."""

    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass
class CheckReport:
    """One subscription's check."""

    name: str
    bootstrap_servers: str
    group_id: str
    reachable: bool
    error: str = ""
    missing_topics: list[str] = field(default_factory=list)
    partitions: list[PartitionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Reachable and every topic exists."""
        return self.reachable and not self.missing_topics

    def lines(self) -> list[str]:
        """The report as text, one line per partition."""
        head = f"{self.name}: {self.bootstrap_servers} group {self.group_id}"
        if not self.reachable:
            return [f"{head}: UNREACHABLE ({self.error})"]
        out = [f"{head}: reachable, lag {sum(p.lag for p in self.partitions)}"]
        out += [f"  topic {t}: MISSING" for t in self.missing_topics]
        for p in self.partitions:
            committed = "none" if p.committed is None else str(p.committed)
            out.append(
                f"  {p.topic}/{p.partition}: committed {committed}, end {p.end}, lag {p.lag}"
            )
        return out


async def check_subscription(sub: KafkaSubscription, timeout: float = 10.0) -> CheckReport:
    """Check one subscription (see the module docstring)."""
    report = CheckReport(sub.name, sub.bootstrap_servers, sub.group_id, reachable=False)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=sub.bootstrap_servers,
        group_id=sub.group_id,
        enable_auto_commit=False,
        request_timeout_ms=int(timeout * 1000),
        **sub.security.client_options(),
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        report.reachable = True
        existing = await asyncio.wait_for(consumer.topics(), timeout)
        partitions: list[TopicPartition] = []
        for topic in sub.topics:
            if topic not in existing:
                report.missing_topics.append(topic)
                continue
            numbers = consumer.partitions_for_topic(topic) or set()
            partitions += [TopicPartition(topic, n) for n in sorted(numbers)]
        ends = await asyncio.wait_for(consumer.end_offsets(partitions), timeout)
        for tp in partitions:
            committed = await asyncio.wait_for(consumer.committed(tp), timeout)
            end = int(ends.get(tp, 0))
            base = committed if committed is not None else 0
            report.partitions.append(
                PartitionReport(tp.topic, tp.partition, committed, end, max(0, end - base))
            )
    except (KafkaError, OSError, TimeoutError) as exc:
        report.error = f"{type(exc).__name__}: {exc}"
    finally:
        await consumer.stop()
    return report


async def check_all(subs: list[KafkaSubscription]) -> list[CheckReport]:
    """Check every subscription."""
    return [await check_subscription(sub) for sub in subs]
