"""The feeds view: sources, serve's adapters, and what is held.

When each source last delivered, the state of serve's adapters, the unmapped external ids
per adapter (``omniops mapping suggest``) and the quarantine per reason (``omniops
quarantine list`` / ``replay``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.messages import HeldRead, HeldReplayed
from console.widgets.footer import FittedFooter
from console.widgets.formatting import DASH, fmt_int, fmt_num, fmt_past
from console.widgets.plain import Plain, PlainTable
from store.snapshots import HeldSummary, Snapshots

NUMBERS = "detail-numbers"

HeldLoader = Callable[[], HeldSummary | None]
"""Reads the held summary (the CLI wires it to the store; None: the store has none)."""


class FeedsScreen(Screen[None]):
    """Every feed: when each source last delivered, and the state of serve's adapters."""

    CSS_PATH = "detail.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
        Binding("p", "replay", "Replay held", id="replay-held"),
    ]

    def __init__(
        self,
        *,
        snapshots: Snapshots | None,
        tz: tzinfo,
        held: HeldLoader | None = None,
        replay: Callable[[], str] | None = None,
    ) -> None:
        """Show the feeds of ``snapshots`` (the latest refresh), times in ``tz``.

        ``held`` reads the unmapped ids and quarantine counts (in a worker thread, when
        the view opens); without it those tables are left out.  ``replay`` replays the
        held deliveries (``p``) and returns its summary line; it raises
        :class:`PermissionError` for a user who may not (operators and editors may).
        """
        super().__init__()
        self.snapshots = snapshots
        self.tz = tz
        self.held = held
        self.replay = replay

    def compose(self) -> ComposeResult:
        """Two tables: sources by their last event, adapters by their live state."""
        as_of = self.snapshots.as_of if self.snapshots else None
        stamp = "no data yet" if as_of is None else f"as of {fmt_past(as_of, self.tz, as_of)}"
        yield Plain(Content.assemble(("Feeds", "bold"), (f"  {stamp}", "$text-muted")))
        with VerticalScroll(id="feeds-body"):
            yield Plain("Sources (by the events in the store)", classes="detail-numbers")
            sources: DataTable[str] = PlainTable(id="feed-sources", cursor_type="row")
            sources.add_columns("Feed", "Status", "Last event", "Events", "Quarantined")
            adapters: DataTable[str] = PlainTable(id="feed-adapters", cursor_type="row")
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
            yield Plain(
                "Adapters of omniops serve (webhooks, streams, polls, drop folder)"
                if self.snapshots is None or self.snapshots.headline.adapters
                else "No omniops serve has reported adapters to this store.",
                classes="detail-numbers",
            )
            yield adapters
            if self.held is not None:
                yield Plain("Unmapped ids: loading…", id="unmapped-title", classes="detail-numbers")
                unmapped: DataTable[str] = PlainTable(id="feed-unmapped", cursor_type="row")
                unmapped.add_columns("Adapter", "Unmapped ids", "Events carrying them")
                yield unmapped
                yield Plain("Quarantine: loading…", id="quarantine-title", classes="detail-numbers")
                reasons: DataTable[str] = PlainTable(id="feed-quarantine", cursor_type="row")
                reasons.add_columns("Rows", "Reason")
                yield reasons
        yield FittedFooter()

    def on_mount(self) -> None:
        """Read what is held off the UI thread."""
        if self.held is not None:
            self.run_worker(self._load_held, thread=True, name="held", exclusive=True)

    def _load_held(self) -> None:
        assert self.held is not None
        self.post_message(HeldRead(self.held()))

    def on_held_read(self, message: HeldRead) -> None:
        """Show what a worker read."""
        self.show_held(message.summary)

    def on_held_replayed(self, message: HeldReplayed) -> None:
        """Say how a replay ended, then read what is still held."""
        severity: SeverityLevel = "error" if message.severity == "error" else "information"
        self.notify(message.text, severity=severity, timeout=10)
        if self.held is not None:
            self.run_worker(self._load_held, thread=True, name="held", exclusive=True)

    def show_held(self, summary: HeldSummary | None) -> None:
        """Fill the unmapped-ids and quarantine tables."""
        summary = summary or HeldSummary()
        unmapped = self.query_one("#feed-unmapped", DataTable)
        unmapped.clear()
        total = sum(summary.unmapped_by_adapter.values())
        self.query_one("#unmapped-title", Static).update(
            f"Unmapped ids: {fmt_int(total)}; `omniops mapping suggest` lists them with a"
            " TOML stub for the mapping file"
            if total
            else "Unmapped ids: none (every external id seen has a mapping)"
        )
        for adapter, count in sorted(summary.unmapped_by_adapter.items()):
            unmapped.add_row(
                adapter,
                fmt_int(count),
                fmt_int(summary.unmapped_events.get(adapter, 0)),
                key=adapter,
            )
        reasons = self.query_one("#feed-quarantine", DataTable)
        reasons.clear()
        self.query_one("#quarantine-title", Static).update(
            f"Quarantine: {fmt_int(summary.quarantined)} rows, {fmt_int(summary.held)}"
            " deliveries held; `omniops quarantine list` shows them, `omniops quarantine"
            " replay` maps them again"
            if summary.quarantined or summary.held
            else "Quarantine: empty"
        )
        for n, (reason, count) in enumerate(summary.quarantine_by_reason):
            reasons.add_row(fmt_int(count), reason, key=str(n))

    def action_replay(self) -> None:
        """Replay the held deliveries with serve's mapping file (operators and editors)."""
        if self.replay is None:
            self.notify("Replay is not available in this console.", severity="warning")
            return
        self.notify("Replaying held deliveries…")
        self.run_worker(self._run_replay, thread=True, name="replay", exclusive=True)

    def _run_replay(self) -> None:
        assert self.replay is not None
        try:
            message, severity = self.replay(), "information"
        except (PermissionError, ValueError, OSError) as exc:
            message, severity = f"Replay refused: {exc}", "error"
        self.post_message(HeldReplayed(message, severity))

    def action_back(self) -> None:
        """Return to the console."""
        self.dismiss()
