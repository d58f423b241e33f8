"""Rebalance callbacks are bounded: a coordinator that never answers cannot hold the feed.

aiokafka retries a commit while the group's coordinator is unreachable, until the cluster
answers; called from the revoke callback, that held the rebalance, and with it the feed,
for as long as the broker was away.  The callback now gives up after the subscription's
``probe_timeout_seconds`` (the next owner of the partition re-reads from the last commit:
at-least-once, and the store's event ids make a re-read harmless).

Likewise the read of the group's committed offsets when partitions are assigned: an
offset left unknown is never committed over (no commit for that partition until records
read from it are stored).

The consumer here is a stand-in whose ``commit`` (or ``committed``) never returns (what
aiokafka's does while the coordinator is gone); the outage itself, with a real broker
paused, is in ``tests/test_kafka.py``.
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
    """What the callbacks use of a consumer; partitions in ``hang`` are never answered for."""

    def __init__(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        self.commits: list[dict[TopicPartition, Any]] = []
        self.offsets = offsets or {}

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append(offsets)
        if any(tp not in self.offsets for tp in offsets):
            await asyncio.Event().wait()

    async def committed(self, tp: TopicPartition) -> int | None:
        if tp not in self.offsets:
            await asyncio.Event().wait()
        return self.offsets[tp]


def _sub() -> KafkaSubscription:
    return KafkaSubscription(
        name="orders",
        bootstrap_servers="127.0.0.1:9",  # never dialled: the callbacks are called directly
        topics=["orders"],
        group_id="g",
        probe_timeout_seconds=0.3,
    )


async def test_revoke_commit_gives_up_after_the_probe_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = KafkaFeed(_sub())
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


async def test_an_unanswered_committed_offset_is_never_committed_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    feed = KafkaFeed(_sub())
    lost, known = TopicPartition("orders", 0), TopicPartition("orders", 1)
    feed._durable[lost] = 3  # from an earlier assignment: another member may have moved on
    consumer = _NoCoordinator({known: 12})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="feeds.kafka.consumer"):
        await asyncio.wait_for(feed._on_assigned(consumer, {lost, known}), 5.0)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0
    assert "committed offset of" in caplog.text and "no answer within 0.3 s" in caplog.text
    assert feed.health.partitions["orders/1"].committed == 12
    assert feed.health.partitions["orders/0"].committed is None
    # Nothing read yet: nothing to commit, least of all an offset behind the group's.
    await feed._commit(consumer, {lost, known})  # type: ignore[arg-type]
    assert consumer.commits == []
