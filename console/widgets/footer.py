"""A footer that is never cut: as many of the view's keys as fit the width, most useful first.

Textual's :class:`~textual.widgets.Footer` lays every shown binding out in a row and lets
the terminal crop the rest, so at 80 columns the keys on the right (help, command line)
were simply not there.  :class:`FittedFooter` measures each key, and when they do not all
fit it first switches to the compact style and the short labels of :data:`SHORT_LABELS`,
then leaves out the keys the screen ranks lowest (its ``FOOTER_PRIORITY``, binding ids
most useful first) until the rest fit.  ``?`` (help) is always kept: every key left out is
listed there.  The keys shown keep the order of the bindings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

SHORT_LABELS = {
    "Routing": "Route",
    "Silences": "Mute",
    "Command": "Cmd",
    "Refresh": "Rfsh",
    "Reverse sort": "Rev",
    "Jump to row (enter)": "Jump",
    "End silence": "Unmute",
    "Expire now": "Expire",
}
"""Shorter footer labels used only when the full ones do not fit (``?`` says them in full)."""

ALWAYS = "help"
"""The binding id the footer never leaves out: the way to every other key."""

PALETTE_FROM = 100
"""From this width the footer also shows the command palette key (``^p palette``)."""


@dataclass(frozen=True)
class FooterEntry:
    """One key the footer may show: its binding, whether it is enabled, its tooltip."""

    binding: Binding
    enabled: bool
    tooltip: str
    rank: int
    """0 the most useful: the screen's ``FOOTER_PRIORITY`` order, then the binding order."""

    def width(self, display: str, *, short: bool) -> int:
        """Columns the key takes in the footer (compact style when ``short``)."""
        label = self.label(short=short)
        # non-compact: " k " + "desc "; compact: "k" + " desc" and a margin of 1
        return cell_len(display) + cell_len(label) + (2 if short else 3)

    def label(self, *, short: bool) -> str:
        """The description shown (abbreviated when ``short``)."""
        text = self.binding.description
        return SHORT_LABELS.get(text, text) if short else text


def fit_entries(
    entries: Sequence[FooterEntry], widths: Sequence[tuple[int, int]], available: int
) -> tuple[list[int], bool]:
    """Which entries to show (indices, in order) and whether in the short style.

    ``widths`` gives each entry's (full, short) width.  Everything in full if it fits;
    else short labels, leaving out the lowest-ranked entries (never :data:`ALWAYS`).
    """
    if sum(full for full, _ in widths) <= available:
        return list(range(len(entries))), False
    keep = set(range(len(entries)))
    by_rank = sorted(keep, key=lambda i: entries[i].rank, reverse=True)
    for index in by_rank:
        if sum(widths[i][1] for i in keep) <= available:
            break
        if entries[index].binding.id == ALWAYS:
            continue
        keep.discard(index)
    return sorted(keep), True


class FittedFooter(Footer):
    """The view's keys, as many as fit, never cut; the rest are in ``?``."""

    def __init__(self, *, id: str | None = None) -> None:
        """A footer for the screen it is composed in (its ``FOOTER_PRIORITY`` ranks keys)."""
        super().__init__(id=id, show_command_palette=False)
        self._composed_for = -1
        self.shown: tuple[str, ...] = ()
        """The descriptions of the keys on show, as shown (tests read them)."""

    def _entries(self) -> Iterator[FooterEntry]:
        priority: Sequence[str] = getattr(self.screen, "FOOTER_PRIORITY", ())
        seen: set[str] = set()
        order = 0
        for _node, binding, enabled, tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in seen:
                continue
            seen.add(binding.action)
            listed = binding.id in priority if binding.id else False
            rank = priority.index(binding.id) if listed and binding.id else len(priority) + order
            order += 1
            yield FooterEntry(binding, enabled, tooltip, rank)

    def compose(self) -> ComposeResult:
        """The keys that fit, compact and abbreviated when they must be."""
        if not self._bindings_ready:
            return
        width = self.size.width or self.app.size.width
        self._composed_for = width
        entries = list(self._entries())
        displays = [self.app.get_key_display(e.binding) for e in entries]
        widths = [
            (e.width(d, short=False), e.width(d, short=True))
            for e, d in zip(entries, displays, strict=True)
        ]
        palette = width >= PALETTE_FROM and self.app.ENABLE_COMMAND_PALETTE
        available = width - (12 if palette else 1)
        keep, short = fit_entries(entries, widths, available)
        self.set_reactive(Footer.compact, short)
        self.set_class(short, "-compact")
        shown: list[str] = []
        for index in keep:
            entry, display = entries[index], displays[index]
            label = entry.label(short=short)
            shown.append(label)
            yield FooterKey(
                entry.binding.key,
                display,
                label,
                entry.binding.action,
                disabled=not entry.enabled,
                tooltip=entry.tooltip or entry.binding.description,
            ).data_bind(compact=Footer.compact)
        self.shown = tuple(shown)
        if palette:
            active = self.screen.active_bindings.get(self.app.COMMAND_PALETTE_BINDING)
            if active is not None:
                _node, binding, enabled, _tooltip = active
                yield FooterKey(
                    binding.key,
                    self.app.get_key_display(binding),
                    binding.description,
                    binding.action,
                    classes="-command-palette",
                    disabled=not enabled,
                    tooltip=binding.tooltip or binding.description,
                )

    def on_resize(self, event: events.Resize) -> None:
        """Another width may fit other keys: lay them out again."""
        if event.size.width != self._composed_for and self._bindings_ready:
            self.call_after_refresh(self.recompose)
