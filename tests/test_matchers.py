"""Unit tests of the label matcher language (rules/matchers.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rules.matchers import Matcher, format_matchers, matches_all, parse_matchers

LABELS = {"location": "WH-TX", "category": "apparel", "channel": "web", "sku": "SKU-1042"}


def test_empty_text_matches_everything() -> None:
    assert parse_matchers("") == []
    assert parse_matchers("   ") == []
    assert matches_all([], LABELS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("location=WH-TX", True),
        ("location=WH-NJ", False),
        ("location = WH-TX", True),
        ("location!=WH-TX", False),
        ("channel!=pos", True),
        ("category=~app.*", True),
        ("category=~app", False),  # anchored: a prefix is not a match
        ("category=~.*parel", True),
        ("category!~app.*", False),
        ("category!~foot.*", True),
        ("location=WH-TX, channel!=pos", True),
        ("location=WH-TX,channel=pos", False),
        ("sku=~SKU-10[0-9]+, category=~(?i)APPAREL", True),
    ],
)
def test_matchers(text: str, expected: bool) -> None:
    assert matches_all(parse_matchers(text), LABELS) is expected


def test_missing_label_is_the_empty_string() -> None:
    assert Matcher("carrier", "!=", "ups").matches(LABELS)
    assert not Matcher("carrier", "=", "ups").matches(LABELS)
    assert Matcher("carrier", "=", "").matches(LABELS)
    assert Matcher("carrier", "=~", ".*").matches(LABELS)


def test_quoted_values_hold_commas_spaces_and_escapes() -> None:
    matchers = parse_matchers('reason="too small, runs short", note="say \\"hi\\""')
    assert [m.value for m in matchers] == ["too small, runs short", 'say "hi"']
    assert matchers[0].matches({"reason": "too small, runs short"})


def test_trailing_and_doubled_commas_are_tolerated() -> None:
    assert len(parse_matchers("a=1,")) == 1
    assert len(parse_matchers("a=1,,b=2")) == 2


def test_value_may_contain_equals_signs() -> None:
    (matcher,) = parse_matchers("expr=a=b")
    assert (matcher.name, matcher.op, matcher.value) == ("expr", "=", "a=b")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("location", "'location'"),
        ("=WH-TX", "'=WH-TX'"),
        ("location=WH-TX, bogus", "'bogus'"),
        ("1abc=2", "'1abc=2'"),
        ("loc~WH", "'loc~WH'"),
    ],
)
def test_bad_syntax_names_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(ValueError, match="bad matcher") as info:
        parse_matchers(text)
    assert named in str(info.value)
    assert "name=value" in str(info.value)


def test_bad_regex_names_the_matcher() -> None:
    with pytest.raises(ValueError, match=r"bad regular expression in category=~app\[") as info:
        parse_matchers("location=WH-TX, category=~app[")
    assert "category" in str(info.value)


def test_unbalanced_quotes_are_refused() -> None:
    with pytest.raises(ValueError, match="unclosed double quote"):
        parse_matchers('reason="too small')
    with pytest.raises(ValueError, match="quoted as a whole"):
        parse_matchers('reason=x"y"')


def test_format_round_trips() -> None:
    text = 'location=WH-TX, category=~app.*, channel!=pos, reason="a, b", sku!~X-.*'
    matchers = parse_matchers(text)
    assert format_matchers(matchers) == text
    assert parse_matchers(format_matchers(matchers)) == matchers


def test_matchers_module_is_pure() -> None:
    """rules/ never imports textual or the console (the layering rule)."""
    source = Path(__file__).resolve().parent.parent / "rules" / "matchers.py"
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"textual", "console", "rich", "sqlite3", "aiohttp"}
