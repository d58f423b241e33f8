"""``omniops serve``: the store's single writer behind an aiohttp server, plus pull feeds.

This module owns the process: :class:`Server` starts the writer, the HTTP site, the pull
feeds (streams, polls), the drop folder and the mapping watcher, and stops them in order;
:func:`serve` runs it until SIGTERM/SIGINT; :func:`main` is the command line.

The endpoints live in :mod:`feeds.runtime.http` (``handlers``: webhooks, ``/events``,
``/health``, ``/metrics``; ``auth``: signatures, tokens, the read-endpoint token;
``exposition``: the Prometheus text).  At start, every configured secret that is empty or
blank is logged as an error naming its variable (that endpoint answers 503), and every
short one as a warning.  A Square notification without its order's lines is kept in the
store before its 200 (:func:`square_keeper`) and fetched from Square's API in the
background (:class:`feeds.webhooks.square_api.SquareOrders`).

Run it as ``omniops serve`` or ``python -m feeds.runtime.serve``; it prints
``omniops serve: listening on http://127.0.0.1:<port>`` once it accepts requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from feeds.base import Feed
from feeds.dropfolder import DropFolder
from feeds.kafka.consumer import kafka_feeds, store_holder
from feeds.kafka.publish import KafkaPublisher
from feeds.kafka.staleness import lagging_sources
from feeds.poll import PollFeed
from feeds.runtime.alerting import RulesRuntime, alert_loop, store_node_ids
from feeds.runtime.http.auth import secret_problems, usable
from feeds.runtime.http.exposition import LATENCY_BUCKETS, Metrics
from feeds.runtime.http.handlers import (
    STATE,
    WEBHOOK_SOURCES,
    Rejected,
    ServerState,
    StoreReader,
    build_app,
    json_errors,
    keep_delivery,
)
from feeds.runtime.logs import log_to_stderr
from feeds.runtime.quarantine import preview
from feeds.runtime.routing import router_hook
from feeds.settings import ServeConfig, Settings, load_serve_config
from feeds.stream import FeedMonitor, NdjsonFeed, SseFeed, pump_live
from feeds.webhooks.mapping import Mapping, MappingError, load_mapping, mapping_watcher
from feeds.webhooks.square_api import FEED as SQUARE_ORDERS_FEED
from feeds.webhooks.square_api import SquareApi, SquareOrders
from rules.backoff import Backoff
from rules.errors import describe_validation_error
from rules.file import default_rules_path
from rules.routing.config import FulfillmentRouting
from store.clock import Clock, SystemClock
from store.metrics import open_reader
from store.model import TimeWindow, set_time_window
from store.risk import MetricParams
from store.snapshots import FeedHealthRow
from store.writer import AfterCommit, StoreWriter

log = logging.getLogger("omniops.serve")


def log_secret_problems(config: ServeConfig) -> None:
    """Log each unusable secret (error, naming the variable) and each short one (warning)."""
    for problem in secret_problems(config):
        if problem.level == "error":
            log.error("%s", problem.message)
        else:
            log.warning("%s", problem.message)


def _auth_header(token: object) -> dict[str, str]:
    from pydantic import SecretStr

    value = usable(token) if isinstance(token, SecretStr) else None
    return {"Authorization": f"Bearer {value}"} if value is not None else {}


def pull_feeds(config: ServeConfig) -> list[Feed]:
    """The stream and poll subscriptions of ``config`` as feeds."""
    feeds: list[Feed] = []
    for s in config.streams:
        headers = _auth_header(s.token)
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
        headers = _auth_header(p.token)
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


def _count_outcomes(metrics: Metrics, outcomes: Sequence[str]) -> None:
    for outcome in outcomes:
        metrics.inc("omniops_events_total", feed="square", outcome=outcome)


def square_keeper(orders: SquareOrders) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: a Square notification that needs the Orders API is kept before the 200.

    It runs after ``/webhooks/square`` answered 200 (authentic, readable, committed); a
    notification that could not be kept is answered 503, so Square delivers it again.
    """

    @web.middleware
    async def keep(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        if request.path != "/webhooks/square" or request.method != "POST":
            return response
        if response.status != 200 or not isinstance(response, web.Response):
            return response
        try:
            kept = await orders.keep(await request.read())
        except Exception:
            log.exception("could not keep a Square notification")
            return web.json_response(
                {"error": "the store could not keep the notification; retry"}, status=503
            )
        if kept is None or response.text is None:
            return response
        answer = json.loads(response.text)
        answer["pending"] = {
            "kind": kept.kind,
            "id": kept.object_id,
            "detail": "kept; the order is fetched from Square's API and stored when it answers",
        }
        return web.json_response(answer, status=200)

    return keep


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
        square_backoff: Backoff | None = None,
    ) -> None:
        self.config = config
        self.square_backoff = square_backoff
        """Retry delays of Square notifications waiting for the Orders API (tests shorten it)."""
        self.square_orders: SquareOrders | None = None
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
        self._mapping_reloaded = asyncio.Event()
        self._previous_window: TimeWindow | None = None

    def _after_commit(self, rules: RulesRuntime | None) -> AfterCommit:
        hook = router_hook(rules.fulfillment if rules is not None else FulfillmentRouting)
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
        log_secret_problems(self.config)
        self._previous_window = set_time_window(
            TimeWindow(
                past=timedelta(days=self.config.max_past_days),
                future=timedelta(days=self.config.max_future_days),
                promise=timedelta(days=self.config.max_promise_days),
                now=self.clock.now,
            )
        )
        await self.writer.start()
        state = self.state = ServerState(
            writer=self.writer,
            config=self.config,
            mapping=mapping,
            clock=self.clock,
            routing_rules=self.rules.fulfillment if self.rules is not None else FulfillmentRouting,
        )
        if self.rules is not None:
            self.rules.start()
        if self.publisher is not None:
            await self.publisher.start()
            state.gauges.append(self.publisher.gauges)
        app = build_app(state)
        if self.config.square_signature_key is not None:
            self.square_orders = SquareOrders(
                self.writer,
                SquareApi(self.config.square_api_url, self.config.square_access_token),
                lambda: state.mapping.square,
                clock=self.clock,
                monitor=state.monitor(SQUARE_ORDERS_FEED, "enrichment"),
                backoff=self.square_backoff,
                on_outcomes=functools.partial(_count_outcomes, state.metrics),
                on_kept=lambda mapped, body, key: keep_delivery(
                    state, "square", body, mapped, delivery_id=key
                ),
            )
            state.gauges.append(self.square_orders.gauges)
            app.middlewares.append(square_keeper(self.square_orders))
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=10)
        await self.runner.setup()
        self.site = web.TCPSite(
            self.runner, self.config.host, self.config.port, ssl_context=context
        )
        await self.site.start()
        for feed in self.feeds:
            attach = getattr(feed, "attach", None)
            if attach is not None:  # Kafka: the live mapping and the store lookups
                assert state.reader is not None
                attach(
                    lambda: state.mapping,
                    state.reader.order_for_tracking,
                    store_holder(self.writer, state.held_changed.set),
                    order_method=state.reader.order_method,
                )
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
        if self.square_orders is not None:
            self._spawn(self.square_orders.run(self._stop_watch), "square-orders")
        self._spawn(self._count_replayable(), "replayable")
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
        state = self.state

        def reloaded(mapping: Mapping) -> None:
            state.mapping, state.mapping_error = mapping, ""
            self._mapping_reloaded.set()

        def refused(exc: MappingError) -> None:
            state.mapping_error = f"{exc} (kept the last good mapping)"

        watcher = mapping_watcher(path, on_reload=reloaded, on_error=refused, current=state.mapping)
        await watcher.run(self._stop_watch)

    async def _count_replayable(self) -> None:
        """Keep ``/health``'s ``held`` and ``replayable`` current; log what a reload offers.

        ``held`` is a count (cheap, polled); ``replayable`` maps the held deliveries again
        with the mapping in force (on a read connection, in a thread of its own), at start,
        after the mapping file changed and after a replay (by another process) changed the
        held set.  A delivery kept since was mapped with the mapping in force already, so
        it only adds to ``held``.  Nothing is replayed here: ``omniops quarantine replay``
        does that.
        """
        assert self.state is not None
        state = self.state
        reload = self._mapping_reloaded
        loop = asyncio.get_running_loop()
        pool = ThreadPoolExecutor(1, thread_name_prefix="omniops-replayable")
        seen: tuple[int, int, int] | None = None
        try:
            while not self._stop_watch.is_set():
                reloaded = reload.is_set()
                reload.clear()
                state.held_changed.clear()
                try:
                    mark = await loop.run_in_executor(pool, _held_mark, self.writer.path)
                    replayed = seen is not None and (mark[0] < seen[0] or mark[2] != seen[2])
                    if reloaded or replayed or seen is None:
                        held, replayable = await loop.run_in_executor(
                            pool, _preview, self.writer.path, state.mapping
                        )
                    else:
                        held, replayable = mark[0], state.replayable or 0
                    seen = mark
                except Exception:
                    log.exception("could not count the held deliveries")
                else:
                    state.held, state.replayable = held, replayable
                    if reloaded and held:
                        log.warning(
                            "mapping file reloaded: %d of %d held deliveries would now be"
                            " placed; run `omniops quarantine replay --db %s` to apply them"
                            " (nothing was replayed)",
                            replayable,
                            held,
                            self.writer.path,
                        )
                waits = [
                    asyncio.ensure_future(e.wait())
                    for e in (reload, state.held_changed, self._stop_watch)
                ]
                # A replay by another process (`omniops quarantine replay`) is seen by polling.
                _, pending = await asyncio.wait(
                    waits, timeout=HELD_POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                for job in pending:
                    job.cancel()
                await asyncio.sleep(0.05)  # a burst of kept deliveries is counted once
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

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
        if self.square_orders is not None:
            await self.square_orders.close()
        if self.publisher is not None:
            await self.publisher.stop()
        if self.rules is not None:
            await self.rules.stop()
        if self.state is not None:
            self.state.close()
        if self._previous_window is not None:
            set_time_window(self._previous_window)
            self._previous_window = None
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


HELD_POLL_SECONDS = 2.0
"""How often ``serve`` checks whether another process replayed held deliveries."""


def _held_mark(db: Path) -> tuple[int, int, int]:
    """A cheap mark of the held deliveries: it changes when any is kept or replayed."""
    reader = open_reader(db)
    try:
        row = reader.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(attempts), 0) FROM held"
            " WHERE state = 'held'"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])
    finally:
        reader.close()


def _preview(db: Path, mapping: Mapping) -> tuple[int, int]:
    """``(held, replayable)`` of the store at ``db`` under ``mapping`` (a read connection)."""
    reader = open_reader(db)
    try:
        return preview(reader, mapping)
    finally:
        reader.close()


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
    # Refuse a [fulfillment] node the store does not know (naming its line in the file).
    rules = RulesRuntime(rules_path, known_nodes=lambda: store_node_ids(config.db))
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
        if server.state is not None and server.state.events is not None:
            server.state.events.start()  # POST /events batches go to it once it answers
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
    log_to_stderr(args.log_level)
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


__all__ = [
    "LATENCY_BUCKETS",
    "STATE",
    "WEBHOOK_SOURCES",
    "Metrics",
    "Rejected",
    "Server",
    "ServerState",
    "StoreReader",
    "add_serve_arguments",
    "build_app",
    "json_errors",
    "main",
    "pull_feeds",
    "run_serve",
    "serve",
    "square_keeper",
    "ssl_context",
]


if __name__ == "__main__":
    sys.exit(main())
