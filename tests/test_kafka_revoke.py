"""A revoke's offset commit is bounded: a coordinator that never answers cannot hold the feed.

aiokafka retries a commit while the group's coordinator is unreachable, until the cluster
answers; called from the revoke callback, that held the rebalance, and with it the feed,
for as long as the broker was away.  The callback now gives up after the subscription's
``probe_timeout_seconds`` (the next owner of the partition re-reads from the last commit:
at-least-once, and the store's event ids make a re-read harmless).

The consumer here is a stand-in whose ``commit`` never returns (what aiokafka's does while
the coordinator is gone); the outage itself, with a real broker paused, is in
``tests/test_kafka.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from aiokafka import TopicPartition

from feeds.kafka.config import KafkaSubscription
from feeds.kafka.consumer import KafkaFeed


class _NoCoordinator:
    """What the revoke callback uses of a consumer, with a commit that never completes."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, Any]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)
        await asyncio.Event().wait()


async def test_revoke_commit_gives_up_after_the_probe_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = KafkaSubscription(
        name="orders",
        bootstrap_servers="127.0.0.1:9",  # never dialled: the callback is called directly
        topics=["orders"],
        group_id="g",
        probe_timeout_seconds=0.3,
    )
    feed = KafkaFeed(sub)
    tp = TopicPartition("orders", 0)
    feed._read[tp] = 7
    feed._durable[tp] = 7  # everything read is in the store: the callback commits at once
    consumer = _NoCoordinator()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="feeds.kafka.consumer"):
        await asyncio.wait_for(feed._on_revoked(consumer, {tp}), 5.0)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert [{p: m.offset for p, m in c.items()} for c in consumer.commits] == [{tp: 7}]
    assert 0.25 <= took < 2.0
    assert "commit on revoke failed (no answer within 0.3 s)" in caplog.text
    # The partition is let go all the same: the next owner re-reads from the last commit.
    assert tp not in feed._read and tp not in feed._committed
