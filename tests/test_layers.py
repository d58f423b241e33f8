"""The layering rules: core packages never import the UI; the UI never touches SQL or sockets."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ("feeds", "store", "rules")


def imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_core_packages_never_import_textual_or_console() -> None:
    for package in CORE:
        for path, names in imported_modules(package).items():
            assert not names & {"textual", "console", "plotext"}, f"{path} imports {names}"


def test_console_never_runs_sql_or_opens_sockets() -> None:
    for path, names in imported_modules("console").items():
        assert not names & {"sqlite3", "aiosqlite", "socket", "aiohttp"}, f"{path} imports {names}"


def test_importing_the_core_loads_no_textual() -> None:
    code = (
        "import sys, store.model, feeds.replay, feeds.runtime.ingest, store.writer, store.metrics;"
        "import rules;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'console')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
