"""Every mutating path checks the role at the API: called directly as a viewer and as
``--read-only``, each refuses before touching the store or the rules file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rules.alerts.actions import AlertActions
from rules.editor import RulesEditor
from rules.roles import PermissionDenied, Permissions
from rules.routing.config import FulfillmentRouting
from store.clock import SystemClock

DENIED = [
    Permissions(user="vera", role="viewer"),
    Permissions(user="ed", role="editor", read_only=True),
]


def _no_store() -> sqlite3.Connection:
    raise AssertionError("a refused action must not open the store")


ALERT_CALLS: list[tuple[str, Callable[[AlertActions], Any]]] = [
    ("acknowledge", lambda a: a.acknowledge("fp-1", "on it")),
    ("unacknowledge", lambda a: a.unacknowledge("fp-1")),
    ("silence", lambda a: a.silence("sku=A", timedelta(hours=1))),
    ("expire_silence", lambda a: a.expire_silence(1)),
]


@pytest.mark.parametrize("permissions", DENIED, ids=["viewer", "read-only"])
@pytest.mark.parametrize("name,call", ALERT_CALLS, ids=[n for n, _ in ALERT_CALLS])
def test_alert_actions_refuse(
    permissions: Permissions, name: str, call: Callable[[AlertActions], Any]
) -> None:
    actions = AlertActions(_no_store, SystemClock(), permissions)
    with pytest.raises(PermissionDenied):
        call(actions)


def _editor(tmp_path: Path, permissions: Permissions) -> tuple[RulesEditor, Path]:
    path = tmp_path / "rules.toml"
    path.write_text("# rules\nalert = []\n", encoding="utf-8")
    return RulesEditor(path, permissions=permissions), path


EDITOR_CALLS: list[tuple[str, Callable[[RulesEditor, Any], Any]]] = [
    ("set_enabled", lambda e, base: e.set_enabled(base, 0, False)),
    ("delete_alert", lambda e, base: e.delete_alert(base, 0)),
    ("duplicate_alert", lambda e, base: e.duplicate_alert(base, 0)),
    ("replace_notify", lambda e, base: e.replace_notify(base, "")),
]


@pytest.mark.parametrize("permissions", DENIED, ids=["viewer", "read-only"])
@pytest.mark.parametrize("name,call", EDITOR_CALLS, ids=[n for n, _ in EDITOR_CALLS])
def test_rules_editor_refuses(
    tmp_path: Path, permissions: Permissions, name: str, call: Callable[[RulesEditor, Any], Any]
) -> None:
    editor, path = _editor(tmp_path, permissions)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(PermissionDenied):
        call(editor, editor.load())
    assert path.read_text(encoding="utf-8") == before


@pytest.mark.parametrize("permissions", DENIED, ids=["viewer", "read-only"])
def test_save_fulfillment_refuses(tmp_path: Path, permissions: Permissions) -> None:
    editor, path = _editor(tmp_path, permissions)
    before = path.read_text(encoding="utf-8")
    with pytest.raises(PermissionDenied):
        editor.save_fulfillment(editor.load(), FulfillmentRouting())
    assert path.read_text(encoding="utf-8") == before
