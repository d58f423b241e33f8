"""A REST poller with a since-cursor, for systems that offer an API but no push.

Every ``interval`` seconds :class:`PollFeed` GETs ``url?since=<cursor>`` and expects either

* ``{"events": [...], "cursor": "<next>", "has_more": false}`` — the cursor is opaque to
  omniops and sent back as it was given; ``has_more: true`` polls again at once; or
* a bare JSON array of canonical events — the cursor is then the ``ts`` of the last event,
  and the endpoint is expected to return events at or after ``since`` (inclusive, so an
  event sharing the boundary time is never missed; the repeat is dropped by id).

The cursor is saved by the pump only once the events before it are committed, so a
restart resumes where the store is.  Failures back off exponentially with jitter, as
the stream subscribers do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp

from feeds.base import Feed, FeedState
from feeds.jsonl import parse_record
from feeds.stream import Parse, Sleep, StreamError
from rules.backoff import Backoff
from store.model import Event, Quarantined

log = logging.getLogger(__name__)

ParseEntry = Callable[[Any, str], Event | Quarantined]
"""``parse_entry(entry, where)``: one decoded JSON entry to an event or a quarantined item."""


class PollFeed(Feed):
    """Polls a REST endpoint for canonical events newer than its cursor."""

    kind = "poll"

    def __init__(
        self,
        name: str,
        url: str,
        *,
        interval: float = 60.0,
        since_param: str = "since",
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int | None = None,
        max_polls: int | None = None,
        parse: Parse | None = None,
        parse_entry: ParseEntry | None = None,
    ) -> None:
        super().__init__(name)
        self.url = url
        self.interval = interval
        self.since_param = since_param
        self.headers = dict(headers or {})
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.max_polls = max_polls
        """Stop after this many successful polls (tests, one-shot imports); None: never."""
        self.parse = parse
        """A text parser (as the streams take): entries are then written back to JSON for it."""
        self.parse_entry: ParseEntry = parse_entry or (
            lambda entry, where: parse_record(entry, source=name, where=where)
        )
        """Validates one decoded entry (default: a canonical event, no text round trip)."""
        self._session = session
        self.polls = 0

    async def items(self) -> AsyncIterator[Event | Quarantined]:
        """Events page by page, from ``self.cursor`` on."""
        owned = self._session is None
        session = self._session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=60, sock_connect=10)
        )
        failures = 0
        try:
            while self.max_polls is None or self.polls < self.max_polls:
                try:
                    page, next_cursor, more = await self._fetch(session)
                except (aiohttp.ClientError, TimeoutError, StreamError, ValueError) as exc:
                    failures += 1
                    self.health.errors += 1
                    if self.max_attempts is not None and failures >= self.max_attempts:
                        self.health.state = FeedState.FAILED
                        self.health.detail = f"{exc}; gave up after {failures} attempts"
                        return
                    delay = self.backoff.next_delay()
                    self.health.state = FeedState.RETRYING
                    self.health.detail = f"{exc}; retrying in {delay:.1f} s"
                    log.warning("poll %s: %s", self.name, self.health.detail)
                    await self.sleep(delay)
                    continue
                failures = 0
                self.backoff.reset()
                self.polls += 1
                self.health.state = FeedState.CONNECTED
                self.health.detail = ""
                last = len(page) - 1
                for n, entry in enumerate(page):
                    where = f"{self.name} poll {self.polls} item {n + 1}"
                    if self.parse is not None:
                        item = self.parse(json.dumps(entry), where)
                    else:
                        item = self.parse_entry(entry, where)
                    if next_cursor is not None:
                        if n == last:
                            self.cursor = next_cursor
                    elif isinstance(entry, dict) and isinstance(entry.get("ts"), str):
                        self.cursor = entry["ts"]
                    yield item
                if not page and next_cursor is not None:
                    self.cursor = next_cursor
                if not more:
                    await self.sleep(self.interval)
        finally:
            if owned:
                await session.close()

    async def _fetch(self, session: aiohttp.ClientSession) -> tuple[list[Any], str | None, bool]:
        params = {self.since_param: self.cursor} if self.cursor is not None else {}
        async with session.get(
            self.url, headers={"Accept": "application/json", **self.headers}, params=params
        ) as response:
            if response.status != 200:
                raise StreamError(f"HTTP {response.status} from {self.url}")
            body = await response.json(content_type=None)
        if isinstance(body, list):
            return body, None, False
        if isinstance(body, dict) and isinstance(body.get("events"), list):
            cursor = body.get("cursor")
            return (
                body["events"],
                None if cursor is None else str(cursor),
                bool(body.get("has_more")),
            )
        raise ValueError("expected a JSON array or an object with an 'events' array")
