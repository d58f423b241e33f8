"""The notification outbox: what waits for a receiver survives a restart, once delivered.

Real parts: an aiohttp receiver on loopback (answering 503, 400, or not listening at all),
a real store file, the notifier and the alert loop ``serve`` runs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from textual.app import App
from textual.widgets import Static

from console.screens.alerts import AlertsScreen, receiver_lines
from console.widgets.formatting import fmt_past
from feeds.runtime.alerting import RulesRuntime, alert_loop, store_node_ids
from feeds.runtime.serve import Server, serve
from feeds.settings import ServeConfig
from rules.alerts.actions import AlertActions
from rules.backoff import Backoff
from rules.notify import Notifier, NotifyConfig
from rules.receivers import (
    IDEMPOTENCY_HEADER,
    Notification,
    NotifyAlert,
    ReceiverWorker,
    WebhookDelivery,
    WebhookReceiverConfig,
)
from rules.roles import Permissions
from store import alerts as alert_store
from store import outbox as outbox_store
from store.clock import FixedClock
from store.outbox import NewItem, Outbox
from store.risk import MetricParams
from store.schema import SCHEMA_VERSION, migrate
from tests.builders import T0, at, location, order
from tests.conftest import write

AS_OF = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers ``status`` and records every request."""

    def __init__(self, port: int = 0) -> None:
        self.status = 503
        self.port = port
        self.requests: list[tuple[str, int, Any]] = []
        """(Idempotency-Key header, status answered, JSON body) per request, in order."""
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.headers.get(IDEMPOTENCY_HEADER, ""), self.status, body))
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> Counter[str]:
        """How many times each notification key was answered 2xx."""
        return Counter(key for key, status, _ in self.requests if 200 <= status < 300)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def free_port() -> int:
    """A loopback port nobody listens on (connection refused until a test binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert(fp: str, **labels: str) -> NotifyAlert:
    return NotifyAlert(
        fingerprint=fp,
        status="firing",
        state="firing",
        labels={"alertname": "late", **labels},
        description="Too many late orders.",
        summary=f"late {fp}: 12 > 10",
        value=12.0,
        threshold=10.0,
        op=">",
        starts_at=AS_OF,
    )


def hook_config(url: str, **receiver: Any) -> NotifyConfig:
    return NotifyConfig.model_validate(
        {
            "route": {
                "receiver": "hook",
                "group_by": ["..."],  # one notification per alert
                "group_wait": "0s",
                "group_interval": "0s",
            },
            "receivers": [
                {"name": "hook", "type": "webhook", "url": url, "timeout": "2s", **receiver}
            ],
        }
    )


def attempts_allowed(retry: Backoff, elapsed: float) -> int:
    """The most attempts back-off allows in ``elapsed`` seconds: the first at once, the
    (k+1)-th no sooner than the sum of the first k delays."""
    attempts, waited = 1, 0.0
    while True:
        waited += retry.delay(attempts)
        if waited > elapsed:
            return attempts
        attempts += 1


@contextmanager
def connection(db: Path) -> Iterator[sqlite3.Connection]:
    conn = alert_store.connect(db, create=True)
    try:
        yield conn
    finally:
        conn.close()


async def until(check: Any, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what or "timed out"
        await asyncio.sleep(0.02)


def test_the_outbox_is_a_migration_of_the_store(tmp_path: Path) -> None:
    with connection(tmp_path / "s.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert outbox_store.has_outbox(conn)
        migrate(conn)  # idempotent
        assert outbox_store.counts(conn) == {}


async def test_waiting_notifications_survive_a_restart_and_are_delivered_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "s.db"
    config = hook_config(receiver.url)
    retry = Backoff(base=0.05, cap=0.2, jitter=False)
    clock = FixedClock(AS_OF)

    # First run: the receiver answers 503 to everything.
    outbox = await asyncio.to_thread(Outbox.open, db)
    async with Notifier(config, clock, retry=retry, tick=0.05, outbox=outbox) as notifier:
        alerts = [alert(fp, location=loc) for fp, loc in (("a", "NJ"), ("b", "TX"), ("c", "CA"))]
        notifier.submit(alerts, [])
        queued = await notifier.flush()
        started = time.monotonic()
        await until(lambda: notifier.stats()["hook"].failed_attempts >= 3)
        await asyncio.sleep(0.8)  # long enough to reach the 0.2 s cap
        attempts = len(receiver.requests)
        elapsed = time.monotonic() - started
        stats = notifier.stats()["hook"]
        assert stats.pending == 3 and stats.delivered == 0
    outbox.close()
    keys = {n.key for n in queued}
    assert len(keys) == 3
    # Back-off, receiver-wide and capped: no tight loop, however many notifications wait.
    assert 3 <= attempts <= attempts_allowed(retry, elapsed)
    assert {key for key, _, _ in receiver.requests} <= keys
    # Each attempt carries its notification's key, in the header and in the body.
    assert all(key == body["notificationId"] for key, _, body in receiver.requests)

    # Between the runs, the store says what waits, for every reader (the console's line).
    with connection(db) as conn:
        waiting = outbox_store.list_waiting(conn)
        (status,) = alert_store.load_receiver_status(conn)
    assert {w.key for w in waiting} == keys
    # Every attempt is counted on its notification (but one cut short by the stop).
    total = len(receiver.requests)
    assert total - 1 <= sum(w.attempts for w in waiting) <= total
    assert (status.receiver, status.pending, status.dead_letter) == ("hook", 3, 0)
    assert status.next_attempt_at is not None
    next_try = status.next_attempt_at.strftime("%H:%M")
    wall = status.next_attempt_at - timedelta(seconds=1)
    assert receiver_lines([status], UTC, wall)[0].startswith(
        f"notifications: 3 waiting for hook (next try {next_try})"
    )

    # Second run on the same store: the receiver is up; nothing new is submitted.
    receiver.status = 200
    outbox = await asyncio.to_thread(Outbox.open, db)
    async with Notifier(config, clock, retry=retry, tick=0.05, outbox=outbox) as notifier:
        await notifier.wait_delivered(timeout=15)
        await asyncio.sleep(0.3)  # a repeat would show up here
        assert notifier.stats()["hook"].delivered == 3
    outbox.close()
    assert receiver.delivered() == Counter({key: 1 for key in keys})
    delivered = [body for _, status_, body in receiver.requests if status_ == 200]
    assert sorted(b["alerts"][0]["fingerprint"] for b in delivered) == ["a", "b", "c"]
    with connection(db) as conn:
        assert outbox_store.list_waiting(conn) == []
        assert outbox_store.list_dead(conn) == []
        statuses = alert_store.load_receiver_status(conn)
    assert all((s.pending, s.next_attempt_at) == (0, None) for s in statuses)
    assert receiver_lines(statuses, UTC, datetime.now(UTC)) == []


RULES = """
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 0
for = "0s"
severity = "critical"
description = "Orders past their promise"

[notify.route]
receiver = "hook"
group_wait = "GROUP_WAIT"

[[notify.receivers]]
name = "hook"
type = "webhook"
url = "URL"
timeout = "2s"
"""


async def test_serve_alert_loop_keeps_a_notification_across_a_restart_while_refused(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    await write(
        db, [location("WH1", kind="warehouse"), order("late", at(-3), [("A", 1)], promised=at(-1))]
    )
    port = free_port()  # nothing listens: connection refused
    url = f"http://127.0.0.1:{port}/hook"
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES.replace("URL", url).replace("GROUP_WAIT", "0s"), encoding="utf-8")
    params = MetricParams(timezone="America/New_York")

    def waiting() -> list[outbox_store.OutboxItem]:
        with connection(db) as conn:
            return outbox_store.list_waiting(conn)

    runtime = RulesRuntime(rules_path)
    stop = asyncio.Event()
    loop = asyncio.create_task(alert_loop(db, runtime, FixedClock(T0), params, 0.05, stop=stop))
    try:
        await until(lambda: any(w.attempts >= 1 for w in waiting()), what="no failed attempt")
    finally:
        stop.set()
        await loop
    (item,) = waiting()
    assert item.receiver == "hook" and "ClientConnectorError" in (item.last_error or "")
    with connection(db) as conn:
        (status,) = [s for s in alert_store.load_receiver_status(conn) if s.receiver == "hook"]
    assert status.pending == 1 and status.failed_attempts >= 1

    # Restart with the receiver listening.  The new run's own notification of the alert
    # is held back an hour (group_wait; the clock is fixed), so only the stored one goes.
    rules_path.write_text(RULES.replace("URL", url).replace("GROUP_WAIT", "1h"), encoding="utf-8")
    receiver = Receiver(port)
    receiver.status = 200
    await receiver.start()
    runtime = RulesRuntime(rules_path)
    stop = asyncio.Event()
    loop = asyncio.create_task(alert_loop(db, runtime, FixedClock(T0), params, 0.05, stop=stop))
    try:
        await until(lambda: receiver.delivered() and not waiting(), what="not delivered")
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await loop
        await receiver.stop()
    assert receiver.delivered() == Counter({item.key: 1})
    (body,) = [b for _, _, b in receiver.requests]
    assert body["status"] == "firing" and body["alerts"][0]["labels"]["location"] == "WH1"
    with connection(db) as conn:
        assert outbox_store.counts(conn) == {}


async def test_a_refused_notification_is_a_counted_dead_letter(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "s.db"
    receiver.status = 400
    outbox = await asyncio.to_thread(Outbox.open, db)
    retry = Backoff(base=0.05, cap=0.2, jitter=False)
    async with Notifier(
        hook_config(receiver.url), FixedClock(AS_OF), retry=retry, tick=0.05, outbox=outbox
    ) as notifier:
        notifier.submit([alert("a")], [])
        await notifier.flush()
        await notifier.wait_delivered(timeout=10)
        stats = notifier.stats()["hook"]
    outbox.close()
    assert len(receiver.requests) == 1  # never retried
    assert (stats.pending, stats.dead_letter, stats.delivered, stats.dropped) == (0, 1, 0, 1)
    with connection(db) as conn:
        (dead,) = outbox_store.list_dead(conn)
        (status,) = alert_store.load_receiver_status(conn)
    assert dead.attempts == 1 and "HTTP 400" in (dead.last_error or "")
    assert (status.pending, status.dead_letter) == (0, 1)
    assert receiver_lines([status], UTC, datetime.now(UTC))[-1] == (
        "notifications: 1 given up for hook (dead letters, kept in the store)"
    )


async def test_max_attempts_makes_a_dead_letter_after_that_many_tries(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "s.db"
    outbox = await asyncio.to_thread(Outbox.open, db)
    retry = Backoff(base=0.05, cap=0.1, jitter=False)
    config = hook_config(receiver.url, max_attempts=3)
    async with Notifier(config, FixedClock(AS_OF), retry=retry, tick=0.05, outbox=outbox) as n:
        n.submit([alert("a"), alert("b", location="TX")], [])
        await n.flush()
        await n.wait_delivered(timeout=10)
    outbox.close()
    with connection(db) as conn:
        dead = outbox_store.list_dead(conn)
        assert outbox_store.list_waiting(conn) == []
    assert sorted(d.attempts for d in dead) == [3, 3]
    assert all("gave up after 3 attempts" in (d.last_error or "") for d in dead)
    assert Counter(key for key, _, _ in receiver.requests) == Counter({d.key: 3 for d in dead})


async def test_a_notification_older_than_give_up_after_is_a_dead_letter_unsent(
    tmp_path: Path, receiver: Receiver
) -> None:
    db = tmp_path / "s.db"
    outbox = await asyncio.to_thread(Outbox.open, db)
    wall = [datetime(2026, 11, 18, 15, 0, tzinfo=UTC)]
    async with aiohttp.ClientSession() as session:
        worker = ReceiverWorker(
            "hook",
            WebhookDelivery(
                WebhookReceiverConfig(name="hook", type="webhook", url=receiver.url),
                lambda: session,
            ),
            Backoff(base=0.05, cap=0.05, jitter=False),
            lambda: wall[0],
            outbox=outbox,
            max_age=timedelta(hours=24),
            wall=lambda: wall[0],
        )
        worker.start()
        worker.enqueue(Notification("hook", "root:{}", {}, (alert("a"),), AS_OF))
        await until(lambda: worker.stats.failed_attempts == 1)
        wall[0] += timedelta(hours=25)  # the receiver stayed down for a day
        await asyncio.wait_for(worker.wait_idle(), 10)
        await worker.stop()
    outbox.close()
    assert len(receiver.requests) == 1  # given up without another try
    with connection(db) as conn:
        (dead,) = outbox_store.list_dead(conn)
    assert dead.attempts == 1 and "undelivered for more than" in (dead.last_error or "")
    assert worker.dead_letters == 1 and worker.pending == 0


async def test_health_and_metrics_count_what_waits_per_receiver(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    outbox = await asyncio.to_thread(Outbox.open, db)
    now = datetime.now(UTC)
    items = [NewItem("ops-webhook", f"k{i}", f"root:{{n={i}}}", "{}") for i in range(3)]
    outbox.run(lambda c: outbox_store.enqueue(c, items, at=now))
    (first, *_) = outbox.run(lambda c: outbox_store.list_waiting(c))
    outbox.run(lambda c: outbox_store.mark_dead(c, first.id, at=now, error="HTTP 400"))
    next_try = now + timedelta(seconds=30)
    (second, *_) = outbox.run(lambda c: outbox_store.list_waiting(c))
    outbox.run(
        lambda c: outbox_store.mark_failed(
            c, second.id, at=now, next_attempt_at=next_try, error="HTTP 503"
        )
    )
    outbox.close()
    async with (
        Server(ServeConfig(db=db, port=0), feeds=[]) as server,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{server.url}/health") as resp:
            health = await resp.json()
        async with http.get(f"{server.url}/metrics") as resp:
            metrics = await resp.text()
    hook = health["notifications"]["ops-webhook"]
    assert (hook["pending"], hook["dead_letter"]) == (2, 1)
    stored = datetime.fromisoformat(hook["next_attempt_at"])
    assert abs(stored - next_try) <= timedelta(milliseconds=1)  # kept in milliseconds
    assert 'omniops_notifications_pending{receiver="ops-webhook"} 2' in metrics
    assert 'omniops_notifications_dead_letter{receiver="ops-webhook"} 1' in metrics


# -- serve passes the store's node ids to the rules watcher ----------------------------------

NODE_RULES = """
alert = []

[fulfillment]

[fulfillment.nodes.NODE]
rank = 1
"""


async def test_serve_refuses_a_fulfillment_node_the_store_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    await write(db, [location("WH1", kind="warehouse")])
    assert store_node_ids(db) == {"WH1"}
    assert store_node_ids(tmp_path / "missing.db") is None  # an empty store checks nothing
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(NODE_RULES.replace("NODE", "WH-XX"), encoding="utf-8")
    monkeypatch.setenv("OMNIOPS_RULES_FILE", str(rules_path))
    stop = asyncio.Event()
    caplog.set_level(logging.ERROR)
    task = asyncio.create_task(serve(ServeConfig(db=db, port=0), stop=stop))
    try:
        await until(lambda: "is invalid" in caplog.text, what=caplog.text)
    finally:
        stop.set()
        await task
    assert (
        f"{rules_path}:6: fulfillment.nodes.WH-XX" in caplog.text
        and "unknown node 'WH-XX'" in caplog.text
    )

    # The known node is accepted.
    caplog.clear()
    runtime = RulesRuntime(rules_path, known_nodes=lambda: store_node_ids(db))
    assert runtime.current is None
    rules_path.write_text(NODE_RULES.replace("NODE", "WH1"), encoding="utf-8")
    runtime = RulesRuntime(rules_path, known_nodes=lambda: store_node_ids(db))
    assert runtime.current is not None and "WH1" in runtime.current.rules.fulfillment.nodes


# -- the alerts view -------------------------------------------------------------------------


class AlertsApp(App[None]):
    """The alerts view over a real store, read through the console's alert actions."""

    def __init__(self, db: Path) -> None:
        super().__init__()
        clock = FixedClock(AS_OF)
        self.actions = AlertActions(
            lambda: alert_store.connect(db), clock, Permissions("ana", "viewer")
        )
        self.view = AlertsScreen(source=self.actions, clock=clock, tz=UTC, poll_seconds=0)

    def on_mount(self) -> None:
        self.push_screen(self.view)


async def test_the_alerts_view_says_what_waits_for_a_receiver_and_its_next_try(
    tmp_path: Path,
) -> None:
    db = tmp_path / "s.db"
    outbox = await asyncio.to_thread(Outbox.open, db)
    now = datetime.now(UTC)
    next_try = now + timedelta(seconds=40)
    items = [NewItem("ops-webhook", f"k{i}", f"root:{{n={i}}}", "{}") for i in range(4)]
    outbox.run(lambda c: outbox_store.enqueue(c, items, at=now))
    first, second, *_ = outbox.run(lambda c: outbox_store.list_waiting(c))
    outbox.run(lambda c: outbox_store.mark_dead(c, first.id, at=now, error="HTTP 400 from …"))
    outbox.run(
        lambda c: outbox_store.mark_failed(
            c, second.id, at=now, next_attempt_at=next_try, error="HTTP 503 from …"
        )
    )
    outbox.close()
    app = AlertsApp(db)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(lambda: app.view.loads >= 1)
        await pilot.pause()
        text = str(app.view.query_one("#alerts-receivers", Static).render())
    when = fmt_past(next_try, UTC, datetime.now(UTC))
    assert f"notifications: 3 waiting for ops-webhook (next try {when})" in text
    assert "notifications: 1 given up for ops-webhook (dead letters, kept in the store)" in text


def test_the_store_functions_replace_defer_and_count(tmp_path: Path) -> None:
    t = datetime(2026, 11, 18, 15, 0, tzinfo=UTC)
    with connection(tmp_path / "s.db") as conn:
        replaced = outbox_store.enqueue(
            conn,
            [NewItem("hook", "k1", "g1", "one"), NewItem("hook", "k2", "g2", "two")],
            at=t,
        )
        assert replaced == 0
        # a newer notification of group g1 replaces the waiting one; a known key is a no-op
        assert outbox_store.enqueue(conn, [NewItem("hook", "k3", "g1", "one'")], at=t) == 1
        assert outbox_store.enqueue(conn, [NewItem("hook", "k3", "g1", "other")], at=t) == 0
        assert [(w.key, w.payload) for w in outbox_store.list_waiting(conn)] == [
            ("k2", "two"),
            ("k3", "one'"),
        ]
        k2 = outbox_store.due(conn, "hook", t)[0]
        later = t + timedelta(seconds=4)
        assert outbox_store.mark_failed(conn, k2.id, at=t, next_attempt_at=later, error="503") == 1
        # the receiver is on back-off as a whole: nothing is due before `later`
        assert outbox_store.due(conn, "hook", later - timedelta(milliseconds=1)) == []
        assert [d.key for d in outbox_store.due(conn, "hook", later)] == ["k2", "k3"]
        (counts,) = outbox_store.counts(conn).values()
        assert (counts.waiting, counts.dead, counts.next_attempt_at) == (2, 0, later)
        assert counts.last_error == "503" and counts.oldest_waiting_at == t
        assert outbox_store.mark_dead(conn, k2.id, at=later, error="400")
        assert not outbox_store.mark_dead(conn, k2.id, at=later, error="400")  # once
        k3 = outbox_store.next_waiting(conn, "hook")
        assert k3 is not None and outbox_store.mark_delivered(conn, k3.id)
        assert not outbox_store.mark_delivered(conn, k3.id)
        assert outbox_store.counts(conn)["hook"] == outbox_store.OutboxCounts(
            "hook", waiting=0, dead=1, last_error="400"
        )
        assert outbox_store.prune_dead(conn, later) == 0
        assert outbox_store.prune_dead(conn, later + timedelta(seconds=1)) == 1
        assert outbox_store.counts(conn) == {}


class LockedAtFirst(Outbox):
    """The store's outbox, answering "database is locked" to its first ``failures`` calls
    (as a long transaction of another writer past the busy timeout would)."""

    def __init__(self, db: Path, failures: int) -> None:
        opened = Outbox.open(db)
        super().__init__(opened._conn, durable=True)
        self.failures = failures

    def run(self, fn: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().run(fn)


async def test_a_store_that_is_locked_for_a_while_does_not_end_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 200
    outbox = await asyncio.to_thread(LockedAtFirst, tmp_path / "s.db", 3)
    async with aiohttp.ClientSession() as session:
        worker = ReceiverWorker(
            "hook",
            WebhookDelivery(
                WebhookReceiverConfig(name="hook", type="webhook", url=receiver.url),
                lambda: session,
            ),
            Backoff(base=0.05, cap=0.05, jitter=False),
            lambda: AS_OF,
            outbox=outbox,
        )
        worker.start()
        notification = Notification("hook", "root:{}", {}, (alert("a"),), AS_OF)
        worker.enqueue(notification)
        await asyncio.wait_for(worker.wait_idle(), 10)
        await worker.stop()
    outbox.close()
    assert outbox.failures == 0
    assert receiver.delivered() == Counter({notification.key: 1})
