"""The demo's first run: the console at once with a progress bar, ``q`` leaves nothing behind.

A small slice of the fixture day (the first lines of every feed) keeps the history build
short; it is built through the same writer and cache as the full demo.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console.loading import LoadingApp, progress_text
from feeds.jsonl import feed_files
from feeds.runtime.demo import (
    BuildCancelled,
    BuildProgress,
    HistoryBuild,
    build_history,
    cached_store,
    clean_leftovers,
    history_estimate,
)
from store.model import Event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "day"
START = datetime(2026, 11, 18, 13, tzinfo=UTC)
LINES_PER_FEED = 3000


@pytest.fixture(scope="session")
def small_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first lines of every fixture feed, all of them history before :data:`START`."""
    folder = tmp_path_factory.mktemp("small-day")
    counts: dict[str, int] = {}
    for path in feed_files(FIXTURES):
        with gzip.open(path, "rt") as source, gzip.open(folder / path.name, "wt") as out:
            lines = list(itertools.islice(source, LINES_PER_FEED))
            out.writelines(lines)
            counts[path.name] = len(lines)
    manifest = json.loads((FIXTURES / "manifest.json").read_text())
    manifest["counts"] = counts
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def leftovers(cache: Path) -> list[str]:
    """Every file of the cache folder but the lock files."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.suffix != ".lock")


async def test_quitting_during_the_history_load_leaves_no_store(
    small_fixtures: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build = HistoryBuild(small_fixtures, START, cache=cache)
    app = LoadingApp(build, poll=0.02)
    async with app.run_test() as pilot:
        build.start()
        for _ in range(500):  # bounded: until the build is writing its temporary store
            if list(cache.glob("*.tmp")):
                break
            await pilot.pause(0.01)
        assert list(cache.glob("*.tmp")), "the build never started writing"
        assert not build.finished
        assert app.query_one("#bar") is not None  # the console is up, with its bar
        await pilot.press("q")
    build.join(timeout=60)
    assert app.return_value is False
    assert isinstance(build.error, BuildCancelled)
    assert leftovers(cache) == []  # no temporary store, no half-built cache


async def test_ctrl_c_during_the_load_quits_too(small_fixtures: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build = HistoryBuild(small_fixtures, START, cache=cache)
    app = LoadingApp(build, poll=0.02)
    async with app.run_test() as pilot:
        build.start()
        await pilot.press("ctrl+c")
    build.join(timeout=60)
    assert app.return_value is False
    assert leftovers(cache) == []


async def test_the_loading_screen_leaves_with_true_when_the_build_is_done(
    small_fixtures: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build = HistoryBuild(small_fixtures, START, cache=cache)
    app = LoadingApp(build, poll=0.02)
    async with app.run_test() as pilot:
        build.start()
        for _ in range(3000):  # bounded
            if app.return_value is not None:
                break
            await pilot.pause(0.02)
    build.join(timeout=60)
    assert app.return_value is True
    assert build.error is None
    assert build.result == cached_store(small_fixtures, START, cache)
    counts = json.loads((small_fixtures / "manifest.json").read_text())["counts"]
    assert build.progress.loaded == sum(counts.values())
    assert leftovers(cache) == [build.result.name]


def test_old_leftovers_are_cleaned_and_two_builds_do_not_both_build(
    small_fixtures: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    key = cached_store(small_fixtures, START, cache).stem.removeprefix("demo-")
    dead = cache / "demo-0123456789abcdef.999999999.tmp"  # a build whose process died
    dead.write_bytes(b"half a store")
    (cache / f"{dead.name}-wal").write_bytes(b"")
    interrupted = cache / f"demo-{key}.{os.getpid()}.tmp"  # this key: never still building
    interrupted.write_bytes(b"half a store")
    other_live = cache / f"demo-fedcba9876543210.{os.getpid()}.tmp"  # a live build elsewhere
    other_live.write_bytes(b"in progress")

    states = [BuildProgress(), BuildProgress()]
    results: list[Path] = []

    def run(state: BuildProgress) -> None:
        results.append(build_history(small_fixtures, START, cache=cache, progress=state))

    threads = [threading.Thread(target=run, args=(s,)) for s in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 2 and results[0] == results[1]
    assert sum(s.building for s in states) == 1  # the other waited, then copied
    assert leftovers(cache) == sorted([results[0].name, other_live.name])
    assert clean_leftovers(cache) == []  # the live one stays


def test_the_estimate_and_the_progress_line() -> None:
    estimate = history_estimate(FIXTURES, START)
    assert estimate is not None and 300_000 < estimate < 511_000
    state = BuildProgress(loaded=1000, total=4000)
    text = progress_text(state)
    assert text.startswith("1,000 of about 4,000 events") and "s left" in text
    state.cancel.set()
    with pytest.raises(BuildCancelled):
        state.update(2000)


def test_the_demo_reads_fixtures_as_the_feeds_do(small_fixtures: Path, tmp_path: Path) -> None:
    """The demo's light manifest and file readers (before its first screen) agree with feeds."""
    from feeds import jsonl, replay
    from feeds.runtime import demo

    assert demo.FEED_SUFFIXES == jsonl.SUFFIXES
    (tmp_path / "notes.txt").write_text("not events")
    (tmp_path / "b.ndjson").write_text("")
    (tmp_path / "a.jsonl").write_text("")
    for folder in (FIXTURES, small_fixtures, tmp_path):
        assert demo.load_manifest(folder) == replay.load_manifest(folder)
        assert demo.feed_files(folder) == jsonl.feed_files(folder)
    one = feed_files(FIXTURES)[0]
    assert demo.feed_files(one) == jsonl.feed_files(one) == [one]
    with pytest.raises(FileNotFoundError):
        demo.feed_files(tmp_path / "missing")


def test_a_demo_replay_stopped_before_it_started_never_starts(tmp_path: Path) -> None:
    """Quitting the console before the warm-up ran: the replay starts nothing afterwards."""
    from console.cli import DemoReplay
    from store.clock import ReplayClock
    from store.risk import MetricParams

    rules = tmp_path / "rules.toml"
    replay = DemoReplay(
        tmp_path / "demo.db",
        FIXTURES,
        START,
        ReplayClock(START),
        MetricParams(timezone="America/New_York"),
        5.0,
        rules,
        demo_rules=True,
    )
    replay.stop()
    replay.start()
    assert not rules.exists()  # not even the demo rules were written
    assert not (tmp_path / "demo.db").exists()
    replay.stop()  # twice is fine


def test_a_demo_replay_waits_for_what_must_precede_it(tmp_path: Path) -> None:
    """``after`` (the replay clock's record, written on a thread) runs before anything else."""
    from console.cli import DemoReplay
    from store.clock import ReplayClock
    from store.risk import MetricParams

    rules = tmp_path / "rules.toml"
    seen: list[bool] = []
    replay = DemoReplay(
        tmp_path / "demo.db",
        FIXTURES,
        START,
        ReplayClock(START),
        MetricParams(timezone="America/New_York"),
        5.0,
        rules,
        demo_rules=True,
        after=lambda: seen.append(rules.exists()),
    )
    replay.stop()  # stopped: after still ran (a join is harmless), nothing else did
    replay.start()
    assert seen == [False]
    assert not rules.exists()


async def test_a_stopped_load_reads_no_further_and_commits_only_what_it_had_handed_over(
    tmp_path: Path,
) -> None:
    """``q`` mid-build: the reader stops within a step, queued chunks are withdrawn.

    The stop is set while item ``STOP_AT`` is read; nothing read after it is written, at
    most :data:`STOP_EVERY` more are read, and only chunks handed over before commit.
    """
    import sqlite3

    from feeds.runtime.ingest import STOP_EVERY, write_stream
    from store.writer import StoreWriter
    from tests.builders import adjust, at

    chunk, total, stop_at = 500, 20_000, 2_750
    events = [adjust(f"S{n}", "WH-NJ", -1, at(minutes=n / 60)) for n in range(total)]
    stop = threading.Event()
    drawn = 0

    def items() -> Iterator[Event]:
        nonlocal drawn
        for event in events:
            drawn += 1
            if drawn == stop_at:
                stop.set()
            yield event

    db = tmp_path / "stopped.db"
    async with StoreWriter(db, batch_size=100, bulk_batch_size=chunk) as writer:
        tally = await write_stream(writer, items(), stop=stop)
    assert drawn <= stop_at + STOP_EVERY  # the reader looked at the flag within a step
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM event_log").fetchone()[0]
    assert stored == tally["applied"]  # what committed is what the tally says
    assert stored <= (stop_at // chunk) * chunk  # never a chunk read after the stop
    assert stored % chunk == 0  # whole chunks: none abandoned half-way


def test_the_high_water_mark_is_the_last_second_wholly_committed() -> None:
    """One second before the first item not committed; None once the order is broken."""
    from feeds.runtime.demo import HighWater

    class Item:
        def __init__(self, second: int) -> None:
            self.ts = datetime.fromtimestamp(second, UTC)

    def moment(second: int) -> datetime:
        return datetime.fromtimestamp(second, UTC)

    water = HighWater()
    items = water.watch([Item(s) for s in (100, 100, 101, 105, 105)])
    drawn = [next(items) for _ in range(4)]
    assert water.first == moment(100)
    assert water.moment(0) is None
    assert water.moment(1) == moment(99)  # the second item shares second 100
    assert water.moment(2) == moment(100)  # the next item is at 101
    assert water.moment(3) == moment(104)  # nothing between 101 and 105
    assert water.moment(4) == moment(104)  # the 5th (not read yet) may share 105
    drawn += list(items)
    assert len(drawn) == 5 and water.exhausted
    assert water.moment(5) == moment(105)  # everything is in
    late = HighWater()
    list(late.watch([Item(200), Item(199)]))
    assert not late.ordered and late.moment(1) is None


def snapshot_figures(snapshots: object) -> object:
    """A snapshot as ``report --json`` gives it (without the time it took)."""
    from store.snapshots import to_jsonable

    data = to_jsonable(snapshots)
    data.pop("computed_in_ms", None)
    return data


async def test_while_the_history_loads_the_console_shows_figures_as_of_what_is_committed(
    small_fixtures: Path, tmp_path: Path
) -> None:
    """The panels have numbers mid-load, and they are those of the store as of the moment.

    The build is held after a committed chunk (nothing timed): the console's snapshots are
    as of the high-water mark, equal to a report of the same store at that moment, and to
    a report of the finished history at that moment (so nothing later leaked in and
    nothing earlier was missing).  Then the build goes on; the console leaves with True.
    """
    from zoneinfo import ZoneInfo

    from console.cli import demo_params, loading_console
    from console.widgets.bars import HeadlineStrip, TextBar
    from console.widgets.formatting import fmt_money
    from store.metrics import compute_snapshots, open_reader

    cache = tmp_path / "cache"
    build = HistoryBuild(small_fixtures, START, cache=cache)
    build.progress.show_after = timedelta(hours=1)
    resume, held = threading.Event(), threading.Event()

    def hold(progress: BuildProgress) -> None:
        if progress.partial_ready and progress.loaded >= 10_000 and not resume.is_set():
            held.set()
            resume.wait(120)

    build.progress.on_commit = hold
    build.start()
    assert held.wait(120), "the build never got far enough to show figures"
    moment = build.progress.committed_until
    assert moment is not None and build.progress.store is not None
    params = demo_params("America/New_York")
    app, close = loading_console(
        build, params, 5.0, ZoneInfo("America/New_York"), tmp_path / "rules.toml"
    )
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(1000):  # bounded: until the first refresh is on screen
                if app.snapshots is not None:
                    break
                await pilot.pause(0.02)
            shown = app.snapshots
            assert shown is not None and shown.as_of == moment
            top = str(app.main_screen.query_one("#topbar", TextBar).render())
            assert "HISTORY STILL LOADING" in top and "figures as of" in top
            assert moment.astimezone(ZoneInfo("America/New_York")).strftime("%H:%M:%S") in top
            strip = app.main_screen.query_one(HeadlineStrip)
            headline = " ".join(str(bar.render()) for bar in strip.query(TextBar))
            assert shown.headline.net_sales > 0
            assert fmt_money(shown.headline.net_sales) in headline
            reader = open_reader(build.progress.store)
            try:
                same = compute_snapshots(reader, moment, params)
            finally:
                reader.close()
            assert snapshot_figures(shown) == snapshot_figures(same)
            assert app.build_view("alerts") is None and not app.can_look_back
            resume.set()
            for _ in range(3000):  # bounded: until the build is done and the console left
                if app.finished is not None:
                    break
                await pilot.pause(0.02)
        assert app.finished is True
    finally:
        resume.set()
        close()
        build.join(timeout=120)
    assert build.error is None and build.result is not None
    assert leftovers(cache) == [build.result.name]  # the temporary store became the cache
    reader = open_reader(build.result)
    try:
        complete = compute_snapshots(reader, moment, params)
    finally:
        reader.close()
    assert snapshot_figures(shown) == snapshot_figures(complete)


async def test_quitting_the_loading_console_cancels_and_leaves_no_store(
    small_fixtures: Path, tmp_path: Path
) -> None:
    """``q`` over the partial history: the console leaves with False, nothing is kept."""
    from zoneinfo import ZoneInfo

    from console.cli import demo_params, loading_console

    cache = tmp_path / "cache"
    build = HistoryBuild(small_fixtures, START, cache=cache)
    build.progress.show_after = timedelta(0)
    resume, held = threading.Event(), threading.Event()

    def hold(progress: BuildProgress) -> None:
        if progress.partial_ready and not resume.is_set():
            held.set()
            resume.wait(120)

    build.progress.on_commit = hold
    build.start()
    assert held.wait(120)
    app, close = loading_console(
        build, demo_params("UTC"), 5.0, ZoneInfo("UTC"), tmp_path / "rules.toml"
    )
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("ctrl+c")
        assert app.finished is False
        assert build.progress.cancel.is_set()  # asked at once, before the readers closed
    finally:
        close()
        resume.set()
        build.join(timeout=120)
    assert isinstance(build.error, BuildCancelled)
    assert leftovers(cache) == []


def test_the_loading_top_bar_fits_80_columns_in_its_short_form() -> None:
    """At 80×24 both lines are whole (the long form is cut there), numbers and all."""
    from dataclasses import dataclass
    from zoneinfo import ZoneInfo

    from console.loading_console import loading_top_bar
    from tests.snapshot_factory import build_snapshots

    @dataclass
    class Figures:
        loaded: int = 455_000
        total: int | None = 511_219
        waiting: bool = False
        rate: float = 13_467.0
        eta: float | None = 104.0

    snaps = build_snapshots()
    tz = ZoneInfo("America/New_York")
    full = loading_top_bar(title="omniops demo", progress=Figures(), snapshots=snaps, tz=tz)
    short = loading_top_bar(
        title="omniops demo", progress=Figures(), snapshots=snaps, tz=tz, compact=True
    )
    moment = snaps.as_of.astimezone(tz).strftime("%H:%M:%S")
    for text in (full.plain, short.plain):
        first, second = text.split("\n")
        assert "89%" in first and "455,000" in first and "511,219" in first
        assert "104 s left" in first and moment in second
    assert max(len(line) for line in full.plain.split("\n")) > 80  # why the short form
    assert all(len(line) <= 80 for line in short.plain.split("\n")), short.plain
