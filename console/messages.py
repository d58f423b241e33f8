"""Messages the console posts to itself: dataclasses, named in the past tense."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from textual.message import Message

from store.snapshots import FulfillmentRow, ReturnSpikeRow, Snapshots, StockoutRow


@dataclass
class SnapshotsComputed(Message):
    """A refresh worker finished computing every panel's snapshot.

    Posted from the refresh thread; a newer one replaces an older one still queued, so a
    burst of refreshes renders once.
    """

    snapshots: Snapshots

    def can_replace(self, message: Message) -> bool:
        """A newer snapshot supersedes an older one that has not been handled yet."""
        return isinstance(message, SnapshotsComputed)


@dataclass
class PanelRowSelected(Message):
    """The operator chose a row of a panel (Enter or click): the app opens its detail."""

    kind: str
    """fulfillment, stockout or returns."""
    row: FulfillmentRow | StockoutRow | ReturnSpikeRow
    as_of: datetime
    """When the snapshot the row comes from was computed (UTC)."""
