"""The detail screen of a panel row: every number it carries, a stock chart, late orders.

The detail screen renders what the snapshot row carries (plus a projection computed from
it), and what an injected fetcher brings in a worker thread: a SKU × location's last
days, a location's late orders.  It follows the console: after every refresh it shows the
same row of the new snapshots (found by its key), so a detail left open never goes stale.
The stock chart is drawn by plotext on a figure of its own,
never on plotext's global figure, so two charts can never draw into each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.errors import describe_error
from console.messages import DetailFetched, WorkFailed
from console.widgets.footer import FittedFooter
from console.widgets.formatting import (
    DASH,
    fmt_days,
    fmt_hours_signed,
    fmt_int,
    fmt_minutes,
    fmt_num,
    fmt_past,
    fmt_pick,
    fmt_rate,
    fmt_when,
    to_local,
)
from console.widgets.plain import Plain, PlainTable
from store.snapshots import (
    FulfillmentRow,
    LateOrders,
    ReturnSpikeRow,
    Snapshots,
    StockHistory,
    StockoutRow,
)

DetailRow = FulfillmentRow | StockoutRow | ReturnSpikeRow
DetailExtra = StockHistory | LateOrders
DetailFetch = Callable[[DetailRow], DetailExtra | None]
"""Fetches what a row's detail shows beyond the snapshot; runs in a worker thread."""


# -- stock projection ---------------------------------------------------------------------


@dataclass(frozen=True)
class StockProjection:
    """Projected available stock over the coming days, sampled every few hours."""

    days: tuple[float, ...]
    """Offsets from ``as_of`` in days."""
    available: tuple[float, ...]
    """Projected available units at each offset."""
    horizon_days: int


def projection_horizon(row: StockoutRow, as_of: datetime) -> int:
    """How many days to project: past the stockout and the inbound ETA, 7 to 28 days."""
    wanted = 7.0
    if row.days_of_cover is not None:
        wanted = max(wanted, row.days_of_cover * 1.5 + 1)
    if row.inbound_eta is not None and row.inbound_qty > 0:
        wanted = max(wanted, (row.inbound_eta - as_of).total_seconds() / 86400 + 2)
    return int(min(28, math.ceil(wanted)))


def project_stock(
    row: StockoutRow, as_of: datetime, horizon_days: int | None = None, step_hours: float = 6.0
) -> StockProjection:
    """Available stock if sales go on at the current velocity and the open inbound lands at its ETA.

    available(t) = available − velocity × t (+ inbound quantity from its ETA on); it may go
    below zero (unfilled demand), which is what makes the stockout visible on the chart.
    """
    horizon = horizon_days if horizon_days is not None else projection_horizon(row, as_of)
    steps = int(horizon * 24 / step_hours)
    inbound_at: float | None = None
    if row.inbound_eta is not None and row.inbound_qty > 0:
        inbound_at = max(0.0, (row.inbound_eta - as_of).total_seconds() / 86400)
    days: list[float] = []
    values: list[float] = []
    for i in range(steps + 1):
        t = i * step_hours / 24
        value = row.available - row.velocity_per_day * t
        if inbound_at is not None and t >= inbound_at:
            value += row.inbound_qty
        days.append(round(t, 4))
        values.append(round(value, 3))
    return StockProjection(tuple(days), tuple(values), horizon)


def render_stock_chart(
    projection: StockProjection,
    *,
    reorder_point: int,
    width: int,
    height: int,
    title: str,
    history: tuple[list[float], list[float], list[float]] | None = None,
) -> str:
    """The projection as a colourless plotext line chart, ``width`` × ``height`` cells.

    A fresh plotext terminal (and so a fresh master figure) is created for every chart:
    plotext's module-level ``plotext.figure`` is shared state and is never touched here.
    """
    import plotext  # local: plotext is only needed when a chart is drawn

    figure = type(plotext.terminal)()._master  # a private figure, not plotext.figure
    figure.plot_size(max(20, width), max(6, height))
    figure.theme("colorless")
    stock = figure.signal(list(projection.days), list(projection.available), marker="hd")
    stock.lines()
    figure.draw(stock)
    start = projection.days[0]
    if history is not None and history[0]:
        days, available, sold = history
        past = figure.signal(days, available, marker="braille")
        past.lines()
        figure.draw(past)
        sales = figure.signal(days, sold, marker="x")
        figure.draw(sales)
        start = min(days)
    floor = figure.signal(
        [start, projection.days[-1]], [reorder_point, reorder_point], marker="dot"
    )
    floor.lines()
    figure.draw(floor)
    figure.legend(False)  # a legend box would cover the line; the caption explains instead
    figure.title(title)
    figure.label("days from now", axis=0)
    return str(figure.build().string(colorless=True))


class StockChart(Static):
    """A plotext chart of projected stock, redrawn to fit whenever the widget is resized."""

    def __init__(self, row: StockoutRow, as_of: datetime, tz: tzinfo, *, id: str | None = None):
        """Chart the projection of ``row`` from ``as_of``."""
        super().__init__(id=id)
        self.row = row
        self.as_of = as_of
        self.tz = tz
        self.history: StockHistory | None = None
        self._size_drawn: tuple[int, int] | None = None

    def set_history(self, history: StockHistory) -> None:
        """Add the last days (available at each day's end, units sold) and redraw."""
        self.history = history
        self._size_drawn = None
        self._draw()

    def history_points(self) -> tuple[list[float], list[float], list[float]] | None:
        """(days from now, available at day end, units sold that day) of the history."""
        if self.history is None:
            return None
        held = self.row.reserved + self.row.safety_buffer
        days = [
            round((start - self.as_of).total_seconds() / 86400 + 1, 3)
            for start in self.history.day_starts
        ]
        days[-1] = 0.0  # today ends now
        available = [float(v - held) for v in self.history.on_hand_end]
        return days, available, [float(v) for v in self.history.sold]

    def on_resize(self) -> None:
        """Redraw at the new size."""
        self._draw()

    def on_mount(self) -> None:
        """First drawing."""
        self._draw()

    def _draw(self) -> None:
        width, height = self.content_size.width, self.content_size.height
        if width < 20 or height < 6 or (width, height) == self._size_drawn:
            return
        self._size_drawn = (width, height)
        projection = project_stock(self.row, self.as_of)
        title = (
            f"Available: projected {projection.horizon_days} d (line)"
            + (", last days (fine line), sold per day (x)" if self.history else "")
            + f"; dots: reorder point {self.row.reorder_point:,}"
        )
        chart = render_stock_chart(
            projection,
            reorder_point=self.row.reorder_point,
            width=width,
            height=height,
            title=title,
            history=self.history_points(),
        )
        self.update(Text(chart, no_wrap=True, overflow="crop", end=""))


# -- detail screen -----------------------------------------------------------------------


def _kv(rows: list[tuple[str, str]]) -> Content:
    """Aligned ``label  value`` lines."""
    width = max((len(label) for label, _ in rows), default=0)
    parts: list[str | tuple[str, str]] = []
    for index, (label, value) in enumerate(rows):
        if index:
            parts.append("\n")
        parts.append((label.ljust(width), "$text-muted"))
        parts.append("  ")
        parts.append(value)
    return Content.assemble(*parts)


def _late_of(late: int, promised: int, rate: float | None) -> str:
    """``33.3%  (1 of 3 delivered)``, or a dash with no delivery against a promise."""
    if not promised:
        return DASH
    return f"{fmt_rate(rate, 1)}  ({late:,} of {promised:,} delivered)"


def fulfillment_lines(
    row: FulfillmentRow, window_days: float | None = None
) -> list[tuple[str, str]]:
    """Every number of a fulfillment row, labelled.

    ``window_days``: the snapshot's ``delivery_window_days``, named in the label of the
    delivered-late figure over that window (unknown: "window").
    """
    window = "window" if window_days is None else f"{window_days:g} d"
    return [
        ("Status", row.status),
        ("Scope", f"{row.scope} {row.key}"),
        ("Open orders", fmt_int(row.open_orders)),
        ("Oldest open", fmt_minutes(row.oldest_open_minutes)),
        ("Late (past promised-by)", fmt_int(row.late)),
        ("At risk (due soon, not packed)", fmt_int(row.at_risk)),
        ("On-time rate, 24 h", fmt_rate(row.on_time_rate, 1)),
        ("Completed, 24 h", fmt_int(row.completed_24h)),
        ("Pick time p50/p90", fmt_pick(row.pick_p50_minutes, row.pick_p90_minutes)),
        ("BOPIS ready within promise", fmt_rate(row.bopis_ready_rate, 1)),
        ("Carrier delay vs estimate", fmt_hours_signed(row.carrier_delay_hours)),
        ("Exceptions", fmt_int(row.exceptions)),
        (
            "Delivered late vs promise, 24 h",
            _late_of(
                row.delivered_late_24h, row.promised_delivered_24h, row.delivered_late_rate_24h
            ),
        ),
        (
            f"Delivered late vs promise, {window}",
            _late_of(
                row.delivered_late_window,
                row.promised_delivered_window,
                row.delivered_late_rate_window,
            ),
        ),
    ]


def stock_reason(row: StockoutRow) -> str:
    """Why a SKU × location has its status, in words."""
    if row.status == "OUT":
        return "nothing available to sell"
    if row.status == "OVERSELL":
        return (
            f"{row.oversell_channel or 'a channel'} advertises {fmt_int(row.advertised_max)}"
            f" but only {fmt_int(row.available)} available"
        )
    if row.status == "NO SALES":
        return "no sales in the velocity window"
    if row.status == "AT RISK":
        reasons = []
        if row.days_of_cover is not None and row.days_of_cover < row.lead_time_days:
            reasons.append(
                f"cover {fmt_days(row.days_of_cover)} < lead time {fmt_num(row.lead_time_days)}d"
            )
        if row.available < row.reorder_point:
            reasons.append(f"available {row.available:,} < reorder point {row.reorder_point:,}")
        return "; ".join(reasons) or "at risk"
    return "cover above lead time and stock above reorder point"


def stock_lines(row: StockoutRow, as_of: datetime, tz: tzinfo) -> list[tuple[str, str]]:
    """Every number of a stockout row in six labelled lines, times in the operator's zone."""
    inbound = "none open"
    if row.inbound_qty > 0:
        inbound = f"{row.inbound_qty:,} due {fmt_when(row.inbound_eta, tz, as_of)}"
    return [
        ("Status", f"{row.status}: {stock_reason(row)}"),
        ("Category", row.category),
        (
            "Stock",
            f"on hand {row.on_hand:,} − reserved {row.reserved:,} − buffer "
            f"{row.safety_buffer:,} = available {row.available:,}",
        ),
        (
            "Sales",
            f"{fmt_num(row.velocity_per_day)} units/day · cover "
            f"{fmt_days(row.days_of_cover, 'no sales')} · stockout "
            f"{fmt_when(row.projected_stockout, tz, as_of)}",
        ),
        (
            "Replenish",
            f"lead time {fmt_num(row.lead_time_days)} d · reorder point {row.reorder_point:,}"
            f" · inbound {inbound}",
        ),
        (
            "Channels",
            f"largest advertised {fmt_int(row.advertised_max)} · oversell "
            f"{row.oversell_channel or DASH}",
        ),
    ]


def returns_lines(row: ReturnSpikeRow) -> list[tuple[str, str]]:
    """Rate against baseline, labelled."""
    verdict = "SPIKE" if row.spike else "no spike"
    return [
        ("Verdict", verdict),
        ("SKU / category", f"{row.sku} / {row.category}"),
        (
            "Return rate (window)",
            f"{fmt_rate(row.rate, 1)}  ({row.returned:,} of {row.sold:,} sold)",
        ),
        (
            "Baseline rate",
            f"{fmt_rate(row.baseline_rate, 1)}  "
            f"({row.baseline_returned:,} of {row.baseline_sold:,})",
        ),
        ("z (rate test)", fmt_num(row.z_score, 2)),
    ]


def reason_bars(reasons: tuple[tuple[str, int], ...], width: int = 30) -> Content:
    """Top return reasons as labelled bars of full blocks."""
    if not reasons:
        return Content("No return reasons recorded.")
    top = max(count for _, count in reasons) or 1
    label_width = max(len(reason) for reason, _ in reasons)
    parts: list[str | tuple[str, str]] = [("Top return reasons", "bold")]
    for reason, count in reasons:
        bar = "█" * max(1, round(count / top * width))
        parts.append("\n")
        parts.append(reason.ljust(label_width) + "  ")
        parts.append((bar, "$accent"))
        parts.append(f" {count:,}")
    return Content.assemble(*parts)


def late_orders_heading(late: LateOrders) -> str:
    """The heading above a location's late-order table."""
    if not late.orders:
        return f"No late orders at {late.location_id}."
    more = f" (the {len(late.orders)} most late shown)" if late.total > len(late.orders) else ""
    return f"Late orders at {late.location_id}: {late.total:,}{more}"


def detail_title(row: DetailRow) -> str:
    """The heading of a row's detail screen."""
    if isinstance(row, FulfillmentRow):
        return f"Fulfillment · {row.scope} {row.key}"
    if isinstance(row, StockoutRow):
        return f"Stock · {row.sku} @ {row.location_id}"
    return f"Returns · {row.sku}"


def same_row(row: DetailRow, snapshots: Snapshots) -> DetailRow | None:
    """The row of ``snapshots`` that is ``row`` (same scope and key, SKU and location)."""
    if isinstance(row, FulfillmentRow):
        return next(
            (r for r in snapshots.fulfillment.rows if (r.scope, r.key) == (row.scope, row.key)),
            None,
        )
    if isinstance(row, StockoutRow):
        where = (row.sku, row.location_id)
        return next((r for r in snapshots.stockout.rows if (r.sku, r.location_id) == where), None)
    return next((r for r in snapshots.returns.rows if r.sku == row.sku), None)


class DetailScreen(Screen[None]):
    """Everything one panel row says, with a chart for stock; Escape goes back."""

    CSS_PATH = "detail.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(
        self,
        *,
        row: DetailRow,
        as_of: datetime,
        tz: tzinfo,
        fetch: DetailFetch | None = None,
    ) -> None:
        """Show ``row`` from the snapshot computed at ``as_of``, times in ``tz``.

        ``fetch`` (run in a worker thread) brings what the snapshot row does not hold: a
        SKU × location's last days, a location's late orders.
        """
        super().__init__()
        self.row = row
        self.as_of = as_of
        self.tz = tz
        self.fetch = fetch
        self.extra: DetailExtra | None = None

    def on_mount(self) -> None:
        """Fetch the row's history or late orders off the UI thread; follow the refreshes."""
        if self.fetch is not None:
            self._fetch_extra()
        if isinstance(getattr(type(self.app), "snapshots", None), Reactive):
            self.watch(self.app, "snapshots", self._snapshots_changed, init=False)

    async def _snapshots_changed(self, snapshots: Snapshots | None) -> None:
        """The panels refreshed: show the same row of the new snapshots (by its key)."""
        if snapshots is None or snapshots.as_of == self.as_of:
            return
        row = same_row(self.row, snapshots)
        if row is None:
            return  # the row left the snapshot: keep showing the last one, with its time
        self.row, self.as_of, self.extra = row, snapshots.as_of, None
        await self.recompose()
        if self.fetch is not None:
            self._fetch_extra()

    @work(thread=True, exclusive=True, exit_on_error=False, group="detail")
    def _fetch_extra(self) -> None:
        """Thread worker: fetch, then post :class:`DetailFetched` or :class:`WorkFailed`."""
        fetch = self.fetch
        if fetch is None:
            return
        try:
            extra = fetch(self.row)
        except Exception as exc:  # shown, never fatal
            self.post_message(WorkFailed("Could not load the detail", exc))
            return
        self.post_message(DetailFetched(extra))

    @on(WorkFailed)
    def _fetch_failed(self, message: WorkFailed) -> None:
        message.stop()
        for old in self.query("#detail-error"):
            old.remove()
        self.query_one("#detail-body", VerticalScroll).mount(
            Plain(f"{message.what}: {describe_error(message.error)}", id="detail-error")
        )

    @on(DetailFetched)
    def _fetched(self, message: DetailFetched) -> None:
        message.stop()
        self._show_extra(message.extra)

    def _show_extra(self, extra: DetailExtra | None) -> None:
        self.extra = extra
        body = self.query_one("#detail-body", VerticalScroll)
        if isinstance(extra, StockHistory):
            self.query_one("#stock-chart", StockChart).set_history(extra)
        elif isinstance(extra, LateOrders):
            body.mount(Plain(late_orders_heading(extra), id="late-title"))
            table: DataTable[str] = PlainTable(id="late-orders", cursor_type="row")
            body.mount(table)
            table.add_columns("Order", "Channel", "Method", "Placed", "Promised", "Late", "Step")
            for order in extra.orders:
                table.add_row(
                    order.order_id,
                    order.channel,
                    order.method,
                    fmt_past(order.placed_at, self.tz, self.as_of),
                    fmt_past(order.promised_by, self.tz, self.as_of),
                    fmt_minutes(order.minutes_late),
                    order.last_step,
                    key=order.order_id,
                )

    def compose(self) -> ComposeResult:
        """Title, the row's numbers, and its chart or reasons."""
        row = self.row
        stamp = to_local(self.as_of, self.tz).strftime("%H:%M:%S")
        yield Plain(
            Content.assemble((detail_title(row), "bold"), (f"  as of {stamp}", "$text-muted")),
            id="detail-title",
        )
        with VerticalScroll(id="detail-body"):
            if isinstance(row, FulfillmentRow):
                snapshots: Snapshots | None = getattr(self.app, "snapshots", None)
                window = snapshots.fulfillment.delivery_window_days if snapshots else None
                yield Plain(_kv(fulfillment_lines(row, window)), classes="detail-numbers")
            elif isinstance(row, StockoutRow):
                yield Plain(_kv(stock_lines(row, self.as_of, self.tz)), classes="detail-numbers")
                yield StockChart(row, self.as_of, self.tz, id="stock-chart")
            else:
                yield Plain(_kv(returns_lines(row)), classes="detail-numbers")
                yield Plain(reason_bars(row.top_reasons), id="reasons")
        yield FittedFooter()

    def action_back(self) -> None:
        """Return to the console."""
        self.dismiss()
