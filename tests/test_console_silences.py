"""The silences view under Pilot, on a real alert store: list, what each one mutes, expire
early (operators and editors only), reachable by ``m`` and ``:silences``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from console.app import OmniopsApp
from console.screens.dialogs import ConfirmScreen
from console.screens.help import HelpScreen
from console.screens.silences import SilencesScreen
from rules.alerts.actions import AlertActions
from rules.alerts.silences import silence_views
from rules.engine import AlertEngine
from rules.file import load_rules
from rules.roles import Permissions
from store import alerts as store
from store.clock import FixedClock
from tests.snapshot_factory import AS_OF, TZ, build_snapshots
from tests.test_console import FakeCompute, settle

RULES = """\
[[alert]]
id = "late_orders"
metric = "fulfillment.late"
matchers = 'scope=location'
op = ">"
threshold = 0
for = "0s"
severity = "critical"
no_data = "ok"

[[alert]]
id = "late_carriers"
metric = "fulfillment.late"
matchers = 'scope=carrier'
op = ">"
threshold = 0
for = "0s"
severity = "warning"
no_data = "ok"

[notify.route]
receiver = "console"
"""


def make_store(tmp: Path) -> tuple[Path, FixedClock]:
    """A store whose engine evaluated the hand-made snapshots: late locations and carriers fire."""
    rules = tmp / "rules.toml"
    rules.write_text(RULES)
    db = tmp / "store.db"
    clock = FixedClock(AS_OF)
    engine = AlertEngine(load_rules(rules).rules, lambda: store.connect(db, create=True), clock)
    engine.evaluate(build_snapshots())
    engine.close()
    return db, clock


def console(db: Path, clock: FixedClock, role: str) -> tuple[OmniopsApp, AlertActions]:
    """The console with a silences view over ``db`` for erin in ``role``."""
    permissions = Permissions("erin", role)  # type: ignore[arg-type]
    actions = AlertActions(lambda: store.connect(db), clock, permissions)
    app = OmniopsApp(
        compute=FakeCompute(),
        clock=clock,
        tz=TZ,
        refresh_interval=60,
        views={
            "silences": lambda app: SilencesScreen(
                source=actions, clock=clock, tz=TZ, poll_seconds=0
            )
        },
    )
    return app, actions


async def loaded(pilot: Pilot[Any], loads: int = 1) -> SilencesScreen:
    for _ in range(20):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        screen = pilot.app.screen
        if isinstance(screen, SilencesScreen) and screen.loads >= loads:
            return screen
    raise AssertionError(f"the silences view did not load: {pilot.app.screen}")


def test_silence_views_list_what_each_silence_mutes(tmp_path: Path) -> None:
    db, clock = make_store(tmp_path)
    conn = store.connect(db)
    try:
        records = store.list_alerts(conn)
        now = clock.now()
        wide = store.add_silence(
            conn, "alertname=~late_.*", by="olga", at=now, ends_at=now + timedelta(hours=3)
        )
        narrow = store.add_silence(
            conn, "carrier=UPS", by="erin", at=now, ends_at=now + timedelta(hours=1)
        )
        ended = store.add_silence(
            conn, "alertname=late_orders", by="erin", at=now, ends_at=now + timedelta(hours=2)
        )
        store.expire_silence(conn, ended.id, by="erin", at=now)
        views = silence_views(store.list_silences(conn, now, include_ended=True), records, now)
    finally:
        conn.close()
    firing = {r.fingerprint for r in records if r.active}
    assert len(firing) >= 2  # WH-TX (location) and UPS (carrier) are late
    # Ending soonest first; the expired one is not in force.
    assert [v.silence.id for v in views] == [narrow.id, wide.id]
    assert {r.fingerprint for r in views[1].mutes} == firing
    assert [r.labels.get("carrier") for r in views[0].mutes] == ["UPS"]


async def test_silences_view_lists_shows_mutes_and_expires_early(tmp_path: Path) -> None:
    db, clock = make_store(tmp_path)
    app, actions = console(db, clock, "operator")
    storm = actions.silence("alertname=late_orders", timedelta(hours=2), "WMS outage, on it")
    idle = actions.silence("location=NOWHERE", timedelta(hours=1))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("m")
            screen = await loaded(pilot)
            table = screen.table
            # Ending soonest first: the idle one (1 h), then the storm (2 h).
            assert [str(r.key.value) for r in table.ordered_rows] == [str(idle.id), str(storm.id)]
            assert table.get_cell(str(storm.id), "by").plain == "erin"
            assert table.get_cell(str(storm.id), "comment").plain == "WMS outage, on it"
            assert table.get_cell(str(storm.id), "until").plain == "16:30 (in 2h00)"  # 14:30 + 2 h
            assert table.get_cell(str(idle.id), "mutes").plain == "0"
            assert "mutes no active alert" in screen.mutes_shown
            # What the storm silence mutes: every late location, by where it is.
            muted = next(v for v in screen.views if v.silence.id == storm.id).mutes
            assert muted and all(r.rule_id == "late_orders" for r in muted)
            await pilot.press("down")
            await pilot.pause()
            shown = screen.mutes_shown
            assert f"#{storm.id} alertname=late_orders" in shown
            assert f"mutes {len(muted)} active alert" in shown and "WH-TX" in shown
            assert "FIRING" in shown and "9 > 0" in shown
            assert table.get_cell(str(storm.id), "mutes").plain == str(len(muted))
            # Expire it early: asked first; "n" keeps it.
            await pilot.press("x")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            await pilot.pause()
            assert storm.id in {s.id for s in actions.silences()}
            await pilot.press("x")
            await pilot.pause()
            await pilot.press("y")
            screen = await loaded(pilot, loads=2)
            assert storm.id not in {s.id for s in actions.silences()}
            assert [str(r.key.value) for r in screen.table.ordered_rows] == [str(idle.id)]
            conn = store.connect(db)
            try:
                ended = next(
                    s
                    for s in store.list_silences(conn, clock.now(), include_ended=True)
                    if s.id == storm.id
                )
            finally:
                conn.close()
            assert ended.expired_by == "erin"
            await pilot.press("escape")
            await pilot.pause()
            assert app.screen is app.main_screen
    finally:
        actions.close()


async def test_a_viewer_sees_silences_but_cannot_expire_them(tmp_path: Path) -> None:
    db, clock = make_store(tmp_path)
    app, actions = console(db, clock, "viewer")
    conn = store.connect(db)
    now = clock.now()
    kept = store.add_silence(
        conn, "alertname=late_orders", by="olga", at=now, ends_at=now + timedelta(hours=1)
    )
    conn.close()
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("colon", *"silences", "enter")
            screen = await loaded(pilot)
            assert screen.table.row_count == 1
            await pilot.press("x")
            await pilot.pause()
            assert app.screen is screen  # no question asked
            assert screen.status_text.startswith("NOT ALLOWED: erin is a viewer")
            assert kept.id in {s.id for s in actions.silences()}
    finally:
        actions.close()


async def test_silences_are_in_help_completion_and_the_footer(tmp_path: Path) -> None:
    db, clock = make_store(tmp_path)
    app, actions = console(db, clock, "operator")
    try:
        async with app.run_test(size=(200, 60)) as pilot:
            await settle(pilot)
            assert "silences" in app.main_screen.completions("sil")
            shown = {str(getattr(k, "description", "")) for k in app.screen.query("FooterKey")}
            assert "Silences" in shown
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            assert any(r.description == "Silences" and r.keys == "m" for r in app.screen.rows)
            await pilot.press("escape", "m")
            screen = await loaded(pilot)
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            assert any(r.description == "Expire now" for r in app.screen.rows)
            assert screen is not app.screen
    finally:
        actions.close()
