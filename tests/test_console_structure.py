"""The console's shape: one worker convention, CSS only in shipped .tcss files, one screen
class per name, no reach-ins under the screen stack."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import tomllib
from pathlib import Path

from textual.screen import Screen

import console
import console.screens

ROOT = Path(__file__).resolve().parent.parent
CONSOLE = ROOT / "console"


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in CONSOLE.rglob("*.py")}


def _screen_classes() -> list[type[Screen[object]]]:
    found: list[type[Screen[object]]] = []
    for info in pkgutil.walk_packages(console.__path__, "console."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Screen) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def test_workers_report_only_by_posting_messages() -> None:
    for path, text in _sources().items():
        for banned in ("Worker.StateChanged", "call_from_thread", "screen_stack["):
            assert banned not in text, f"{path.relative_to(ROOT)} uses {banned}"


def test_no_inline_css_and_no_hex_colours() -> None:
    for path, text in _sources().items():
        assert "DEFAULT_CSS" not in text, path
        assert not re.search(r"^\s+CSS = ", text, re.M), path
    for sheet in CONSOLE.rglob("*.tcss"):
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b(?![-\w])", sheet.read_text()), sheet


def test_every_screen_stylesheet_exists_and_ships() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["console"]
    shipped = {p for pattern in globs for p in CONSOLE.glob(pattern)}
    assert set(CONSOLE.rglob("*.tcss")) <= shipped
    screens = _screen_classes()
    assert len(screens) >= 15
    for screen in screens:
        if screen.CSS_PATH is None:
            continue
        assert isinstance(screen.CSS_PATH, str)
        sheet = Path(inspect.getfile(screen)).with_name(screen.CSS_PATH)
        assert sheet.exists(), f"{screen.__name__}: {sheet}"


def test_screen_names_are_unique() -> None:
    names = [s.__name__ for s in _screen_classes()]
    assert sorted(names) == sorted(set(names))


def test_one_error_describer_and_one_prompt() -> None:
    for path, text in _sources().items():
        if path.name != "errors.py":
            assert "def _describe(" not in text, path
        assert "class OrderPromptScreen" not in text and "class ExportScreen" not in text
    assert console.screens.PromptScreen.__module__ == "console.screens.dialogs"


def test_the_console_starts_without_importing_http() -> None:
    """aiohttp costs a fifth of a second to import; the console's own start never needs it."""
    import subprocess
    import sys

    probe = "import sys, console.app, console.errors; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "False"
