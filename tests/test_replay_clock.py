"""A console opened on a demo's store follows the demo's replay clock; a live store, the wall's."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from textual.widgets import Static

from console.cli import build_console, console_clock
from store.clock import ReplayClock, SystemClock
from store.replay_clock import load_replay_clock, record_replay_clock
from store.risk import MetricParams
from tests.builders import T0, at, order
from tests.conftest import write
from tests.test_console import settle, static_text


async def test_a_recorded_replay_clock_is_followed_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    await write(db, [order("o1", at(-1), [("A", 1)], loc="S1")])
    assert load_replay_clock(db) is None  # a store nobody replays: live
    clock, title = console_clock(db)
    assert isinstance(clock, SystemClock) and title == "omniops"

    # the demo started its clock 30 wall seconds ago at 60x: 30 simulated minutes have passed
    demo = ReplayClock(T0, speed=60, wall_epoch=time.time() - 30)
    record_replay_clock(db, demo)
    followed, title = console_clock(db)
    assert isinstance(followed, ReplayClock) and followed.speed == 60
    drift = abs((followed.now() - demo.now()).total_seconds())
    assert drift < 60  # the two processes tell the same simulated time (to a wall second)
    assert T0 + timedelta(minutes=29) < followed.now() < T0 + timedelta(minutes=35)
    assert "demo replay clock ×60" in title


async def test_the_console_on_a_demo_store_runs_on_its_clock_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    await write(db, [order("o1", at(-1), [("A", 1)], loc="S1")])
    record_replay_clock(db, ReplayClock(T0, speed=60))
    clock, title = console_clock(db)
    app, close = build_console(db, clock, MetricParams(timezone="UTC"), 60, title)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            top = static_text(app.query_one("#topbar", Static))
            assert "demo replay clock ×60" in top
            shown = app.clock.now()
            assert abs((shown - T0).total_seconds()) < 600  # the replay's day, not today's
    finally:
        close()
