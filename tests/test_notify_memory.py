"""The notifier's memory of its alert groups survives a restart: a group already announced
is neither announced again nor made to wait its ``group_wait`` again, a change is still
sent, an alert that resolved while nothing was watching is sent resolved once, and a
group none of whose alerts came back is forgotten.  Pure dispatcher cases, then a real
store file and a real aiohttp receiver on 127.0.0.1 across two notifier processes' worth
of lifetimes."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rules.notify import Dispatcher, Notifier, NotifyConfig
from rules.receivers import NotifyAlert
from store import outbox as outbox_store
from store.clock import FixedClock
from store.outbox import GroupMemory, Outbox
from tests.snapshot_factory import AS_OF
from tests.test_notify import Hook
from tests.test_notify import alert as notify_alert

CONFIG = NotifyConfig.model_validate(
    {
        "route": {
            "group_by": ["alertname"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        }
    }
)


def alert(fp: str, state: str = "firing", **labels: str) -> NotifyAlert:
    """An alert of rule ``late`` in ``state`` (``nodata`` fires too)."""
    status = "resolved" if state == "resolved" else "firing"
    return dataclasses.replace(notify_alert(fp, status, **labels), state=state)


def announced(t_sent: timedelta = timedelta(0)) -> tuple[Dispatcher, dict[str, Any]]:
    """A first process's dispatcher that announced group ``late`` with a and b."""
    first = Dispatcher(CONFIG)
    first.update([alert("a"), alert("b")], [], AS_OF)
    sent = first.due(AS_OF + timedelta(seconds=30) + t_sent)
    assert [sorted(a.fingerprint for a in n.alerts) for n in sent] == [["a", "b"]]
    return first, first.take_changes()


def test_a_restarted_dispatcher_does_not_announce_a_known_group_again() -> None:
    _, changes = announced()
    (memory,) = changes.values()
    assert isinstance(memory, GroupMemory)
    assert memory.notified == {"a": "firing", "b": "firing"}
    assert memory.last_sent_at == AS_OF + timedelta(seconds=30)

    second = Dispatcher(CONFIG)
    second.restore([memory])
    later = AS_OF + timedelta(hours=1)
    second.update([alert("a"), alert("b")], [], later)
    # no group_wait again, no "changed": quiet ...
    assert second.due(later) == []
    assert second.due(later + timedelta(minutes=30)) == []
    # ... until the repeat interval, counted from the first process's notification
    repeat = second.due(AS_OF + timedelta(seconds=30, hours=4))
    assert [sorted(a.fingerprint for a in n.alerts) for n in repeat] == [["a", "b"]]


def test_without_the_memory_the_group_is_announced_again() -> None:
    # The behaviour the memory removes, so the case above can fail.
    second = Dispatcher(CONFIG)
    later = AS_OF + timedelta(hours=1)
    second.update([alert("a"), alert("b")], [], later)
    assert len(second.due(later + timedelta(seconds=30))) == 1


def test_a_change_after_the_restart_is_sent_after_group_interval() -> None:
    _, changes = announced()
    second = Dispatcher(CONFIG)
    second.restore(m for m in changes.values() if m is not None)
    later = AS_OF + timedelta(minutes=2)
    second.update([alert("a"), alert("b"), alert("c")], [], later)
    # group_interval (5 min) counts from the first process's notification at +30 s
    assert second.due(later) == []
    sent = second.due(AS_OF + timedelta(minutes=5, seconds=30))
    assert [sorted(a.fingerprint for a in n.alerts) for n in sent] == [["a", "b", "c"]]


def test_a_state_change_of_a_known_alert_counts_as_a_change() -> None:
    _, changes = announced()
    second = Dispatcher(CONFIG)
    second.restore(m for m in changes.values() if m is not None)
    later = AS_OF + timedelta(hours=1)
    second.update([alert("a"), alert("b", "nodata")], [], later)
    assert len(second.due(later)) == 1


def test_resolved_while_down_is_sent_resolved_once_then_forgotten() -> None:
    _, changes = announced()
    second = Dispatcher(CONFIG)
    second.restore(m for m in changes.values() if m is not None)
    later = AS_OF + timedelta(hours=1)
    second.update([], [alert("a", "resolved"), alert("b", "resolved")], later)
    sent = second.due(later)
    assert [n.status for n in sent] == ["resolved"]
    assert sorted(a.fingerprint for a in sent[0].alerts) == ["a", "b"]
    forgotten = second.take_changes()
    assert list(forgotten) == list(changes) and all(v is None for v in forgotten.values())
    assert second.groups == {}
    assert second.due(later + timedelta(hours=5)) == []


def test_a_remembered_group_that_does_not_come_back_is_forgotten() -> None:
    _, changes = announced()
    (key,) = changes
    second = Dispatcher(CONFIG)
    second.restore(m for m in changes.values() if m is not None)
    second.update([alert("z", alertname="other")], [], AS_OF + timedelta(hours=1))
    assert second.take_changes() == {key: None}
    # a later resolution of its alerts has nothing to tell
    second.update([], [alert("a", "resolved")], AS_OF + timedelta(hours=2))
    assert [n.group_key for n in second.due(AS_OF + timedelta(hours=2))] != [key]


def test_the_memory_round_trips_through_the_store(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path / "s.db")
    try:
        memory = GroupMemory(
            "root:{alertname=late}",
            AS_OF,
            AS_OF + timedelta(seconds=30),
            {"b": "nodata", "a": "firing"},
        )
        outbox.run(lambda db: outbox_store.save_groups(db, {memory.key: memory}))
        assert outbox.run(outbox_store.load_groups) == [memory]
        moved = GroupMemory(memory.key, AS_OF, AS_OF + timedelta(hours=1), {"a": "firing"})
        outbox.run(lambda db: outbox_store.save_groups(db, {memory.key: moved}))
        assert outbox.run(outbox_store.load_groups) == [moved]
        outbox.run(lambda db: outbox_store.save_groups(db, {memory.key: None}))
        assert outbox.run(outbox_store.load_groups) == []
    finally:
        outbox.close()


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    """The webhook receiver of tests/test_notify.py, on 127.0.0.1."""
    h = Hook()
    await h.start()
    yield h
    await h.stop()


def hook_config(url: str) -> NotifyConfig:
    return NotifyConfig.model_validate(
        {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname"],
                "group_wait": "0s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            },
            "receivers": [{"name": "hook", "type": "webhook", "url": url, "timeout": "2s"}],
        }
    )


async def run_once(
    db: Path,
    config: NotifyConfig,
    clock: FixedClock,
    firing: list[NotifyAlert],
    resolved: list[NotifyAlert],
) -> int:
    """One notifier lifetime on the store ``db``: submit, process, deliver, stop.  Returns
    how many notifications it enqueued."""
    outbox = await asyncio.to_thread(Outbox.open, db)
    try:
        async with Notifier(config, clock, tick=0.05, outbox=outbox) as notifier:
            notifier.submit(firing, resolved)
            queued = await notifier.flush()
            await notifier.wait_delivered(timeout=15)
    finally:
        outbox.close()
    return len(queued)


async def test_a_restarted_notifier_on_the_same_store_stays_quiet_then_resolves(
    tmp_path: Path, hook: Hook
) -> None:
    db = tmp_path / "s.db"
    config = hook_config(hook.url)
    assert await run_once(db, config, FixedClock(AS_OF), [alert("a")], []) == 1
    assert len(hook.received) == 1
    with sqlite3.connect(db) as conn:
        (row,) = conn.execute("SELECT key, notified FROM notification_groups").fetchall()
    assert row[1] == '{"a": "firing"}'

    # A restart an hour later: the same alert still fires; nothing is sent again.
    assert await run_once(db, config, FixedClock(AS_OF + timedelta(hours=1)), [alert("a")], []) == 0
    assert len(hook.received) == 1
    # Another restart: it resolved meanwhile; the resolution is sent, once, and the
    # group's memory is gone.
    resolved = [alert("a", "resolved")]
    assert await run_once(db, config, FixedClock(AS_OF + timedelta(hours=2)), [], resolved) == 1
    assert [b["status"] for b in hook.received] == ["firing", "resolved"]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM notification_groups").fetchone() == (0,)
