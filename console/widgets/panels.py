"""The three panel tables (fulfillment health, stockout risk, return spike).

A panel holds the latest :class:`~store.snapshots.Snapshots` in a reactive and renders it;
it never fetches anything.  Rendering turns snapshot rows into :class:`RowView` objects
(cells, sort values and filter labels), filters them with the operator's label matchers,
caps them, sorts them, and then patches the :class:`~textual.widgets.DataTable` by row key
inside ``app.batch_update()``: changed cells are updated in place, new rows added, gone rows
removed, and the order restored, so a refresh never clears and refills the table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, ClassVar, Literal, TypeAlias

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color, ColorParseError
from textual.containers import Vertical
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from console.messages import PanelRowSelected
from console.widgets.bars import TextBar
from console.widgets.cursor import cursor_key, place_cursor
from console.widgets.formatting import (
    DASH,
    fmt_day,
    fmt_days,
    fmt_metric,
    fmt_pick,
    fmt_rate,
    fmt_when,
)
from rules.highlights import Highlights
from rules.matchers import Matcher, format_matchers, matches_all
from store.registry import METRICS, Metric
from store.snapshots import FulfillmentRow, ReturnSpikeRow, Snapshots, StockoutRow

SortValue: TypeAlias = "str | float | None"
Justify = Literal["left", "right"]
SourceRow: TypeAlias = "FulfillmentRow | StockoutRow | ReturnSpikeRow"

# Severity ranks, worst first: the "status" column sorts by these, not alphabetically.
_FULFILLMENT_RANK = {"LATE": 0, "AT RISK": 1, "OK": 2}
_STOCK_RANK = {"OUT": 0, "OVERSELL": 1, "AT RISK": 2, "NO SALES": 3, "OK": 4}


@dataclass(frozen=True)
class Palette:
    """Rich styles for status words, resolved from the running theme's variables.

    DataTable cells are Rich renderables, which cannot refer to ``$error`` and friends
    the way the stylesheet does, so the colours are looked up from the theme at render
    time (no colour is hard-coded) and re-resolved when the theme changes.  Every status
    is also a word, so the table reads the same with ``NO_COLOR`` or 16 colours.
    """

    bad: Style
    warn: Style
    good: Style
    muted: Style

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> Palette:
        """Build the palette from ``App.theme_variables``."""

        def colour(*names: str, bold: bool = False) -> Style:
            for name in names:
                value = variables.get(name)
                if not value:
                    continue
                try:
                    return Style(color=Color.parse(value).rich_color, bold=bold)
                except ColorParseError:
                    continue
            return Style(bold=bold)

        return cls(
            bad=colour("text-error", "error", bold=True),
            warn=colour("text-warning", "warning", bold=True),
            good=colour("text-success", "success"),
            muted=Style(dim=True),
        )


PLAIN = Palette(bad=Style(bold=True), warn=Style(bold=True), good=Style(), muted=Style(dim=True))
"""The palette before a theme is known (tests of pure helpers, or an unmounted panel)."""


class Cell(Text):
    """A table cell that knows the key of its row, so the table can be reordered by key."""

    def __init__(
        self, text: str, *, row_key: str, style: Style | str = "", justify: Justify = "left"
    ) -> None:
        super().__init__(text, style=style, justify=justify, no_wrap=True, end="")
        self.row_key = row_key

    def signature(self) -> tuple[str, str, tuple[Any, ...]]:
        """What the cell looks like: text, base style and spans (for change detection)."""
        return (self.plain, str(self.style), tuple(self.spans))


@dataclass(frozen=True)
class ColumnSpec:
    """One table column: its key, header, and how it sorts.

    A column that shows a metric names it (``metric``): its header, unit and display
    format are then the registry's (:data:`store.registry.METRICS`), read when the
    panel renders, so the registry is the one place a metric's column is declared.
    """

    key: str
    own_label: str = ""
    """The header of a column that shows no metric (``Where``, ``Status``, ``SKU``)."""
    justify: Justify = "left"
    compact: bool = False
    """Shown in the compact (overview) version of the panel too."""
    descending: bool = False
    """The natural sort direction when the operator sorts by it (largest first)."""
    metric: str | None = None
    """The registry metric the column shows, if any."""
    digits: int | None = None
    """Decimals of the registry format, when the column wants other than its default."""

    @property
    def declared(self) -> Metric | None:
        """The registry's declaration of the column's metric (None: not a metric column)."""
        return None if self.metric is None else METRICS[self.metric]

    @property
    def label(self) -> str:
        """The header: the registry's for a metric column, else the column's own."""
        declared = self.declared
        if declared is not None and declared.header:
            return declared.header
        return self.own_label or self.key

    @property
    def unit(self) -> str:
        """The unit of the metric shown, in words (empty for a column showing no metric)."""
        declared = self.declared
        return "" if declared is None else declared.unit

    def fmt(self, value: float | None) -> str:
        """``value`` in the registry's format of the column's metric."""
        declared = self.declared
        if declared is None:
            return DASH if value is None else str(value)
        return fmt_metric(declared.format, value, self.digits)


def _metric(
    key: str,
    metric: str,
    *,
    compact: bool = False,
    descending: bool = False,
    digits: int | None = None,
) -> ColumnSpec:
    """A right-aligned column showing a registry metric."""
    return ColumnSpec(
        key, "", "right", compact=compact, descending=descending, metric=metric, digits=digits
    )


@dataclass(frozen=True)
class RowView:
    """A snapshot row ready for the table: cells, sort values and filter labels."""

    key: str
    cells: Mapping[str, tuple[str, Style | str]]
    sort_values: Mapping[str, SortValue]
    labels: Mapping[str, str]
    source: SourceRow
    rank: int = 0
    """Severity of the row's status, 0 the worst: without a sort column rows go worst first."""


def sort_views(views: Sequence[RowView], column: str | None, descending: bool) -> list[RowView]:
    """Order rows by one column, rows without a value last; no column keeps the snapshot order."""
    if column is None:
        return list(views)
    present = [v for v in views if v.sort_values.get(column) is not None]
    missing = [v for v in views if v.sort_values.get(column) is None]

    def key(view: RowView) -> tuple[int, float, str]:
        value = view.sort_values[column]
        if isinstance(value, str):
            return (1, 0.0, value.lower())
        return (0, float(value or 0.0), "")

    return sorted(present, key=key, reverse=descending) + missing


class PanelTable(DataTable[Cell]):
    """The DataTable inside a panel: row cursor, and Enter labelled as "Detail" in the footer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Detail", id="detail"),
    ]

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """The table's size; the new rows' cells are measured only for automatic widths.

        A panel fixes its columns' widths itself (:meth:`Panel._fit_columns`) in the batch
        that adds the rows, and its rows are one line without labels, so DataTable's
        measuring of every cell of every new row (the largest part of a first paint's
        work after the layout, issue 15) would find nothing to change.
        """
        if any(column.auto_width for column in self.columns.values()) or any(
            row.label is not None or row.auto_height for row in self.rows.values()
        ):
            super()._update_dimensions(new_rows)
            return
        header_height = self.header_height if self.show_header else 0
        self.virtual_size = Size(
            sum(column.get_render_width(self) for column in self.columns.values())
            + self._row_label_column_width,
            self._total_row_height + header_height,
        )


class Panel(Vertical):
    """Base class of the three panels: a title line and a table rendered from snapshots."""

    kind: ClassVar[str] = ""
    """The panel name used by export and filters: fulfillment, stockout or returns."""
    heading: ClassVar[str] = ""
    columns: ClassVar[tuple[ColumnSpec, ...]] = ()
    label_names: ClassVar[tuple[str, ...]] = ()
    """The labels a filter may test on this panel's rows."""

    snapshots: reactive[Snapshots | None] = reactive(
        None, always_update=True, init=False, repaint=False
    )
    """The snapshots being shown; set by the app after every refresh."""
    matchers: reactive[tuple[Matcher, ...]] = reactive((), init=False, repaint=False)
    """The operator's row filter for this panel (all must match)."""
    sort_column: reactive[str | None] = reactive(None, init=False, repaint=False)
    """Column key the rows are sorted by, or None for the snapshot's own risk order."""
    sort_descending: reactive[bool] = reactive(False, init=False, repaint=False)
    """Direction of the sort by ``sort_column``."""
    compact: reactive[bool] = reactive(False, init=False, toggle_class="-compact")
    """Show only the key columns (the overview at narrow sizes)."""

    def __init__(
        self,
        *,
        tz: tzinfo,
        compact: bool = False,
        max_rows: int | None = None,
        scopes: tuple[str, ...] = (),
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """Create a panel showing times in ``tz``, at most ``max_rows`` rows (default 100).

        A compact panel shows only the key columns.  ``scopes`` (fulfillment: location,
        channel, carrier) keeps only rows of those scopes, and the title then counts what
        those rows count.
        """
        super().__init__(id=id, classes=classes)
        self.scopes = scopes
        self.tz = tz
        self.max_rows = max_rows if max_rows is not None else 100
        self.palette = PLAIN
        self.highlights = Highlights()
        """The thresholds cells are highlighted at (the app sets the rules in force)."""
        self._views: dict[str, RowView] = {}
        self._scoped: list[RowView] = []
        self._counted: list[RowView] = []
        self._headers: tuple[str, ...] | None = None
        self._total_rows = 0
        self.set_reactive(Panel.compact, compact)
        self.set_class(compact, "-compact", update=False)  # styled as it mounts

    def fmt(self, key: str, value: float | None) -> str:
        """A cell of column ``key`` in its metric's registry format."""
        return next(c for c in self.columns if c.key == key).fmt(value)

    @property
    def visible_columns(self) -> tuple[ColumnSpec, ...]:
        """The columns this panel shows (all, or the compact subset)."""
        if self.compact:
            return tuple(c for c in self.columns if c.compact)
        return self.columns

    @property
    def table(self) -> PanelTable:
        """The panel's table."""
        return self.query_one(PanelTable)

    @property
    def title_bar(self) -> TextBar:
        """The panel's title line."""
        return self.query_one(".panel-title", TextBar)

    def compose(self) -> ComposeResult:
        """A title line above the table."""
        yield TextBar(self.heading, classes="panel-title", markup=False)
        yield PanelTable(cursor_type="row", fixed_columns=1, zebra_stripes=False)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        """Mark the panel that holds the focus (its title shows it, ``Panel.-focused``)."""
        self.add_class("-focused")

    def on_descendant_blur(self, event: events.DescendantBlur) -> None:
        """The focus left for another panel or view (a move inside focuses again at once)."""
        self.remove_class("-focused")

    def on_mount(self) -> None:
        """Create the columns and follow theme changes."""
        self._add_columns()
        self.palette = Palette.from_variables(self.app.theme_variables)
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)
        self._render_title()

    def header_label(self, spec: ColumnSpec) -> str:
        """A column's header: its label, with ``▲``/``▼`` when the rows are sorted by it."""
        if spec.key != self.sort_column:
            return spec.label
        return f"{spec.label} {'▼' if self.sort_descending else '▲'}"

    def _add_columns(self) -> None:
        table = self.table
        for spec in self.visible_columns:
            table.add_column(Text(self.header_label(spec), justify=spec.justify), key=spec.key)
        self._headers = self._header_signature()

    def _header_signature(self) -> tuple[str, ...]:
        return tuple(self.header_label(spec) for spec in self.visible_columns)

    def _rebuild(self) -> None:
        """New columns or headers: rebuild the table once, keeping the row under the cursor."""
        if not self.is_mounted:
            return
        cursor = self.cursor_view()
        with self.app.batch_update():
            self.table.clear(columns=True)
            if self.sort_column not in {c.key for c in self.visible_columns}:
                self.set_reactive(Panel.sort_column, None)
            self._add_columns()
            self._sync()
            place_cursor(self.table, cursor.key if cursor is not None else None, scroll=True)

    def watch_compact(self) -> None:
        """Switching between compact and full changes the columns: rebuild the table once."""
        self._rebuild()

    def _theme_changed(self, _theme: object) -> None:
        self.palette = Palette.from_variables(self.app.theme_variables)
        self._sync()

    def watch_snapshots(self) -> None:
        """New data: patch the table."""
        self._sync()

    def watch_matchers(self) -> None:
        """New filter: patch the table."""
        self._sync()

    def watch_sort_column(self) -> None:
        """New sort column: reorder and mark its header."""
        self._sync()

    def watch_sort_descending(self) -> None:
        """New sort direction: reorder and flip the header's arrow."""
        self._sync()

    # -- what subclasses provide -------------------------------------------------------

    def build_rows(self, snapshots: Snapshots) -> list[RowView]:
        """Turn the snapshot's rows into row views, in the snapshot's order."""
        raise NotImplementedError

    def summary(
        self, snapshots: Snapshots, views: Sequence[RowView], *, filtered: bool = False
    ) -> Content:
        """The panel's totals for its title line (``views``: every row before the cap).

        ``filtered``: the operator's filter narrowed ``views``; the totals then count those
        rows only, so the title never reports a state none of the filtered rows has.
        """
        raise NotImplementedError

    # -- operator actions ----------------------------------------------------------------

    def cycle_sort(self) -> str:
        """Sort by the next column (then back to risk order); returns a description."""
        keys = [c.key for c in self.visible_columns]
        if self.sort_column is None:
            nxt: str | None = keys[0]
        else:
            index = keys.index(self.sort_column) if self.sort_column in keys else -1
            nxt = keys[index + 1] if index + 1 < len(keys) else None
        self.sort_by(nxt)
        return self.sort_description()

    def sort_by(self, column: str | None, descending: bool | None = None) -> None:
        """Sort by ``column`` in its natural direction (or the one given)."""
        if column is None:
            natural = False
        else:
            spec = next(c for c in self.columns if c.key == column)
            natural = spec.descending
        # Set both without their watchers, then render once.
        self.set_reactive(Panel.sort_descending, natural if descending is None else descending)
        self.set_reactive(Panel.sort_column, column)
        self._sync()

    def reverse_sort(self) -> str:
        """Flip the direction of the current sort; returns a description."""
        if self.sort_column is not None:
            self.sort_descending = not self.sort_descending
        return self.sort_description()

    def sort_description(self) -> str:
        """``sorted by Late ▼`` or ``risk order``."""
        if self.sort_column is None:
            return "risk order"
        label = next(c.label for c in self.columns if c.key == self.sort_column)
        return f"sorted by {label} {'▼' if self.sort_descending else '▲'}"

    def cursor_view(self) -> RowView | None:
        """The row under the table cursor, if any."""
        key = cursor_key(self.table)
        return None if key is None else self._views.get(key)

    def views(self) -> list[RowView]:
        """The rows currently shown, in table order."""
        return [self._views[str(row.key.value)] for row in self.table.ordered_rows]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter (or a click) on a row asks the app for its detail screen."""
        event.stop()
        view = self._views.get(str(event.row_key.value))
        if view is not None and self.snapshots is not None:
            self.post_message(PanelRowSelected(self.kind, view.source, self.snapshots.as_of))

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """A click (or Enter) on a header sorts by that column; again flips the direction."""
        event.stop()
        column = str(event.column_key.value)
        if column == self.sort_column:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_by(column)

    # -- rendering -----------------------------------------------------------------------

    def _sync(self) -> None:
        """Patch the table to show the current snapshot, filter and sort."""
        if not self.is_mounted:
            return
        if self._header_signature() != getattr(self, "_headers", None):
            self._rebuild()  # it syncs
            return
        snapshots = self.snapshots
        views = self.build_rows(snapshots) if snapshots is not None else []
        if self.scopes:
            views = [v for v in views if v.labels.get("scope") in self.scopes]
        if self.sort_column is None:
            views.sort(key=lambda v: v.rank)  # stable: the snapshot's order within a status
        self._scoped = views
        self._total_rows = len(views)
        if self.matchers:
            views = [v for v in views if matches_all(self.matchers, v.labels)]
        self._counted = views
        views = views[: self.max_rows]
        views = sort_views(views, self.sort_column, self.sort_descending)
        self._views = {v.key: v for v in views}
        self._patch_table(views)
        self._render_title()

    def _make_cells(self, view: RowView) -> list[Cell]:
        cells: list[Cell] = []
        for spec in self.visible_columns:
            text, style = view.cells[spec.key]
            cells.append(Cell(text, row_key=view.key, style=style, justify=spec.justify))
        return cells

    def _patch_table(self, views: list[RowView]) -> None:
        table = self.table
        cursor = self.cursor_view()
        cursor_key = cursor.key if cursor is not None else None
        wanted = [v.key for v in views]
        present = {str(k.value) for k in table.rows}
        column_keys = [c.key for c in self.visible_columns]
        with self.app.batch_update():
            self._fit_columns(views)
            for gone in present - set(wanted):
                table.remove_row(gone)
            for view in views:
                cells = self._make_cells(view)
                if view.key in present:
                    for column, cell in zip(column_keys, cells, strict=True):
                        old = table.get_cell(view.key, column)
                        if old.signature() != cell.signature():
                            table.update_cell(view.key, column, cell, update_width=True)
                else:
                    table.add_row(*cells, key=view.key)
            order = [str(row.key.value) for row in table.ordered_rows]
            if order != wanted:
                rank = {key: index for index, key in enumerate(wanted)}
                table.sort(column_keys[0], key=lambda cell: rank[cell.row_key])
            if cursor_key is not None and cursor_key in self._views:
                new_index = wanted.index(cursor_key)
                if new_index != table.cursor_row:
                    table.move_cursor(row=new_index, scroll=False)

    def _fit_columns(self, views: list[RowView]) -> None:
        """Size the columns for these rows now, before they are drawn.

        DataTable's automatic widths are measured on its next idle, and a frame painted
        before that is cached with the old widths (the caches are keyed by the table's
        update count, not by width), which can leave a row drawn misaligned.  Fixed
        widths set in the same batch as the cell changes avoid that.  Columns only grow,
        so a refresh never makes them jump back and forth.
        """
        table = self.table
        for spec in self.visible_columns:
            column = table.columns.get(ColumnKey(spec.key))
            if column is None:
                continue
            header = cell_len(self.header_label(spec))
            width = max([header] + [cell_len(v.cells[spec.key][0]) for v in views])
            current = column.content_width if column.auto_width else column.width
            if column.auto_width or width > current:
                column.auto_width = False
                column.width = max(width, current)

    def _render_title(self) -> None:
        """Heading, then what narrows or orders the rows (it must not be cropped), then totals."""
        title = self.query_one(".panel-title", TextBar)
        parts: list[str | Content | tuple[str, str]] = [(self.heading, "bold")]
        shown = len(self._views)
        if self.matchers:
            parts.append(("  filter ", "$text-accent bold"))
            parts.append((format_matchers(self.matchers), "$text-accent"))
            parts.append((f" ({shown} of {self._total_rows})", "$text-accent"))
        if self.sort_column is not None:
            parts.append((f"  {self.sort_description()}", "$text-accent"))
        if self.snapshots is None:
            parts.append(("  waiting for the first refresh…", "italic"))
        else:
            parts.append("  ")
            if self.matchers:
                parts.append(self.summary(self.snapshots, self._counted, filtered=True))
            else:
                parts.append(self.summary(self.snapshots, self._scoped))
        if not self.matchers and self._total_rows > shown:
            parts.append(f"  top {shown} of {self._total_rows}")
        title.set_content(Content.assemble(*parts))


class FulfillmentPanel(Panel):
    """Fulfillment health per location, channel and carrier."""

    kind = "fulfillment"
    heading = "Fulfillment"
    columns = (
        ColumnSpec("where", "Where", compact=True),
        ColumnSpec("status", "Status", compact=True),
        _metric("open", "fulfillment.open_orders", compact=True, descending=True),
        _metric("late", "fulfillment.late", compact=True, descending=True),
        _metric("at_risk", "fulfillment.at_risk", compact=True, descending=True),
        _metric("on_time", "fulfillment.on_time_rate", compact=True),
        # Delivered late against the customer's promise, 24 h.  Not compact: the overview
        # lists locations only and is also the ~40-column phone layout, while this figure
        # matters most by carrier and region (tab 2).
        _metric("delivered_late", "fulfillment.delivered_late_rate", descending=True),
        _metric("oldest", "fulfillment.oldest_open_minutes", descending=True),
        _metric("pick", "fulfillment.pick_p90_minutes", descending=True),
        _metric("carrier_delay", "carrier.delay_hours", descending=True),
        _metric("exceptions", "fulfillment.exceptions", descending=True),
        ColumnSpec("scope", "Scope"),
    )
    label_names = ("scope", "key", "status", "location", "channel", "carrier", "region")

    def build_rows(self, snapshots: Snapshots) -> list[RowView]:
        """One view per fulfillment row."""
        p = self.palette
        styles = {"LATE": p.bad, "AT RISK": p.warn, "OK": p.good}
        views: list[RowView] = []
        for row in snapshots.fulfillment.rows:
            on_time_style: Style | str = ""
            scope = {"scope": row.scope, row.scope: row.key}
            if self.highlights.flags("fulfillment.on_time_rate", scope, row.on_time_rate):
                on_time_style = p.warn
            late_flagged = self.highlights.flags(
                "fulfillment.delivered_late_rate", scope, row.delivered_late_rate_24h
            )
            cells: dict[str, tuple[str, Style | str]] = {
                "where": (row.key, "bold"),
                "scope": (row.scope, p.muted),
                "status": (row.status, styles.get(row.status, Style())),
                "open": (self.fmt("open", row.open_orders), ""),
                "oldest": (self.fmt("oldest", row.oldest_open_minutes), ""),
                "late": (self.fmt("late", row.late), p.bad if row.late else ""),
                "at_risk": (self.fmt("at_risk", row.at_risk), p.warn if row.at_risk else ""),
                "on_time": (self.fmt("on_time", row.on_time_rate), on_time_style),
                "delivered_late": (
                    self.fmt("delivered_late", row.delivered_late_rate_24h),
                    p.warn if late_flagged else "",
                ),
                "pick": (fmt_pick(row.pick_p50_minutes, row.pick_p90_minutes), ""),
                "carrier_delay": (self.fmt("carrier_delay", row.carrier_delay_hours), ""),
                "exceptions": (
                    self.fmt("exceptions", row.exceptions),
                    p.warn if row.exceptions else "",
                ),
            }
            sort_values: dict[str, SortValue] = {
                "where": row.key,
                "scope": row.scope,
                "status": float(_FULFILLMENT_RANK.get(row.status, 9)),
                "open": row.open_orders,
                "oldest": row.oldest_open_minutes,
                "late": row.late,
                "at_risk": row.at_risk,
                "on_time": row.on_time_rate,
                "delivered_late": row.delivered_late_rate_24h,
                "pick": row.pick_p90_minutes,
                "carrier_delay": row.carrier_delay_hours,
                "exceptions": row.exceptions,
            }
            labels = {"scope": row.scope, "key": row.key, "status": row.status, row.scope: row.key}
            rank = _FULFILLMENT_RANK.get(row.status, 9)
            views.append(RowView(f"{row.scope}:{row.key}", cells, sort_values, labels, row, rank))
        return views

    def summary(
        self, snapshots: Snapshots, views: Sequence[RowView], *, filtered: bool = False
    ) -> Content:
        """Open, late and at-risk totals (of the rows' scope when the panel keeps some)."""
        f = snapshots.fulfillment
        if self.scopes or filtered:
            rows = [v.source for v in views if isinstance(v.source, FulfillmentRow)]
            late = sum(r.late for r in rows)
            risk = sum(r.at_risk for r in rows)
            return Content.assemble(
                (f"by {', '.join(self.scopes)}  " if self.scopes else "", "$text-muted"),
                f"{sum(r.open_orders for r in rows):,} open  ",
                (f"{late:,} LATE", "$text-error bold" if late else ""),
                "  ",
                (f"{risk:,} AT RISK", "$text-warning bold" if risk else ""),
                ("  2: carriers, channels" if self.scopes else "", "$text-muted"),
            )
        # The totals are orders against their promise; a carrier row's LATE is a parcel
        # past the carrier's own estimate: said apart, so "0 LATE" above a LATE carrier
        # row is not read as a contradiction.
        overdue = sum(r.late for r in f.rows if r.scope == "carrier")
        return Content.assemble(
            f"{f.total_open:,} open  ",
            (f"{f.total_late:,} LATE", "$text-error bold" if f.total_late else ""),
            "  ",
            (f"{f.total_at_risk:,} AT RISK", "$text-warning bold" if f.total_at_risk else ""),
            *(
                [("  ", ""), (f"{f.unroutable:,} UNROUTABLE", "$text-error bold")]
                if f.unroutable
                else []
            ),
            *(
                [("  · ", "$text-muted"), (f"{overdue:,} in transit past estimate", "$text-error")]
                if overdue
                else []
            ),
        )


class StockoutPanel(Panel):
    """Stockout risk per SKU × location."""

    kind = "stockout"
    heading = "Stock"
    columns = (
        ColumnSpec("sku", "SKU", compact=True),
        ColumnSpec("location", "Loc", compact=True),
        ColumnSpec("status", "Status", compact=True),
        _metric("available", "stock.available", compact=True),
        _metric("velocity", "stock.velocity_per_day", descending=True),
        _metric("cover", "stock.days_of_cover", compact=True),
        ColumnSpec("stockout", "Stockout", "right"),
        _metric("inbound", "stock.inbound_qty", descending=True),
        ColumnSpec("oversell", "", metric="stock.oversell"),
    )
    label_names = ("sku", "location", "category", "status", "channel")

    def build_rows(self, snapshots: Snapshots) -> list[RowView]:
        """One view per SKU × location row."""
        p = self.palette
        styles = {"OUT": p.bad, "OVERSELL": p.bad, "AT RISK": p.warn, "OK": p.good}
        now = snapshots.as_of
        views: list[RowView] = []
        for row in snapshots.stockout.rows:
            if row.inbound_qty > 0:
                inbound = f"{row.inbound_qty:,} {fmt_day(row.inbound_eta, self.tz, now)}"
            else:
                inbound = DASH
            cells: dict[str, tuple[str, Style | str]] = {
                "sku": (row.sku, "bold"),
                "location": (row.location_id, ""),
                "status": (row.status, styles.get(row.status, p.muted)),
                "available": (
                    self.fmt("available", row.available),
                    p.bad if row.available <= 0 else "",
                ),
                "velocity": (self.fmt("velocity", row.velocity_per_day), ""),
                "cover": (
                    fmt_days(row.days_of_cover, "no sales"),
                    p.muted if row.days_of_cover is None else "",
                ),
                "stockout": (fmt_when(row.projected_stockout, self.tz, now), ""),
                "inbound": (inbound, ""),
                "oversell": (row.oversell_channel or DASH, p.bad if row.oversell_channel else ""),
            }
            sort_values: dict[str, SortValue] = {
                "sku": row.sku,
                "location": row.location_id,
                "status": float(_STOCK_RANK.get(row.status, 9)),
                "available": row.available,
                "velocity": row.velocity_per_day,
                "cover": row.days_of_cover,
                "stockout": row.projected_stockout.timestamp() if row.projected_stockout else None,
                "inbound": row.inbound_qty,
                "oversell": row.oversell_channel,
            }
            labels = {
                "sku": row.sku,
                "location": row.location_id,
                "category": row.category,
                "status": row.status,
                "channel": row.oversell_channel or "",
            }
            rank = _STOCK_RANK.get(row.status, 9)
            views.append(
                RowView(f"{row.sku}@{row.location_id}", cells, sort_values, labels, row, rank)
            )
        return views

    def summary(
        self, snapshots: Snapshots, views: Sequence[RowView], *, filtered: bool = False
    ) -> Content:
        """Out, at-risk and oversell totals (of the filtered rows when filtered)."""
        s = snapshots.stockout
        if filtered:
            statuses = [v.labels.get("status", "") for v in views]
            out, risk = statuses.count("OUT"), statuses.count("AT RISK")
            oversell = statuses.count("OVERSELL")
            return Content.assemble(
                (f"{out:,} OUT", "$text-error bold" if out else ""),
                "  ",
                (f"{risk:,} AT RISK", "$text-warning bold" if risk else ""),
                "  ",
                (f"{oversell:,} OVERSELL", "$text-error bold" if oversell else ""),
            )
        return Content.assemble(
            (f"{s.total_out:,} OUT", "$text-error bold" if s.total_out else ""),
            "  ",
            (f"{s.total_at_risk:,} AT RISK", "$text-warning bold" if s.total_at_risk else ""),
            "  ",
            (f"{s.total_oversell:,} OVERSELL", "$text-error bold" if s.total_oversell else ""),
            f"  of {s.total_pairs:,} SKU×loc",
        )


class ReturnsPanel(Panel):
    """Return rate per SKU against its own baseline."""

    kind = "returns"
    heading = "Returns"
    columns = (
        ColumnSpec("sku", "SKU", compact=True),
        ColumnSpec("category", "Category"),
        _metric("ret_sold", "returns.returned", descending=True),
        _metric("rate", "returns.rate", compact=True, descending=True, digits=1),
        ColumnSpec("baseline", "Base", "right", compact=True, descending=True),
        _metric("z", "returns.z_score", compact=True, descending=True),
        ColumnSpec("spike", "", compact=True, descending=True, metric="returns.spike"),
        ColumnSpec("reason", "Top reason"),
    )
    label_names = ("sku", "category", "spike", "reason")

    def build_rows(self, snapshots: Snapshots) -> list[RowView]:
        """One view per SKU with returns."""
        p = self.palette
        views: list[RowView] = []
        for row in snapshots.returns.rows:
            if row.top_reasons:
                reason, count = row.top_reasons[0]
                top_reason = f"{reason} ({count})"
            else:
                reason, top_reason = "", DASH
            cells: dict[str, tuple[str, Style | str]] = {
                "sku": (row.sku, "bold"),
                "category": (row.category, ""),
                "ret_sold": (f"{row.returned:,}/{row.sold:,}", ""),
                "rate": (self.fmt("rate", row.rate), p.bad if row.spike else ""),
                "baseline": (fmt_rate(row.baseline_rate, 1), ""),
                "z": (self.fmt("z", row.z_score), ""),
                "spike": ("SPIKE", p.bad) if row.spike else ("no", p.muted),
                "reason": (top_reason, ""),
            }
            sort_values: dict[str, SortValue] = {
                "sku": row.sku,
                "category": row.category,
                "ret_sold": row.returned,
                "rate": row.rate,
                "baseline": row.baseline_rate,
                "z": row.z_score,
                "spike": 1.0 if row.spike else 0.0,
                "reason": reason or None,
            }
            labels = {
                "sku": row.sku,
                "category": row.category,
                "spike": "yes" if row.spike else "no",
                "reason": reason,
            }
            views.append(RowView(row.sku, cells, sort_values, labels, row, 0 if row.spike else 1))
        return views

    def summary(
        self, snapshots: Snapshots, views: Sequence[RowView], *, filtered: bool = False
    ) -> Content:
        """Spike count, and the categories and channels whose return rate spikes."""
        r = snapshots.returns
        if filtered:
            spikes = sum(1 for v in views if v.labels.get("spike") == "yes")
            return Content.assemble((f"{spikes:,} SPIKE", "$text-error bold" if spikes else ""))
        rolled = [f"{x.scope} {x.key}" for x in r.rollups if x.spike]
        return Content.assemble(
            (f"{r.spikes:,} SPIKE", "$text-error bold" if r.spikes else ""),
            f"  of {len(r.rows):,} SKUs with returns",
            *([("  SPIKE in ", ""), (", ".join(rolled), "$text-error bold")] if rolled else []),
        )
