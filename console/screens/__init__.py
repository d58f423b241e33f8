"""The console's screens, one per module: the main console and every view pushed over it.

``main`` is the console itself (panels, layout, main keys); ``detail`` and ``feeds`` show
a panel row and the feeds; ``alerts``, ``rules`` and ``routing`` are the views over the
rules file and the store, each with its forms and dialogs in modules of their own;
``dialogs`` holds the one prompt and the one yes/no question; ``help`` and ``command``
the ``?`` and ``:`` screens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_HOMES = {
    "DetailExtra": "detail",
    "DetailFetch": "detail",
    "DetailRow": "detail",
    "DetailScreen": "detail",
    "StockChart": "detail",
    "project_stock": "detail",
    "projection_horizon": "detail",
    "render_stock_chart": "detail",
    "stock_reason": "detail",
    "ConfirmScreen": "dialogs",
    "PromptField": "dialogs",
    "PromptScreen": "dialogs",
    "FeedsScreen": "feeds",
    "ConsoleScreen": "main",
    "default_export_name": "main",
    "export_format": "main",
}
"""Where each name lives: a screen's module is imported when the name is first used, so
the console's first paint does not wait on the views it does not show (issue 15)."""

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


def __getattr__(name: str) -> Any:
    """A screen (or helper) from its module, imported on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
