"""Notification routing (tables of labels → receivers), grouping, inhibition, formats, and
delivery to a real aiohttp server on 127.0.0.1, including retries while it is down."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rules.backoff import Backoff
from rules.notify import (
    Dispatcher,
    Notifier,
    NotifyConfig,
    inhibiting_source,
    route_test,
)
from rules.receivers import (
    Notification,
    NotifyAlert,
    alertmanager_payload,
    chat_text,
    generic_payload,
)
from store.clock import FixedClock
from tests.snapshot_factory import AS_OF

TREE = NotifyConfig.model_validate(
    {
        "route": {
            "receiver": "console",
            "group_by": ["alertname"],
            "group_wait": "30s",
            "routes": [
                {
                    "name": "critical",
                    "matchers": "severity=critical",
                    "receiver": "pager",
                    "continue": True,
                    "group_wait": "0s",
                },
                {
                    "name": "warehouses",
                    "matchers": "location=~WH-.*",
                    "receiver": "warehouse-chat",
                    "group_by": ["alertname", "location"],
                    "routes": [
                        {"name": "texas", "matchers": "location=WH-TX", "receiver": "tx-chat"},
                        {"name": "returns", "matchers": "team=returns"},
                    ],
                },
                {
                    "name": "feeds",
                    "matchers": ["alertname=~stale_.*", "feed!=catalog"],
                    "receiver": "integrations",
                },
                {"name": "never", "matchers": "location=WH-NJ", "receiver": "unreachable"},
            ],
        },
        "receivers": [
            {"name": n, "type": "webhook", "url": f"http://127.0.0.1:9/{n}"}
            for n in ("pager", "warehouse-chat", "tx-chat", "integrations", "unreachable")
        ],
    }
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "aov_drop", "severity": "warning"}, ["console"]),  # no child: the root
        # a child matched (continue or not): the parent does not handle it itself
        ({"alertname": "late", "severity": "critical"}, ["pager"]),
        ({"alertname": "late", "location": "WH-NJ"}, ["warehouse-chat"]),  # first match wins
        ({"alertname": "late", "location": "WH-TX"}, ["tx-chat"]),  # nested
        (
            {"alertname": "late", "location": "WH-TX", "severity": "critical"},
            ["pager", "tx-chat"],
        ),  # continue: the next matching sibling too
        ({"alertname": "late", "location": "STORE-1"}, ["console"]),  # anchored regex
        ({"alertname": "late", "location": "XWH-1"}, ["console"]),
        (
            {"alertname": "late", "location": "WH-1", "team": "returns"},
            ["warehouse-chat"],
        ),  # child without receiver inherits its parent's
        ({"alertname": "stale_feed", "feed": "pos"}, ["integrations"]),
        ({"alertname": "stale_feed", "feed": "catalog"}, ["console"]),  # != matcher
    ],
)
def test_routing_table(labels: dict[str, str], expected: list[str]) -> None:
    assert route_test(TREE, labels).receivers == expected


def test_children_inherit_settings_and_the_tester_shows_the_path() -> None:
    result = route_test(TREE, {"alertname": "late", "location": "WH-TX", "severity": "critical"})
    pager, texas = result.matches
    assert pager.path == ("root", "critical")
    assert pager.settings.group_wait == timedelta(0)
    assert pager.settings.group_by == ("alertname",)  # from the root
    assert texas.path == ("root", "warehouses", "texas")
    assert texas.settings.group_by == ("alertname", "location")  # from its parent
    assert texas.settings.group_wait == timedelta(seconds=30)  # from the root
    text = result.text(TREE.route)
    assert "→ tx-chat  via root > warehouses {location=~WH-.*} > texas {location=WH-TX}" in text


def alert(fp: str, status: str = "firing", **labels: str) -> NotifyAlert:
    return NotifyAlert(
        fingerprint=fp,
        status=status,
        state=status,
        labels={"alertname": "late", **labels},  # type: ignore[arg-type]
        description="Too many late orders.",
        summary=f"late {fp}: 12 > 10",
        value=12.0,
        threshold=10.0,
        op=">",
        starts_at=AS_OF,
        ends_at=AS_OF if status == "resolved" else None,
    )


def test_inhibition_needs_a_firing_source_with_equal_labels() -> None:
    rules = NotifyConfig.model_validate(
        {
            "inhibit": [
                {
                    "source_matchers": "alertname=stale_feed",
                    "target_matchers": "alertname=~aov_drop|net_sales_drop",
                    "equal": ["channel"],
                }
            ]
        }
    ).inhibit
    source = ("s1", {"alertname": "stale_feed", "channel": "web"})
    target = {"alertname": "aov_drop", "channel": "web"}
    assert inhibiting_source("t1", target, [source], rules) == "s1"
    assert inhibiting_source("t1", {**target, "channel": "pos"}, [source], rules) is None
    assert inhibiting_source("t1", target, [], rules) is None
    assert inhibiting_source("s1", source[1], [source], rules) is None


def test_group_wait_interval_repeat_and_resolved_once() -> None:
    config = NotifyConfig.model_validate(
        {
            "route": {
                "group_by": ["alertname"],
                "group_wait": "30s",
                "group_interval": "5m",
                "repeat_interval": "1h",
            }
        }
    )
    d = Dispatcher(config)
    t = AS_OF
    d.update([alert("a", location="WH-TX")], [], t)
    assert d.due(t + timedelta(seconds=29)) == []
    d.update([alert("a", location="WH-TX"), alert("b", location="WH-NJ")], [], t)
    first = d.due(t + timedelta(seconds=30))
    assert [sorted(a.fingerprint for a in n.alerts) for n in first] == [["a", "b"]]
    assert first[0].group_labels == {"alertname": "late"}
    # nothing new: quiet until the repeat interval
    d.update([alert("a"), alert("b")], [], t + timedelta(minutes=10))
    assert d.due(t + timedelta(minutes=10)) == []
    d.update([alert("a"), alert("b"), alert("c")], [], t + timedelta(minutes=11))
    assert d.due(t + timedelta(minutes=11)) != []  # a change, after group_interval
    assert d.due(t + timedelta(minutes=12)) == []
    repeat = d.due(t + timedelta(minutes=11, hours=1))
    assert len(repeat) == 1 and len(repeat[0].alerts) == 3
    # resolved: sent once, then the group is gone
    later = t + timedelta(hours=2)
    d.update([], [alert("a", "resolved"), alert("b", "resolved"), alert("c", "resolved")], later)
    sent = d.due(later)
    assert [n.status for n in sent] == ["resolved"]
    assert d.due(later + timedelta(hours=5)) == [] and d.groups == {}


def test_an_alert_resolved_before_its_first_notification_is_never_sent() -> None:
    d = Dispatcher(NotifyConfig())
    d.update([alert("a")], [], AS_OF)
    d.update([], [alert("a", "resolved")], AS_OF + timedelta(seconds=10))
    assert d.due(AS_OF + timedelta(minutes=5)) == []


def test_payload_formats() -> None:
    n = Notification(
        "hook",
        "root:{alertname=late}",
        {"alertname": "late"},
        (alert("a", location="WH-TX"), alert("b", "resolved", location="WH-NJ")),
        AS_OF,
    )
    am = alertmanager_payload(n)
    assert am[0] == {
        "labels": {"alertname": "late", "location": "WH-TX"},
        "annotations": {"description": "Too many late orders.", "summary": "late a: 12 > 10"},
        "startsAt": "2025-11-24T20:30:00Z",
        "generatorURL": "",
    }
    assert am[1]["endsAt"] == "2025-11-24T20:30:00Z"
    generic = generic_payload(n)
    assert generic["status"] == "firing" and generic["commonLabels"] == {"alertname": "late"}
    text = chat_text(n)
    assert text.startswith("[FIRING:1] alertname=late")
    assert "late a: 12 > 10" in text


# -- delivery to a real server ------------------------------------------------------------


class Hook:
    """A webhook receiver on 127.0.0.1 that can be stopped and started on the same port."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self.got = asyncio.Event()
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.got.set()
        return web.Response(status=self.status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()
    await h.start()
    yield h
    if h.runner is not None:
        await h.runner.cleanup()


def webhook_config(url: str, fmt: str = "generic") -> NotifyConfig:
    return NotifyConfig.model_validate(
        {
            "route": {"receiver": "hook", "group_wait": "0s", "group_interval": "0s"},
            "receivers": [
                {"name": "hook", "type": "webhook", "url": url, "format": fmt, "timeout": "2s"}
            ],
        }
    )


async def test_webhook_delivery_in_alertmanager_format(hook: Hook) -> None:
    clock = FixedClock(AS_OF)
    async with Notifier(webhook_config(hook.url, "alertmanager"), clock, tick=0.05) as notifier:
        notifier.submit([alert("a", location="WH-TX")], [])
        await notifier.flush()
        await notifier.wait_delivered(timeout=10)
    assert hook.received == [
        [
            {
                "labels": {"alertname": "late", "location": "WH-TX"},
                "annotations": {
                    "description": "Too many late orders.",
                    "summary": "late a: 12 > 10",
                },
                "startsAt": "2025-11-24T20:30:00Z",
                "generatorURL": "",
            }
        ]
    ]
    assert notifier.stats()["hook"].delivered == 1


async def test_a_down_receiver_is_retried_and_counted_then_delivered(hook: Hook) -> None:
    clock = FixedClock(AS_OF)
    console_got: list[Notification] = []
    config = NotifyConfig.model_validate(
        {
            "route": {
                "receiver": "hook",
                "group_wait": "0s",
                "group_interval": "0s",
                "routes": [
                    {"matchers": "alertname=late", "receiver": "console", "continue": True},
                    {"matchers": "alertname=late", "receiver": "hook"},
                ],
            },
            "receivers": [{"name": "hook", "type": "webhook", "url": hook.url}],
        }
    )
    retry = Backoff(base=0.05, cap=0.2, jitter=False)
    statuses: list[Any] = []
    async with Notifier(
        config,
        clock,
        console=console_got.append,
        retry=retry,
        tick=0.05,
        status_sink=statuses.append,
    ) as notifier:
        await hook.stop()
        notifier.submit([alert("a")], [])  # returns at once although the hook is down
        await notifier.flush()
        async with asyncio.timeout(10):
            while notifier.stats()["hook"].failed_attempts < 2:
                await asyncio.sleep(0.02)
        stats = notifier.stats()["hook"]
        assert stats.pending == 1 and stats.delivered == 0
        assert stats.last_error is not None and "127.0.0.1" in stats.last_error
        # the console receiver was not held up by the webhook being down
        assert [n.receiver for n in console_got] == ["console"]

        await hook.start()  # back on the same port
        await asyncio.wait_for(hook.got.wait(), 10)
        await notifier.wait_delivered(timeout=10)
        stats = notifier.stats()["hook"]
        assert (stats.delivered, stats.pending) == (1, 0)
        assert stats.failed_attempts >= 2
    assert hook.received[0]["alerts"][0]["fingerprint"] == "a"
    assert statuses and statuses[-1][0].receiver in ("console", "hook")


async def test_a_refused_notification_is_dropped_not_retried_forever(hook: Hook) -> None:
    hook.status = 400
    async with Notifier(
        webhook_config(hook.url),
        FixedClock(AS_OF),
        tick=0.05,
        retry=Backoff(base=0.05, jitter=False),
    ) as notifier:
        notifier.submit([alert("a")], [])
        await notifier.flush()
        await notifier.wait_delivered(timeout=10)
        stats = notifier.stats()["hook"]
    assert (stats.dropped, stats.delivered, stats.pending) == (1, 0, 0)
    assert stats.last_error is not None and "HTTP 400" in stats.last_error


async def test_log_receiver_appends_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    config = NotifyConfig.model_validate(
        {
            "route": {"receiver": "log", "group_wait": "0s"},
            "receivers": [{"name": "log", "type": "log", "path": str(path)}],
        }
    )
    async with Notifier(config, FixedClock(AS_OF), tick=0.05) as notifier:
        notifier.submit([alert("a")], [])
        await notifier.flush()
        await notifier.wait_delivered(timeout=10)
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["alerts"][0]["fingerprint"] == "a"


async def test_submit_from_another_thread_is_picked_up_by_the_dispatcher(hook: Hook) -> None:
    async with Notifier(webhook_config(hook.url, "chat"), FixedClock(AS_OF), tick=5) as notifier:
        await asyncio.to_thread(notifier.submit, [alert("a")], [])
        await asyncio.wait_for(hook.got.wait(), 10)  # woken by the submit, not the 5 s tick
    assert hook.received[0]["text"].startswith("[FIRING:1]")
