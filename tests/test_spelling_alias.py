"""One spelling, ``fulfillment``; files written with ``[fulfilment]`` still load and save."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.editor import RulesEditor
from rules.file import RulesFileError, load_rules
from rules.roles import Permissions

LEGACY = """\
alert = []

# routing, as an older file spells it
[fulfilment]
default_carrier = "UPS"

[[fulfilment.rules]]
id = "stores-first"
kinds = ["store"]
"""


def test_the_british_section_name_loads_as_the_same_section(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(LEGACY, encoding="utf-8")
    routing = load_rules(path).rules.fulfillment
    assert routing.default_carrier == "UPS"
    assert [r.id for r in routing.rules] == ["stores-first"]


def test_an_error_under_the_british_name_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(LEGACY.replace('kinds = ["store"]', 'kinds = ["castle"]'), encoding="utf-8")
    with pytest.raises(RulesFileError) as caught:
        load_rules(path)
    (problem,) = caught.value.problems
    assert problem.line == 9  # the kinds line of [[fulfilment.rules]]


def test_both_spellings_at_once_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(LEGACY + '\n[fulfillment]\ndefault_carrier = "FedEx"\n', encoding="utf-8")
    with pytest.raises(RulesFileError, match="keep one"):
        load_rules(path)


def test_saving_a_legacy_file_keeps_its_section_name_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(LEGACY, encoding="utf-8")
    editor = RulesEditor(path, permissions=Permissions(user="ed", role="editor"))
    base = editor.load()
    routing = base.rules.fulfillment.model_copy(update={"default_carrier": "FedEx"})
    editor.save_fulfillment(base, routing)
    text = path.read_text(encoding="utf-8")
    assert "[fulfillment]" not in text and "[fulfilment]" in text
    assert "# routing, as an older file spells it" in text
    assert load_rules(path).rules.fulfillment.default_carrier == "FedEx"
