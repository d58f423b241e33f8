"""Shared fixtures: a fresh store file per test, a helper to write events into it, and the
fixture day's stores built once for the session (read them; copy one to write to it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
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


# -- the two long builds, started in the background when the session will need them ------
#
# Building the fixture day's store (an ``omniops ingest`` of 511k events) and regenerating
# the fixture day (the generator's byte-identity test) take about half a minute each and
# are single-threaded, so the session starts them as processes on the machine's other core
# as soon as collection shows a test needs them; the tests then wait for the result.

ROOT = Path(__file__).resolve().parent.parent
_BACKGROUND: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
_BACKGROUND_DIR: list[Path] = []
REGENERATE_TEST = "test_same_seed_regenerates_the_committed_fixture_day"


def _start(name: str, command: list[str], result: Path) -> None:
    base = _BACKGROUND_DIR[0]
    env = {
        **os.environ,  # no user config, rules, cache or log: as the private_home fixture does
        "OMNIOPS_CONFIG": str(base / "config.toml"),
        "OMNIOPS_RULES": str(base / "rules.toml"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "XDG_STATE_HOME": str(base / "state"),
    }
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _BACKGROUND[name] = (proc, result)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the long builds the collected tests need, in the background."""
    items = session.items
    wants_day = any("fixture_day_store" in getattr(i, "fixturenames", ()) for i in items)
    wants_regen = any(REGENERATE_TEST in i.nodeid for i in items)
    if not (wants_day or wants_regen) or session.config.option.collectonly:
        return
    _BACKGROUND_DIR.append(Path(tempfile.mkdtemp(prefix="omniops-tests-")))
    base = _BACKGROUND_DIR[0]
    if wants_day:
        db = base / "day.db"
        _start(
            "day",
            [sys.executable, "-m", "console.cli", "ingest", str(FIXTURE_DAY), "--db", str(db)],
            db,
        )
    if wants_regen:
        out = base / "regenerated"
        generate = str(ROOT / "fixtures" / "generate.py")
        _start(
            "regen", [sys.executable, generate, "--seed", "7", "--out", str(out), "--no-check"], out
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what still runs in the background and remove its files."""
    for proc, _ in _BACKGROUND.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for base in _BACKGROUND_DIR:
        shutil.rmtree(base, ignore_errors=True)


def background_result(name: str) -> tuple[Path, str] | None:
    """Wait for the background build ``name``; its result path and output (None: not started).

    Raises:
        AssertionError: the build failed (its output says why).
    """
    if name not in _BACKGROUND:
        return None
    proc, result = _BACKGROUND[name]
    output, _ = proc.communicate(timeout=900)
    text = output.decode("utf-8", "replace") if output else ""
    assert proc.returncode == 0, f"background {name} failed:\n{text}"
    return result, text


@pytest.fixture(scope="session")
def fixture_day_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole fixture day ingested once per session (the ``ingest`` path).

    Shared by every test that needs it: read it only (``open_reader``); a test that writes
    takes :func:`copy_store` of it.  Built by ``omniops ingest`` in the background from the
    start of the session (see :func:`pytest_collection_finish`), else here.
    """
    done = background_result("day")
    if done is not None:
        db, output = done
        assert ", quarantined 0" in output, output
        return db
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
