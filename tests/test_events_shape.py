"""``check_shape``'s quick path answers exactly as the reference walk (issue 17).

The quick path cuts the string literals out in one pass and sums the brackets left; any
doubt (an unterminated string, a bound exceeded) goes to the walk.  These tests compare
both on generated texts, including the tricky ones: escapes, brackets inside strings,
unterminated strings, and each bound exceeded before or after the other.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.webhooks.bounded import ShapeError, _walk, check_shape


def _outcome(check: object, text: str, depth: int, strings: int) -> str | None:
    try:
        if check is check_shape:
            check_shape(text, max_depth=depth, max_strings=strings)
        else:
            _walk(text, depth, strings)
    except ShapeError as exc:
        return exc.message
    return None


PIECES = st.sampled_from(['"', "\\", "\\\\", '\\"', "[", "]", "{", "}", "a", ",", ":", " ", "é"])


@settings(max_examples=3000, deadline=None)
@given(
    st.lists(PIECES, max_size=80).map("".join),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_quick_path_answers_as_the_walk(text: str, depth: int, strings: int) -> None:
    assert _outcome(check_shape, text, depth, strings) == _outcome(_walk, text, depth, strings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": "[[[["}', None),  # brackets inside a string do not count
        ("[" * 65, "body is nested deeper than 64 levels"),
        ("[" * 64 + "]" * 64, None),
        ('"x' + "[" * 100, None),  # unterminated string: the walk stops there
        ('["' + '","' * 50_000 + '"]', "body has more than 50000 strings"),
        ('["a",' + "[" * 70 + '"b"' * 60_000, "body is nested deeper than 64 levels"),
        ("[]" * 10_000, None),
        ("[" * 5000 + "]" * 5000, "body is nested deeper than 64 levels"),
    ],
)
def test_known_bodies(text: str, expected: str | None) -> None:
    assert _outcome(check_shape, text, 64, 50_000) == expected
    assert _outcome(_walk, text, 64, 50_000) == expected
