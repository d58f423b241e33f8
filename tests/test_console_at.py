"""``:at TIME`` on a store of the fixture day: the console looks at a past moment of the
same store (the panels show that moment's figures, the top bar says so), and ``:at now``
returns to live.  The store is a slice of the fixture day's history (as in test_asof)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from console.cli import build_console
from console.screens.command import CommandScreen
from console.screens.main import at_completions, parse_at
from store.clock import FixedClock
from store.metrics import compute_snapshots, open_reader
from store.risk import MetricParams
from store.snapshots import Snapshots
from tests.test_asof import SLICE_END
from tests.test_console import panel, settle, static_text

NY = ZoneInfo("America/New_York")
PARAMS = MetricParams(timezone="America/New_York")
LIVE = datetime.fromisoformat(SLICE_END.replace("Z", "+00:00"))  # 12:00 in New York


@pytest.fixture
def day_store(day_slice_store: Path) -> Path:
    """The fixture day's first day and a half (built once for the session in conftest)."""
    return day_slice_store


def report_at(db: Path, moment: datetime) -> Snapshots:
    reader = open_reader(db)
    try:
        return compute_snapshots(reader, moment, PARAMS)
    finally:
        reader.close()


def test_parse_at_reads_local_times_dates_and_now() -> None:
    now = LIVE
    assert parse_at("now", now, NY) is None and parse_at("live", now, NY) is None
    # 09:00 today in New York (EDT, -4) is 13:00 UTC.
    assert parse_at("09:00", now, NY) == datetime(2026, 10, 22, 13, 0, tzinfo=UTC)
    assert parse_at("2026-10-21T15:30", now, NY) == datetime(2026, 10, 21, 19, 30, tzinfo=UTC)
    assert parse_at("2026-10-21T15:30Z", now, NY) == datetime(2026, 10, 21, 15, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="after now"):
        parse_at("13:00", now, NY)
    with pytest.raises(ValueError, match="not a time"):
        parse_at("teatime", now, NY)
    assert at_completions(now, NY)[:3] == ["now", "12:00", "11:00"]


def fulfillment_title(app: Any) -> str:
    return static_text(panel(app, "fulfillment-panel").query_one(".panel-title"))  # type: ignore[arg-type]


async def test_at_shows_the_moments_figures_and_now_returns_to_live(day_store: Path) -> None:
    app, close = build_console(day_store, FixedClock(LIVE), PARAMS, 60.0, tz=NY)
    past = datetime(2026, 10, 22, 13, 0, tzinfo=UTC)  # 09:00 in New York
    then, live = report_at(day_store, past), report_at(day_store, LIVE)
    # The moment differs from live in what the panels count (else the test proves nothing).
    assert (then.fulfillment.total_open, then.stockout.total_out) != (
        live.fulfillment.total_open,
        live.stockout.total_out,
    )
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            assert f"{live.fulfillment.total_open:,} open" in fulfillment_title(app)
            await pilot.press("colon", "a", "t", "space")
            await pilot.pause()
            command = app.screen
            assert isinstance(command, CommandScreen)
            assert command.candidates_text.split("  ")[:2] == ["at now", "at 12:00"]
            await pilot.press(*"09:00", "enter")
            await settle(pilot)
            assert app.viewing_at == past
            assert app.snapshots is not None and app.snapshots.as_of == past
            top = static_text(app.main_screen.query_one("#topbar"))  # type: ignore[arg-type]
            assert "AS OF Thu 22 Oct 09:00 EDT" in top and ":at now" in top
            assert f"{then.fulfillment.total_open:,} open" in fulfillment_title(app)
            stock = static_text(panel(app, "stockout-panel").query_one(".panel-title"))  # type: ignore[arg-type]
            assert f"{then.stockout.total_out:,} OUT" in stock
            # Each row shown is the moment's row, figure for figure.
            rows = {f"{r.scope}:{r.key}": r for r in then.fulfillment.rows}
            for view in panel(app, "fulfillment-panel").views():
                assert view.source == rows[view.key]
            # A date with its own zone, then back to live.
            await pilot.press("colon", *"at 2026-10-21T15:30Z", "enter")
            await settle(pilot)
            assert app.snapshots.as_of == datetime(2026, 10, 21, 15, 30, tzinfo=UTC)
            await pilot.press("colon", *"at 13:00", "enter")
            await settle(pilot)
            assert "NOT MOVED" in app.status_text and "after now" in app.status_text
            assert app.viewing_at == datetime(2026, 10, 21, 15, 30, tzinfo=UTC)
            await pilot.press("colon", *"at now", "enter")
            await settle(pilot)
            assert app.viewing_at is None and app.snapshots.as_of == LIVE
            top = static_text(app.main_screen.query_one("#topbar"))  # type: ignore[arg-type]
            assert "AS OF" not in top
            assert f"{live.fulfillment.total_open:,} open" in fulfillment_title(app)
    finally:
        close()
