"""The console's screens, one per module: the main console and every view pushed over it.

``main`` is the console itself (panels, layout, main keys); ``detail`` and ``feeds`` show
a panel row and the feeds; ``alerts``, ``rules`` and ``routing`` are the views over the
rules file and the store, each with its forms and dialogs in modules of their own;
``dialogs`` holds the one prompt and the one yes/no question; ``help`` and ``command``
the ``?`` and ``:`` screens.
"""

from console.screens.detail import (
    DetailExtra,
    DetailFetch,
    DetailRow,
    DetailScreen,
    StockChart,
    project_stock,
    projection_horizon,
    render_stock_chart,
    stock_reason,
)
from console.screens.dialogs import ConfirmScreen, PromptField, PromptScreen
from console.screens.feeds import FeedsScreen
from console.screens.main import ConsoleScreen, default_export_name, export_format

__all__ = [
    "ConfirmScreen",
    "ConsoleScreen",
    "DetailExtra",
    "DetailFetch",
    "DetailRow",
    "DetailScreen",
    "FeedsScreen",
    "PromptField",
    "PromptScreen",
    "StockChart",
    "default_export_name",
    "export_format",
    "project_stock",
    "projection_horizon",
    "render_stock_chart",
    "stock_reason",
]
