"""The writer process evaluates the rules file's alerts on the panels' snapshots."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from feeds.runtime.alerting import RulesRuntime, alert_loop
from store.clock import FixedClock
from store.risk import MetricParams
from tests.builders import T0, at, location, order
from tests.conftest import write

RULES = """
# one rule: any late order at a location fires at once
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 0
for = "0s"
severity = "critical"
description = "Orders past their promise"
"""


async def test_alert_loop_fires_on_a_late_order_and_follows_rule_edits(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await write(
        db, [location("WH1", kind="warehouse"), order("late", at(-3), [("A", 1)], promised=at(-1))]
    )
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES, encoding="utf-8")
    runtime = RulesRuntime(rules_path)
    runtime.start()
    await runtime.watcher.watching.wait()
    stop = asyncio.Event()
    loop = asyncio.create_task(
        alert_loop(
            db, runtime, FixedClock(T0), MetricParams(timezone="America/New_York"), 0.05, stop=stop
        )
    )

    def states() -> list[tuple[str, str, str]]:
        conn = sqlite3.connect(db)
        try:
            return conn.execute("SELECT rule_id, scope, state FROM alerts").fetchall()
        finally:
            conn.close()

    async def until(check: object, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():  # type: ignore[operator]
            assert time.monotonic() < deadline, states()
            await asyncio.sleep(0.05)

    try:
        await until(lambda: [(r, st) for r, _, st in states()] == [("late_orders", "firing")])
        assert "WH1" in states()[0][1]
        # raise the threshold in the file: the running loop picks it up and resolves
        rules_path.write_text(RULES.replace("threshold = 0", "threshold = 5"), encoding="utf-8")
        await until(lambda: all(st == "resolved" for _, _, st in states()))
    finally:
        stop.set()
        await loop
        await runtime.stop()
