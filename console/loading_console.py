"""The demo's console while its history still loads: real panels, as of what is committed.

Once a first full day of the fixture history is committed
(:attr:`feeds.runtime.demo.BuildProgress.partial_ready`), the demo leaves the bare progress
bar (:class:`console.loading.LoadingApp`) for :class:`LoadingConsole`: the ordinary console
on the temporary store being written, read-only, on a :class:`HighWaterClock` that reads
the moment up to which every history event is committed.  Every figure is then what the
complete history says as of that moment (the metrics are "as of the moment asked").  The
top bar takes two lines and says that the history is still loading (share, events, rate,
time left) and as of which moment the figures are.

Nothing that writes runs here: no replay, no alerting (so nothing fires or notifies from
the partial history), no rules editing, no alerts, rules or routing views, no ``:at``
(a moment past the committed one would show a half-loaded store).  The app leaves when the
build finished (:attr:`LoadingConsole.finished` True) or on ``q``/Ctrl-C (False, the
build asked to stop at once); the command line then goes on as today or waits for the
cancelled build to have removed its store.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content

from console.app import OmniopsApp
from console.loading import LoadProgress, LoadState
from console.screens.main import ConsoleScreen
from console.widgets.bars import TextBar
from store.snapshots import Snapshots

FOLLOW_SECONDS = 0.5
"""How often the top bar's load figures are redrawn (the panels follow the refresh)."""

LOADING_VIEWS = ("feeds",)
"""The only view the loading console opens: the others read or edit what the replay writes."""


class HighWaterClock:
    """A clock whose now is the moment up to which the history is committed (never back)."""

    def __init__(self, progress: LoadProgress) -> None:
        """Follow ``progress`` (its ``committed_until``)."""
        self._progress = progress
        self._last = datetime.fromtimestamp(0, UTC)

    def now(self) -> datetime:
        """The committed-up-to moment (the last known one if it is unknown just now)."""
        moment = getattr(self._progress, "committed_until", None)
        if isinstance(moment, datetime) and moment > self._last:
            self._last = moment
        return self._last


COMPACT_BELOW = 100
"""Columns under which the top bar takes its short form (80×24 fits it whole)."""


def load_text(progress: LoadProgress, *, compact: bool = False) -> str:
    """What is known of the load: ``23% · 120,000 of ~511,000 events · 9,800/s · 40 s left``.

    ``compact``: ``23% · 120,000/~511,000 · 9,800/s · 40 s left``.
    """
    parts = []
    if progress.total:
        parts.append(f"{min(progress.loaded / progress.total, 1.0):.0%}")
        if compact:
            parts.append(f"{progress.loaded:,}/~{progress.total:,}")
        else:
            parts.append(f"{progress.loaded:,} of ~{progress.total:,} events")
    else:
        parts.append(f"{progress.loaded:,} events")
    parts.append(f"{progress.rate:,.0f}/s")
    eta = progress.eta
    if eta is not None:
        parts.append(f"{eta:.0f} s left")
    return " · ".join(parts)


def loading_top_bar(
    *,
    title: str,
    progress: LoadProgress,
    snapshots: Snapshots | None,
    tz: tzinfo,
    compact: bool = False,
) -> Content:
    """Two lines: the load's figures, then as of which moment the panels' figures are.

    ``omniops demo │ HISTORY STILL LOADING 23% · 120,000 of ~511,000 events · 9,800/s · 40 s left``
    ``figures as of Tue 04 Nov 08:00:59 EST (120 ms): all history up to then is in``

    ``compact`` (a terminal under :data:`COMPACT_BELOW` columns) says the same in 80:
    ``omniops demo │ HISTORY LOADING 23% · 120,000/~511,000 · 9,800/s · 40 s left``
    ``figures as of Tue 04 Nov 08:00:59 EST: all history up to then is in``
    """
    first: list[str | tuple[str, str]] = [
        (title, "bold"),
        " │ ",
        ("HISTORY LOADING" if compact else "HISTORY STILL LOADING", "$text-warning bold reverse"),
        " ",
        load_text(progress, compact=compact),
    ]
    if snapshots is None:
        second: list[str | tuple[str, str]] = [
            ("figures: waiting for the first refresh…", "italic")
        ]
    else:
        local = snapshots.as_of.astimezone(tz)
        second = [
            ("figures as of ", "$text-warning"),
            (local.strftime("%a %d %b %H:%M:%S %Z").strip(), "$text-warning bold"),
        ]
        if not compact:
            second.append((f" ({snapshots.computed_in_ms:,.0f} ms)", "$text-muted"))
        second.append(": all history up to then is in")
    return Content.assemble(*first, "\n", *second)


class LoadingConsoleScreen(ConsoleScreen):
    """The console screen with a two-line top bar about the history load."""

    def on_mount(self) -> None:
        """The ordinary screen, its top bar two lines high."""
        bar = self.query_one("#topbar", TextBar)
        bar.styles.height = 2
        bar.styles.text_wrap = "nowrap"  # each line cut at the edge, never pushed down
        bar.styles.text_overflow = "ellipsis"
        super().on_mount()

    def render_bars(self) -> None:
        """The feeds strip as ever; the top bar says the history is loading."""
        super().render_bars()
        app = self.app
        if not isinstance(app, LoadingConsole) or not self._ready:
            return
        self.query_one("#topbar", TextBar).set_content(
            loading_top_bar(
                title=app.title,
                progress=app.load.progress,
                snapshots=app.snapshots,
                tz=app.tz,
                compact=app.size.width < COMPACT_BELOW,
            )
        )


class LoadingConsole(OmniopsApp):
    """The console over a history that is still loading; leaves when the load ended.

    After it exits, :attr:`finished` says whether the load finished (True) or the user
    quit (False).  Everything else is the ordinary console (:class:`OmniopsApp`), built by
    the command line on the load's temporary store with a :class:`HighWaterClock`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, *, load: LoadState, **options: Any) -> None:
        """The console of ``options`` (see :class:`OmniopsApp`) following ``load``."""
        super().__init__(**options)
        self.load = load
        self.finished: bool | None = None
        """After the exit: True when the load finished, False when the user quit."""
        self.views = {name: view for name, view in self.views.items() if name in LOADING_VIEWS}
        self._compute_at = None  # no ``:at``: a later moment than the committed one is half-loaded
        self._console_screen = LoadingConsoleScreen()

    def on_mount(self) -> None:
        """The ordinary console, and the load followed in the top bar."""
        super().on_mount()
        self.set_interval(FOLLOW_SECONDS, self.follow, name="load")

    def follow(self) -> None:
        """Redraw the top bar; leave once the load finished."""
        if self.load.finished:
            self.finished = True
            self.exit()
            return
        self.main_screen.render_bars()

    async def action_quit(self) -> None:
        """Ask the load to stop (it removes its store: a reader still open reads on) and leave."""
        self.finished = False
        self.load.cancel()  # stopping the writer overlaps the console's own teardown
        self.exit()
