"""The cursor of a row-cursor DataTable, by row key: read it, put it back after a redraw."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist


def cursor_key(table: DataTable[Any]) -> str | None:
    """The key of the row under the cursor (None for an empty table or a keyless row)."""
    if table.row_count == 0:
        return None
    try:
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
    except CellDoesNotExist:
        return None
    return None if key.value is None else str(key.value)


def place_cursor(
    table: DataTable[Any], key: str | None = None, row: int = 0, *, scroll: bool = True
) -> None:
    """Put the cursor on the row keyed ``key`` if it is shown, else on ``row`` (clamped).

    Nothing moves when the cursor is already there, so an unchanged redraw does not
    scroll the table.
    """
    if table.row_count == 0:
        return
    target = max(0, min(row, table.row_count - 1))
    if key is not None:
        with contextlib.suppress(RowDoesNotExist):  # gone: fall back to the row number
            target = table.get_row_index(key)
    if target != table.cursor_row:
        table.move_cursor(row=target, scroll=scroll)
