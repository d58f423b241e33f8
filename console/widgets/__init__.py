"""Console widgets: the bars around the panels, the three panel tables, and their formatting."""

from console.widgets.bars import FilterBar, HeadlineStrip, TextBar
from console.widgets.panels import (
    FulfillmentPanel,
    Panel,
    PanelTable,
    ReturnsPanel,
    RowView,
    StockoutPanel,
)

__all__ = [
    "FilterBar",
    "FulfillmentPanel",
    "HeadlineStrip",
    "Panel",
    "PanelTable",
    "ReturnsPanel",
    "RowView",
    "StockoutPanel",
    "TextBar",
]
