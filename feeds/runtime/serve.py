"""``omniops serve``: the store's single writer behind an aiohttp server, plus pull feeds.

Endpoints (all answers are JSON except ``/metrics``):

* ``POST /webhooks/shopify``, ``/webhooks/square``, ``/webhooks/easypost``,
  ``/webhooks/amazon``: vendor webhooks (see :mod:`feeds.webhooks`), and
  ``POST /events``: canonical events, one or a batch.  Checks in this order:

  1. body over ``max_body_bytes`` → **413** (by ``Content-Length`` before reading, and
     while reading a chunked body); nothing stored;
  2. endpoint not configured (its secret unset) → **503** naming the variable to set;
  3. bad or missing signature / bearer token → **401**; nothing stored, counted in
     ``omniops_webhook_rejected_total{reason="signature"}``;
  4. body not JSON, a missing header, a missing or mistyped field → **400** / **422**
     with ``error`` and ``field``; the (redacted) raw body is kept in quarantine;
  5. otherwise the events are written and the answer waits for the **commit**: **200**
     when everything was applied or was already stored (a duplicate delivery), **202**
     when part of the payload was quarantined (e.g. an unmapped id: durable in quarantine,
     retrying would not help).  A store that cannot write answers **503** (retry later).

  Bad input never produces a 500: every handler turns a mapping failure into a 422.
* ``GET /health``: per feed state (connected, retrying, stale, failed), last event,
  events per minute, errors, quarantined; the writer's totals; the store's counts.
* ``GET /metrics``: Prometheus text exposition (``omniops_events_total{feed,outcome}``,
  ``omniops_webhook_requests_total{source,status}``,
  ``omniops_webhook_rejected_total{source,reason}``, ``omniops_webhook_durable_seconds``,
  ``omniops_feed_state``, ``omniops_feed_events_per_minute``, writer and store gauges).

Run it as ``omniops serve`` or ``python -m feeds.runtime.serve``; it prints
``omniops serve: listening on http://127.0.0.1:<port>`` once it accepts requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import ssl
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import watchfiles
from aiohttp import web
from pydantic import ValidationError

from feeds.base import Feed, FeedState
from feeds.dropfolder import DropFolder
from feeds.jsonl import describe_validation_error
from feeds.kafka.consumer import kafka_feeds
from feeds.kafka.publish import KafkaPublisher
from feeds.kafka.staleness import lagging_sources
from feeds.poll import PollFeed
from feeds.runtime.alerting import RulesRuntime, alert_loop
from feeds.runtime.route_api import add_routes
from feeds.runtime.routing import StoreRoutingSource, router_hook
from feeds.runtime.serve_config import ServeConfig, load_serve_config
from feeds.stream import Backoff, FeedMonitor, NdjsonFeed, SseFeed, pump_live
from feeds.webhooks import Mapped, PayloadError, amazon, easypost, shopify, square
from feeds.webhooks.canonical import parse_events_body
from feeds.webhooks.mapping import Mapping, MappingError, load_mapping
from feeds.webhooks.redact import redact_raw
from feeds.webhooks.signatures import (
    verify_bearer,
    verify_easypost,
    verify_shopify,
    verify_square,
)
from rules.file import default_rules_path
from rules.routing import FulfilmentRouting
from rules.settings import Settings
from store.apply import Outcome
from store.clock import Clock, SystemClock
from store.metrics import open_reader, store_counts
from store.model import Quarantined
from store.risk import MetricParams
from store.schema import SCHEMA_VERSION
from store.snapshots import FeedHealthRow
from store.writer import AfterCommit, StoreWriter

log = logging.getLogger("omniops.serve")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request-to-durable latency histogram."""

WEBHOOK_SOURCES = ("shopify", "square", "easypost", "amazon", "events")


class Metrics:
    """Counters and one histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        self.help: dict[str, str] = {
            "omniops_events_total": "Items committed to the store, by feed and outcome.",
            "omniops_webhook_requests_total": "Webhook and /events requests, by source and status.",
            "omniops_webhook_rejected_total": "Requests refused before anything was stored.",
            "omniops_webhook_ignored_total": "Payload parts that carry no canonical fact.",
        }
        self.latency: dict[str, list[float]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.latency_count: dict[str, int] = defaultdict(int)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name{labels}``."""
        self.counters[name][tuple(sorted(labels.items()))] += amount

    def get(self, name: str, **labels: str) -> float:
        """The current value of ``name{labels}`` (0 if never counted)."""
        return self.counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def observe(self, source: str, seconds: float) -> None:
        """Record one request-to-durable latency."""
        buckets = self.latency.setdefault(source, [0.0] * len(LATENCY_BUCKETS))
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        self.latency_sum[source] += seconds
        self.latency_count[source] += 1

    def render(self, gauges: Sequence[tuple[str, str, dict[str, str], float]] = ()) -> str:
        """The exposition text; ``gauges`` are ``(name, help, labels, value)``."""
        out: list[str] = []
        for name in sorted(self.counters):
            out.append(f"# HELP {name} {self.help.get(name, name)}")
            out.append(f"# TYPE {name} counter")
            for labels, value in sorted(self.counters[name].items()):
                out.append(f"{name}{_labels(dict(labels))} {_num(value)}")
        name = "omniops_webhook_durable_seconds"
        out.append(f"# HELP {name} Time from request to the answer after the commit.")
        out.append(f"# TYPE {name} histogram")
        for source in sorted(self.latency):
            for bound, count in zip(LATENCY_BUCKETS, self.latency[source], strict=True):
                out.append(
                    f"{name}_bucket{_labels({'source': source, 'le': str(bound)})} {_num(count)}"
                )
            total = self.latency_count[source]
            out.append(f"{name}_bucket{_labels({'source': source, 'le': '+Inf'})} {total}")
            out.append(f"{name}_sum{_labels({'source': source})} {self.latency_sum[source]:.6f}")
            out.append(f"{name}_count{_labels({'source': source})} {total}")
        seen: set[str] = set()
        for gname, ghelp, glabels, value in gauges:
            if gname not in seen:
                out.append(f"# HELP {gname} {ghelp}")
                out.append(f"# TYPE {gname} gauge")
                seen.add(gname)
            out.append(f"{gname}{_labels(glabels)} {_num(value)}")
        return "\n".join(out) + "\n"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    """A label value escaped as the exposition format requires."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


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
            "SELECT order_id FROM orders WHERE tracking = ? ORDER BY placed_ts DESC LIMIT 1",
            (code,),
        )
        return str(rows[0][0]) if rows else None

    async def counts(self) -> dict[str, int]:
        """Events, duplicates and quarantined rows in the store."""

        def run() -> dict[str, int]:
            with self._lock:
                if self._conn is None:
                    self._conn = open_reader(self.path)
                return store_counts(self._conn)

        return await asyncio.to_thread(run)

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
    routing_rules: Callable[[], FulfilmentRouting] = FulfilmentRouting
    """The fulfilment routing rules in force, for ``POST /route`` (hot-reloaded)."""
    mapping_error: str = ""
    started_at: float = field(default_factory=time.monotonic)
    gauges: list[Callable[[], list[tuple[str, str, dict[str, str], float]]]] = field(
        default_factory=list
    )
    """More ``/metrics`` gauges (``[serve.kafka_out]``'s counters)."""

    def __post_init__(self) -> None:
        if self.reader is None:
            self.reader = StoreReader(self.writer.path)
        for source in WEBHOOK_SOURCES:
            self.monitors.setdefault(
                f"webhook:{source}", FeedMonitor(f"webhook:{source}", "webhook", clock=self.clock)
            )

    def monitor(self, name: str, kind: str) -> FeedMonitor:
        """The monitor of a feed, created on first use."""
        if name not in self.monitors:
            self.monitors[name] = FeedMonitor(name, kind, clock=self.clock)
        return self.monitors[name]


STATE: web.AppKey[ServerState] = web.AppKey("omniops_state", ServerState)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, default=str))


class Rejected(Exception):
    """A request refused before anything is stored (401, 413, 503)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise Rejected(413, "too_large", f"body of {request.content_length} bytes is over {limit}")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, "too_large", f"body is over {limit} bytes") from None


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise PayloadError("(body)", f"not UTF-8 (byte {exc.start})", status=400) from None
    except ValueError as exc:
        raise PayloadError("(body)", f"not valid JSON: {exc}", status=400) from None


Mapper = Callable[[web.Request, bytes, ServerState], Awaitable[Mapped]]
Authenticate = Callable[[web.Request, bytes, ServerState], str | None]
"""Returns None when the request is authentic, else the 401 message."""


async def _commit(state: ServerState, source: str, mapped: Mapped) -> tuple[int, dict[str, Any]]:
    writer = state.writer
    try:
        futures = [await writer.submit(item) for item in mapped.items]
        outcomes: list[Outcome] = list(await asyncio.gather(*futures))
    except Exception as exc:
        log.exception("store write failed for %s", source)
        raise Rejected(
            503, "store", f"the store could not write ({type(exc).__name__}); retry"
        ) from exc
    results: list[dict[str, Any]] = []
    by_feed: dict[str, list[Outcome]] = defaultdict(list)
    for item, outcome in zip(mapped.items, outcomes, strict=True):
        state.metrics.inc("omniops_events_total", feed=item.source, outcome=outcome)
        by_feed[item.source].append(outcome)
        if isinstance(item, Quarantined):
            results.append({"outcome": outcome, "reason": item.error})
        else:
            results.append({"id": item.id, "type": item.type, "outcome": outcome})
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


async def _handle(
    request: web.Request, source: str, authenticate: Authenticate, mapper: Mapper
) -> web.Response:
    """The shared life of a webhook request (see the module docstring for the order)."""
    state = request.app[STATE]
    started = time.perf_counter()
    monitor = state.monitors[f"webhook:{source}"]
    response: web.Response | None = None
    try:
        body = await _read_body(request, state.config.max_body_bytes)
        problem = authenticate(request, body, state)
        if problem is not None:
            configured = not problem.startswith("not configured")
            raise Rejected(
                401 if configured else 503, "signature" if configured else "not_configured", problem
            )
        try:
            mapped = await mapper(request, body, state)
        except PayloadError as exc:
            response = await _unreadable(state, source, body, exc.status, str(exc), exc.field)
            return response
        except ValidationError as exc:
            message = describe_validation_error(exc)
            response = await _unreadable(state, source, body, 422, message, _first_loc(exc))
            return response
        except Exception as exc:  # a payload shape the mapper did not expect: still 4xx
            log.exception("%s payload could not be mapped", source)
            message = f"could not map the payload ({type(exc).__name__}: {exc})"
            response = await _unreadable(state, source, body, 422, message, "(body)")
            return response
        status, answer = await _commit(state, source, mapped)
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
    finally:
        code = str(response.status) if response is not None else "500"
        state.metrics.inc("omniops_webhook_requests_total", source=source, status=code)


def _first_loc(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    return ".".join(str(p) for p in errors[0]["loc"]) if errors else "(body)"


async def _unreadable(
    state: ServerState, source: str, body: bytes, status: int, message: str, field_: str
) -> web.Response:
    """Quarantine an authentic but unreadable payload (redacted) and answer 4xx."""
    item = Quarantined(source=source, raw=redact_raw(body), error=f"{source}: {message}")
    _, answer = await _commit(state, source, Mapped(items=[item]))
    state.metrics.inc("omniops_webhook_rejected_total", source=source, reason="unreadable")
    state.monitors[f"webhook:{source}"].health.errors += 1
    return _json(
        status,
        {"error": message, "field": field_, "quarantined": True, "results": answer["results"]},
    )


# --- authentication --------------------------------------------------------------------


def _auth_shopify(request: web.Request, body: bytes, state: ServerState) -> str | None:
    cfg = state.config
    secrets = [
        s.get_secret_value()
        for s in (cfg.shopify_webhook_secret, cfg.shopify_webhook_secret_previous)
        if s is not None
    ]
    if not secrets:
        return "not configured: set OMNIOPS_SHOPIFY_WEBHOOK_SECRET"
    if not verify_shopify(body, request.headers.get("X-Shopify-Hmac-Sha256"), secrets):
        return "invalid or missing X-Shopify-Hmac-Sha256 signature"
    return None


def _auth_square(request: web.Request, body: bytes, state: ServerState) -> str | None:
    cfg = state.config
    if cfg.square_signature_key is None or not cfg.square_notification_url:
        return (
            "not configured: set OMNIOPS_SQUARE_SIGNATURE_KEY and OMNIOPS_SQUARE_NOTIFICATION_URL"
        )
    header = request.headers.get("x-square-hmacsha256-signature")
    key = cfg.square_signature_key.get_secret_value()
    if not verify_square(body, header, key, cfg.square_notification_url):
        return "invalid or missing x-square-hmacsha256-signature"
    return None


def _auth_easypost(request: web.Request, body: bytes, state: ServerState) -> str | None:
    secret = state.config.easypost_webhook_secret
    if secret is None:
        return "not configured: set OMNIOPS_EASYPOST_WEBHOOK_SECRET"
    if not verify_easypost(
        body, request.headers.get("X-Hmac-Signature"), secret.get_secret_value()
    ):
        return "invalid or missing X-Hmac-Signature"
    return None


def _bearer(variable: str, token_of: Callable[[ServeConfig], Any]) -> Authenticate:
    def check(request: web.Request, body: bytes, state: ServerState) -> str | None:
        token = token_of(state.config)
        if token is None:
            return f"not configured: set {variable}"
        if not verify_bearer(request.headers.get("Authorization"), token.get_secret_value()):
            return "invalid or missing bearer token"
        return None

    return check


# --- mappers ---------------------------------------------------------------------------


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
    return shopify.map_shopify(topic, delivery, _decode_json(body), state.mapping.shopify)


async def _map_square(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    return square.map_square(_decode_json(body), state.mapping.square)


async def _map_easypost(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    tracker = easypost.parse_tracker(_decode_json(body))
    assert state.reader is not None
    order = None
    if tracker.status in easypost.STATUS:
        with contextlib.suppress(sqlite3.Error, FileNotFoundError):
            order = await state.reader.order_for_tracking(tracker.tracking_code)
    return easypost.map_tracker(tracker, order)


async def _map_amazon(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    return amazon.map_amazon(_decode_json(body), state.mapping.amazon)


async def _map_events(request: web.Request, body: bytes, state: ServerState) -> Mapped:
    return Mapped(items=[line.item for line in parse_events_body(body)])


# --- routes ----------------------------------------------------------------------------


async def shopify_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/shopify``."""
    return await _handle(request, "shopify", _auth_shopify, _map_shopify)


async def square_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/square``."""
    return await _handle(request, "square", _auth_square, _map_square)


async def easypost_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/easypost``."""
    return await _handle(request, "easypost", _auth_easypost, _map_easypost)


async def amazon_webhook(request: web.Request) -> web.Response:
    """``POST /webhooks/amazon``."""
    auth = _bearer("OMNIOPS_AMAZON_RELAY_TOKEN", lambda c: c.amazon_relay_token)
    return await _handle(request, "amazon", auth, _map_amazon)


async def post_events(request: web.Request) -> web.Response:
    """``POST /events``: per-line outcomes; 422 if any line was quarantined."""
    auth = _bearer("OMNIOPS_EVENTS_TOKEN", lambda c: c.events_token)
    response = await _handle(request, "events", auth, _map_events)
    if response.status == 202:
        # For /events a quarantined line is the sender's error: say so with a 4xx (the
        # valid lines are committed; resending them is harmless).
        response.set_status(422)
    return response


async def health(request: web.Request) -> web.Response:
    """``GET /health``."""
    state = request.app[STATE]
    stale_after = state.config.stale_after_minutes * 60
    feeds = {name: m.snapshot(stale_after) for name, m in sorted(state.monitors.items())}
    assert state.reader is not None
    try:
        counts: dict[str, Any] = await state.reader.counts()
    except (sqlite3.Error, FileNotFoundError) as exc:
        counts = {"error": str(exc)}
    stats = state.writer.stats
    failing = [n for n, f in feeds.items() if f["state"] in ("failed", "retrying")]
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
        "store": {"path": str(state.writer.path), "schema_version": SCHEMA_VERSION, **counts},
        "mapping_error": state.mapping_error or None,
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
    stats = state.writer.stats
    gauges.append(("omniops_writer_batches", "Batches committed since start.", {}, stats.batches))
    assert state.reader is not None
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
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json(500, {"error": "internal error (logged)"})


def build_app(state: ServerState) -> web.Application:
    """The aiohttp application of ``serve`` over an already started writer."""
    app = web.Application(client_max_size=state.config.max_body_bytes, middlewares=[json_errors])
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
    )
    return app


def pull_feeds(config: ServeConfig) -> list[Feed]:
    """The stream and poll subscriptions of ``config`` as feeds."""
    feeds: list[Feed] = []
    for s in config.streams:
        headers = {"Authorization": f"Bearer {s.token.get_secret_value()}"} if s.token else {}
        backoff = Backoff(cap=s.max_backoff_seconds)
        if s.format == "sse":
            feeds.append(SseFeed(s.name, s.url, headers=headers, backoff=backoff))
        else:
            feeds.append(
                NdjsonFeed(
                    s.name, s.url, headers=headers, backoff=backoff, cursor_param=s.cursor_param
                )
            )
    feeds.extend(kafka_feeds(config.kafka))
    for p in config.polls:
        headers = {"Authorization": f"Bearer {p.token.get_secret_value()}"} if p.token else {}
        feeds.append(
            PollFeed(
                p.name,
                p.url,
                interval=p.interval_seconds,
                since_param=p.since_param,
                headers=headers,
            )
        )
    return feeds


def ssl_context(config: ServeConfig) -> ssl.SSLContext | None:
    """An HTTPS server context when a certificate and key are configured."""
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ValueError("TLS needs both tls_cert and tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


class Server:
    """A running ``serve``: writer, HTTP site, pull feeds, drop folder, mapping watcher.

    ``async with Server(config) as server:`` starts everything and ``server.url`` is
    where it listens; leaving the block answers in-flight requests, stops the feeds and
    commits what is queued.
    """

    def __init__(
        self,
        config: ServeConfig,
        *,
        clock: Clock | None = None,
        feeds: Sequence[Feed] | None = None,
        background: Sequence[Callable[[StoreWriter], Awaitable[None]]] = (),
        rules: RulesRuntime | None = None,
        params: MetricParams | None = None,
        publisher: KafkaPublisher | None = None,
    ) -> None:
        self.config = config
        self.publisher = publisher or (
            KafkaPublisher(config.kafka_out) if config.kafka_out is not None else None
        )
        """``[serve.kafka_out]``: routing decisions and notifications to Kafka."""
        self.rules = rules
        """The hot-reloaded rules file: routing of new orders and ``POST /route``."""
        self.clock: Clock = clock or SystemClock()
        self.feeds = list(pull_feeds(config) if feeds is None else feeds)
        self.background = list(background)
        """Extra tasks given the writer (alert evaluation, notifications)."""
        self.writer = StoreWriter(
            config.db,
            clock=self.clock,
            batch_wait=config.batch_wait_ms / 1000,
            after_commit=self._after_commit(rules),
            params=params,
        )
        self.state: ServerState | None = None
        self.runner: web.AppRunner | None = None
        self.site: web.TCPSite | None = None
        self.dropfolder: DropFolder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_watch = asyncio.Event()

    def _after_commit(self, rules: RulesRuntime | None) -> AfterCommit:
        hook = router_hook(rules.fulfilment if rules is not None else FulfilmentRouting)
        return hook if self.publisher is None else self.publisher.wrap(hook)

    @property
    def port(self) -> int:
        """The port bound (useful with ``port = 0``)."""
        assert self.site is not None
        return self.site.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8080``."""
        scheme = "https" if self.config.tls_cert else "http"
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Open the store, bind the socket, start the feeds."""
        mapping = load_mapping(self.config.mapping_file)
        context = ssl_context(self.config)
        await self.writer.start()
        state = self.state = ServerState(
            writer=self.writer,
            config=self.config,
            mapping=mapping,
            clock=self.clock,
            routing_rules=self.rules.fulfilment if self.rules is not None else FulfilmentRouting,
        )
        if self.rules is not None:
            self.rules.start()
        if self.publisher is not None:
            await self.publisher.start()
            state.gauges.append(self.publisher.gauges)
        self.runner = web.AppRunner(
            build_app(state), access_log=None, handle_signals=False, shutdown_timeout=10
        )
        await self.runner.setup()
        self.site = web.TCPSite(
            self.runner, self.config.host, self.config.port, ssl_context=context
        )
        await self.site.start()
        for feed in self.feeds:
            attach = getattr(feed, "attach", None)
            if attach is not None:  # Kafka: the live mapping and the tracking lookup
                assert state.reader is not None
                attach(lambda: state.mapping, state.reader.order_for_tracking)
            monitor = FeedMonitor(
                feed.name, getattr(feed, "kind", "feed"), health=feed.health, clock=self.clock
            )
            state.monitors[feed.name] = monitor
            self._spawn(pump_live(feed, self.writer, monitor), f"feed:{feed.name}")
        if self.config.drop_folder is not None:
            drop = self.dropfolder = DropFolder(
                self.config.drop_folder,
                self.writer,
                tz=self.config.drop_timezone,
                history_channel=self.config.history_channel,
                history_location=self.config.history_location,
                monitor=state.monitor("dropfolder", DropFolder.kind),
            )
            self._spawn(drop.run(stop=self._stop_watch), "dropfolder")
        if self.config.mapping_file is not None:
            self._spawn(self._watch_mapping(self.config.mapping_file), "mapping")
        for job in self.background:
            self._spawn(job(self.writer), getattr(job, "__name__", "background"))
        self._spawn(self._report_health(self.config.feed_health_seconds), "feed-health")

    async def _report_health(self, every: float = 5.0) -> None:
        """Write every feed adapter's state to the store, so each console can show it."""
        assert self.state is not None
        state = self.state
        stale_after = self.config.stale_after_minutes * 60
        while not self._stop_watch.is_set():
            now = self.clock.now()
            rows = [
                FeedHealthRow(
                    feed=name,
                    kind=monitor.kind,
                    state=monitor.state(stale_after).value,
                    detail=monitor.health.detail,
                    events_per_minute=float(monitor.events_per_minute()),
                    errors=monitor.health.errors,
                    quarantined=monitor.health.quarantined,
                    last_event_at=monitor.health.last_event_at,
                    updated_at=now,
                )
                for name, monitor in sorted(state.monitors.items())
            ]
            try:
                await self.writer.save_feed_health(rows)
            except Exception:
                log.exception("could not record feed health; retrying in %.0f s", every)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_watch.wait(), every)

    def _spawn(self, job: Awaitable[None], name: str) -> None:
        async def guarded() -> None:
            try:
                await job
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s stopped", name)

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    async def _watch_mapping(self, path: Path) -> None:
        assert self.state is not None
        async for _ in watchfiles.awatch(path, stop_event=self._stop_watch, debounce=200):
            try:
                self.state.mapping = await asyncio.to_thread(load_mapping, path)
                self.state.mapping_error = ""
                log.info("mapping reloaded from %s", path)
            except MappingError as exc:
                self.state.mapping_error = f"{exc} (kept the last good mapping)"
                log.error("%s", self.state.mapping_error)

    async def stop(self) -> None:
        """Answer in-flight requests, stop feeds, commit the queue, close the store."""
        self._stop_watch.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.rules is not None:
            await self.rules.stop()
        if self.state is not None and self.state.reader is not None:
            self.state.reader.close()
        await self.writer.close()

    async def __aenter__(self) -> Server:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(config: ServeConfig, *, stop: asyncio.Event | None = None) -> None:
    """Run ``serve`` until SIGTERM or SIGINT (or ``stop`` is set), then shut down cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    log.info("omniops serve: %s", config.describe())
    settings = Settings()
    rules_path = settings.rules_file or default_rules_path()
    rules = RulesRuntime(rules_path)
    if rules.current is None:
        log.error("rules file %s is invalid: %s", rules_path, rules.watcher.error)
    params = settings.metrics
    clock = SystemClock()
    feeds = pull_feeds(config)
    publisher = KafkaPublisher(config.kafka_out) if config.kafka_out is not None else None
    lagging = lagging_sources(feeds)

    async def alerting(writer: StoreWriter) -> None:
        await alert_loop(
            writer.path,
            rules,
            clock,
            params,
            settings.refresh_interval,
            taps=publisher.taps if publisher is not None else (),
            adjust=lagging,
        )

    async with Server(
        config,
        clock=clock,
        rules=rules,
        params=params,
        background=[alerting],
        feeds=feeds,
        publisher=publisher,
    ) as server:
        print(f"omniops serve: listening on {server.url}", flush=True)
        await stop.wait()
        log.info("omniops serve: stopping")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``omniops serve`` (each overrides the environment and the file)."""
    parser.add_argument("--db", type=Path, help="store file (env OMNIOPS_DB)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8080; 0 = any free port)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate chain (HTTPS)")
    parser.add_argument("--tls-key", type=Path, help="PEM private key (HTTPS)")
    parser.add_argument("--mapping", dest="mapping_file", type=Path, help="id mapping TOML")
    parser.add_argument("--drop-folder", type=Path, help="folder watched for CSV/JSONL drops")
    parser.add_argument("--max-body-bytes", type=int, help="largest request body accepted")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run_serve(args: argparse.Namespace) -> int:
    """Entry point of ``omniops serve``: 0 after a clean stop, 2 on a configuration error."""
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_serve_config(
            db=args.db,
            host=args.host,
            port=args.port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            mapping_file=args.mapping_file,
            drop_folder=args.drop_folder,
            max_body_bytes=args.max_body_bytes,
        )
        asyncio.run(serve(config))
    except (ValidationError, ValueError, MappingError, OSError) as exc:
        message = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        print(f"omniops serve: {message}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m feeds.runtime.serve [options]``."""
    parser = argparse.ArgumentParser(prog="omniops serve", description=__doc__.split("\n")[0])
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
