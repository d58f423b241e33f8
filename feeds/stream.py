"""HTTP stream subscriptions (Server-Sent Events and NDJSON), health and the live pump.

* :class:`SseFeed` and :class:`NdjsonFeed` are :class:`feeds.base.Feed` subclasses: they
  hold one long GET open, yield canonical events as they arrive, and reconnect when the
  connection drops, fails or ends, with exponential back-off and full jitter
  (:class:`rules.backoff.Backoff`; delay = uniform(0, min(cap, base × 2^attempt))).  Both
  resume from their cursor: an SSE stream sends it as ``Last-Event-ID`` (the ``id:`` of the last
  event), an NDJSON stream as a query parameter (the ``id`` of the last line).
* :func:`pump_live` moves a live feed into the writer and saves the cursor as soon as the
  items before it are committed (never earlier), without waiting for a batch of 500 as
  :func:`feeds.base.pump` does, so a restart re-reads at most what was in flight and the
  store drops those repeats by event id: nothing lost, nothing doubled.
* :class:`FeedMonitor` keeps what ``/health`` and ``/metrics`` show per feed: state
  (connected, retrying, stale, failed), last event time, events per minute, errors and
  quarantined payloads.

Sleeping and randomness are injected (``sleep=``, ``rng=``) so tests run the reconnect
logic without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp.http_exceptions import LineTooLong

from feeds.base import Feed, FeedHealth, FeedState
from feeds.jsonl import parse_line
from rules.backoff import Backoff
from rules.errors import describe_error
from store.apply import Outcome
from store.clock import Clock, SystemClock
from store.model import Event, Quarantined
from store.writer import StoreWriter

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
Parse = Callable[[str, str], Event | Quarantined]
"""``parse(text, where)``: one payload to a canonical event or a quarantined item."""

DEFAULT_MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longest stream line read by default (aiohttp's own limit, 128 KiB, is below what a large
order with many lines can reach as one SSE ``data:`` line)."""


class FeedMonitor:
    """Per-feed health for ``/health`` and ``/metrics``: counts, rate and state."""

    def __init__(
        self,
        name: str,
        kind: str,
        *,
        health: FeedHealth | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.health = health if health is not None else FeedHealth()
        self.clock: Clock = clock or SystemClock()
        self.duplicates = 0
        self._seconds: deque[list[int]] = deque()

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Count committed outcomes (applied, duplicate, quarantined)."""
        now = int(time.monotonic())
        applied = 0
        for outcome in outcomes:
            if outcome == "applied":
                applied += 1
            elif outcome == "duplicate":
                self.duplicates += 1
            else:
                self.health.quarantined += 1
        if applied:
            self.health.events += applied
            self.health.last_event_at = self.clock.now()
            if self._seconds and self._seconds[-1][0] == now:
                self._seconds[-1][1] += applied
            else:
                self._seconds.append([now, applied])
        self._trim(now)

    def _trim(self, now: int) -> None:
        while self._seconds and self._seconds[0][0] <= now - 60:
            self._seconds.popleft()

    def events_per_minute(self) -> int:
        """Events applied in the last 60 seconds."""
        self._trim(int(time.monotonic()))
        return sum(count for _, count in self._seconds)

    def state(self, stale_after: float) -> FeedState:
        """The state to report: a connected feed quiet for ``stale_after`` s is stale."""
        state = self.health.state
        if state == FeedState.CONNECTED:
            last = self.health.last_event_at
            if last is None or (self.clock.now() - last).total_seconds() > stale_after:
                return FeedState.STALE
        return state

    def snapshot(self, stale_after: float) -> dict[str, Any]:
        """The JSON object ``/health`` shows for this feed."""
        last = self.health.last_event_at
        return {
            "kind": self.kind,
            "state": self.state(stale_after).value,
            "last_event_at": None if last is None else _iso(last),
            "events_per_minute": self.events_per_minute(),
            "events": self.health.events,
            "duplicates": self.duplicates,
            "errors": self.health.errors,
            "quarantined": self.health.quarantined,
            "detail": self.health.detail,
            **({"partitions": self._partitions()} if self.health.partitions else {}),
        }

    def _partitions(self) -> dict[str, dict[str, Any]]:
        now = self.clock.now()
        out: dict[str, dict[str, Any]] = {}
        for key, p in sorted(self.health.partitions.items()):
            last = p.last_record_at
            out[key] = {
                "lag": p.lag,
                "committed": p.committed,
                "position": p.position,
                "end": p.end,
                "last_record_at": None if last is None else _iso(last),
                "last_record_age_seconds": None
                if last is None
                else round((now - last).total_seconds(), 1),
            }
        return out


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def pump_live(
    feed: Feed,
    writer: StoreWriter,
    monitor: FeedMonitor | None = None,
    *,
    checkpoint_every: int = 500,
) -> None:
    """Move ``feed`` into ``writer`` and save its cursor as soon as it is durable.

    The cursor saved is always one whose items are all committed: a checkpoint task
    awaits each item's commit in order and stores the cursor when it has caught up with
    the feed (or every ``checkpoint_every`` items under a sustained load).
    """
    start = await writer.get_cursor(feed.name)
    if start is not None:
        feed.cursor = start
    queue: asyncio.Queue[tuple[asyncio.Future[Outcome], str | None] | None] = asyncio.Queue()

    async def checkpoint() -> None:
        unsaved = 0
        latest: str | None = None
        while True:
            entry = await queue.get()
            if entry is None:
                break
            future, cursor = entry
            outcome = await future
            if monitor is not None:
                monitor.record((outcome,))
            if cursor is not None:
                latest, unsaved = cursor, unsaved + 1
            if latest is not None and unsaved and (queue.empty() or unsaved >= checkpoint_every):
                await writer.set_cursor(feed.name, latest)
                await feed.durable(latest)
                unsaved = 0
        if latest is not None and unsaved:
            await writer.set_cursor(feed.name, latest)
            await feed.durable(latest)

    saver = asyncio.create_task(checkpoint(), name=f"checkpoint:{feed.name}")
    try:
        items = feed.items()
        try:
            async for item in items:
                future = await writer.submit(item)
                await queue.put((future, feed.cursor))
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await close()
    finally:
        # Whatever was submitted still commits (the writer drains its queue); wait for
        # it, even when cancelled, so the last cursor saved matches what is stored.
        queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.shield(saver)


def parse_canonical(text: str, where: str, *, source: str) -> Event | Quarantined:
    """The default payload parser: one canonical event as JSON."""
    return parse_line(text, source=source, where=where)


class StreamError(Exception):
    """The stream answered something other than a stream (a non-2xx status)."""


class HttpStreamFeed(Feed):
    """A long-lived HTTP GET read item by item, reconnecting with back-off."""

    kind = "stream"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int | None = None,
        read_timeout: float = 90.0,
        parse: Parse | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        super().__init__(name)
        self.url = url
        self.max_line_bytes = max_line_bytes
        """Longest line accepted; a longer one ends the connection and the feed retries,
        saying so in its health (it would otherwise end the task with the feed still shown
        connected)."""
        self.headers = dict(headers or {})
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.max_attempts = max_attempts
        """Consecutive failed connections before the feed gives up (None: never)."""
        self.read_timeout = read_timeout
        """Seconds without a byte (not even a keep-alive comment) before reconnecting."""
        self.parse: Parse = parse or (lambda text, where: parse_canonical(text, where, source=name))
        self._session = session
        self.connections = 0
        """How many times a connection was opened (tests check the reconnects)."""
        self.retry_after: float | None = None
        """A server-chosen reconnection delay (SSE ``retry:``), in seconds."""

    @abstractmethod
    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters of the next connection (they carry the cursor)."""

    @abstractmethod
    def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[Event | Quarantined]:
        """Items of one open connection; sets ``self.cursor`` before yielding each."""

    async def items(self) -> AsyncIterator[Event | Quarantined]:
        """Items from ``self.cursor`` on, across reconnects, until cancelled or failed."""
        owned = self._session is None
        session = self._session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.read_timeout)
        )
        failures = 0
        try:
            while True:
                delay: float
                try:
                    headers, params = self._request()
                    async with session.get(
                        self.url,
                        headers={**self.headers, **headers},
                        params=params,
                        # aiohttp refuses a line longer than twice its read buffer
                        read_bufsize=max(2**16, self.max_line_bytes // 2),
                    ) as response:
                        if response.status != 200:
                            raise StreamError(f"HTTP {response.status} from {self.url}")
                        self.connections += 1
                        failures = 0
                        self.backoff.reset()
                        self.health.state = FeedState.CONNECTED
                        self.health.detail = ""
                        async for item in self._read(response):
                            yield item
                    delay = self.retry_after if self.retry_after is not None else 0.0
                    self.health.state = FeedState.RETRYING
                    self.health.detail = f"stream ended; reconnecting in {delay:.1f} s"
                except (
                    aiohttp.ClientError,
                    TimeoutError,
                    StreamError,
                    ValueError,
                    LineTooLong,
                ) as exc:
                    failures += 1
                    self.health.errors += 1
                    problem = self._problem(exc)
                    if self.max_attempts is not None and failures >= self.max_attempts:
                        self.health.state = FeedState.FAILED
                        self.health.detail = f"{problem}; gave up after {failures} attempts"
                        log.error("feed %s failed: %s", self.name, self.health.detail)
                        return
                    delay = self.backoff.next_delay()
                    self.health.state = FeedState.RETRYING
                    self.health.detail = f"{problem}; retrying in {delay:.1f} s"
                    log.warning("feed %s: %s", self.name, self.health.detail)
                await self.sleep(delay)
        except Exception as exc:  # a bug must not leave the feed shown as connected
            self.health.state = FeedState.FAILED
            self.health.detail = f"stopped: {describe_error(exc, with_type=True)}"
            raise
        finally:
            if owned:
                await session.close()

    def _problem(self, exc: BaseException) -> str:
        """What the health detail says about a failed connection."""
        # aiohttp < 3.11 raises ValueError("Chunk too big"), later versions LineTooLong.
        if isinstance(exc, LineTooLong) or "Chunk too big" in str(exc):
            where = f" after cursor {self.cursor}" if self.cursor is not None else ""
            return f"a line longer than {self.max_line_bytes} bytes{where}"
        return describe_error(exc, with_type=True)


class SseFeed(HttpStreamFeed):
    """A Server-Sent Events stream whose ``data`` are canonical events.

    ``id:`` lines become the cursor, sent back as ``Last-Event-ID`` on reconnect;
    ``retry:`` sets the reconnection delay after a clean end of stream; events whose
    ``event:`` type is in ``ignore_types`` (keep-alives) are skipped; comments (``:``)
    only keep the connection alive.
    """

    def __init__(
        self, name: str, url: str, *, ignore_types: Iterable[str] = ("ping", "heartbeat"), **kw: Any
    ) -> None:
        super().__init__(name, url, **kw)
        self.ignore_types = frozenset(ignore_types)

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.cursor is not None:
            headers["Last-Event-ID"] = self.cursor
        return headers, {}

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[Event | Quarantined]:
        data: list[str] = []
        event_type = ""
        event_id: str | None = None
        async for raw in response.content:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if event_id is not None:
                    self.cursor = event_id
                if data and event_type not in self.ignore_types:
                    where = f"{self.name} event {event_id or self.cursor or '?'}"
                    yield self.parse("\n".join(data), where)
                data, event_type, event_id = [], "", None
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
            elif field == "id" and "\0" not in value:
                event_id = value
            elif field == "event":
                event_type = value
            elif field == "retry" and value.isdigit():
                self.retry_after = int(value) / 1000
        # An event not closed by a blank line before the end is incomplete: dropped, and
        # sent again after the reconnect because the cursor did not move past it.


class NdjsonFeed(HttpStreamFeed):
    """A newline-delimited JSON stream of canonical events.

    The cursor is the ``cursor_field`` (default ``id``) of the last line read, sent as the
    ``cursor_param`` query parameter (default ``after``) when reconnecting.
    """

    def __init__(
        self,
        name: str,
        url: str,
        *,
        cursor_param: str = "after",
        cursor_field: str = "id",
        **kw: Any,
    ) -> None:
        super().__init__(name, url, **kw)
        self.cursor_param = cursor_param
        self.cursor_field = cursor_field

    def _request(self) -> tuple[dict[str, str], dict[str, str]]:
        params = {self.cursor_param: self.cursor} if self.cursor is not None else {}
        return {"Accept": "application/x-ndjson"}, params

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncIterator[Event | Quarantined]:
        number = 0
        async for raw in response.content:
            text = raw.decode("utf-8", "replace").strip()
            number += 1
            if not text:
                continue
            item = self.parse(text, f"{self.name} line {number} after {self.cursor or 'start'}")
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get(self.cursor_field), str | int):
                self.cursor = str(data[self.cursor_field])
            yield item
