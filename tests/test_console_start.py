"""The console's start (issue 15): what it loads before its first paint.

``omniops console`` with nothing configured (no config file, no ``OMNIOPS_`` setting in the
environment) reaches its first paint without pydantic: the metric parameters are a
dataclass, the settings are their defaults (:class:`console.cli.DefaultSettings`), the
highlights wait for the rules file's models until the warm-up.  A config file is read and
validated as before, before the console starts.  Each case runs in a fresh interpreter (the
test process has pydantic loaded long since).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.builders import at, order
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent

START = r"""
import json, sys
from pathlib import Path
from console.cli import build_console, read_settings
from store.clock import SystemClock

settings = read_settings()
app, close = build_console(
    Path(sys.argv[1]), SystemClock(), settings.metrics, 60.0, settings=settings
)
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"pydantic", "pydantic_settings"})
shown = []
keys = []

def painted():
    shown.append(app.snapshots is not None)
    keys.extend(k for k, b in app.active_bindings.items() if b.binding.id == "refresh")
    app.exit()

asked = []
def check():
    # Once: a tick already queued when the timer stops still arrives.
    if app.snapshots is not None and not asked:
        asked.append(True)
        timer.stop()
        app.call_after_refresh(painted)

timer = None

def mounted():
    global timer
    timer = app.set_interval(0.01, check)

app.call_later(mounted)
try:
    app.run(headless=True, size=(80, 24))
finally:
    close()
print(json.dumps({"loaded": loaded, "painted": shown, "refresh_keys": keys}))
"""


def start(db: Path, tmp_path: Path, config: str | None) -> dict[str, object]:
    """Start the console on ``db`` in a fresh interpreter; what it loaded before running."""
    path = tmp_path / "config.toml"
    if config is not None:
        path.write_text(config, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("OMNIOPS_", "XDG_"))}
    env |= {
        "OMNIOPS_CONFIG": str(path),
        "OMNIOPS_RULES": str(tmp_path / "rules.toml"),
        "HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", START, str(db)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def test_nothing_configured_starts_without_pydantic(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await write(db, [order("o1", at(-1), [("A", 1)], loc="S1")])
    seen = start(db, tmp_path, None)
    assert seen["loaded"] == [] and seen["painted"] == [True]
    assert seen["refresh_keys"] == ["r"]


async def test_a_config_file_is_read_before_the_start(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    await write(db, [order("o1", at(-1), [("A", 1)], loc="S1")])
    seen = start(db, tmp_path, 'keys = { refresh = "f5" }\n')
    assert seen["loaded"] == ["pydantic", "pydantic_settings"] and seen["painted"] == [True]
    assert seen["refresh_keys"] == ["f5"]
