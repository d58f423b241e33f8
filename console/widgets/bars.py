"""The one-line bars around the panels: top bar (clock, data age), feeds, headline, status.

Each bar is a ``Static`` whose text is rebuilt from plain values by a pure ``*_content``
function (tested without an app) and only re-sent when it changed, so an idle console
writes next to nothing to the terminal.  Colours are theme variables (``$text-error`` …)
inside :class:`~textual.content.Content`; every state is also a word or a glyph.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Input, Sparkline, Static

from console.widgets.formatting import (
    fmt_clock,
    fmt_header_clock,
    fmt_minutes,
    fmt_money,
    fmt_num,
    fmt_past,
    fmt_trend,
    pct_change,
)
from console.widgets.plain import Plain
from rules.highlights import Highlights
from store.snapshots import FeedFreshness, FeedHealthRow, Headline, Snapshots

if TYPE_CHECKING:  # annotations only: the first paint loads no alert models
    from rules.alerts.actions import AlertCount

OK_GLYPH = "●"
STALE_GLYPH = "▲"
DEFAULT_HIGHLIGHTS = Highlights()
"""The registry's default levels (before the rules file is read)."""

Part = str | Content | tuple[str, str]


class TextBar(Static):
    """A Static that only repaints when its content actually changes."""

    def set_content(self, content: Content) -> None:
        """Show ``content`` unless it is what is already shown."""
        if getattr(self, "_shown", None) == content.markup:
            return
        self._shown = content.markup
        self.update(content)


def is_stale(data_age: float | None, refresh_interval: float) -> bool:
    """Whether data ``data_age`` wall seconds old is older than two refresh intervals."""
    return data_age is not None and data_age > 2 * refresh_interval


def top_bar_content(
    *,
    title: str,
    now: datetime,
    tz: tzinfo,
    snapshots: Snapshots | None,
    data_age: float | None,
    refresh_interval: float,
    looking_at: datetime | None = None,
    alerts: AlertCount | None = None,
    alerts_unknown: bool = False,
    width: int | None = None,
) -> Content:
    """``omniops │ Mon 24 Nov 08:30 CST │ data 08:29:55 (120 ms) │ STALE no refresh for 3 min``.

    ``alerts``: the alerts paging now; when any are, the bar says so right after the
    title: ``3 FIRING 1 critical · 1 acked (a)`` (reversed red while one is
    unacknowledged, yellow once all are).  ``alerts_unknown``: the count could not be read
    now (``alerts ?``, or the last count read followed by ``?``).

    ``looking_at`` (``:at 14:00``): the panels show that past moment, and the bar says so
    right after the title: ``AS OF Tue 18 Nov 14:00 EST · :at now for live``.

    ``width``: the bar's columns.  When the full bar does not fit, it says the same in
    fewer words (no refresh time, ``crit``, ``STALE 3 min``), then leaves out the clock
    and the acknowledged count, so an 80-column terminal never loses the alerts count or
    STALE off its right edge.

    ``now`` and the data time are on the injected clock (simulated in the demo);
    ``data_age`` is in wall seconds, like ``refresh_interval``, so a replay running
    60 times faster than the wall is not "stale" just because its clock runs fast.
    """
    content = Content()
    for terse in range(3):
        content = _top_bar(
            title, now, tz, snapshots, data_age, refresh_interval, looking_at, alerts,
            alerts_unknown, terse,
        )  # fmt: skip
        if width is None or content.cell_length <= width:
            break
    return content


def _top_bar(
    title: str,
    now: datetime,
    tz: tzinfo,
    snapshots: Snapshots | None,
    data_age: float | None,
    refresh_interval: float,
    looking_at: datetime | None,
    alerts: AlertCount | None,
    alerts_unknown: bool,
    terse: int,
) -> Content:
    """The top bar at a level of terseness: 0 full, 1 fewer words, 2 fewest (no clock)."""
    parts: list[Part] = [(title, "bold"), " │ "]
    if alerts is not None and alerts.firing:
        pending = alerts.firing > alerts.acknowledged
        style = "$text-error bold reverse" if pending else "$text-warning bold"
        parts.append((f"{alerts.firing} FIRING", style))
        if alerts.critical:
            word = "crit" if terse else "critical"
            parts.append((f" {alerts.critical} {word}", "$text-error bold"))
        if alerts.acknowledged and terse < 2:
            every = alerts.acknowledged == alerts.firing and alerts.firing > 1
            parts.append(f" · {'all' if every else alerts.acknowledged} acked")
        if alerts_unknown:  # the last count read, in doubt now
            parts.append((" ?", "$text-warning bold"))
        elif not terse:
            parts.append((" (a)", "$text-muted"))
        parts.append(" │ ")
    elif alerts_unknown:
        parts.append(("alerts ?", "$text-warning"))
        parts.append(" │ ")
    if looking_at is not None:
        parts.append((f"AS OF {fmt_header_clock(looking_at, tz)}", "$text-warning bold reverse"))
        if terse < 2:
            parts.append((" past" if terse else " past · :at now for live", "$text-warning"))
        parts.append(" │ ")
    if terse < 2:
        parts += ["now " if looking_at is not None else "", fmt_header_clock(now, tz), " │ "]
    if snapshots is None:
        parts.append(("waiting for the first refresh…", "italic"))
    else:
        # Looking back, the data's time is the moment the bar already names: said once.
        said = terse == 0 or looking_at is None
        if said:
            parts.append(f"data {fmt_clock(snapshots.as_of, tz, seconds=True)}")
        if not terse:
            parts.append((f" ({snapshots.computed_in_ms:,.0f} ms)", "$text-muted"))
        if data_age is not None and is_stale(data_age, refresh_interval):
            parts.append(" │ " if said else "")
            parts.append(("STALE", "$text-error bold reverse"))
            since = fmt_minutes(data_age / 60)
            parts.append((f" {since}" if terse else f" no refresh for {since}", "$text-error"))
    if parts[-1] == " │ ":  # looking back, fresh, in few words: nothing after the moment
        parts.pop()
    return Content.assemble(*parts)


FEED_LINES = 2
"""Lines the feeds bar has (``#feeds`` in ``app.tcss``: ``max-height: 2``)."""


def feed_content(
    feeds: Sequence[FeedFreshness],
    tz: tzinfo,
    *,
    wide: bool = False,
    adapters: Sequence[FeedHealthRow] = (),
    now: datetime | None = None,
    width: int | None = None,
) -> Content:
    """``● web ● pos ▲ marketplace STALE last 13:52`` (``Feeds`` and last times when wide).

    Feed adapters of ``serve`` that are not healthy follow: ``▲ stream:wms RETRYING``.
    When that does not fit the bar's two lines of ``width`` columns, the bar says how many
    are stale and names as many as fit, the rest counted (``▲ 8 STALE: carrier, catalog,
    … +5 (h)  ● 2 ok``): no stale feed is left off without a word.
    """
    full = _feed_parts(feeds, tz, wide=wide, adapters=adapters, now=now)
    if width is None:
        return full
    budget = FEED_LINES * max(width - 2, 10) - 8  # padding; a margin for word wrap
    if full.cell_length <= budget:
        return full
    return _compact_feeds(feeds, adapters, budget)


def _unhealthy(adapters: Sequence[FeedHealthRow]) -> list[str]:
    words = [(a.feed, "SILENT" if a.silent else a.state.upper()) for a in adapters]
    return [f"{feed} {word}" for feed, word in words if word not in _HEALTHY]


_HEALTHY = ("CONNECTED", "DONE", "STARTING")


def _compact_feeds(
    feeds: Sequence[FeedFreshness], adapters: Sequence[FeedHealthRow], budget: int
) -> Content:
    """The stale feeds counted and named while they fit, then the healthy ones counted."""
    stale = [f.feed for f in feeds if f.stale]
    names = stale + _unhealthy(adapters)
    ok = len(feeds) - len(stale)
    quarantined = sum(f.quarantined for f in feeds)
    tail: list[Part] = []
    if ok:
        tail += ["  ", (OK_GLYPH, "$text-success"), f" {ok} ok"]
    if quarantined:
        tail.append((f"  {quarantined:,} quarantined", "$text-warning"))
    room = budget - Content.assemble(*tail).cell_length
    head = f"{STALE_GLYPH} {len(stale)} STALE: " if stale else f"{STALE_GLYPH} "
    shown: list[str] = []
    for index, name in enumerate(names):
        rest = len(names) - index - 1
        more = f", … +{rest} (h)" if rest else ""
        if len(head) + len(", ".join([*shown, name])) + len(more) > room and shown:
            break
        shown.append(name)
    left = len(names) - len(shown)
    text = head + ", ".join(shown) + (f", … +{left} (h)" if left else "")
    return Content.assemble((text, "$text-error bold"), *tail)


def _feed_parts(
    feeds: Sequence[FeedFreshness],
    tz: tzinfo,
    *,
    wide: bool,
    adapters: Sequence[FeedHealthRow],
    now: datetime | None,
) -> Content:
    """Every feed with its state, then the unhealthy adapters (:func:`feed_content`)."""
    # Narrow terminals drop the label and the double spacing: the glyphs say "feed".
    gap = "  " if wide else " "
    parts: list[Part] = [("Feeds", "bold")] if wide else []
    if not feeds:
        parts.append(("  none reported yet" if wide else "Feeds: none reported yet", "italic"))
    for index, feed in enumerate(feeds):
        if wide or index:
            parts.append(gap)
        if feed.stale:
            if feed.last_event_at is None:
                since = " never delivered"
            else:
                when = (
                    fmt_past(feed.last_event_at, tz, now)
                    if now is not None
                    else fmt_clock(feed.last_event_at, tz)
                )
                since = f" last {when}"
            parts.append((f"{STALE_GLYPH} {feed.feed} STALE", "$text-error bold"))
            parts.append((since, "$text-error"))
        else:
            parts.append((OK_GLYPH, "$text-success"))
            parts.append(f" {feed.feed}")
            if wide and feed.last_event_at is not None:
                parts.append((f" {fmt_clock(feed.last_event_at, tz)}", "$text-muted"))
        if feed.quarantined:
            parts.append((f" {feed.quarantined:,} quarantined", "$text-warning"))
    for name in _unhealthy(adapters):
        parts.append(gap)
        parts.append((f"{STALE_GLYPH} {name}", "$text-error bold"))
    return Content.assemble(*parts)


def sales_content(
    headline: Headline | None, *, wide: bool = True, highlights: Highlights = DEFAULT_HIGHLIGHTS
) -> Content:
    """``Net sales 12,346 ▼ 23% LOW vs 16,012 · Orders/h 42.0 ▲ 5%`` (no "vs" when narrow).

    LOW follows the threshold in force for ``headline.net_sales_vs_rolling`` (the
    operator's rule, else the registry's default).
    """
    if headline is None:
        return Content("Net sales — · Orders/h —")
    parts: list[Part] = [("Net sales ", "bold"), fmt_money(headline.net_sales), " "]
    trend = fmt_trend(headline.net_sales, headline.net_sales_rolling)
    ratio = (
        headline.net_sales / headline.net_sales_rolling
        if headline.net_sales is not None and headline.net_sales_rolling
        else None
    )
    if highlights.flags("headline.net_sales_vs_rolling", {}, ratio):
        parts.append((f"{trend} LOW", "$text-error bold"))
    else:
        parts.append(trend)
    if wide and headline.net_sales_rolling is not None:
        parts.append((f" vs {fmt_money(headline.net_sales_rolling)}", "$text-muted"))
    parts.append(" · ")
    parts.append(("Orders/h ", "bold"))
    parts.append(f"{fmt_num(headline.orders_per_hour)} ")
    parts.append(fmt_trend(headline.orders_per_hour, headline.orders_per_hour_rolling))
    return Content.assemble(*parts)


def aov_content(headline: Headline | None) -> Content:
    """``AOV web 54.20 ▼ 3% · pos 31.10 ▲ 1%``."""
    parts: list[Part] = [("AOV", "bold")]
    if headline is None or not headline.channels:
        parts.append(" —")
        return Content.assemble(*parts)
    for index, channel in enumerate(headline.channels):
        parts.append(" " if index == 0 else " · ")
        parts.append(f"{channel.channel} {fmt_money(channel.aov)} ")
        change = pct_change(channel.aov, channel.aov_rolling)
        trend = fmt_trend(channel.aov, channel.aov_rolling)
        parts.append((trend, "$text-warning" if change is not None and change <= -10 else ""))
    return Content.assemble(*parts)


class HeadlineStrip(Vertical):
    """Today's trading: net sales and orders/hour vs rolling, AOV per channel, hourly sparkline."""

    def compose(self) -> ComposeResult:
        """Sales line with the sparkline at its right, AOV line below."""
        with Horizontal(id="sales-row"):
            yield TextBar(id="sales")
            yield Plain("hourly net sales", id="spark-label")
            yield Sparkline([], id="spark")
        yield TextBar(id="aov")

    def show(
        self,
        headline: Headline | None,
        *,
        wide: bool,
        highlights: Highlights = DEFAULT_HIGHLIGHTS,
    ) -> None:
        """Render ``headline`` (None before the first refresh), LOW at ``highlights``."""
        sales = sales_content(headline, wide=wide, highlights=highlights)
        self.query_one("#sales", TextBar).set_content(sales)
        self.query_one("#aov", TextBar).set_content(aov_content(headline))
        data = list(headline.hourly_net_sales) if headline is not None else []
        spark = self.query_one(Sparkline)
        if list(spark.data or []) != data:
            spark.data = data


class FilterBar(Horizontal):
    """The filter prompt: a label naming the panel and an Input for label matchers."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "screen.close_filter", "Cancel", id="cancel-filter"),
    ]

    def compose(self) -> ComposeResult:
        """The label; the input is mounted beside it when the bar first opens (issue 15)."""
        yield Plain("Filter", id="filter-label")

    def _field(self) -> Input:
        """The input, mounted the first time it is needed (the first paint has no use of it)."""
        found = self.query(Input)
        if found:
            return found.first()
        field = Input(
            placeholder=(
                "location=WH-TX, category=~app.*, channel!=pos  (Enter: apply, Esc: cancel)"
            ),
            id="filter-input",
            compact=True,
        )
        field.cursor_blink = False  # an idle prompt must not keep a slow link busy
        self.mount(field)  # registered (and styled) now: it can take the focus at once
        return field

    def open(self, panel_heading: str, text: str) -> None:
        """Show the bar for a panel, pre-filled with its current filter, and focus it."""
        self.query_one("#filter-label", Static).update(f"Filter {panel_heading} ›")
        field = self._field()
        field.value = text
        field.cursor_position = len(text)
        # Shown and focused at once (not on the next style pass), so keys typed right
        # after "f" already land in the input instead of triggering table bindings.
        self.add_class("-open")
        self.display = True
        self.screen.set_focus(field)

    def close(self) -> None:
        """Hide the bar."""
        self.remove_class("-open")
        self.display = False

    @property
    def is_open(self) -> bool:
        """Whether the bar is showing."""
        return self.has_class("-open")
