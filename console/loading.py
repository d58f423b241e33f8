"""The console's first screen while a demo's history loads: a progress bar, ``q`` to leave.

:class:`LoadingApp` appears at once and follows a build running on another thread (any
object shaped like :class:`LoadState`): events loaded, the rate and the time left.  It
exits with ``True`` when the build finished, ``False`` when the user quit (``q``, Ctrl-C),
after asking the build to cancel.  With ``until_partial`` it also exits with ``True`` once
the load can show figures as of a moment (its progress's ``partial_ready``): the demo then
puts up the real console over what is loaded (:mod:`console.loading_console`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Center, Middle
from textual.widgets import Label, ProgressBar


class LoadProgress(Protocol):
    """The live figures of a load (see :class:`feeds.runtime.demo.BuildProgress`)."""

    @property
    def loaded(self) -> int:
        """Events loaded so far."""
        ...

    @property
    def total(self) -> int | None:
        """About how many events there are, or ``None``."""
        ...

    @property
    def waiting(self) -> bool:
        """True while waiting for another process's load."""
        ...

    @property
    def rate(self) -> float:
        """Events a second so far."""
        ...

    @property
    def eta(self) -> float | None:
        """Seconds left, or ``None`` when unknown."""
        ...


class LoadState(Protocol):
    """A load running elsewhere that the screen follows and may cancel."""

    @property
    def progress(self) -> LoadProgress:
        """The load's live figures."""
        ...

    @property
    def finished(self) -> bool:
        """True once the load ended (done, failed or cancelled)."""
        ...

    def cancel(self) -> None:
        """Ask the load to stop and clean up."""
        ...


def progress_text(progress: LoadProgress) -> str:
    """One line: events loaded (of about how many), the rate, the time left."""
    if progress.waiting:
        return "another omniops demo is building the history; waiting for it ..."
    about = f" of about {progress.total:,}" if progress.total else ""
    eta = progress.eta
    left = f", about {eta:.0f} s left" if eta is not None else ""
    return f"{progress.loaded:,}{about} events, {progress.rate:,.0f}/s{left}"


class LoadingApp(App[bool]):
    """A progress bar over a load; exits ``True`` when it finished, ``False`` on quit."""

    TITLE = "omniops demo"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "leave", "quit", priority=True),
        Binding("ctrl+c", "leave", "quit", show=False, priority=True),
    ]
    CSS_PATH = str(Path(__file__).with_name("loading.tcss"))

    def __init__(
        self,
        load: LoadState,
        *,
        poll: float = 0.1,
        on_shown: Callable[[], object] | None = None,
        until_partial: bool = False,
    ) -> None:
        """Follow ``load``; ``on_shown`` runs once the screen is painted.

        (A build started then does not hold the first paint back.)  ``until_partial``:
        leave (``True``) as soon as the load's progress is ``partial_ready`` too.
        """
        super().__init__()
        self.load = load
        self.poll = poll
        self._on_shown = on_shown
        self.until_partial = until_partial

    def compose(self) -> ComposeResult:
        """Title, bar and figures, centred."""
        with Middle(), Center():
            yield Label(
                "omniops demo: loading four weeks of fixture history (first run only)",
                id="title",
            )
        with Center():
            yield ProgressBar(total=None, show_eta=False, id="bar")
        with Center():
            yield Label("starting ...", id="figures")
        with Center():
            yield Label("q or Ctrl-C: quit", id="keys")

    def on_mount(self) -> None:
        """Follow the load."""
        self.set_interval(self.poll, self.follow)
        self.follow()
        if self._on_shown is not None:
            self.call_after_refresh(self._on_shown)

    def follow(self) -> None:
        """Show the load's figures; leave with ``True`` once it finished."""
        progress = self.load.progress
        if self.load.finished or (self.until_partial and getattr(progress, "partial_ready", False)):
            self.exit(True)
            return
        bar = self.query_one("#bar", ProgressBar)
        if progress.total:
            bar.update(total=progress.total, progress=min(progress.loaded, progress.total))
        self.query_one("#figures", Label).update(progress_text(progress))

    def action_leave(self) -> None:
        """Cancel the load and quit."""
        self.load.cancel()
        self.exit(False)
