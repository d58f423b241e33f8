"""Text shown as it is: never read as markup.

Textual reads a ``str`` given to a :class:`~textual.widgets.Static` or a
:class:`~textual.widgets.DataTable` cell as console markup, so a rule's ``group_by
[alertname]``, a matcher, a SKU or a reason holding square brackets lost them on screen
(or raised a markup error).  The console never writes markup of its own: every widget
that shows data is one of these, which show a string character for character.
"""

from __future__ import annotations

from typing import Any, cast

from rich.text import Text, TextType
from textual.visual import VisualType
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellType, ColumnKey, RowKey


class Plain(Static):
    """A :class:`~textual.widgets.Static` whose strings are plain text (``markup=False``)."""

    def __init__(self, content: VisualType = "", **kwargs: Any) -> None:
        kwargs.setdefault("markup", False)
        super().__init__(content, **kwargs)


def _plain(cell: Any) -> Any:
    return Text(cell, end="") if isinstance(cell, str) else cell


class PlainTable(DataTable[CellType]):
    """A :class:`~textual.widgets.DataTable` whose ``str`` cells are plain text.

    A ``str`` cell is stored as a :class:`rich.text.Text` of it (``str()`` of the cell is
    the same string); every other cell as given.
    """

    def add_row(
        self,
        *cells: CellType,
        height: int | None = 1,
        key: str | None = None,
        label: TextType | None = None,
    ) -> RowKey:
        """Add a row, its ``str`` cells as plain text (see :meth:`DataTable.add_row`)."""
        plain = cast(tuple[CellType, ...], tuple(_plain(cell) for cell in cells))
        return super().add_row(*plain, height=height, key=key, label=label)

    def update_cell(
        self,
        row_key: RowKey | str,
        column_key: ColumnKey | str,
        value: CellType,
        *,
        update_width: bool = False,
    ) -> None:
        """Update a cell, a ``str`` as plain text (see :meth:`DataTable.update_cell`)."""
        super().update_cell(
            row_key, column_key, cast(CellType, _plain(value)), update_width=update_width
        )
