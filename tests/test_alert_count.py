"""The top bar's count of the alerts paging now: what counts, and what the operator sees.

Real alert engine and store (SQLite file), the real console app driven by Pilot.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

from textual.pilot import Pilot

from console.app import OmniopsApp
from console.widgets.bars import TextBar, top_bar_content
from rules.alerts.actions import AlertActions, AlertCount, Paging
from rules.engine import AlertEngine
from rules.file import load_rules
from rules.roles import Permissions
from store import alerts as store
from store.clock import FixedClock
from tests.snapshot_factory import AS_OF, build_snapshots

RULES = """\
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 5
for = "0s"
severity = "critical"
no_data = "ok"

[[alert]]
id = "late_parcels"
metric = "fulfillment.late"
matchers = 'scope=carrier'
op = ">"
threshold = 4
for = "0s"
severity = "warning"
no_data = "ok"

[notify.route]
receiver = "console"
"""
SNAP = build_snapshots()  # WH-TX 9 late orders, UPS 5 late parcels, every other node 0


def alerting_store(tmp: Path) -> AlertActions:
    """A store whose alerts the two rules above evaluated on the hand-made snapshots."""
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    db = tmp / "store.db"

    def connect() -> sqlite3.Connection:
        return store.connect(db, create=True)

    clock = FixedClock(AS_OF)
    AlertEngine(load_rules(rules).rules, connect, clock).evaluate(SNAP)
    return AlertActions(connect, clock, Permissions("erin", "operator", False))


def test_the_count_is_the_alerts_that_notify(tmp_path: Path) -> None:
    actions = alerting_store(tmp_path)
    # By hand: late > 5 at a location (WH-TX, critical), late > 4 at a carrier (UPS).
    rows = SNAP.fulfillment.rows
    critical = sum(1 for r in rows if r.scope == "location" and r.late > 5)
    warning = sum(1 for r in rows if r.scope == "carrier" and r.late > 4)
    assert (critical, warning) == (1, 1)
    assert actions.count() == AlertCount(firing=2, critical=1, acknowledged=0)

    wh_tx = next(v for v in actions.alerts() if v.record.rule_id == "late_orders")
    actions.acknowledge(wh_tx.record.fingerprint, "on it")
    assert actions.count() == AlertCount(firing=2, critical=1, acknowledged=1)

    # A silenced alert does not notify: it leaves the count (acknowledged or not).
    actions.silence("alertname=late_orders", timedelta(hours=1))
    assert actions.count() == AlertCount(firing=1, critical=0, acknowledged=0)
    actions.silence("alertname=late_parcels", timedelta(hours=1))
    assert actions.count() == AlertCount(firing=0, critical=0, acknowledged=0)


def bar(width: int | None, **extra: object) -> str:
    return top_bar_content(
        title="omniops demo",
        now=AS_OF,
        tz=UTC,
        snapshots=SNAP,
        data_age=600.0,  # ten minutes without a refresh: STALE
        refresh_interval=60,
        width=width,
        **extra,  # type: ignore[arg-type]
    ).plain


def test_the_bar_keeps_the_count_and_stale_at_80_columns() -> None:
    count = AlertCount(firing=3, critical=2, acknowledged=1)
    full = bar(None, alerts=count)
    assert full.startswith("omniops demo │ 3 FIRING 2 critical · 1 acked (a) │ ")
    assert full.endswith("│ STALE no refresh for 10m")
    assert len(full) > 78
    narrow = bar(78, alerts=count)  # an 80-column terminal less the bar's padding
    assert len(narrow) <= 78
    assert "3 FIRING 2 crit" in narrow
    assert "STALE 10m" in narrow
    assert "data " in narrow
    # Looking at a past moment keeps saying so, in fewer words.
    past = bar(78, alerts=count, looking_at=AS_OF - timedelta(hours=2))
    assert len(past) <= 78
    assert "AS OF" in past and "STALE" in past and "3 FIRING" in past
    # Nothing paging: no count at all; unreadable: said.
    assert "FIRING" not in bar(None, alerts=AlertCount(0, 0, 0))
    assert "alerts ?" in bar(None, alerts_unknown=True)
    assert "│ 3 FIRING 2 critical · 1 acked ? │" in bar(None, alerts=count, alerts_unknown=True)
    every = bar(None, alerts=AlertCount(firing=2, critical=0, acknowledged=2))
    assert "2 FIRING · all acked" in every


def top_bar(app: OmniopsApp) -> str:
    return app.main_screen.query_one("#topbar", TextBar).content.plain


async def until(pilot: Pilot[None], check: Callable[[], bool]) -> None:
    for _ in range(200):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        if check():
            return
    raise AssertionError("never seen")


async def test_the_console_shows_the_count_after_a_refresh_and_after_a_view(
    tmp_path: Path,
) -> None:
    actions = alerting_store(tmp_path)
    failing = [False]

    def count() -> AlertCount:
        if failing[0]:
            raise sqlite3.OperationalError("database is locked")
        return actions.count()

    app = OmniopsApp(
        compute=lambda: SNAP,
        clock=FixedClock(AS_OF + timedelta(seconds=5)),
        tz=UTC,
        alert_count=count,
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "2 FIRING" in top_bar(app))
        assert "2 FIRING 1 crit" in top_bar(app)

        # Acknowledged elsewhere (the alerts view, another console): the next refresh says so.
        wh_tx = next(v for v in actions.alerts() if v.record.rule_id == "late_orders")
        actions.acknowledge(wh_tx.record.fingerprint)
        await pilot.press("r")
        await until(pilot, lambda: "1 acked" in top_bar(app))

        # Silenced from a view: back on the console the count is read again at once.
        actions.silence("alertname=late_parcels", timedelta(hours=1))
        await pilot.press("question_mark")
        await pilot.pause()
        assert app.screen is not app.main_screen
        await pilot.press("escape")
        await until(pilot, lambda: "1 FIRING 1 crit · 1 acked" in top_bar(app))

        # Nothing was announced so far: those paging at the start are counted, not
        # announced, and fewer paging is no news.
        assert not [n for n in app._notifications if "firing at" in n.message]

        # The silence ends: late_parcels pages again, and the console says which one.
        silence = next(s for s in actions.silences() if "late_parcels" in s.matchers)
        actions.expire_silence(silence.id)
        await pilot.press("r")
        await until(pilot, lambda: "2 FIRING" in top_bar(app))
        announced = [n for n in app._notifications if "firing at" in n.message]
        assert [(n.message, n.severity) for n in announced] == [
            ("late_parcels firing at UPS", "warning")
        ]

        failing[0] = True
        await pilot.press("r")
        # The last count read stays, in doubt: "2 FIRING 1 crit · 1 acked ?".
        await until(pilot, lambda: top_bar(app).split(" │ ")[1].endswith(" ?"))
        assert top_bar(app).split(" │ ")[1].startswith("2 FIRING")


async def test_a_storm_of_alerts_is_one_notification_three_named_and_the_rest_counted() -> None:
    def paging(n: int) -> Paging:
        scope = f"location=WH-{n}, scope=location"
        return Paging(f"late_orders|{scope}", "late_orders", scope, "critical", "firing")

    app = OmniopsApp(compute=lambda: SNAP, clock=FixedClock(AS_OF), tz=UTC)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.pause()
        one = AlertCount(1, 1, 0, (paging(0),))
        six = AlertCount(6, 6, 0, tuple(paging(n) for n in range(6)))
        app._announce(one, six)
        await pilot.pause()
        said = [(n.title, n.message, n.severity) for n in app._notifications]
        assert said == [
            (
                "5 alerts started paging",
                "late_orders firing at WH-1\nlate_orders firing at WH-2\n"
                "late_orders firing at WH-3\n2 more alerts started paging: a lists them all",
                "error",
            )
        ]
        # At 80×24 the one toast leaves most of the panels in view.
        await until(pilot, lambda: len(app.screen.query("Toast")) == 1)
        toast = app.screen.query_one("Toast")
        assert 4 <= toast.region.height <= 8, toast.region
        # None started since: nothing more is said.
        app._announce(six, six)
        await pilot.pause()
        assert len(app._notifications) == 1
