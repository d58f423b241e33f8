"""Messages the console's workers and widgets post: dataclasses, named in the past tense.

The one worker convention of the console: a thread worker never touches a widget and never
calls back into the UI; it ends by posting exactly one of these messages to the screen (or
app) that started it, a success message carrying its result or :class:`WorkFailed`
carrying the error.  Messages that may arrive faster than they are handled (a refresh, a
reload of a list) replace an older one still queued (``can_replace``), so a burst renders
once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:  # annotations only: the console's first paint loads no rules models
    from rules.alerts.actions import AlertCount, ReceiverStatus, Transition
    from rules.alerts.silences import AlertView, SilenceView
    from rules.audit import AuditEntry
    from rules.file import LoadedRules
    from rules.routing.config import FulfillmentRouting
    from rules.routing.orders import Decision
    from rules.whatif import WhatIfReport
    from store.snapshots import (
        FulfillmentRow,
        HeldSummary,
        LateOrders,
        ReturnSpikeRow,
        Snapshots,
        StockHistory,
        StockoutRow,
    )

# -- generic -------------------------------------------------------------------------------


@dataclass
class WorkFailed(Message):
    """A worker's task raised; nothing it was meant to do may be assumed done."""

    what: str
    """What did not happen, as the status line says it: ``Not saved``, ``What-if failed``."""
    error: BaseException


# -- the console (refresh, export, panels, detail) -----------------------------------------


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
class AlertsCounted(Message):
    """The alerts paging now were counted (the top bar's ``3 FIRING``), after a refresh.

    ``count`` is None when they could not be read (the bar says the count is unknown).
    """

    count: AlertCount | None

    def can_replace(self, message: Message) -> bool:
        """A newer count supersedes an older one that has not been handled yet."""
        return isinstance(message, AlertsCounted)


@dataclass
class RefreshFailed(Message):
    """A refresh worker raised: the last good snapshots stay on screen."""

    error: BaseException


@dataclass
class WarmedUp(Message):
    """The warm-up after the first paint ran; ``redraw``: the panels must be drawn again."""

    redraw: bool


@dataclass
class ExportWritten(Message):
    """An export worker wrote a panel's rows to ``path``."""

    path: Path


@dataclass
class PanelRowSelected(Message):
    """The operator chose a row of a panel (Enter or click): the app opens its detail."""

    kind: str
    """fulfillment, stockout or returns."""
    row: FulfillmentRow | StockoutRow | ReturnSpikeRow
    as_of: datetime
    """When the snapshot the row comes from was computed (UTC)."""


@dataclass
class DetailFetched(Message):
    """A detail worker brought what a row's snapshot does not hold (history, late orders)."""

    extra: StockHistory | LateOrders | None

    def can_replace(self, message: Message) -> bool:
        """Only the newest fetch matters."""
        return isinstance(message, DetailFetched)


# -- alerts --------------------------------------------------------------------------------


class ListLoaded(Message):
    """One load of a list view's list (:class:`console.screens.listing.ListScreen`)."""

    def can_replace(self, message: Message) -> bool:
        """A newer list of the same kind supersedes an older one not shown yet."""
        return isinstance(message, type(self))


@dataclass
class AlertsLoaded(ListLoaded):
    """One load of the alert list and the receivers' delivery state."""

    views: tuple[AlertView, ...]
    receivers: tuple[ReceiverStatus, ...]


@dataclass
class SilencesLoaded(ListLoaded):
    """One load of the silences in force, each with the alerts it mutes."""

    views: tuple[SilenceView, ...]


@dataclass
class AlertActionDone(Message):
    """An acknowledgement, silence or expiry was carried out; ``text`` says which."""

    text: str


@dataclass
class AlertHistoryRead(Message):
    """The transitions of one alert were read."""

    title: str
    transitions: tuple[Transition, ...]


# -- rules file ----------------------------------------------------------------------------


@dataclass
class RulesRead(Message):
    """The rules file (and how often each rule fired in 24 h) was read."""

    loaded: LoadedRules
    fired: Mapping[str, int]

    def can_replace(self, message: Message) -> bool:
        """A newer read supersedes an older one."""
        return isinstance(message, RulesRead)


@dataclass
class RulesSaved(Message):
    """A change to the rules file was written; ``loaded`` is the file as it is now."""

    loaded: LoadedRules


@dataclass
class RulesReread(Message):
    """A form re-read the file after a conflict; ``loaded`` is the file as it is now."""

    loaded: LoadedRules


@dataclass
class AuditRead(Message):
    """The audit log of the rules file was read (newest first)."""

    entries: list[AuditEntry]


# -- fulfillment routing --------------------------------------------------------------------


@dataclass
class RoutingLoaded(Message):
    """The ``[fulfillment]`` routing rules in force were read."""

    routing: FulfillmentRouting


@dataclass
class WhatIfComputed(Message):
    """Today's orders were replayed under the current rules and under a draft."""

    report: WhatIfReport


@dataclass
class RoutingSaved(Message):
    """A routing draft was saved; ``routing`` is what is now in force."""

    routing: FulfillmentRouting


@dataclass
class DecisionLooked(Message):
    """The stored routing decision of ``order_id`` was looked up (None: none stored)."""

    order_id: str
    decision: Decision | None
    edited: EditedLines | None = None
    """An edited order's latest edit time and current lines (None: never edited)."""


EditedLines = tuple[int, list[tuple[int, str, int, str | None]]]
"""An edited order's latest edit time (epoch s) and its lines now: (line number, SKU,
quantity, node); what ``store.reservations.edited_lines`` gives, the console knowing only
its shape (console/ imports no store module with I/O)."""


# -- feeds ---------------------------------------------------------------------------------


@dataclass
class HeldRead(Message):
    """What the store holds for a replay: unmapped ids per adapter, quarantine by reason."""

    summary: HeldSummary | None


@dataclass
class HeldReplayed(Message):
    """A replay of the held deliveries ended; ``text`` says what it did or why it was refused."""

    text: str
    severity: str
