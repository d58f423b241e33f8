"""Shared fixtures: a fresh store file per test, a helper to write events into it, and the
fixture day's stores built once for the session (read them; copy one to write to it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from feeds.runtime.ingest import ingest_paths
from feeds.runtime.routing import router_hook
from store.apply import Outcome
from store.model import Event, Quarantined
from store.writer import StoreWriter
from tests.kafka_broker import Broker
from tests.test_asof import FullSide, load_full_side

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


# -- the long builds, run in the background when the session will need them -------------
#
# Building the fixture day's store (an ``omniops ingest`` of 511k events) and regenerating
# the fixture day (the generator's byte-identity test) take about half a minute each, and
# the full sides of the as-of property tests (``tests/test_asof.py``) a quarter of one; all
# are single-threaded, so the session runs them as processes beside the tests as soon as
# collection shows a test needs them, one after the other (not all at once: they would
# take the cores the tests run on), the one the earliest test needs first; the tests then
# wait for their result.  (First of all, when Python writes no bytecode itself, the
# project's modules are compiled: every process the tests start loads them faster.)
#
# Under pytest-xdist (the suite runs with ``-n 3``) every worker collects the same tests,
# so the builds are planned by the first worker to finish collecting, run once by the
# controller (which lives for the whole session), and read from files by every worker:
# ``<name>.out`` (the build's output) and ``<name>.rc`` (its exit code, written last).

ROOT = Path(__file__).resolve().parent.parent
REGENERATE_TEST = "test_same_seed_regenerates_the_committed_fixture_day"
ASOF_FIXTURES = ("day_slice_store", "day_slice_figures", "catalogue_figures")
BUILDS_ENV = "OMNIOPS_TEST_BUILDS"  # the session's build folder, inherited by the workers


class _Job:
    """One background build: its name, its command, its process, and whether it ended."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name, self.command = name, command
        self.proc: subprocess.Popen[bytes] | None = None
        self.done = threading.Event()


_JOBS: list[_Job] = []  # the controller's (or the serial session's) running builds
_PLANNED: dict[str, Path] = {}  # the builds this process's tests may wait for: results
_OWNED_DIR: list[Path] = []  # the build folder this process made (and removes)
_STOPPING = threading.Event()


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _builds_dir() -> Path:
    return Path(os.environ[BUILDS_ENV])


def pytest_configure(config: pytest.Config) -> None:
    """The controller (or the serial session) makes the session's build folder."""
    if _is_worker(config):
        return
    base = Path(tempfile.mkdtemp(prefix="omniops-tests-"))
    os.environ[BUILDS_ENV] = str(base)  # before xdist starts its workers: they inherit it
    _OWNED_DIR.append(base)


def _run_jobs(base: Path, jobs: list[_Job]) -> None:
    """Run the jobs one after the other (until the session stops), each leaving its files."""
    env = {
        **os.environ,  # no user config, rules, cache or log: as the private_home fixture does
        "OMNIOPS_CONFIG": str(base / "config.toml"),
        "OMNIOPS_RULES": str(base / "rules.toml"),
        "XDG_CACHE_HOME": str(base / "cache"),
        "XDG_STATE_HOME": str(base / "state"),
    }
    for job in jobs:
        output, code = b"not run: the session ended first", -1
        try:
            if not _STOPPING.is_set():
                job.proc = subprocess.Popen(
                    job.command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
                output, _ = job.proc.communicate()
                code = job.proc.returncode
        finally:
            (base / f"{job.name}.out").write_bytes(output)
            (base / f"{job.name}.rc.tmp").write_text(str(code))
            (base / f"{job.name}.rc.tmp").rename(base / f"{job.name}.rc")
            job.done.set()


def _start_jobs(plan: list[tuple[str, list[str], str]]) -> None:
    """Start the planned builds (name, command, result path) in a background thread."""
    if _JOBS or not plan:
        return
    _JOBS.extend(_Job(name, command) for name, command, _ in plan)
    threading.Thread(target=_run_jobs, args=(_builds_dir(), list(_JOBS)), daemon=True).start()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The as-of property tests last: their full sides are then ready (see below)."""
    last = [i for i in items if {"day_slice_figures", "catalogue_figures"} & _fixtures(i)]
    if last:
        items[:] = [i for i in items if i not in last] + last


def _fixtures(item: pytest.Item) -> set[str]:
    return set(getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)  # a worker's plan is on disk before xdist reports collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the long builds the collected tests need; start them (serial session) or leave
    the plan for the controller (xdist worker)."""
    items = session.items
    if session.config.option.collectonly:
        return

    def first(wanted: Callable[[pytest.Item], bool]) -> int | None:
        return next((n for n, item in enumerate(items) if wanted(item)), None)

    def uses(*names: str) -> Callable[[pytest.Item], bool]:
        return lambda item: bool(set(names) & _fixtures(item))

    base = _builds_dir()
    python = sys.executable
    wanted = {
        "asof": (
            first(uses(*ASOF_FIXTURES)),
            [python, "-m", "tests.test_asof", str(base / "asof")],
            base / "asof",
        ),
        "day": (
            first(uses("fixture_day_store")),
            [python, "-m", "console.cli", "ingest", str(FIXTURE_DAY), "--db", str(base / "day.db")],
            base / "day.db",
        ),
        "regen": (
            first(lambda item: REGENERATE_TEST in item.nodeid),
            [
                *(python, str(ROOT / "fixtures" / "generate.py")),
                *("--seed", "7", "--out", str(base / "regenerated"), "--no-check"),
            ],
            base / "regenerated",
        ),
    }
    order = sorted((at, name) for name, (at, _, _) in wanted.items() if at is not None)
    if sys.dont_write_bytecode:
        # PYTHONDONTWRITEBYTECODE: every process the tests start (consoles, serves, the
        # CLI) would compile the project's modules anew; compiled once here, first, they
        # load them (``__pycache__`` is git-ignored).
        packages = [str(ROOT / name) for name in ("console", "feeds", "store", "rules")]
        wanted["pyc"] = (-1, [python, "-m", "compileall", "-q", *packages], ROOT)
        order.insert(0, (-1, "pyc"))
    plan = [(name, wanted[name][1], str(wanted[name][2])) for _, name in order]
    _PLANNED.update((name, Path(result)) for name, _, result in plan)
    if not _is_worker(session.config):
        _start_jobs(plan)
        return
    draft = base / f"plan.{os.getpid()}.json"
    draft.write_text(json.dumps(plan))
    with contextlib.suppress(FileExistsError):  # every worker plans the same: first one wins
        os.link(draft, base / "plan.json")
    draft.unlink()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """The controller starts the builds a worker planned (once, on the first report)."""
    plan = _builds_dir() / "plan.json"
    if not _JOBS and plan.exists():
        _start_jobs([(n, list(c), r) for n, c, r in json.loads(plan.read_text())])


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop what still runs in the background and remove its files (the folder's owner)."""
    _STOPPING.set()
    for job in _JOBS:
        while not job.done.wait(0.1):  # (a job may be starting right now: kill it too)
            if job.proc is not None and job.proc.poll() is None:
                job.proc.kill()
    for base in _OWNED_DIR:
        shutil.rmtree(base, ignore_errors=True)


def background_result(name: str) -> tuple[Path, str] | None:
    """Wait for the background build ``name``; its result path and output (None: not planned).

    Raises:
        AssertionError: the build failed (its output says why).
    """
    if name not in _PLANNED:
        return None
    base = _builds_dir()
    deadline = time.monotonic() + 900
    while not (base / f"{name}.rc").exists():
        assert time.monotonic() < deadline, f"background {name} still running after 15 minutes"
        time.sleep(0.1)
    text = (base / f"{name}.out").read_bytes().decode("utf-8", "replace")
    code = (base / f"{name}.rc").read_text()
    assert code == "0", f"background {name} failed ({code}):\n{text}"
    return _PLANNED[name], text


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
def day_slice_figures(tmp_path_factory: pytest.TempPathFactory) -> FullSide:
    """The full side of ``tests/test_asof.py``'s property test: the fixture day's first day
    and a half (``tests.test_asof.slice_events``) written through the real writer once per
    session, the test's moments, and the store's figures at each (``comparable``).

    Computed in the background from the start of the session, else here.  Read the store
    only; copy it to write.
    """
    done = background_result("asof")
    if done is not None:
        return load_full_side(done[0] / "slice.pickle")
    from tests.test_asof import asof_moments, build_slice_store, figures_at, slice_events

    db = build_slice_store(tmp_path_factory.mktemp("day-slice") / "slice.db")
    moments = asof_moments(slice_events())
    return db, moments, figures_at(db, moments)


@pytest.fixture(scope="session")
def day_slice_store(day_slice_figures: FullSide) -> Path:
    """The fixture day's first day and a half (``tests.test_asof.slice_events``), written
    through the real writer once per session.  Read it only; copy it to write."""
    return day_slice_figures[0]


@pytest.fixture(scope="session")
def catalogue_figures(tmp_path_factory: pytest.TempPathFactory) -> FullSide:
    """The full side of ``tests/test_asof_catalogue.py``'s property test: its store fed the
    whole generated timeline, the test's moments, and the store's figures at each.

    Computed in the background from the start of the session, else here.
    """
    done = background_result("asof")
    if done is not None:
        return load_full_side(done[0] / "catalogue.pickle")
    from tests.test_asof_catalogue import build_catalogue_full_side

    return build_catalogue_full_side(tmp_path_factory.mktemp("catalogue") / "full.db")
