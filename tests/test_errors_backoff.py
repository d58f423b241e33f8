"""The shared error describer and the one back-off policy."""

from __future__ import annotations

import random
import sqlite3

import pytest
from pydantic import BaseModel, Field, ValidationError

from rules.backoff import Backoff
from rules.errors import describe_error, describe_validation_error


class Line(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class Order(BaseModel):
    lines: list[Line]


def invalid(data: object) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        Order.model_validate(data)
    return info.value


def test_validation_error_named_by_field_path() -> None:
    exc = invalid({"lines": [{"sku": "A", "quantity": 0}, {"quantity": 1}]})
    text = describe_validation_error(exc)
    assert text == ("lines.0.quantity: Input should be greater than 0; lines.1.sku: Field required")
    assert describe_validation_error(exc, limit=1) == (
        "lines.0.quantity: Input should be greater than 0 (+1 more)"
    )


def test_describe_error_is_one_line() -> None:
    assert describe_error(None) == "unknown error"
    assert describe_error(invalid({"lines": "x"})) == "lines: Input should be a valid list"
    assert describe_error(ValueError("first line\nsecond")) == "first line"
    assert describe_error(KeyError()) == "KeyError"
    locked = sqlite3.OperationalError("database is locked")
    assert describe_error(locked, with_type=True) == "OperationalError: database is locked"
    assert describe_error(TimeoutError(), with_type=True) == "TimeoutError"


def test_backoff_without_jitter_is_exact_and_pure() -> None:
    policy = Backoff(base=1, cap=10, jitter=False)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.attempt == 0  # delay() keeps no count
    assert [policy.next_delay() for _ in range(3)] == [1, 2, 4]
    policy.reset()
    assert policy.next_delay() == 1
    triple = Backoff(base=1, cap=100, factor=3, jitter=False)
    assert [triple.delay(n) for n in (1, 2, 3)] == [1, 3, 9]


def test_backoff_jitter_stays_under_the_ceiling() -> None:
    policy = Backoff(base=1, cap=30, rng=random.Random(3))
    delays = [policy.delay(n) for n in range(1, 9)]
    assert all(0 <= d <= min(30, 2 ** (n - 1)) for n, d in enumerate(delays, start=1))
    assert len(set(delays)) == len(delays)


def test_console_describer_is_the_shared_one_with_its_type_rule() -> None:
    """The console words errors as rules.errors does; only the type prefix rule is its own."""
    from pathlib import Path

    from console.errors import describe_error as console_describe
    from rules.file import Problem, RulesFileError

    bad = RulesFileError(
        [
            Problem(Path("rules.toml"), 3, "alert[2].threshold", "must be a number"),
            Problem(Path("rules.toml"), 9, "alert[4].for", "not a duration"),
        ]
    )
    assert describe_error(bad) == "rules.toml:3: alert[2].threshold: must be a number (+1 more)"
    assert console_describe(bad) == describe_error(bad)
    assert console_describe(ValueError("threshold must be a number")) == (
        "threshold must be a number"
    )
    assert console_describe(sqlite3.OperationalError("database is locked\nmore")) == (
        "OperationalError: database is locked"
    )
    exc = invalid({"lines": [{"sku": "A", "quantity": 0}]})
    assert console_describe(exc) == "lines.0.quantity: Input should be greater than 0"
    assert console_describe(None) == "unknown error"
