"""Benchmark: ``omniops demo``'s first screen, on an empty cache (cold) and a built one (warm).

Issue 17's goals: on an empty cache the console is on screen within 1 s (the loading screen,
a progress bar over the history build), and with the history cached the console is on
screen within 2 s.  Everything runs as an operator gets it: ``python -m console.cli demo``
in a fresh process on a pseudo-terminal of 100×30, its output read as it comes; beside it,
in the same run and the same way, a bare Textual app (a header, a label, a footer) as the
anchor.  Each figure is seconds from just before the process was spawned to the moment its
text reached the terminal:

* **bare**: the bare app's label;
* **cold, loading screen**: ``loading four weeks of fixture history`` (``XDG_CACHE_HOME``
  a fresh empty folder); **cold, panels with numbers**: the first refresh's ``(N ms)`` in
  the top bar of the same run (the console over the history loaded so far, once a first
  day is in; goal ≤ 10 s); then ``q``: the seconds until the process exited, and whether
  the cache folder holds anything but its lock (it must not); with ``--to-replay``, **cold,
  replay console**: a second cold run left until the build ended and the day's replay
  console is up (how long the whole build takes with the console reading beside it);
* **warm, console**: the console's top bar (``omniops demo │``) and **warm, populated**:
  the first refresh's ``(N ms)`` in the top bar, with the history cached;
* **omniops console**: ``omniops console --db`` on a copy of the cached history store (the
  whole command line, as an operator types it), to its first ``(N ms)``.

The warm runs need a built history: ``--cache DIR`` names a cache folder that holds one
(``XDG_CACHE_HOME`` of an earlier demo; built here first if it does not, which takes a
minute or two).  Run: ``python -m tests.bench_demo_start [--runs 5] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS, ROWS = 100, 30
ANSI = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[PX^_][^\x1b]*\x1b\\|.)")

BARE = r"""
from textual.app import App
from textual.widgets import Footer, Header, Label

class Bare(App[None]):
    def compose(self):
        yield Header()
        yield Label("bare app ready")
        yield Footer()

    def on_key(self, event):
        if event.key == "q":
            self.exit()

Bare().run()
"""

LOADING = re.compile(rb"loading four weeks of fixture history")
CONSOLE = re.compile(rb"omniops demo \xe2\x94\x82")  # "omniops demo │"
POPULATED = re.compile(rb"\(\d[\d,]* ms\)")
REPLAYING = re.compile(rb"omniops demo \xe2\x94\x82 [A-Z][a-z]{2} \d\d [A-Z][a-z]{2} ")
"""The replay console's top bar (its clock right after the title; not the loading one's)."""
BARE_READY = re.compile(rb"bare app ready")


class Terminal:
    """A child process on a pseudo-terminal, its output collected (escapes removed)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        """Spawn ``argv`` with the pty as its terminal; the clock starts just before."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.master = master
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.text = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the child closed the terminal
            return False
        if not chunk:
            return False
        self.text += ANSI.sub(b"", chunk)
        return True

    def wait_for(self, pattern: re.Pattern[bytes], timeout: float = 120.0) -> float:
        """Seconds since the spawn at which ``pattern`` was first on the terminal."""
        deadline = time.monotonic() + timeout
        while not pattern.search(self.text):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern.pattern!r} not seen; last: {self.text[-400:]!r}")
            if not self._read(0.05) and not pattern.search(self.text):
                raise RuntimeError(f"exited before {pattern.pattern!r}: {self.text[-800:]!r}")
        return time.monotonic() - self.started

    def quit(self, timeout: float = 30.0) -> float:
        """Press ``q``; seconds until the process exited (it is killed after ``timeout``)."""
        pressed = time.monotonic()
        os.write(self.master, b"q")
        deadline = pressed + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        took = time.monotonic() - pressed
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            took = float("inf")
        os.close(self.master)
        return took


def environment(folder: Path, cache: Path) -> dict[str, str]:
    """The demo's environment: a private config, state and cache; a 256-colour terminal."""
    env = dict(os.environ)
    env.update(
        {
            "OMNIOPS_CONFIG": str(folder / "config.toml"),
            "OMNIOPS_RULES": str(folder / "rules.toml"),
            "XDG_STATE_HOME": str(folder / "state"),
            "XDG_CACHE_HOME": str(cache),
            "PYTHONPATH": str(ROOT),
            "TERM": "xterm-256color",
            "COLUMNS": str(COLUMNS),
            "LINES": str(ROWS),
        }
    )
    return env


def demo_argv(folder: Path) -> list[str]:
    """``omniops demo`` on a store of its own in ``folder``."""
    return [sys.executable, "-m", "console.cli", "demo", "--db", str(folder / "demo.db")]


def bare_once(env: dict[str, str]) -> float:
    """Seconds to the bare Textual app's label."""
    term = Terminal([sys.executable, "-c", BARE], env)
    try:
        return term.wait_for(BARE_READY)
    finally:
        term.quit()


def cold_once(folder: Path) -> tuple[float, float, float, list[str]]:
    """Loading screen, panels with numbers, ``q`` to exit, and what the cache kept (cold)."""
    with tempfile.TemporaryDirectory(dir=folder) as run:
        cache = Path(run) / "cache"
        term = Terminal(demo_argv(Path(run)), environment(Path(run), cache))
        try:
            shown = term.wait_for(LOADING)
            populated = term.wait_for(POPULATED)
        finally:
            left = term.quit()
        kept = sorted(p.name for p in cache.glob("omniops/*") if p.suffix != ".lock")
    return shown, populated, left, kept


def cold_to_replay_once(folder: Path) -> float:
    """On an empty cache: seconds until the history is built and the day's replay is up."""
    with tempfile.TemporaryDirectory(dir=folder) as run:
        cache = Path(run) / "cache"
        term = Terminal(demo_argv(Path(run)), environment(Path(run), cache))
        try:
            return term.wait_for(REPLAYING, timeout=600)
        finally:
            term.quit()


def warm_once(folder: Path, cache: Path) -> tuple[float, float]:
    """Console on screen and first populated paint, with the history cached."""
    with tempfile.TemporaryDirectory(dir=folder) as run:
        term = Terminal(demo_argv(Path(run)), environment(Path(run), cache))
        try:
            shown = term.wait_for(CONSOLE)
            populated = term.wait_for(POPULATED)
        finally:
            term.quit()
    return shown, populated


def console_once(folder: Path, cache: Path, store: Path) -> float:
    """``omniops console --db store``: seconds to its first populated paint."""
    with tempfile.TemporaryDirectory(dir=folder) as run:
        argv = [sys.executable, "-m", "console.cli", "console", "--db", str(store)]
        term = Terminal(argv, environment(Path(run), cache))
        try:
            return term.wait_for(POPULATED)
        finally:
            term.quit()


def ensure_cache(cache: Path) -> Path:
    """The demo's history in ``cache``, built first unless it is there (minutes, once)."""
    from console.cli import FIXTURES, parse_time
    from feeds.replay import load_manifest
    from feeds.runtime.demo import cached_store, prepare_demo_store

    manifest = load_manifest(FIXTURES)
    start = parse_time(str(manifest.get("replay_start_utc", "2026-11-18T13:00:00Z")))
    cached = cached_store(FIXTURES, start, cache / "omniops")
    if not cached.exists():
        print(f"building the demo history into {cache} (once; a minute or two)…", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            prepare_demo_store(FIXTURES, start, Path(tmp) / "d.db", cache=cache / "omniops")
    return cached


def fmt(runs: list[float]) -> str:
    """``median 0.412 s (runs [...])``."""
    return f"median {statistics.median(runs):.3f} s  (runs {[round(r, 3) for r in sorted(runs)]})"


def main() -> None:
    """Alternate bare, cold and warm starts; print medians and the ratios to the bare app."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None, help="a cache holding the history")
    parser.add_argument("--no-warm", action="store_true", help="only the cold start")
    parser.add_argument(
        "--to-replay",
        action="store_true",
        help="also a cold start to the end of the build: the day's replay console (slow)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="omniops-bench-demo-") as tmp:
        folder = Path(tmp)
        cache = args.cache or folder / "cache"
        store = folder / "history.db"
        if not args.no_warm:
            shutil.copyfile(ensure_cache(cache), store)
        env = environment(folder, folder / "bare-cache")
        bare_once(env)  # warm the OS file cache and the .pyc files
        bare: list[float] = []
        cold: list[float] = []
        cold_populated: list[float] = []
        quits: list[float] = []
        warm: list[float] = []
        populated: list[float] = []
        console: list[float] = []
        left_behind: set[str] = set()
        to_replay: list[float] = []
        for _ in range(args.runs):
            bare.append(bare_once(env))
            shown, numbers, left, kept = cold_once(folder)
            cold.append(shown)
            cold_populated.append(numbers)
            quits.append(left)
            left_behind.update(kept)
            if args.to_replay:
                to_replay.append(cold_to_replay_once(folder))
            if not args.no_warm:
                on, full = warm_once(folder, cache)
                warm.append(on)
                populated.append(full)
                console.append(console_once(folder, cache, store))
    b = statistics.median(bare)
    print(f"bare Textual app, on screen:          {fmt(bare)}")
    print(
        f"demo, empty cache, loading screen:    {fmt(cold)}   "
        f"ratio {statistics.median(cold) / b:.2f}   goal ≤ 1 s"
    )
    print(
        f"demo, empty cache, panels w/ numbers: {fmt(cold_populated)}   "
        f"ratio {statistics.median(cold_populated) / b:.2f}   goal ≤ 10 s"
    )
    print(
        f"  then q, until the process exited:   {fmt(quits)}   "
        f"left in the cache: {sorted(left_behind) or 'nothing'}"
    )
    if to_replay:
        print(
            f"demo, empty cache, replay console:    {fmt(to_replay)}   "
            f"ratio {statistics.median(to_replay) / b:.2f}   (the whole build)"
        )
    if warm:
        print(
            f"demo, history cached, console:       {fmt(warm)}   "
            f"ratio {statistics.median(warm) / b:.2f}   goal ≤ 2 s"
        )
        print(
            f"demo, history cached, populated:     {fmt(populated)}   "
            f"ratio {statistics.median(populated) / b:.2f}"
        )
        print(
            f"omniops console --db, populated:     {fmt(console)}   "
            f"ratio {statistics.median(console) / b:.2f}"
        )


if __name__ == "__main__":
    main()
