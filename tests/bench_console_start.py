"""Benchmark: the console's start, from a fresh process to the first populated paint.

Anchor (issue 15): 1.17 s for the console against 0.31 s for a bare Textual app in the
same run; goal ≤ 0.6 s.  Both are measured here in the same run, each in fresh processes
(cold imports, as an operator starting ``omniops console`` gets them), headless at 80×24:

* **bare**: a Textual app with a header, a DataTable of one row and a footer; "painted"
  is the first refresh after it mounted;
* **console**: ``console.cli.build_console`` on a store of the fixture day (its first day
  and a half, written once into a temporary folder), exactly as ``omniops console`` wires
  it; "populated" is the first refresh after the first snapshots reached the panels.

Each child prints the seconds from just before its interpreter was started (the parent's
clock, passed in) to that paint, and its CPU seconds by then (all its threads; steadier than
the wall time on a shared machine, printed beside it).
Run: ``python -m tests.bench_console_start [--runs 5]``.

``--against DIR`` also times the console of another checkout of omniops (``git archive`` of
an older commit, say) in the same runs, alternating bare, this checkout and that one, with
the same interpreter and the same store, and prints its median and ratio beside these.

With nothing configured (no config file, no ``OMNIOPS_`` setting: the default here) the
console takes the settings' defaults without pydantic; ``--with-config`` writes a small
config file, so the settings are read and validated (pydantic, pydantic-settings and every
section's model) before the first paint, as on an installation that has one.

The children keep their compiled modules (``.pyc``) in the run's temporary folder
(``PYTHONPYCACHEPREFIX``), written by the warm-up run, as an installed omniops has them,
even where the environment says ``PYTHONDONTWRITEBYTECODE`` (then every start would also
compile each of the console's own modules, which the bare app, all in site-packages, does
not).  ``--no-bytecode`` measures that way instead (the condition of the earlier rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BARE = r"""
import sys, time
started = float(sys.argv[1])
from textual.app import App
from textual.widgets import DataTable, Footer, Header

class Bare(App[None]):
    def compose(self):
        yield Header()
        yield DataTable()
        yield Footer()

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("a", "b")
        table.add_row("1", "2")
        self.call_after_refresh(self.painted)

    def painted(self):
        print(f"{time.time() - started:.4f} {time.process_time():.4f}")
        self.exit()

Bare().run(headless=True, size=(80, 24))
"""

CONSOLE = r"""
import sys, time
started = float(sys.argv[1])
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from console.cli import build_console
from store.clock import FixedClock
from store.risk import MetricParams

db = Path(sys.argv[2])
now = datetime.fromisoformat(sys.argv[3])
app, close = build_console(
    db, FixedClock(now), MetricParams(timezone="America/New_York"), 60.0,
    tz=ZoneInfo("America/New_York"),
)

def check():
    if app.snapshots is not None:
        timer.stop()
        app.call_after_refresh(painted)

def painted():
    print(f"{time.time() - started:.4f} {time.process_time():.4f}")
    app.exit()

timer = None

def mounted():
    global timer
    timer = app.set_interval(0.002, check)

app.call_later(mounted)
try:
    app.run(headless=True, size=(80, 24))
finally:
    close()
"""

CONFIG = """\
refresh_interval = 60
keys = { refresh = "r" }

[metrics]
timezone = "America/New_York"
stale_overrides = { catalog = 64800 }
"""
"""The ``--with-config`` file: a few keys, validated like any (the console's metric
parameters are the ones the bench passes, as ``omniops console`` passes the file's)."""


def build_store(folder: Path) -> tuple[Path, str]:
    """The fixture day's first day and a half in a store (as tests/test_asof.py slices it)."""
    from store.writer import StoreWriter
    from tests.test_asof import SLICE_END, slice_events

    db = folder / "day.db"

    async def fill() -> None:
        async with StoreWriter(db) as writer:
            await writer.write_many(slice_events())

    asyncio.run(fill())
    return db, SLICE_END.replace("Z", "+00:00")


def once(code: str, *args: str, env: dict[str, str], root: Path = ROOT) -> tuple[float, float]:
    """Seconds from spawning a fresh interpreter running ``code`` to its first paint, and CPU.

    ``root`` is the checkout whose omniops the child imports (first on its path).
    """
    started = time.time()
    out = subprocess.run(
        [sys.executable, "-c", code, f"{started:.6f}", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**env, "PYTHONPATH": str(root)},
        timeout=120,
    )
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def main() -> None:
    """Measure both, alternating, and print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="no .pyc files: every start compiles the modules not compiled at install",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="also time the console of the omniops checkout in DIR, alternating with this one",
    )
    parser.add_argument(
        "--with-config",
        action="store_true",
        help="a config file the console reads and validates (default: nothing configured)",
    )
    args = parser.parse_args()
    other: Path | None = args.against.resolve() if args.against else None
    if other is not None and not (other / "console" / "cli.py").is_file():
        parser.error(f"--against {other}: not an omniops checkout (no console/cli.py)")
    with tempfile.TemporaryDirectory(prefix="omniops-bench-start-") as tmp:
        folder = Path(tmp)
        print("building the store (fixture day, first day and a half)…", flush=True)
        db, now = build_store(folder)
        env = dict(os.environ)
        env["OMNIOPS_CONFIG"] = str(folder / "config.toml")  # the user's config stays out
        if args.with_config:
            (folder / "config.toml").write_text(CONFIG, encoding="utf-8")
        env["OMNIOPS_RULES"] = str(folder / "rules.toml")
        env["XDG_STATE_HOME"] = str(folder / "state")
        env["PYTHONPATH"] = str(ROOT)
        for name in [n for n in env if n.upper().startswith("OMNIOPS_")]:
            if name not in ("OMNIOPS_CONFIG", "OMNIOPS_RULES"):
                del env[name]  # the operator's own settings stay out too
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        once(BARE, env=env)  # warm the OS file cache and the .pyc files (both apps')
        once(CONSOLE, str(db), now, env=env)
        if other is not None:
            once(CONSOLE, str(db), now, env=env, root=other)
        bare: list[tuple[float, float]] = []
        console: list[tuple[float, float]] = []
        against: list[tuple[float, float]] = []
        for _ in range(args.runs):
            bare.append(once(BARE, env=env))
            console.append(once(CONSOLE, str(db), now, env=env))
            if other is not None:
                against.append(once(CONSOLE, str(db), now, env=env, root=other))
    b, c = median(bare), median(console)
    print(f"bare Textual app, first paint:     {show(bare)}")
    print(f"omniops console, first populated:  {show(console)}")
    if other is not None:
        a = median(against)
        print(f"  the same, {other}: {show(against)}")
        print(
            f"ratio {other.name} / bare: {a[0] / b[0]:.2f} (CPU {a[1] / b[1]:.2f})   "
            f"this / {other.name}: {c[0] / a[0]:.2f} (CPU {c[1] / a[1]:.2f})"
        )
    print(
        f"ratio console / bare: {c[0] / b[0]:.2f} (CPU {c[1] / b[1]:.2f})   goal: console ≤ 0.6 s"
    )


def median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The median wall time and the median CPU time of ``runs``."""
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def show(runs: list[tuple[float, float]]) -> str:
    """``median 0.512 s, CPU 0.498 s  (runs [...])``: the wall times sorted."""
    wall, cpu = median(runs)
    return f"median {wall:.3f} s, CPU {cpu:.3f} s  (runs {sorted(w for w, _ in runs)})"


if __name__ == "__main__":
    main()
