"""The base of the list views over a blocking source (alerts, silences).

A :class:`ListScreen` owns what those views share: a row-cursor table with its columns, a
status line, a load of the list in an exclusive thread worker that posts a
:class:`~console.messages.ListLoaded` (or :class:`~console.messages.WorkFailed`), a poll
timer, a thread worker carrying out one change and posting
:class:`~console.messages.AlertActionDone`, the role check before a change, and the
reload and back keys' actions.  A view names itself (``list_name``: its widgets' ids, its
workers' groups and its timer are named after it) and says how to read and show its list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import tzinfo
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from rich.cells import cell_len
from rich.text import Text
from textual import on
from textual.screen import Screen
from textual.widgets import DataTable, Static

from console.errors import describe_error
from console.messages import AlertActionDone, ListLoaded, WorkFailed
from console.widgets.cursor import cursor_key
from console.widgets.plain import Plain, PlainTable
from rules.roles import Permissions
from store.clock import Clock


def fit_columns(table: DataTable[Any], rows: Sequence[Sequence[Text]]) -> None:
    """Size the table's columns for ``rows`` now, in the batch that changes the cells.

    DataTable measures automatic widths on its next idle, and a frame painted before that
    is cached with the old widths (a browser console under load was seen to keep the
    header widths, ``late_`` for ``late_orders``); fixed widths set with the cells avoid
    that, as the panels do (:meth:`console.widgets.panels.Panel._fit_columns`).  Columns
    only grow, so a reload never makes them jump back and forth.
    """
    for index, column in enumerate(table.ordered_columns):
        width = max([cell_len(column.label.plain)] + [r[index].cell_len for r in rows])
        current = column.content_width if column.auto_width else column.width
        if column.auto_width or width > current:
            column.auto_width = False
            column.width = max(width, current)


class ListSource(Protocol):
    """What every list view needs of its source: the user's rights."""

    permissions: Permissions


SourceT = TypeVar("SourceT", bound=ListSource)
LoadedT = TypeVar("LoadedT", bound=ListLoaded)


class ListScreen(Screen[None], Generic[SourceT, LoadedT]):
    """A pushed view listing what a source reads: table, status line, load, poll, changes."""

    list_name: ClassVar[str] = ""
    """Names the table (``#<name>-table``), status line, workers' groups and poll timer."""
    list_columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    """The table's columns, ``(key, label)``, left to right."""
    reload_failed: ClassVar[str] = ""
    """The status line's word when a load fails (``ALERTS NOT RELOADED``)."""
    notice_title: ClassVar[str] = ""
    """The title of the notice saying a change was carried out."""

    def __init__(
        self,
        *,
        source: SourceT,
        clock: Clock,
        tz: tzinfo,
        poll_seconds: float,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        """The list of ``source``; times in ``tz``, "now" from ``clock``.

        ``poll_seconds``: reload this often (0: only when asked).
        """
        super().__init__(name=name, id=id)
        self.source = source
        self.clock = clock
        self.tz = tz
        self.poll_seconds = poll_seconds
        self.loads = 0
        """Completed loads (tests wait on this)."""
        self._status = ""

    # -- what a view provides ------------------------------------------------------------------

    def read_list(self) -> LoadedT:
        """Read the list from the source (blocking; runs in a thread worker)."""
        raise NotImplementedError

    def show_loaded(self, loaded: LoadedT) -> None:
        """Render a loaded list (``loaded``: the message :meth:`read_list` returned)."""
        raise NotImplementedError

    def failure_text(self, failed: WorkFailed) -> str:
        """The status line for a failed load or change."""
        return f"{failed.what}: {describe_error(failed.error)}"

    # -- layout --------------------------------------------------------------------------------

    def list_table(self) -> DataTable[Any]:
        """The table to compose (row cursor, zebra stripes); its columns come on mount."""
        return PlainTable(id=f"{self.list_name}-table", cursor_type="row", zebra_stripes=True)

    def status_line(self) -> Static:
        """The status line to compose (hidden while empty)."""
        return Plain("", id=f"{self.list_name}-status", classes="-empty")

    def on_mount(self) -> None:
        """Columns, first load, and the poll timer."""
        table = self.table
        for key, label in self.list_columns:
            table.add_column(label, key=key)
        table.focus()
        self.load_list()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.load_list, name=f"{self.list_name}-poll")

    @property
    def table(self) -> DataTable[Any]:
        """The list's table."""
        return self.query_one(f"#{self.list_name}-table", DataTable)

    # -- loading -------------------------------------------------------------------------------

    def load_list(self) -> None:
        """Reload the list from the source (in a thread worker; a newer load cancels it)."""
        self.run_worker(
            self._load,
            name="_load",
            group=f"{self.list_name}-load",
            exclusive=True,
            thread=True,
            exit_on_error=False,
        )

    def _load(self) -> None:
        """Thread worker: read the list, post it or :class:`WorkFailed`."""
        try:
            loaded = self.read_list()
        except Exception as exc:  # shown on the status line; the last list stays
            self.post_message(WorkFailed(self.reload_failed, exc))
            return
        self.post_message(loaded)

    @on(ListLoaded)
    def _loaded(self, message: ListLoaded) -> None:
        message.stop()
        self._set_status("")
        self.show_loaded(cast("LoadedT", message))  # the kind this view's read_list posts
        self.loads += 1

    @on(WorkFailed)
    def _failed(self, message: WorkFailed) -> None:
        message.stop()
        self._set_status(self.failure_text(message))

    @on(AlertActionDone)
    def _action_done(self, message: AlertActionDone) -> None:
        message.stop()
        self._set_status("")
        self.notify(message.text, title=self.notice_title)
        self.load_list()

    # -- status line ---------------------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self._status = text
        status = self.query_one(f"#{self.list_name}-status", Static)
        status.update(text)
        status.set_class(not text, "-empty")

    @property
    def status_text(self) -> str:
        """The status line (empty when all is well)."""
        return self._status

    # -- selection and changes -----------------------------------------------------------------

    def selected_key(self) -> str | None:
        """The key of the row under the cursor."""
        return cursor_key(self.table)

    def _allowed(self, needs: str) -> bool:
        """Whether the user may change anything; if not, the status line says why.

        ``needs``: what the change is, as the subject of "…need(s) the operator or editor
        role" (``ending a silence needs``).
        """
        p = self.source.permissions
        if p.can_acknowledge:
            return True
        why = "this console is read-only" if p.read_only else f"{p.user} is a {p.role}"
        self._set_status(
            f"NOT ALLOWED: {why}; {needs} the operator or editor role "
            "(the [roles] section of the config)."
        )
        return False

    def _act(self, done: str, action: Callable[[], object]) -> None:
        """Carry out one change in a thread worker; ``done`` is the notice when it worked."""
        self.run_worker(
            lambda: self._change(done, action),
            name="_act",
            group=f"{self.list_name}-action",
            thread=True,
            exit_on_error=False,
        )

    def _change(self, done: str, action: Callable[[], object]) -> None:
        """Thread worker: carry out one change, post :class:`AlertActionDone` or a failure."""
        try:
            action()
        except Exception as exc:  # refused or failed: said on the status line
            self.post_message(WorkFailed("NOT DONE", exc))
            return
        self.post_message(AlertActionDone(done))

    # -- keys ----------------------------------------------------------------------------------

    def action_reload(self) -> None:
        """Reload the list now."""
        self.load_list()

    def action_back(self) -> None:
        """Back to the console (when the view was pushed over it)."""
        if self.is_active:
            self.dismiss()
