"""The endpoints of ``omniops serve`` and the application that mounts them.

* ``POST /webhooks/shopify``, ``/webhooks/square``, ``/webhooks/easypost``,
  ``/webhooks/amazon``: vendor webhooks (see :mod:`feeds.webhooks`), and
  ``POST /events``: canonical events, one or a batch.  Checks in this order:

  1. body over ``max_body_bytes`` → **413** (by ``Content-Length`` before reading, and
     while reading a chunked body); nothing stored;
  2. endpoint not configured (its secret unset, empty or blank) → **503** naming the
     variable to set;
  3. bad or missing signature / bearer token → **401**; nothing stored, counted in
     ``omniops_webhook_rejected_total{reason="signature"}``;
  4. body not JSON, nested deeper than 64 levels or with too many strings, a missing
     header → **400**; a missing or mistyped field, or a value the store cannot hold
     (beyond 64-bit integers, ``NaN``/``Infinity``, a lone surrogate, a time outside the
     plausible window, money with more than two decimals) → **422**; both with ``error``
     and ``field``, and the (redacted) raw body is kept in quarantine with the reason;
  5. otherwise the events are written and the answer waits for the **commit**: **200**
     when everything was applied or was already stored (a duplicate delivery), **202**
     when part of the payload was quarantined (e.g. an unmapped id: durable in quarantine,
     retrying would not help; ``/events`` answers **422** then).  A store that cannot
     write answers **503** (retry later).

  Bad input never produces a 500.  Decoding, mapping and redaction of a body over
  :data:`INLINE_PAYLOAD_BYTES` run in a small worker pool of their own
  (:attr:`ServerState.pool`), so a large body never holds the event loop and ``/health``
  keeps answering while it is processed; a smaller one (a typical webhook) is mapped on
  the loop, where its bounded cost is less than the two thread hand-offs would be.
  A delivery that was quarantined or stored with an unmapped id is also *kept*, redacted,
  for ``omniops quarantine replay`` (:func:`feeds.runtime.quarantine.hold_for`,
  :func:`store.held.record_held`), after its items committed.  A Shopify
  ``orders/updated`` is mapped against the lines the store holds for its order
  (:func:`store.order_lines.held_lines` on the read connection), so an edit is what
  differs from them.
* ``GET /health``: per feed state, the writer's totals, the store's counts (its path only
  to a caller that presented ``OMNIOPS_API_TOKEN``), and per notification receiver what
  waits in the outbox (``notifications``: pending, dead letters, next try, counters; the
  last error only to that caller, as it names the receiver's URL); ``held`` (deliveries
  waiting for a replay) and ``replayable`` (how many the mapping in force would place).
* ``GET /metrics``: Prometheus text (:mod:`feeds.runtime.http.exposition`).

The read endpoints and ``/route`` need ``Authorization: Bearer $OMNIOPS_API_TOKEN`` when
that is set (:func:`feeds.runtime.http.auth.read_guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from aiohttp import web
from pydantic import ValidationError

from feeds.base import FeedState
from feeds.runtime.http.auth import (
    NOT_CONFIGURED,
    Authenticate,
    auth_amazon,
    auth_easypost,
    auth_events,
    auth_shopify,
    auth_square,
    presented_api_token,
    read_guard,
)
from feeds.runtime.http.events_pool import EventsPool
from feeds.runtime.http.exposition import Metrics, notification_gauges
from feeds.runtime.quarantine import hold_for
from feeds.runtime.route_api import add_routes
from feeds.runtime.routing import StoreRoutingSource
from feeds.settings import ServeConfig
from feeds.stream import FeedMonitor
from feeds.webhooks import Mapped, PayloadError, amazon, easypost, shopify, square
from feeds.webhooks.bounded import ShapeError
from feeds.webhooks.bounded import loads as bounded_loads
from feeds.webhooks.canonical import read_events
from feeds.webhooks.canonical import valid_json_lines as _valid_json_lines  # noqa: F401 (tests)
from feeds.webhooks.mapping import Mapping
from feeds.webhooks.redact import redact_raw
from rules.errors import describe_validation_error
from rules.routing.config import FulfillmentRouting
from store.alerts import ReceiverStatus, load_receiver_status
from store.apply import Outcome, epoch
from store.catalog import uncategorised_skus
from store.clock import Clock, SystemClock
from store.held import record_held
from store.metrics import open_reader, store_counts
from store.model import Method, Quarantined
from store.order_lines import ORDER_FOR_TRACKING, ORDER_METHOD, HeldLine, as_method, held_lines
from store.schema import SCHEMA_VERSION
from store.writer import StoreWriter

log = logging.getLogger("omniops.serve")

WEBHOOK_SOURCES = ("shopify", "square", "easypost", "amazon", "events")
MESSAGE_LIMIT = 2000
"""An error message (answer and quarantine reason) is cut to this many characters."""
PAYLOAD_WORKERS = 2
INLINE_PAYLOAD_BYTES = 8 * 1024
"""Bodies up to this size are decoded and mapped on the event loop (well under a
millisecond, bounded by the depth and string-count checks); larger ones in the pool."""
"""Threads that decode, map and redact bodies: a burst of large bodies queues here instead
of taking the default pool the store reads of ``/health`` use."""

P = ParamSpec("P")
R = TypeVar("R")


class StoreReader:
    """One read connection for lookups (tracking numbers, counts), used from a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            if self._conn is None:
                self._conn = open_reader(self.path)
            return self._conn.execute(sql, args).fetchall()

    async def order_for_tracking(self, code: str) -> str | None:
        """The order whose shipment has tracking number ``code`` (the latest placed)."""
        rows = await asyncio.to_thread(
            self._run,
            ORDER_FOR_TRACKING,
            (code,),
        )
        return str(rows[0][0]) if rows else None

    async def order_method(self, order_id: str) -> Method | None:
        """How the placed order ``order_id`` is fulfilled (None when it is not placed)."""
        rows = await asyncio.to_thread(self._run, ORDER_METHOD, (order_id,))
        return as_method(rows[0][0]) if rows else None

    async def order_lines(self, order_id: str) -> list[HeldLine] | None:
        """The lines the store holds for a placed order (None when it is not placed)."""
        return await self._read(lambda db: held_lines(db, order_id))

    async def _read(self, read: Callable[[sqlite3.Connection], R]) -> R:
        """``read(connection)`` on a worker thread, on the one lazily opened connection."""

        def run() -> R:
            with self._lock:
                if self._conn is None:
                    self._conn = open_reader(self.path)
                return read(self._conn)

        return await asyncio.to_thread(run)

    async def counts(self) -> dict[str, int]:
        """Events, duplicates and quarantined rows in the store."""
        return await self._read(store_counts)

    async def receivers(self) -> list[ReceiverStatus]:
        """The notification receivers' counters and what waits in the outbox for each."""
        return await self._read(load_receiver_status)

    async def uncategorised(self) -> int:
        """SKUs that landed in the ``uncategorised`` category (they came without one)."""
        return await self._read(uncategorised_skus)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


@dataclass
class ServerState:
    """What the handlers share: the writer, config, mapping, metrics and feed health."""

    writer: StoreWriter
    config: ServeConfig
    mapping: Mapping
    clock: Clock = field(default_factory=SystemClock)
    metrics: Metrics = field(default_factory=Metrics)
    monitors: dict[str, FeedMonitor] = field(default_factory=dict)
    reader: StoreReader | None = None
    routing_rules: Callable[[], FulfillmentRouting] = FulfillmentRouting
    """The fulfillment routing rules in force, for ``POST /route`` (hot-reloaded)."""
    mapping_error: str = ""
    held: int | None = None
    """Deliveries held for a replay (None until first counted)."""
    replayable: int | None = None
    """How many of them the mapping in force would place (``omniops quarantine replay``)."""
    held_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a delivery was kept, so the replayable count is refreshed."""
    started_at: float = field(default_factory=time.monotonic)
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(
            PAYLOAD_WORKERS, thread_name_prefix="omniops-payload"
        )
    )
    """Where payload CPU work runs (decode, map, redact), off the event loop."""
    gauges: list[Callable[[], list[tuple[str, str, dict[str, str], float]]]] = field(
        default_factory=list
    )
    """More ``/metrics`` gauges (``[serve.kafka_out]``'s counters)."""
    events: EventsPool | None = None
    """Worker processes that read ``POST /events`` batches (``[serve] events_workers``)."""

    def __post_init__(self) -> None:
        if self.reader is None:
            self.reader = StoreReader(self.writer.path)
        if self.events is None and self.config.events_workers > 0:
            self.events = EventsPool(self.config.events_workers, self.clock.now, self.pool)
        for source in WEBHOOK_SOURCES:
            self.monitors.setdefault(
                f"webhook:{source}", FeedMonitor(f"webhook:{source}", "webhook", clock=self.clock)
            )

    def monitor(self, name: str, kind: str) -> FeedMonitor:
        """The monitor of a feed, created on first use."""
        if name not in self.monitors:
            self.monitors[name] = FeedMonitor(name, kind, clock=self.clock)
        return self.monitors[name]

    async def offload(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run CPU work on a payload in :attr:`pool` and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def payload(self, size: int, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` on a body of ``size`` bytes: inline when small, else :meth:`offload`."""
        if size <= INLINE_PAYLOAD_BYTES:
            return fn(*args, **kwargs)
        return await self.offload(fn, *args, **kwargs)

    def close(self) -> None:
        """Stop the payload pool and the events workers, close the read connection."""
        if self.events is not None:
            self.events.close()
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.reader is not None:
            self.reader.close()


STATE: web.AppKey[ServerState] = web.AppKey("omniops_state", ServerState)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


_ENCODER = json.JSONEncoder(default=str, allow_nan=False)
"""``json.dumps(value, default=str, allow_nan=False)``, built once instead of per answer."""


def _dumps(value: object) -> str:
    # allow_nan=False: an answer is always JSON; a non-finite number would be a bug upstream.
    return _ENCODER.encode(value)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    # The encoded bytes straight into the response: json_response would encode the text
    # again through a charset lookup on every answer.
    return web.Response(
        body=_dumps(body).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


class Rejected(Exception):
    """A request refused before anything is stored (401, 413, 503)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The request's body: 413 past ``limit`` bytes, 408 when it takes over ``seconds``.

    A client that sends its headers and then trickles the body a byte at a time would
    otherwise hold a connection (and a file descriptor) for as long as it likes.
    """
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, "too_large", f"body of {request.content_length} bytes is over {limit}")
    try:
        if request.content.is_eof():
            # The whole body arrived with the headers (a webhook's usual few hundred bytes):
            # nothing to wait for, so no timer to arm and cancel (7 % of its event-loop time).
            return await request.read()
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, "too_large", f"body is over {limit} bytes") from None
    except TimeoutError:
        raise Rejected(408, "slow_body", f"body not received within {seconds:g} s") from None


def decode_json(body: bytes) -> Any:
    """The decoded body; :class:`PayloadError` (400) if not UTF-8 JSON or too deep/large."""
    try:
        return bounded_loads(body)
    except UnicodeDecodeError as exc:
        raise PayloadError("(body)", f"not UTF-8 (byte {exc.start})", status=400) from None
    except ShapeError as exc:
        raise PayloadError(exc.field, exc.message, status=400) from None
    except (ValueError, RecursionError) as exc:
        raise PayloadError("(body)", f"not valid JSON: {exc}", status=400) from None


Mapper = Callable[[web.Request, bytes, ServerState], Awaitable[Mapped]]


async def _commit(state: ServerState, source: str, mapped: Mapped) -> tuple[int, dict[str, Any]]:
    writer = state.writer
    try:
        chunks = await writer.submit_many(mapped.items)
        if len(chunks) == 1:  # a webhook's few items: no gather around one future
            outcomes: list[Outcome] = await chunks[0]
        else:
            outcomes = [o for chunk in await asyncio.gather(*chunks) for o in chunk]
    except Exception as exc:
        log.exception("store write failed for %s", source)
        raise Rejected(
            503, "store", f"the store could not write ({type(exc).__name__}); retry"
        ) from exc
    results: list[dict[str, Any]] = []
    counts: dict[tuple[str, Outcome], int] = {}  # one counter update per feed and outcome
    for item, outcome in zip(mapped.items, outcomes, strict=True):
        key = (item.source, outcome)
        counts[key] = counts.get(key, 0) + 1
        if isinstance(item, Quarantined):
            results.append({"outcome": outcome, "reason": item.error})
        else:
            results.append({"id": item.id, "type": item.type, "outcome": outcome})
    for (feed, outcome), n in counts.items():
        state.metrics.inc("omniops_events_total", n, feed=feed, outcome=outcome)
    state.monitors[f"webhook:{source}"].record(outcomes)
    for _ in mapped.ignored:
        state.metrics.inc("omniops_webhook_ignored_total", source=source)
    kinds = set(outcomes)
    summary = "ignored" if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"
    status = 202 if "quarantined" in outcomes else 200
    body: dict[str, Any] = {"source": source, "outcome": summary, "results": results}
    if mapped.ignored:
        body["ignored"] = mapped.ignored
    return status, body


async def _keep(
    state: ServerState,
    source: str,
    request: web.Request,
    body: bytes,
    mapped: Mapped,
    *,
    error: str | None = None,
    redacted: str | None = None,
) -> None:
    """Keep a delivery that was quarantined or stored with an unmapped id, for a replay.

    After its items committed, through the writer; a failure here is logged, never turns
    the answer into an error (the events are durable already).
    """
    if (
        error is None
        and not mapped.unmapped
        and not any(isinstance(item, Quarantined) for item in mapped.items)
    ):
        return
    topic = request.headers.get("X-Shopify-Topic", "") if source == "shopify" else ""
    delivery = ""
    if source == "shopify":
        headers = request.headers
        delivery = headers.get("X-Shopify-Event-Id") or headers.get("X-Shopify-Webhook-Id") or ""
    await keep_delivery(
        state,
        source,
        body,
        mapped,
        topic=topic,
        delivery_id=delivery,
        error=error,
        redacted=redacted,
    )


async def keep_delivery(
    state: ServerState,
    source: str,
    body: bytes,
    mapped: Mapped,
    *,
    topic: str = "",
    delivery_id: str = "",
    error: str | None = None,
    redacted: str | None = None,
) -> None:
    """Hold ``body`` for a replay (:func:`~feeds.runtime.quarantine.hold_for`), if it needs one.

    Used by the webhook handlers and by serve's Square enrichment (a fetched order that
    quarantined); a failure is logged, never raised (the events are durable already).
    """
    try:
        kept = await state.offload(
            hold_for,
            source,
            mapped,
            body,
            topic=topic,
            delivery_id=delivery_id,
            error=error,
            redacted=redacted,
        )
        if kept is None:
            return
        at = epoch(state.clock.now())
        await state.writer.run(lambda db: record_held(db, kept, at))
        state.held_changed.set()
    except Exception:
        log.exception("could not keep the %s delivery for a replay", source)


def _cut(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[:MESSAGE_LIMIT] + "…"


async def _handle(
    request: web.Request, source: str, authenticate: Authenticate, mapper: Mapper
) -> web.Response:
    """The shared life of a webhook request (see the module docstring for the order)."""
    state = request.app[STATE]
    started = time.perf_counter()
    monitor = state.monitors[f"webhook:{source}"]
    response: web.Response | None = None
    try:
        body = await read_body(
            request, state.config.max_body_bytes, state.config.body_timeout_seconds
        )
        problem = authenticate(request, body, state.config)
        if problem is not None:
            configured = not problem.startswith(NOT_CONFIGURED)
            raise Rejected(
                401 if configured else 503, "signature" if configured else "not_configured", problem
            )
        try:
            mapped = await mapper(request, body, state)
        except PayloadError as exc:
            response = await _unreadable(
                state, source, request, body, exc.status, str(exc), exc.field
            )
            return response
        except ValidationError as exc:
            message = describe_validation_error(exc)
            response = await _unreadable(
                state, source, request, body, 422, message, _first_loc(exc)
            )
            return response
        except RecursionError:
            message = "payload nested too deeply to read"
            response = await _unreadable(state, source, request, body, 400, message, "(body)")
            return response
        except Exception as exc:  # a payload shape the mapper did not expect: still 4xx
            log.exception("%s payload could not be mapped", source)
            message = f"could not map the payload ({type(exc).__name__}: {exc})"
            response = await _unreadable(state, source, request, body, 422, message, "(body)")
            return response
        status, answer = await _commit(state, source, mapped)
        await _keep(state, source, request, body, mapped)
        monitor.health.state = FeedState.CONNECTED
        state.metrics.observe(source, time.perf_counter() - started)
        response = _json(status, answer)
        return response
    except Rejected as exc:
        state.metrics.inc("omniops_webhook_rejected_total", source=source, reason=exc.reason)
        if exc.status == 401:
            monitor.health.errors += 1
        response = _json(exc.status, {"error": exc.message})
        return response
    except ConnectionResetError:  # the client went away mid-body: nothing to answer
        response = _json(CLIENT_GONE, {"error": "the client closed the connection"})
        return response
    finally:
        code = str(response.status) if response is not None else "500"
        state.metrics.inc("omniops_webhook_requests_total", source=source, status=code)


def _first_loc(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    return ".".join(str(p) for p in errors[0]["loc"]) if errors else "(body)"


async def _unreadable(
    state: ServerState,
    source: str,
    request: web.Request,
    body: bytes,
    status: int,
    message: str,
    field_: str,
) -> web.Response:
    """Quarantine an authentic but unreadable payload (redacted) and answer 4xx."""
    message = _cut(message)
    raw = await state.payload(len(body), redact_raw, body)
    item = Quarantined(source=source, raw=raw, error=f"{source}: {message}")
    _, answer = await _commit(state, source, Mapped(items=[item]))
    await _keep(state, source, request, body, Mapped(), error=item.error, redacted=raw)
    state.metrics.inc("omniops_webhook_rejected_total", source=source, reason="unreadable")
    state.monitors[f"webhook:{source}"].health.errors += 1
    return _json(
        status,
        {"error": message, "field": field_, "quarantined": True, "results": answer["results"]},
    )


# --- mappers: the CPU part runs in the payload pool (large bodies) ---------------------------


def _shopify(topic: str, delivery: str, body: bytes, mapping: Mapping) -> Mapped:
    return shopify.map_shopify(topic, delivery, decode_json(body), mapping.shopify)


async def _map_shopify(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    topic = request.headers.get("X-Shopify-Topic")
    if not topic:
        raise PayloadError("X-Shopify-Topic", "missing header", status=400)
    delivery = request.headers.get("X-Shopify-Event-Id") or request.headers.get(
        "X-Shopify-Webhook-Id"
    )
    if not delivery:
        raise PayloadError(
            "X-Shopify-Event-Id", "missing header (and no X-Shopify-Webhook-Id)", status=400
        )
    mapping = state.mapping
    if topic != "orders/updated" or state.reader is None:
        return await state.payload(len(body), _shopify, topic, delivery, body, mapping)
    # The whole order: an edit is its lines now against the lines the store holds.
    data = await state.payload(len(body), decode_json, body)
    held = None
    oid = shopify.edited_order(topic, data)
    if oid is not None:
        with contextlib.suppress(sqlite3.Error, FileNotFoundError):  # then: as ordered
            held = await state.reader.order_lines(oid)
    return await state.payload(
        len(body), shopify.map_shopify, topic, delivery, data, mapping.shopify, held=held
    )


def _square(body: bytes, mapping: Mapping) -> Mapped:
    return square.map_square(decode_json(body), mapping.square)


async def _map_square(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    mapping = state.mapping
    if state.reader is None or b"order.fulfillment.updated" not in body:
        return await state.payload(len(body), _square, body, mapping)
    # A fulfillment update does not say whether it is a pickup's or a shipment's: the
    # placed order's method does.
    data = await state.payload(len(body), decode_json, body)
    method = None
    oid = square.fulfilled_order(data)
    if oid is not None:
        with contextlib.suppress(sqlite3.Error, FileNotFoundError):  # then: the config's
            method = await state.reader.order_method(oid)
    return await state.payload(len(body), square.map_square, data, mapping.square, method=method)


def _tracker(body: bytes) -> easypost.Tracker:
    return easypost.parse_tracker(decode_json(body))


async def _map_easypost(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    tracker = await state.payload(len(body), _tracker, body)
    assert state.reader is not None
    order = None
    if tracker.status in easypost.STATUS:
        with contextlib.suppress(sqlite3.Error, FileNotFoundError):
            order = await state.reader.order_for_tracking(tracker.tracking_code)
    return await state.payload(len(body), easypost.map_tracker, tracker, order)


def _amazon(body: bytes, mapping: Mapping) -> Mapped:
    return amazon.map_amazon(decode_json(body), mapping.amazon)


async def _map_amazon(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    return await state.payload(len(body), _amazon, body, state.mapping)


def _events(body: bytes) -> Mapped:
    return Mapped(items=read_events(body))


async def _map_events(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    if len(body) > INLINE_PAYLOAD_BYTES and state.events is not None:
        items = await state.events.read(body)  # the same reader, in a worker process
        if items is not None:
            return Mapped(items=items)
    return await state.payload(len(body), _events, body)


# --- routes ----------------------------------------------------------------------------


async def shopify_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/shopify``."""
    return await _handle(request, "shopify", auth_shopify, _map_shopify)


async def square_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/square``."""
    return await _handle(request, "square", auth_square, _map_square)


async def easypost_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/easypost``."""
    return await _handle(request, "easypost", auth_easypost, _map_easypost)


async def amazon_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/amazon``."""
    return await _handle(request, "amazon", auth_amazon, _map_amazon)


async def post_events(request: web.Request) -> web.Response:
    """``POST /events``: per-line outcomes; 422 if any line was quarantined."""
    response = await _handle(request, "events", auth_events, _map_events)
    if response.status == 202:
        # For /events a quarantined line is the sender's error: say so with a 4xx (the
        # valid lines are committed; resending them is harmless).
        response.set_status(422)
    return response


async def health(request: web.Request) -> web.Response:
    """``GET /health`` (the store's path only to a caller with the API token)."""
    state = request.app[STATE]
    stale_after = state.config.stale_after_minutes * 60
    feeds = {name: m.snapshot(stale_after) for name, m in sorted(state.monitors.items())}
    assert state.reader is not None
    try:
        counts: dict[str, Any] = await state.reader.counts()
        counts["uncategorised_skus"] = await state.reader.uncategorised()
    except (sqlite3.Error, FileNotFoundError) as exc:
        counts = {"error": type(exc).__name__}
    stats = state.writer.stats
    failing = [n for n, f in feeds.items() if f["state"] in ("failed", "retrying")]
    store: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **counts}
    trusted = presented_api_token(request, state.config)
    if trusted:
        store["path"] = str(state.writer.path)
    mapping_error = state.mapping_error
    if mapping_error and not trusted and state.config.mapping_file is not None:
        # The reason stays useful; the directory it lives in is not for anonymous callers.
        where = state.config.mapping_file
        mapping_error = mapping_error.replace(str(where), where.name)
    try:
        receivers = await state.reader.receivers()
    except (sqlite3.Error, FileNotFoundError):
        receivers = []
    notifications = {
        r.receiver: {
            "pending": r.pending,
            "dead_letter": r.dead_letter,
            "next_attempt_at": _iso(r.next_attempt_at),
            "delivered": r.delivered,
            "failed_attempts": r.failed_attempts,
            # An error names the receiver's URL, which may carry its secret (chat hooks).
            **({"last_error": r.last_error} if trusted else {}),
        }
        for r in receivers
    }
    body = {
        "status": "degraded" if failing or state.mapping_error else "ok",
        "now": state.clock.now().isoformat().replace("+00:00", "Z"),
        "uptime_seconds": round(time.monotonic() - state.started_at, 1),
        "feeds": feeds,
        "writer": {
            "applied": stats.applied,
            "duplicate": stats.duplicate,
            "quarantined": stats.quarantined,
            "batches": stats.batches,
        },
        "store": store,
        "mapping_error": mapping_error or None,
        "notifications": notifications,
        "held": state.held,
        "replayable": state.replayable,
    }
    return _json(200, body)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``."""
    state = request.app[STATE]
    stale_after = state.config.stale_after_minutes * 60
    gauges: list[tuple[str, str, dict[str, str], float]] = []
    for name, m in sorted(state.monitors.items()):
        current = m.state(stale_after)
        for s in FeedState:
            gauges.append(
                (
                    "omniops_feed_state",
                    "1 for the state each feed is in.",
                    {"feed": name, "state": s.value},
                    1.0 if s == current else 0.0,
                )
            )
    for name, m in sorted(state.monitors.items()):
        gauges.append(
            (
                "omniops_feed_events_per_minute",
                "Events applied in the last minute.",
                {"feed": name},
                m.events_per_minute(),
            )
        )
    for name, m in sorted(state.monitors.items()):
        gauges.append(
            ("omniops_feed_errors", "Errors since start.", {"feed": name}, m.health.errors)
        )
    for name, m in sorted(state.monitors.items()):
        for key, p in sorted(m.health.partitions.items()):
            labels = {"feed": name, "partition": key}
            if p.lag is not None:
                gauges.append(
                    ("omniops_feed_partition_lag", "Records not yet committed.", labels, p.lag)
                )
            if p.last_record_at is not None:
                age = (state.clock.now() - p.last_record_at).total_seconds()
                gauges.append(
                    (
                        "omniops_feed_partition_last_record_age_seconds",
                        "Age of the newest record consumed.",
                        labels,
                        round(age, 3),
                    )
                )
    for extra in state.gauges:
        gauges.extend(extra())
    assert state.reader is not None
    with contextlib.suppress(sqlite3.Error, FileNotFoundError):
        gauges.extend(notification_gauges(await state.reader.receivers()))
    stats = state.writer.stats
    gauges.append(("omniops_writer_batches", "Batches committed since start.", {}, stats.batches))
    if state.held is not None:
        gauges.append(("omniops_held_deliveries", "Deliveries held for a replay.", {}, state.held))
    if state.replayable is not None:
        gauges.append(
            (
                "omniops_replayable_deliveries",
                "Held deliveries the mapping in force would place (omniops quarantine replay).",
                {},
                state.replayable,
            )
        )
    with contextlib.suppress(sqlite3.Error, FileNotFoundError):
        for key, value in (await state.reader.counts()).items():
            gauges.append(("omniops_store_rows", "Totals in the store.", {"kind": key}, value))
    text = state.metrics.render(gauges)
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


CLIENT_GONE = 499
"""Status counted for a request whose client closed the connection before its body
arrived (nginx's convention; nothing is sent): never a 500 on ``/metrics``."""


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Routing errors as JSON; a bug answers 500 without a stack trace (logged)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            state = request.app[STATE]
            state.metrics.inc("omniops_webhook_rejected_total", source="-", reason="too_large")
        return _json(exc.status, {"error": exc.reason})
    except RecursionError:
        log.error("nesting too deep on %s %s", request.method, request.path)
        return _json(400, {"error": "body nested too deeply", "field": "(body)"})
    except ConnectionResetError:  # the client closed the connection: no bug of ours
        log.debug("client went away during %s %s", request.method, request.path)
        return _json(CLIENT_GONE, {"error": "the client closed the connection"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json(500, {"error": "internal error (logged)"})


def build_app(state: ServerState) -> web.Application:
    """The aiohttp application of ``serve`` over an already started writer."""

    def answer(status: int, body: dict[str, object], headers: dict[str, str]) -> web.Response:
        return _json(status, dict(body), headers)

    guard = read_guard(lambda: state.config, answer)
    app = web.Application(
        client_max_size=state.config.max_body_bytes,
        middlewares=[json_errors, guard],  # type: ignore[list-item]
    )
    app[STATE] = state
    app.router.add_post("/webhooks/shopify", shopify_webhook)
    app.router.add_post("/webhooks/square", square_webhook)
    app.router.add_post("/webhooks/easypost", easypost_webhook)
    app.router.add_post("/webhooks/amazon", amazon_webhook)
    app.router.add_post("/events", post_events)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    add_routes(
        app,
        source=StoreRoutingSource(state.writer.path, timezone=state.writer.params.timezone),
        rules=state.routing_rules,
        clock=state.clock,
        body_timeout=state.config.body_timeout_seconds,
    )
    return app


__all__ = [
    "STATE",
    "WEBHOOK_SOURCES",
    "Mapper",
    "Rejected",
    "ServerState",
    "StoreReader",
    "build_app",
    "decode_json",
    "json_errors",
]
