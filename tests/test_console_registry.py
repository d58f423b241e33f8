"""The panel columns read the metric registry: header, unit and format of each metric column
come from its declaration (store/registry.py), so a change there shows in the panel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from console.widgets.panels import FulfillmentPanel, ReturnsPanel, StockoutPanel
from store.registry import METRICS
from tests.test_console import cell_text, make_app, panel, settle


def test_every_metric_column_names_a_declared_metric_of_its_panel() -> None:
    for cls in (FulfillmentPanel, StockoutPanel, ReturnsPanel):
        metric_columns = [c for c in cls.columns if c.metric is not None]
        assert metric_columns, cls
        for column in metric_columns:
            declared = METRICS[column.metric]  # type: ignore[index]
            assert declared.panel == cls.kind and declared.column == column.key, column
            assert column.label == declared.header and column.unit == declared.unit


async def test_a_registry_header_and_format_change_shows_in_the_panel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = METRICS["fulfillment.late"]
    monkeypatch.setitem(
        METRICS, "fulfillment.late", replace(late, header="Overdue", format="number")
    )
    monkeypatch.setitem(
        METRICS, "stock.available", replace(METRICS["stock.available"], header="Free")
    )
    app = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        headers = [str(c.label) for c in panel(app, "fulfillment-panel").table.columns.values()]
        assert "Overdue" in headers and "Late" not in headers
        # WH-TX has 9 late orders: in the "number" format, one decimal.
        assert cell_text(app, "fulfillment-panel", "location:WH-TX", "late") == "9.0"
        stock = [str(c.label) for c in panel(app, "overview-stockout").table.columns.values()]
        assert "Free" in stock
        # Sorting by it names it by the registry's header too.
        await pilot.press("2")
        assert app.main_screen.run_command("sort overdue")
        await pilot.pause()
        headers = [str(c.label) for c in panel(app, "fulfillment-panel").table.columns.values()]
        assert "Overdue ▼" in headers
