"""Stream and poll subscribers against local aiohttp servers on 127.0.0.1.

The SSE server drops the connection in the middle of an event; the subscriber must
reconnect with ``Last-Event-ID`` and end with every event exactly once in the store,
and a restarted subscriber must resume from the cursor the store kept.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web

from feeds.base import FeedState, pump
from feeds.poll import PollFeed
from feeds.stream import FeedMonitor, NdjsonFeed, SseFeed, pump_live
from rules.backoff import Backoff
from store.writer import StoreWriter
from tests.builders import T0, snapshot

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def event_line(n: int) -> str:
    return (
        snapshot("A", "S1", n, T0 + timedelta(minutes=n))
        .model_copy(update={"id": f"stream-{n}"})
        .model_dump_json()
    )


async def start(handler: Handler, path: str = "/stream") -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site.port}{path}"


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[StoreWriter]:
    async with StoreWriter(tmp_path / "store.db", batch_wait=0.002) as w:
        yield w


def event_ids(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT event_id FROM event_log ORDER BY seq")]
    finally:
        conn.close()


class Delays:
    """An injected sleep: records the delay and yields, never waits."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


async def test_backoff_is_exponential_with_full_jitter() -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Backoff(base=0.5, cap=10, rng=Top())
    assert [top.next_delay() for _ in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]
    top.reset()
    assert top.next_delay() == 0.5
    jittered = Backoff(base=1, cap=30, rng=random.Random(7))
    delays = [jittered.next_delay() for _ in range(8)]
    assert all(0 <= d <= min(30, 2**i) for i, d in enumerate(delays))
    assert len(set(delays)) == len(delays)


async def test_sse_drop_mid_stream_loses_nothing_doubles_nothing(
    writer: StoreWriter, tmp_path: Path
) -> None:
    seen_last_ids: list[str | None] = []
    third = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        last_id = request.headers.get("Last-Event-ID")
        seen_last_ids.append(last_id)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if last_id is None:
            await response.write(b": keep-alive comment\n\n")
            for n in range(1, 6):
                await response.write(f"id: {n}\ndata: {event_line(n)}\n\n".encode())
            await response.write(b"event: ping\ndata: {}\n\n")
            # Half of event 6, then the connection dies.
            await response.write(f"id: 6\ndata: {event_line(6)[:20]}".encode())
            assert request.transport is not None
            request.transport.close()
            return response
        if last_id == "5":
            start_at = int(last_id) + 1
            await response.write(b"retry: 250\n")
            for n in range(start_at, 11):
                await response.write(f"id: {n}\ndata: {event_line(n)}\n\n".encode())
            return response  # a clean end: the subscriber reconnects after retry: 250 ms
        third.set()
        await release.wait()
        return response

    runner, url = await start(handler)
    sleep = Delays()
    feed = SseFeed("wms-stream", url, sleep=sleep, backoff=Backoff(rng=random.Random(1)))
    monitor = FeedMonitor(feed.name, "stream", health=feed.health)
    task = asyncio.create_task(pump_live(feed, writer, monitor))
    await asyncio.wait_for(third.wait(), 10)
    assert feed.health.state == FeedState.CONNECTED
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    assert seen_last_ids == [None, "5", "10"]
    assert feed.health.errors == 1  # the dropped connection
    assert sleep.delays[1] == 0.25  # the server's retry: after the clean end
    assert await writer.get_cursor("wms-stream") == "10"
    assert monitor.health.events == 10

    # A restart resumes from the stored cursor: nothing is sent twice.
    seen_last_ids.clear()
    third.clear()
    release.clear()
    restarted = SseFeed("wms-stream", url, sleep=Delays())
    task = asyncio.create_task(pump_live(restarted, writer))
    await asyncio.wait_for(third.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    await runner.cleanup()
    assert seen_last_ids == ["10"]
    await writer.close()
    assert event_ids(tmp_path / "store.db") == [f"stream-{n}" for n in range(1, 11)]


async def test_sse_feed_works_with_base_pump(writer: StoreWriter, tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for n in (1, 2, 3):
            await response.write(f"id: {n}\ndata: {event_line(n)}\n\n".encode())
        await response.write(b'id: 4\ndata: {"not": "an event"}\n\n')
        return response

    runner, url = await start(handler)
    feed = SseFeed("s", url, sleep=Delays(), max_attempts=1)

    async def refuse(seconds: float) -> None:
        # After the first clean end, point the feed at a closed port: it fails and stops.
        feed.url = url.replace("/stream", "/gone")

    feed.sleep = refuse
    await asyncio.wait_for(pump(feed, writer), 10)
    await runner.cleanup()
    assert feed.health.state == FeedState.FAILED
    assert "HTTP 404" in feed.health.detail
    assert await writer.get_cursor("s") == "4"
    await writer.close()
    assert event_ids(tmp_path / "store.db") == ["stream-1", "stream-2", "stream-3"]
    conn = sqlite3.connect(tmp_path / "store.db")
    (error,) = conn.execute("SELECT error FROM quarantine").fetchone()
    conn.close()
    assert error.startswith("s event 4:")


async def test_stream_retries_with_backoff_then_fails(writer: StoreWriter) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        return web.Response(status=503)

    runner, url = await start(handler)
    sleep = Delays()
    feed = SseFeed("flaky", url, sleep=sleep, max_attempts=4, backoff=Backoff(base=1, cap=3))
    states: list[FeedState] = []

    async def record(seconds: float) -> None:
        states.append(feed.health.state)
        await sleep(seconds)

    feed.sleep = record
    await asyncio.wait_for(pump_live(feed, writer), 10)
    await runner.cleanup()
    assert calls == 4
    assert states == [FeedState.RETRYING] * 3
    assert len(sleep.delays) == 3 and all(
        0 <= d <= c for d, c in zip(sleep.delays, (1, 2, 3), strict=True)
    )
    assert feed.health.state == FeedState.FAILED and feed.health.errors == 4


async def test_ndjson_stream_resumes_with_cursor_param(writer: StoreWriter, tmp_path: Path) -> None:
    afters: list[str | None] = []
    done = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        afters.append(request.query.get("after"))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        if len(afters) == 1:
            for n in (1, 2, 3):
                await response.write((event_line(n) + "\n").encode())
            await response.write(event_line(4)[:15].encode())
            assert request.transport is not None
            request.transport.close()
        elif len(afters) == 2:
            for n in (4, 5):
                await response.write((event_line(n) + "\n").encode())
        else:
            done.set()
            await release.wait()
        return response

    runner, url = await start(handler)
    feed = NdjsonFeed("ndjson", url, sleep=Delays())
    task = asyncio.create_task(pump_live(feed, writer))
    await asyncio.wait_for(done.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    await runner.cleanup()
    assert afters == [None, "stream-3", "stream-5"]
    await writer.close()
    assert event_ids(tmp_path / "store.db") == [f"stream-{n}" for n in range(1, 6)]


async def test_poller_sends_since_cursor_and_saves_it(writer: StoreWriter, tmp_path: Path) -> None:
    sinces: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        since = request.query.get("since")
        sinces.append(since)
        if since is None:
            return web.json_response(
                {
                    "events": [json.loads(event_line(1)), json.loads(event_line(2))],
                    "cursor": "c2",
                    "has_more": True,
                }
            )
        if since == "c2":
            return web.json_response({"events": [json.loads(event_line(3))], "cursor": "c3"})
        return web.json_response([])

    runner, url = await start(handler, "/api/events")
    sleep = Delays()
    feed = PollFeed("erp", url, interval=30, sleep=sleep, max_polls=3)
    await asyncio.wait_for(pump_live(feed, writer), 10)
    assert sinces == [None, "c2", "c3"]
    assert sleep.delays == [30, 30]  # has_more: polled again at once
    assert await writer.get_cursor("erp") == "c3"
    again = PollFeed("erp", url, sleep=Delays(), max_polls=1)
    await asyncio.wait_for(pump_live(again, writer), 10)
    await runner.cleanup()
    assert sinces[-1] == "c3"
    await writer.close()
    assert event_ids(tmp_path / "store.db") == ["stream-1", "stream-2", "stream-3"]


async def test_sse_line_over_the_limit_retries_instead_of_dying(
    writer: StoreWriter, tmp_path: Path
) -> None:
    """A huge ``data:`` line: the feed reports it and reconnects, the task lives on."""
    huge = "x" * (300 * 1024)
    connections: list[str | None] = []
    retried = asyncio.Event()
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        last_id = request.headers.get("Last-Event-ID")
        connections.append(last_id)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if len(connections) == 1:
            await response.write(f"id: 1\ndata: {event_line(1)}\n\n".encode())
            await response.write(f"id: 2\ndata: {huge}\n\n".encode())
            return response
        # The producer fixed its payload: the stream goes on from the cursor.
        for n in (2, 3):
            await response.write(f"id: {n}\ndata: {event_line(n)}\n\n".encode())
        retried.set()
        await release.wait()
        return response

    runner, url = await start(handler)
    sleep = Delays()
    states: list[tuple[FeedState, str]] = []
    feed = SseFeed("big", url, backoff=Backoff(rng=random.Random(2)), max_line_bytes=64 * 1024)

    async def record(seconds: float) -> None:
        states.append((feed.health.state, feed.health.detail))
        await sleep(seconds)

    feed.sleep = record
    task = asyncio.create_task(pump_live(feed, writer))
    await asyncio.wait_for(retried.wait(), 10)
    async with asyncio.timeout(10):
        while len(event_ids(writer.path)) < 3:
            await asyncio.sleep(0.02)
    assert not task.done()  # the huge line did not end the feed's task
    assert connections == [None, "1"]
    state, detail = states[0]
    assert state == FeedState.RETRYING
    assert detail.startswith(f"a line longer than {64 * 1024} bytes after cursor 1; retrying in")
    assert feed.health.errors == 1 and feed.health.state == FeedState.CONNECTED
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    release.set()
    await runner.cleanup()
    assert event_ids(writer.path) == ["stream-1", "stream-2", "stream-3"]


async def test_sse_line_of_a_mebibyte_is_read_by_default(writer: StoreWriter) -> None:
    """Over aiohttp's own 128 KiB line limit, under ours: read as one event."""
    text = "{" + " " * (1 << 20) + event_line(5)[1:]  # JSON padded with whitespace

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(f"id: 1\ndata: {text}\n\n".encode())
        return response

    runner, url = await start(handler)
    feed = SseFeed("big", url, max_attempts=1)
    items = feed.items()
    item = await asyncio.wait_for(anext(items), 10)
    await items.aclose()
    await runner.cleanup()
    assert getattr(item, "id", None) == "stream-5" and feed.health.errors == 0


async def test_poller_validates_entries_as_decoded_and_quarantines_bad_ones(
    writer: StoreWriter, tmp_path: Path
) -> None:
    bad = json.loads(event_line(2))
    bad["body"]["on_hand"] = "lots"

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"events": [json.loads(event_line(1)), bad, 7], "cursor": "c1"})

    runner, url = await start(handler, "/api/events")
    feed = PollFeed("erp", url, sleep=Delays(), max_polls=1)
    await asyncio.wait_for(pump_live(feed, writer), 10)
    await runner.cleanup()
    assert await writer.get_cursor("erp") == "c1"
    await writer.close()
    assert event_ids(tmp_path / "store.db") == ["stream-1"]
    conn = sqlite3.connect(tmp_path / "store.db")
    rows = conn.execute("SELECT source, raw, error FROM quarantine ORDER BY rowid").fetchall()
    conn.close()
    (source2, raw2, error2), (source3, raw3, error3) = rows
    assert source2 == "inventory" and json.loads(raw2) == bad  # the source the entry names
    assert error2.startswith("erp poll 1 item 2: ") and "on_hand" in error2
    assert (source3, raw3) == ("erp", "7")
    assert error3 == "erp poll 1 item 3: expected a JSON object, got int"
