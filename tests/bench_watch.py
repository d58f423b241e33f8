"""Watcher-overhead benchmark: CPU of the process while another file in the folder churns.

``python -m tests.bench_watch [--rounds N] [--writes N] [--rate N]``

A fixed workload: a folder holds the watched file (idle: never written during a round) and
a ``store.db-wal`` beside it, appended ``--writes`` times (4 KiB each, flushed) at
``--rate`` writes a second by the event loop, as a store's WAL next to the mapping file is
in ``serve``.  Each round runs the workload three ways, in a rotating order, and measures
the CPU seconds of this whole process (every thread: the writer, watchfiles' Rust thread,
the worker threads) with :func:`time.process_time`:

* ``anchor``: no watcher;
* ``folder``: the watch ``rules.watch`` used before, the parent folder by
  :func:`watchfiles.awatch` with a filter on the file's name (every write to the WAL wakes
  it and is filtered out in Python);
* ``file``: :class:`rules.watch.FileWatcher` as it is (the file itself).

It prints each round's CPU seconds and the ratio of each watcher to that round's anchor,
then the median ratios.  After each watcher's round the watched file is rewritten once,
outside the measured window, to check the watcher still reloads (and the ``file`` watcher
must not have re-read the file during the churn).  Nothing is asserted on the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from rules.watch import FileWatcher

WATCHED = "mapping.toml"


class Refused(Exception):
    """The bench's loader never refuses; the watcher needs an error type."""


async def churn(folder: Path, writes: int, rate: float) -> None:
    """Append ``writes`` blocks of 4 KiB to a WAL-like file beside the watched one."""
    block = b"x" * 4096
    period = 1.0 / rate
    start = time.perf_counter()
    with (folder / "store.db-wal").open("ab", buffering=0) as wal:
        for n in range(writes):
            wal.write(block)
            delay = start + (n + 1) * period - time.perf_counter()
            await asyncio.sleep(max(delay, 0.0))


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds (raise after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def measured(work: Callable[[], Awaitable[None]]) -> float:
    """CPU seconds of the process while ``work`` runs."""
    before = time.process_time()
    await work()
    return time.process_time() - before


async def run_anchor(folder: Path, writes: int, rate: float) -> float:
    """The workload without a watcher."""
    return await measured(lambda: churn(folder, writes, rate))


async def run_folder(folder: Path, writes: int, rate: float) -> float:
    """The workload with the former watcher: the folder, filtered on the file's name."""
    path = folder / WATCHED
    seen: list[str] = []
    stop = asyncio.Event()

    def only_this_file(change: Change, changed: str) -> bool:
        return Path(changed).name == WATCHED

    async def watching() -> None:
        async for _ in awatch(
            folder,
            watch_filter=only_this_file,
            debounce=150,
            step=50,
            stop_event=stop,
            recursive=False,
        ):
            seen.append(path.read_text())

    task = asyncio.create_task(watching())
    await asyncio.sleep(0.2)  # the watch is on (awatch gives no signal for it)
    cpu = await measured(lambda: churn(folder, writes, rate))
    path.write_text("after folder round")
    await wait_until(lambda: "after folder round" in seen)
    stop.set()
    await task
    return cpu


async def run_file(folder: Path, writes: int, rate: float) -> float:
    """The workload with :class:`rules.watch.FileWatcher`."""
    path = folder / WATCHED
    reads = 0

    def load(file: Path) -> str:
        nonlocal reads
        reads += 1
        return file.read_text()

    stop = asyncio.Event()
    watcher: FileWatcher[str, Refused] = FileWatcher(path, load, Refused, debounce_ms=150)
    task = asyncio.create_task(watcher.run(stop))
    await wait_until(watcher.watching.is_set)
    first = reads
    cpu = await measured(lambda: churn(folder, writes, rate))
    if reads != first:
        raise SystemExit(f"the file watcher re-read the idle file {reads - first} times")
    path.write_text("after file round")
    await wait_until(lambda: watcher.current == "after file round")
    stop.set()
    await task
    return cpu


MODES: dict[str, Callable[[Path, int, float], Awaitable[float]]] = {
    "anchor": run_anchor,
    "folder": run_folder,
    "file": run_file,
}


async def main(rounds: int, writes: int, rate: float) -> None:
    """Run the rounds and print the figures."""
    names = list(MODES)
    ratios: dict[str, list[float]] = {"folder": [], "file": []}
    print(f"{writes} writes of 4 KiB at {rate:g}/s beside the idle watched file, per mode")
    for n in range(rounds):
        order = names[n % len(names) :] + names[: n % len(names)]
        cpu: dict[str, float] = {}
        for name in order:
            with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
                folder = Path(tmp)
                (folder / WATCHED).write_text("idle")
                cpu[name] = await MODES[name](folder, writes, rate)
        for name in ratios:
            ratios[name].append(cpu[name] / cpu["anchor"])
        print(
            f"round {n + 1} ({' '.join(order)}): CPU s anchor {cpu['anchor']:.3f}"
            f" folder {cpu['folder']:.3f} ({cpu['folder'] / cpu['anchor']:.2f}x)"
            f" file {cpu['file']:.3f} ({cpu['file'] / cpu['anchor']:.2f}x)"
        )
    print(
        f"median of {rounds}: folder {statistics.median(ratios['folder']):.2f}x,"
        f" file {statistics.median(ratios['file']):.2f}x of the anchor"
    )


def parse() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writes", type=int, default=1500, help="WAL writes per mode")
    parser.add_argument("--rate", type=float, default=500.0, help="WAL writes a second")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse()
    asyncio.run(main(args.rounds, args.writes, args.rate))
