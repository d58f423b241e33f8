"""The silences view: what is muted, by whom, until when and why; expire one early.

The screen is handed a :class:`SilencesSource` (in the app:
:class:`rules.alerts.actions.AlertActions`) and never touches the store itself: every call
is blocking, so it runs in a thread worker that posts its result as a message
(:mod:`console.messages`).  Each silence in force is one row (its id, when it ends, how
many alerts it mutes now, who made it, its matchers and its comment); under the table the
selected silence is spelled out with every active alert it suppresses.

Keys: ``x`` expire the selected silence now (asks first; operators and editors only, the
source checks the role again), ``r`` reload, ``escape`` back.  The list also reloads every
``poll_seconds`` (another console may add or end one).
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import ClassVar, Protocol

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import DataTable, Static

from console.messages import SilencesLoaded
from console.screens.alerts import STATE_WORDS, fmt_age, scope_key
from console.screens.dialogs import ConfirmScreen
from console.screens.listing import ListScreen, fit_columns
from console.widgets.cursor import place_cursor
from console.widgets.footer import FittedFooter
from console.widgets.formatting import fmt_past, fmt_when
from console.widgets.plain import Plain
from rules.alerts.silences import SilenceView
from rules.alerts.state import condition_text
from rules.roles import Permissions
from store.clock import Clock


class SilencesSource(Protocol):
    """What the silences view needs (:class:`rules.alerts.actions.AlertActions` provides it)."""

    permissions: Permissions

    def silence_views(self) -> list[SilenceView]:
        """Silences in force now, each with the active alerts it mutes."""
        ...

    def expire_silence(self, silence_id: int) -> None:
        """End a silence now."""
        ...


def fmt_until(ends_at: datetime, now: datetime, tz: tzinfo) -> str:
    """``16:30 (in 1h58)``: the local end time and how long is left."""
    return f"{fmt_when(ends_at, tz, now)} (in {fmt_age(ends_at - now)})"


def mutes_text(view: SilenceView, now: datetime, tz: tzinfo) -> str:
    """The selected silence in full: matchers, who, since, until, why, and what it mutes."""
    s = view.silence
    lines = [
        f"#{s.id} {s.matchers}",
        f"by {s.created_by} since {fmt_past(s.created_at, tz, now)}, "
        f"until {fmt_until(s.ends_at, now, tz)}"
        + (f' · "{s.comment}"' if s.comment else " · no comment"),
    ]
    if not view.mutes:
        lines.append("mutes no active alert now (it will mute the next one that matches)")
    else:
        lines.append(f"mutes {len(view.mutes)} active alert{'s' if len(view.mutes) > 1 else ''}:")
        for r in view.mutes:
            word = STATE_WORDS.get(r.state, r.state)
            lines.append(f"  {word:<8} {r.rule_id}  {scope_key(r.scope)}  {condition_text(r)}")
    return "\n".join(lines)


class SilencesScreen(ListScreen[SilencesSource, SilencesLoaded]):
    """The silences in force, ending soonest first; ``x`` ends the selected one now."""

    CSS_PATH = "silences.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "expire", "Expire now", id="silence-expire"),
        Binding("r", "reload", "Reload", id="silences-reload"),
        Binding("escape", "back", "Back", id="silences-back"),
    ]
    list_name = "silences"
    # Short ones first, so 80 columns show the matchers.
    list_columns = (
        ("id", "#"),
        ("until", "Until"),
        ("mutes", "Mutes"),
        ("by", "By"),
        ("matchers", "Matchers"),
        ("comment", "Comment"),
    )
    reload_failed = "SILENCES NOT RELOADED"
    notice_title = "Silences"

    def __init__(
        self,
        *,
        source: SilencesSource,
        clock: Clock,
        tz: tzinfo,
        poll_seconds: float = 15.0,
    ) -> None:
        """The silences of ``source``; times in ``tz``, "now" from ``clock``."""
        super().__init__(source=source, clock=clock, tz=tz, poll_seconds=poll_seconds)
        self.views: tuple[SilenceView, ...] = ()

    def compose(self) -> ComposeResult:
        """Header, the table, what the selected silence mutes, a status line, the footer."""
        yield Plain("Silences", id="silences-header")
        yield self.list_table()
        yield Plain("", id="silences-mutes")
        yield self.status_line()
        yield FittedFooter()

    # -- loading -------------------------------------------------------------------------------

    def refresh_silences(self) -> None:
        """Reload the list from the source (in a thread worker)."""
        self.load_list()

    def read_list(self) -> SilencesLoaded:
        """The silences in force, each with the active alerts it mutes."""
        return SilencesLoaded(tuple(self.source.silence_views()))

    def show_loaded(self, loaded: SilencesLoaded) -> None:
        """Show the loaded silences."""
        self.show(loaded.views)

    def show(self, views: tuple[SilenceView, ...]) -> None:
        """Render a loaded list (rows by silence id, the cursor kept on its silence)."""
        self.views = views
        now = self.clock.now()
        muting = sum(len(v.mutes) for v in views)
        p = self.source.permissions
        role = "read-only" if p.read_only else p.role
        self.query_one("#silences-header", Static).update(
            Content.assemble(
                ("SILENCES ", "bold"),
                f"{len(views)} in force · muting {muting} active alert(s)",
                (f"   {p.user} ({role})", "$text-muted"),
            )
        )
        table = self.table
        selected = self.selected_id()
        rows = [
            (
                str(v.silence.id),
                [
                    Text(str(v.silence.id)),
                    Text(fmt_until(v.silence.ends_at, now, self.tz)),
                    Text(str(len(v.mutes)), style="bold" if v.mutes else "dim"),
                    Text(v.silence.created_by),
                    Text(v.silence.matchers),
                    Text(v.silence.comment or "-", style="" if v.silence.comment else "dim"),
                ],
            )
            for v in views
        ]
        with self.app.batch_update():
            fit_columns(table, [cells for _, cells in rows])
            table.clear()
            for key, cells in rows:
                table.add_row(*cells, key=key)
            place_cursor(table, None if selected is None else str(selected))
        self._render_mutes()

    @on(DataTable.RowHighlighted, "#silences-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._render_mutes()

    def _render_mutes(self) -> None:
        view = self.selected()
        widget = self.query_one("#silences-mutes", Static)
        if view is None:
            widget.update("No silence in force. Silence an alert with s in the alerts view (a).")
            return
        widget.update(mutes_text(view, self.clock.now(), self.tz))

    @property
    def mutes_shown(self) -> str:
        """The text under the table: the selected silence and what it mutes (tests read it)."""
        return str(self.query_one("#silences-mutes", Static).render())

    # -- selection and actions -----------------------------------------------------------------

    def selected_id(self) -> int | None:
        """The id of the silence under the cursor."""
        key = self.selected_key()
        return None if key is None else int(key)

    def selected(self) -> SilenceView | None:
        """The silence under the cursor."""
        wanted = self.selected_id()
        return next((v for v in self.views if v.silence.id == wanted), None)

    def action_expire(self) -> None:
        """End the selected silence now (asks first; operators and editors only)."""
        view = self.selected()
        if view is None:
            self.notify("No silence selected.", severity="warning")
            return
        if not self._allowed("ending a silence needs"):
            return
        silence_id = view.silence.id
        count = len(view.mutes)

        def answered(yes: bool | None) -> None:
            if yes:
                self._act(
                    f"Silence #{silence_id} ended; {count} alert(s) notify again",
                    lambda: self.source.expire_silence(silence_id),
                )

        self.app.push_screen(
            ConfirmScreen(
                f"End silence #{silence_id} now? The {count} alert(s) it mutes notify again."
            ),
            callback=answered,
        )
