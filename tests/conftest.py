"""Shared fixtures: a fresh store file per test, and a helper to write events into it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from feeds.model import Event, Quarantined
from store.apply import Outcome
from store.metrics import open_reader
from store.writer import StoreWriter


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


async def write(db: Path, items: Sequence[Event | Quarantined], **kw: object) -> list[Outcome]:
    """Write items through a real writer and close it (everything committed)."""
    async with StoreWriter(db, **kw) as writer:  # type: ignore[arg-type]
        return await writer.write(items)


@pytest.fixture
def reader(db_path: Path) -> Iterator[sqlite3.Connection]:
    conn = None

    def _open() -> sqlite3.Connection:
        nonlocal conn
        conn = open_reader(db_path)
        return conn

    yield _open  # type: ignore[misc]
    if conn is not None:
        conn.close()
