"""The console on a real store: it shows exactly what ``omniops report --json`` reports."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from textual.widgets import Input, Static

from console.app import OmniopsApp
from console.cli import report
from console.widgets.formatting import fmt_int, fmt_rate
from store.clock import FixedClock
from store.metrics import compute_snapshots, open_reader
from store.model import Event
from store.risk import MetricParams
from store.snapshots import to_jsonable
from tests.builders import T0, at, ev, iso, location, order, ret, sku, snapshot, step
from tests.conftest import write
from tests.test_console import cell_text, row_keys, settle

PARAMS = MetricParams(timezone="America/New_York")


async def scenario(db: Path) -> None:
    events = [
        sku("A", lead=10),
        sku("B"),
        location("S1", buffer=1),
        location("WH1", kind="warehouse"),
    ]
    events += [snapshot("A", "S1", 6, at(-3)), snapshot("B", "WH1", 0, at(-3))]
    events += [
        order(f"o{n}", at(-20 + n), [("A", 1)], loc="S1", channel="pos", method="bopis")
        for n in range(6)
    ]
    events += [
        order("late", at(-3), [("B", 1)], promised=at(-1)),
        order("soon", at(-1), [("B", 1)], promised=at(1)),
        order("done", at(-5), [("B", 1)], promised=at(-2)),
        step("done", "shipped", at(-2.5), carrier="UPS"),
    ]
    events += [order("hist", at(-24 * 10), [("A", 100)], loc="S1"), ret("A", 2, at(-24 * 10))]
    events += [ret("A", 6, at(-2), reason="defective", loc="S1")]
    await write(db, events)


async def test_console_and_report_show_the_same_numbers(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await scenario(db)
    clock = FixedClock(T0)
    reader = open_reader(db)
    app = OmniopsApp(
        compute=lambda: compute_snapshots(reader, clock.now(), PARAMS),
        clock=clock,
        tz=ZoneInfo("America/New_York"),
        refresh_interval=60,
    )
    reported = json.loads(json.dumps(to_jsonable(report(db, T0, PARAMS))))
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            ful = reported["fulfillment"]["rows"]
            assert row_keys(app, "fulfillment-panel") == [f"{r['scope']}:{r['key']}" for r in ful]
            for r in ful:
                key = f"{r['scope']}:{r['key']}"
                assert cell_text(app, "fulfillment-panel", key, "status") == r["status"]
                assert cell_text(app, "fulfillment-panel", key, "open") == fmt_int(r["open_orders"])
                assert cell_text(app, "fulfillment-panel", key, "late") == fmt_int(r["late"])
                assert cell_text(app, "fulfillment-panel", key, "on_time") == fmt_rate(
                    r["on_time_rate"]
                )
            stock = reported["stockout"]["rows"]
            assert {r["status"] for r in stock} == {"OUT", "AT RISK"}
            assert row_keys(app, "stockout-panel") == [
                f"{r['sku']}@{r['location_id']}" for r in stock
            ]
            for r in stock:
                key = f"{r['sku']}@{r['location_id']}"
                assert cell_text(app, "stockout-panel", key, "status") == r["status"]
                assert cell_text(app, "stockout-panel", key, "available") == fmt_int(r["available"])
            spikes = reported["returns"]["rows"]
            assert [r["sku"] for r in spikes] == row_keys(app, "returns-panel") == ["A"]
            assert spikes[0]["spike"] and cell_text(app, "returns-panel", "A", "spike") == "SPIKE"
    finally:
        reader.close()


async def test_details_bring_stock_history_and_late_orders(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from console.cli import build_console
    from console.screens import DetailScreen, StockChart
    from tests.test_console import panel

    db = tmp_path / "s.db"
    await scenario(db)
    app, close = build_console(db, FixedClock(T0), PARAMS, 60.0, tz=ZoneInfo("America/New_York"))
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("3")  # the Stock tab
            await pilot.pause()
            table = panel(app, "stockout-panel").table
            table.focus()
            table.move_cursor(row=table.get_row_index("A@S1"))
            await pilot.press("enter")
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, DetailScreen)
            await app.workers.wait_for_complete()
            await pilot.pause()
            chart = screen.query_one("#stock-chart", StockChart)
            assert chart.history is not None
            # hand count: 6 on hand now; the six pos sales were not adjusted in this store
            assert chart.history.on_hand_end[-1] == 6
            # 14 local days, oldest first: the 100-unit order ten days ago, o0..o5 yesterday
            assert chart.history.sold == (0, 0, 0, 100) + (0,) * 8 + (6, 0)
            await pilot.press("escape")
            await pilot.press("2")  # Fulfillment
            await pilot.pause()
            table = panel(app, "fulfillment-panel").table
            table.focus()
            table.move_cursor(row=table.get_row_index("location:WH1"))
            await pilot.press("enter")
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            late = app.screen.query_one("#late-orders", DataTable)
            assert [str(r.key.value) for r in late.ordered_rows] == ["late"]
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, DetailScreen)
    finally:
        close()


async def test_alerts_rules_and_routing_views_open_from_the_console(tmp_path: Path) -> None:
    from console.cli import build_console
    from console.screens.alerts import AlertsScreen
    from console.screens.routing import RoutingScreen
    from console.screens.rules import RulesScreen
    from rules.roles import Roles

    db = tmp_path / "s.db"
    await scenario(db)
    rules = tmp_path / "rules.toml"
    app, close = build_console(
        db,
        FixedClock(T0),
        PARAMS,
        60.0,
        tz=ZoneInfo("UTC"),
        rules_path=rules,
        roles=Roles(default_role="editor"),
    )
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert rules.exists()  # the shipped defaults were written on first use
            for key, screen in (("a", AlertsScreen), ("t", RulesScreen), ("g", RoutingScreen)):
                await pilot.press(key)
                await pilot.pause()
                assert isinstance(app.screen, screen), key
                await pilot.press("escape")
                await pilot.pause()
                assert app.screen is app.main_screen
    finally:
        close()


def test_feeds_line_names_unhealthy_adapters() -> None:
    from datetime import UTC, datetime

    from console.widgets.bars import feed_content
    from store.snapshots import FeedHealthRow

    def row(feed: str, state: str, silent: bool = False) -> FeedHealthRow:
        now = datetime(2026, 11, 18, tzinfo=UTC)
        return FeedHealthRow(feed, "stream", state, "", 0.0, 0, 0, None, now, silent)

    text = feed_content(
        (),
        ZoneInfo("UTC"),
        adapters=[
            row("stream:wms", "retrying"),
            row("webhook:shopify", "connected"),
            row("poll:erp", "connected", silent=True),
        ],
    ).plain
    assert "stream:wms RETRYING" in text and "poll:erp SILENT" in text
    assert "shopify" not in text


async def test_feeds_view_opens_with_h(tmp_path: Path) -> None:
    from console.cli import build_console
    from console.screens import FeedsScreen

    db = tmp_path / "s.db"
    await scenario(db)
    app, close = build_console(
        db, FixedClock(T0), PARAMS, 60.0, tz=ZoneInfo("UTC"), rules_path=tmp_path / "rules.toml"
    )
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            await pilot.press("h")
            await pilot.pause()
            assert isinstance(app.screen, FeedsScreen)
            from textual.widgets import DataTable

            sources = app.screen.query_one("#feed-sources", DataTable)
            assert {str(r.key.value) for r in sources.ordered_rows} >= {"webshop", "pos"}
    finally:
        close()


def test_past_times_read_as_times_not_now() -> None:
    from datetime import UTC, datetime

    from console.widgets.formatting import fmt_past

    now = datetime(2026, 11, 18, 15, tzinfo=UTC)
    utc = ZoneInfo("UTC")
    assert fmt_past(datetime(2026, 11, 18, 4, tzinfo=UTC), utc, now) == "04:00"
    assert fmt_past(datetime(2026, 11, 17, 4, tzinfo=UTC), utc, now) == "Tue 04:00"
    assert fmt_past(datetime(2026, 10, 21, 4, tzinfo=UTC), utc, now) == "Oct 21"


async def test_export_writes_the_rows_shown_as_csv_and_json(tmp_path: Path) -> None:
    import csv

    from store.export import export_panel

    db = tmp_path / "s.db"
    await scenario(db)
    snaps = report(db, T0, PARAMS)
    shown = [r for r in snaps.fulfillment.rows if r.scope == "location"]  # a filter
    out = export_panel(snaps, "fulfillment", "csv", tmp_path / "f.csv", rows=shown)
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["key"] for r in rows] == [r.key for r in shown]
    assert rows[0]["late"] == str(shown[0].late)
    data = json.loads(export_panel(snaps, "returns", "json", tmp_path / "r.json").read_text())
    assert data["panel"] == "returns" and data["rows"][0]["sku"] == "A"
    assert data["rows"][0]["top_reasons"] == "defective (6)"
    # A typo in the folder is an error naming it; no folder is created.
    with pytest.raises(FileNotFoundError, match=r"folder .*nonexistent does not exist"):
        export_panel(snaps, "returns", "csv", tmp_path / "nonexistent" / "r.csv")
    assert not (tmp_path / "nonexistent").exists()


async def test_the_first_snapshots_computed_at_build_reach_every_tab(tmp_path: Path) -> None:
    """The first refresh takes the snapshots computed while the console loaded (issue 15).

    The hidden tabs get them after the first paint: shown by their keys, their tables hold
    the store's numbers, and ``:`` commands aimed at a tab not yet shown filter and sort it.
    """
    from console.cli import build_console
    from tests.test_console import panel

    db = tmp_path / "s.db"
    await scenario(db)
    clock = FixedClock(T0)
    app, close = build_console(db, clock, PARAMS, 60.0, tz=ZoneInfo("America/New_York"))
    reported = json.loads(json.dumps(to_jsonable(report(db, T0, PARAMS))))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            assert app.snapshots is not None and app.snapshots.as_of == T0
            assert app.main_screen.has_class("-narrow") and not app.main_screen.has_class("-wide")
            await pilot.press("3")
            await pilot.pause()
            stock = [f"{r['sku']}@{r['location_id']}" for r in reported["stockout"]["rows"]]
            assert row_keys(app, "stockout-panel") == stock
            for r in reported["stockout"]["rows"]:
                key = f"{r['sku']}@{r['location_id']}"
                assert cell_text(app, "stockout-panel", key, "available") == fmt_int(r["available"])
            await pilot.press("4")
            await pilot.pause()
            assert row_keys(app, "returns-panel") == ["A"]
            assert cell_text(app, "returns-panel", "A", "spike") == "SPIKE"
            await pilot.press("1")
            await pilot.pause()
            assert app.main_screen.run_command("fulfillment scope=location")
            await pilot.pause()
            assert all(k.startswith("location:") for k in row_keys(app, "fulfillment-panel"))
            assert app.main_screen.run_command("sort open desc")
            await pilot.pause()
            assert panel(app, "fulfillment-panel").sort_column == "open"
    finally:
        close()


async def test_a_console_closed_before_it_ran_waits_for_its_first_snapshots(
    tmp_path: Path,
) -> None:
    """Closing a console never run joins the thread computing its first snapshots."""
    from console.cli import build_console

    db = tmp_path / "s.db"
    await scenario(db)
    _app, close = build_console(db, FixedClock(T0), PARAMS, 60.0, tz=ZoneInfo("America/New_York"))
    close()
    alive = [t for t in threading.enumerate() if t.name == "omniops-first-snapshots"]
    assert not alive


async def test_a_bad_config_file_leaves_no_first_snapshots_thread(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The settings are read after the first snapshots started: a bad file stops both."""
    import pytest

    from console.cli import build_console

    db = tmp_path / "s.db"
    await scenario(db)
    bad = tmp_path / "config.toml"
    bad.write_text("refresh_interval = [\n", encoding="utf-8")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(bad))
    with pytest.raises(ValueError, match=r"config\.toml"):
        build_console(db, FixedClock(T0), PARAMS, 60.0, tz=ZoneInfo("America/New_York"))
    assert not [t for t in threading.enumerate() if t.name == "omniops-first-snapshots"]


def promised(
    order_id: str, *, loc: str, channel: str, region: str, delivery: datetime | None
) -> Event:
    """An order placed 30 h before T0 (ship-by 8 h later) with a customer delivery date."""
    placed = at(-30)
    body: dict[str, object] = {
        "order_id": order_id,
        "channel": channel,
        "method": "ship",
        "destination_region": region,
        "location_id": loc,
        "promised_by": iso(placed + timedelta(hours=8)),
        "lines": [{"sku": "A", "quantity": 1, "unit_price": "10.00"}],
    }
    if delivery is not None:
        body["delivery_promised_by"] = iso(delivery)
    return ev("order.placed", placed, body, source=channel)


async def delivery_scenario(db: Path) -> None:
    """Deliveries against the customer's promise, by hand (now = T0):

    d1 WH1 webshop UPS NE       promised -2 h,  delivered -5 h: on time
    d2 WH1 webshop UPS NE       promised -10 h, delivered -3 h: late
    d3 WH1 webshop UPS NE       promised -1 h,  delivered -1 h: on time (same instant)
    d4 WH2 marketplace FedEx SP promised -6 h,  delivered -4 h: late
    d5 WH1 webshop UPS NE       no promise,     delivered -2 h: left out
    So WH1, webshop, UPS and NE are 1 late of 3 (33%); WH2, marketplace, FedEx, SP 1 of 1.
    """
    plan = [
        ("d1", "WH1", "webshop", "NE", at(-2), at(-5), "UPS"),
        ("d2", "WH1", "webshop", "NE", at(-10), at(-3), "UPS"),
        ("d3", "WH1", "webshop", "NE", at(-1), at(-1), "UPS"),
        ("d4", "WH2", "marketplace", "SP", at(-6), at(-4), "FedEx"),
        ("d5", "WH1", "webshop", "NE", None, at(-2), "UPS"),
    ]
    events: list[Event] = [sku("A"), location("WH1", kind="warehouse")]
    events.append(location("WH2", kind="warehouse"))
    for order_id, loc, channel, region, delivery, delivered, carrier in plan:
        events.append(
            promised(order_id, loc=loc, channel=channel, region=region, delivery=delivery)
        )
        events.append(step(order_id, "shipped", at(-28), carrier=carrier))
        events.append(step(order_id, "delivered", delivered))
    await write(db, events)


async def test_delivered_late_vs_promise_column_sorts_filters_exports_and_details(
    tmp_path: Path,
) -> None:
    import csv

    from console.cli import build_console
    from console.screens import DetailScreen, PromptScreen
    from tests.test_console import panel, static_text

    db = tmp_path / "s.db"
    await delivery_scenario(db)
    app, close = build_console(db, FixedClock(T0), PARAMS, 60.0, tz=ZoneInfo("America/New_York"))
    third = {"location:WH1", "channel:webshop", "carrier:UPS", "region:NE"}
    every = {"location:WH2", "channel:marketplace", "carrier:FedEx", "region:SP"}
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot)
            # Not in the compact overview (locations only, the phone layout too).
            overview = panel(app, "overview-fulfillment").table
            assert "delivered_late" not in {str(k.value) for k in overview.columns}
            await pilot.press("2")
            await pilot.pause()
            ful = panel(app, "fulfillment-panel")
            assert set(row_keys(app, "fulfillment-panel")) == third | every
            for key in third:
                assert cell_text(app, "fulfillment-panel", key, "delivered_late") == "33%", key
            for key in every:
                assert cell_text(app, "fulfillment-panel", key, "delivered_late") == "100%", key
            # At 80 columns the column is on screen without scrolling sideways.
            widths = [c.get_render_width(ful.table) for c in ful.table.ordered_columns]
            index = ful.table.get_column_index("delivered_late")
            assert sum(widths[: index + 1]) <= ful.table.size.width
            # Sortable: worst first by default, by its key or its header.
            assert app.main_screen.run_command("sort dlvlate")
            await pilot.pause()
            assert ful.sort_column == "delivered_late" and ful.sort_descending
            assert set(row_keys(app, "fulfillment-panel")[:4]) == every
            assert "DlvLate ▼" in [str(c.label) for c in ful.table.columns.values()]
            # Filterable: the destination-region rows, which carry only these figures.
            assert app.main_screen.apply_filter("fulfillment", "region=SP")
            await pilot.pause()
            assert row_keys(app, "fulfillment-panel") == ["region:SP"]
            assert app.main_screen.apply_filter("fulfillment", "scope=location")
            await pilot.pause()
            assert row_keys(app, "fulfillment-panel") == ["location:WH2", "location:WH1"]
            # Exported with the rows shown: the counts and the rate of both periods.
            await pilot.press("e")
            await pilot.pause()
            assert isinstance(app.screen, PromptScreen)
            out = tmp_path / "ful.csv"
            app.screen.query_one(Input).value = str(out)
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            with out.open(encoding="utf-8") as handle:
                rows = {r["key"]: r for r in csv.DictReader(handle)}
            assert list(rows) == ["WH2", "WH1"]
            wh1 = rows["WH1"]
            assert (wh1["delivered_late_24h"], wh1["promised_delivered_24h"]) == ("1", "3")
            assert wh1["delivered_late_rate_24h"] == "0.3333"  # the JSON rounding
            assert float(rows["WH2"]["delivered_late_rate_window"]) == 1.0
            # The detail of a row lists both figures with their counts.
            ful.table.focus()
            ful.table.move_cursor(row=ful.table.get_row_index("location:WH1"))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, DetailScreen)
            numbers = static_text(app.screen.query_one(".detail-numbers", Static))
            assert "Delivered late vs promise, 24 h  33.3%  (1 of 3 delivered)" in numbers
            assert "Delivered late vs promise, 7 d   33.3%  (1 of 3 delivered)" in numbers
    finally:
        close()


async def test_first_snapshots_are_taken_at_mount_only_once_computed(tmp_path: Path) -> None:
    """The console's first snapshots: handed over at mount if done, never waited for there."""
    from console.cli import FirstSnapshots

    db = tmp_path / "s.db"
    await scenario(db)
    reader = open_reader(db)
    lock = threading.Lock()
    gate = threading.Event()

    def compute(moment: datetime) -> Any:
        gate.wait(10)
        return compute_snapshots(reader, moment, PARAMS)

    try:
        first = FirstSnapshots(compute, FixedClock(T0), lock)
        assert first.take_ready() is None  # not started
        first.start()
        assert first.take_ready() is None  # still computing: the mount does not wait
        gate.set()
        first.join()
        taken = first.take_ready()
        assert taken is not None
        assert taken.as_of == T0
        assert (
            to_jsonable(taken)["fulfillment"]
            == to_jsonable(compute_snapshots(reader, T0, PARAMS))["fulfillment"]
        )
        assert first.take_ready() is None  # once: the refreshes compute their own
        assert first.take() is None

        def fail(moment: datetime) -> Any:
            raise ValueError("no such table: events")

        failing = FirstSnapshots(fail, FixedClock(T0), lock)
        failing.start()
        failing.join()
        assert failing.take_ready() is None  # a failure is the refresh worker's to report
        with pytest.raises(ValueError, match="no such table"):
            failing.take()
    finally:
        reader.close()
