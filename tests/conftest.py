"""Shared fixtures: a fresh store file per test, a helper to write events into it, and the
fixture day's stores built once for the session (read them; copy one to write to it)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from feeds.runtime.ingest import ingest_paths
from feeds.runtime.routing import router_hook
from store.apply import Outcome
from store.model import Event, Quarantined
from store.writer import StoreWriter
from tests.kafka_broker import Broker

FIXTURE_DAY = Path(__file__).resolve().parent.parent / "fixtures" / "day"


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's config, rules or cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("OMNIOPS_RULES", str(home / "rules.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


async def write(db: Path, items: Sequence[Event | Quarantined], **kw: object) -> list[Outcome]:
    """Write items through a real writer and close it (everything committed).

    Routing is off unless asked for (``routing=...``): tests of the router drive it.
    """
    routing = kw.pop("routing", None)
    if routing is not None:
        kw["after_commit"] = router_hook(routing)  # type: ignore[arg-type]
    async with StoreWriter(db, **kw) as writer:  # type: ignore[arg-type]
        return await writer.write(items)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One tansu broker for the session (tests use their own topics and groups)."""
    broker = Broker(log=tmp_path_factory.mktemp("tansu") / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def copy_store(source: Path, target: Path) -> Path:
    """A private copy of a store (SQLite's online backup), for a test that writes to it."""
    src, dst = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return target


@pytest.fixture(scope="session")
def fixture_day_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole fixture day ingested once per session (the ``ingest`` path).

    Shared by every test that needs it: read it only (``open_reader``); a test that writes
    takes :func:`copy_store` of it.
    """
    db = tmp_path_factory.mktemp("fixture-day") / "day.db"
    counts = asyncio.run(ingest_paths([FIXTURE_DAY], db))
    assert counts.get("quarantined", 0) == 0
    return db


@pytest.fixture(scope="session")
def day_slice_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture day's first day and a half (``tests.test_asof.slice_events``), written
    through the real writer once per session.  Read it only; copy it to write."""
    from tests.test_asof import slice_events

    db = tmp_path_factory.mktemp("day-slice") / "slice.db"

    async def fill() -> None:
        async with StoreWriter(db) as writer:
            await writer.write_many(slice_events())

    asyncio.run(fill())
    return db
