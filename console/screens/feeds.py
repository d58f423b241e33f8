"""The feeds view: when each source last delivered, and the state of serve's adapters."""

from __future__ import annotations

from datetime import tzinfo
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from console.widgets.formatting import DASH, fmt_int, fmt_num, fmt_past
from store.snapshots import Snapshots


class FeedsScreen(Screen[None]):
    """Every feed: when each source last delivered, and the state of serve's adapters."""

    CSS_PATH = "detail.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self, *, snapshots: Snapshots | None, tz: tzinfo) -> None:
        """Show the feeds of ``snapshots`` (the latest refresh), times in ``tz``."""
        super().__init__()
        self.snapshots = snapshots
        self.tz = tz

    def compose(self) -> ComposeResult:
        """Two tables: sources by their last event, adapters by their live state."""
        as_of = self.snapshots.as_of if self.snapshots else None
        stamp = "no data yet" if as_of is None else f"as of {fmt_past(as_of, self.tz, as_of)}"
        yield Static(Content.assemble(("Feeds", "bold"), (f"  {stamp}", "$text-muted")))
        with VerticalScroll(id="feeds-body"):
            yield Static("Sources (by the events in the store)", classes="detail-numbers")
            sources: DataTable[str] = DataTable(id="feed-sources", cursor_type="row")
            sources.add_columns("Feed", "Status", "Last event", "Events", "Quarantined")
            adapters: DataTable[str] = DataTable(id="feed-adapters", cursor_type="row")
            adapters.add_columns(
                "Adapter", "Kind", "State", "Events/min", "Errors", "Quar.", "Detail"
            )
            if self.snapshots is not None and as_of is not None:
                for feed in self.snapshots.headline.feeds:
                    sources.add_row(
                        feed.feed,
                        "STALE" if feed.stale else "ok",
                        fmt_past(feed.last_event_at, self.tz, as_of)
                        if feed.last_event_at
                        else "never",
                        fmt_int(feed.events),
                        fmt_int(feed.quarantined),
                        key=feed.feed,
                    )
                for row in self.snapshots.headline.adapters:
                    adapters.add_row(
                        row.feed,
                        row.kind,
                        "SILENT (serve not reporting)" if row.silent else row.state.upper(),
                        fmt_num(row.events_per_minute),
                        fmt_int(row.errors),
                        fmt_int(row.quarantined),
                        row.detail or DASH,
                        key=row.feed,
                    )
            yield sources
            yield Static(
                "Adapters of omniops serve (webhooks, streams, polls, drop folder)"
                if self.snapshots is None or self.snapshots.headline.adapters
                else "No omniops serve has reported adapters to this store.",
                classes="detail-numbers",
            )
            yield adapters
        yield Footer()

    def action_back(self) -> None:
        """Return to the console."""
        self.dismiss()
