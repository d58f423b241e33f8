"""The interface every feed adapter implements, and the pump that feeds the writer.

A feed is an async source of canonical events (or quarantined payloads) with a name, a
cursor it can resume from, and a health state.  Webhook receivers, stream and poll
subscribers, drop folders, fixture replay and (later) a Kafka consumer all look the same
to the store: :func:`pump` moves their items into the single writer and saves the cursor
only once the items before it are committed.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

from store.model import Event, Quarantined

if TYPE_CHECKING:
    from store.writer import StoreWriter


class FeedState(StrEnum):
    """Where a feed is in its life."""

    STARTING = "starting"
    CONNECTED = "connected"
    RETRYING = "retrying"
    STALE = "stale"
    FAILED = "failed"
    DONE = "done"


@dataclass
class FeedHealth:
    """Mutable health of one feed, read by the header, ``/health`` and ``/metrics``."""

    state: FeedState = FeedState.STARTING
    last_event_at: datetime | None = None
    events: int = 0
    errors: int = 0
    quarantined: int = 0
    detail: str = ""


class Feed(ABC):
    """An async source of validated canonical events."""

    name: str
    health: FeedHealth

    def __init__(self, name: str) -> None:
        self.name = name
        self.health = FeedHealth()
        self.cursor: str | None = None

    @abstractmethod
    def items(self) -> AsyncIterator[Event | Quarantined]:
        """Yield events (and quarantined payloads) from ``self.cursor`` onwards.

        After yielding an item, ``self.cursor`` is the position just past it.
        """


async def pump(feed: Feed, writer: StoreWriter, *, checkpoint_every: int = 1000) -> None:
    """Move every item of ``feed`` into ``writer``; persist the cursor after commits.

    The cursor is saved only after every item before it is durable, so a restart
    resumes without losing anything (and duplicates are dropped by event id).  Up to
    four chunks of ``checkpoint_every`` items are in flight, so reading the feed and
    committing overlap instead of taking turns.
    """
    start = await writer.get_cursor(feed.name)
    if start is not None:
        feed.cursor = start
    in_flight: deque[tuple[list[asyncio.Future[object]], str | None]] = deque()
    pending: list[asyncio.Future[object]] = []

    async def settle_oldest() -> None:
        futures, cursor = in_flight.popleft()
        await asyncio.gather(*futures)
        if cursor is not None:
            await writer.set_cursor(feed.name, cursor)

    async for item in feed.items():
        pending.append(await writer.submit(item))  # type: ignore[arg-type]
        if len(pending) >= checkpoint_every:
            in_flight.append((pending, feed.cursor))
            pending = []
            if len(in_flight) > 4:
                await settle_oldest()
    in_flight.append((pending, feed.cursor))
    while in_flight:
        await settle_oldest()
