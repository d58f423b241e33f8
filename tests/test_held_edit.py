"""``omniops quarantine edit``: a held payload fixed, validated as a replay, audited, replayed.

A real store (``omniops ingest`` holds a canonical line that failed validation), the real
command through :func:`console.cli.main`, and a real editor process (``$EDITOR`` is a
small Python script that edits the file it is given, as an operator would).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from feeds.runtime.ingest import ingest_paths
from store import model
from tests.builders import at, order, rows


@pytest.fixture(autouse=True)
def _window(monkeypatch: Any) -> None:
    monkeypatch.setattr(model, "_window", model.time_window())


def held_line(tmp_path: Path) -> tuple[Path, str]:
    """A store holding one ingested order line whose quantity is 0 (refused), and its id."""
    folder = tmp_path / "feed"
    folder.mkdir()
    good = json.loads(order("o-1", at(-1), [("A", 1)]).model_dump_json())
    bad = json.loads(order("o-2", at(-1), [("A", 1), ("B", 2)]).model_dump_json())
    bad["body"]["lines"][1]["quantity"] = 0
    lines = [json.dumps(good), json.dumps(bad)]
    (folder / "webshop.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    db = tmp_path / "s.db"
    assert asyncio.run(ingest_paths([folder], db))["quarantined"] == 1
    ((reason,),) = rows(db, "SELECT reason FROM held")
    assert "webshop.jsonl:2" in reason and "body.lines.1.quantity" in reason
    return db, bad["id"]


def editor(tmp_path: Path, old: str, new: str, *, exit_code: int = 0) -> str:
    """An ``$EDITOR`` that replaces ``old`` by ``new`` in the file it opens."""
    script = tmp_path / f"edit{len(list(tmp_path.glob('edit*.py')))}.py"
    script.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        f"p.write_text(p.read_text().replace({old!r}, {new!r}))\n"
        f"sys.exit({exit_code})\n",
        encoding="utf-8",
    )
    return f"{sys.executable} {script}"


def test_an_edit_in_the_editor_is_validated_saved_with_its_audit_and_replayed(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main

    db, event_id = held_line(tmp_path)
    ((held_id, original),) = rows(db, "SELECT id, raw FROM held")
    monkeypatch.delenv("VISUAL", raising=False)
    # the editor shows the payload as pretty JSON: the quantity is on a line of its own
    monkeypatch.setenv("EDITOR", editor(tmp_path, '"quantity": 0', '"quantity": 3'))
    capsys.readouterr()
    assert main(["quarantine", "edit", str(held_id), "--db", str(db), "--by", "ana"]) == 0
    out = capsys.readouterr().out
    assert "body.lines.1.quantity: 0 -> 3" in out
    assert f"held {held_id}: edit 1 saved, placed" in out
    assert rows(db, "SELECT sku, quantity FROM order_lines WHERE order_id = 'o-2' ORDER BY 1") == [
        ("A", 1),
        ("B", 3),
    ]
    assert rows(db, "SELECT event_id FROM event_log WHERE event_id = ?", event_id) == [(event_id,)]
    assert rows(db, "SELECT state FROM held") == [("placed",)]
    assert rows(db, "SELECT COUNT(*) FROM quarantine") == [(0,)]
    # the audit: who, how, what changed, and the payload before (the original) and after
    ((by, how, changes, before, after),) = rows(
        db, "SELECT by, how, changes, before, after FROM held_edits"
    )
    assert (by, how, before) == ("ana", "editor", original)
    assert json.loads(changes) == [{"field": "body.lines.1.quantity", "before": 0, "after": 3}]
    assert json.loads(after)["body"]["lines"][1]["quantity"] == 3
    assert main(["quarantine", "show", str(held_id), "--db", str(db)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["original"]["body"]["lines"][1]["quantity"] == 0
    assert shown["raw"]["body"]["lines"][1]["quantity"] == 3
    assert [(e["by"], e["how"]) for e in shown["edits"]] == [("ana", "editor")]
    # placed: nothing is left to edit, and a replay has nothing to do
    assert main(["quarantine", "edit", str(held_id), "--db", str(db), "--set", "id=x"]) == 1
    assert "it is placed, not held" in capsys.readouterr().err
    assert main(["quarantine", "replay", "--db", str(db)]) == 0
    assert "nothing to replay" in capsys.readouterr().out


def test_a_failed_edit_leaves_the_row_as_it_was_and_keeps_the_operators_text(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    from console.cli import main

    db, _ = held_line(tmp_path)
    ((held_id,),) = rows(db, "SELECT id FROM held")
    before = rows(db, "SELECT raw, state, reason, attempts FROM held")
    edit = ["quarantine", "edit", str(held_id), "--db", str(db)]
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", editor(tmp_path, '"quantity": 0', '"quantity": -4'))
    capsys.readouterr()
    assert main(edit) == 1
    err = capsys.readouterr().err
    assert "the edited payload would still be held" in err
    assert "body.lines.1.quantity" in err and "nothing changed" in err
    kept = Path(err.split("your edit is kept in ")[1].split(":")[0])
    assert '"quantity": -4' in kept.read_text(encoding="utf-8")
    # every other refusal leaves it too, each saying why
    monkeypatch.setenv("EDITOR", editor(tmp_path, "nothing", "to change"))
    assert main(edit) == 1
    assert "no change" in capsys.readouterr().err
    monkeypatch.setenv("EDITOR", editor(tmp_path, '"quantity": 0', '"quantity": 3', exit_code=1))
    assert main(edit) == 1
    assert "the editor exited with 1" in capsys.readouterr().err
    assert main([*edit, "--set", "body.lines.7.quantity=3"]) == 1
    assert "body.lines is a list of 2" in capsys.readouterr().err
    assert main([*edit, "--set", "body.no_such.quantity=3"]) == 1
    assert "body has no field 'no_such'" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": ', encoding="utf-8")
    assert main([*edit, "--from-file", str(broken)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert main([*edit, "--set", "body.lines.1.quantity=3", "--dry-run"]) == 0
    assert "nothing saved (--dry-run)" in capsys.readouterr().out
    assert main(["quarantine", "edit", "99", "--db", str(db), "--set", "a=1"]) == 1
    assert rows(db, "SELECT raw, state, reason, attempts FROM held") == before
    assert rows(db, "SELECT COUNT(*) FROM held_edits") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM order_lines WHERE order_id = 'o-2'") == [(0,)]
    # the operator fixes the kept text and gives it back as a file
    kept.write_text(kept.read_text(encoding="utf-8").replace("-4", "4"), encoding="utf-8")
    assert main([*edit, "--from-file", str(kept)]) == 0
    assert rows(db, "SELECT quantity FROM order_lines WHERE order_id = 'o-2' AND sku = 'B'") == [
        (4,)
    ]
    assert rows(db, "SELECT how FROM held_edits") == [("file",)]


def test_set_keeps_a_text_field_text_and_redacts_what_an_edit_brings(
    tmp_path: Path, capsys: Any
) -> None:
    from console.cli import main

    db, _ = held_line(tmp_path)
    ((held_id,),) = rows(db, "SELECT id FROM held")
    edit = ["quarantine", "edit", str(held_id), "--db", str(db)]
    # "007" replaces a text value as text; an e-mail address is scrubbed as ingest would
    assert (
        main(
            [
                *edit,
                "--set",
                "body.lines.1.quantity=5",
                "--set",
                "body.lines.1.sku=007",
                "--set",
                "body.destination_region=bob@example.com",
            ]
        )
        == 0
    )
    assert rows(db, "SELECT sku, quantity FROM order_lines WHERE order_id = 'o-2' ORDER BY 1") == [
        ("007", 5),
        ("A", 1),
    ]
    ((after,),) = rows(db, "SELECT after FROM held_edits")
    assert "bob@example.com" not in after
    ((region,),) = rows(db, "SELECT destination_region FROM orders WHERE order_id = 'o-2'")
    assert "bob@example.com" not in region
