"""Every number as of its moment: ``report --at T`` on the full store equals ``report`` on a
store fed only the events stamped at or before T.

The day is a slice of the fixture day's history (every feed's events of its first two
days, in time order).  The full store is built once; the prefix store is fed
incrementally, one random moment after the other in time order, and compared at each.

The full side (the store and its figures at every moment) depends on nothing the test
does, so the session computes it in the background from its start (``python -m
tests.test_asof OUT``, see ``tests/conftest.py``), with the same code as here; the test
feeds the prefix store and computes the truth meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import pickle
import random
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from store.apply import epoch
from store.metrics import compute_snapshots, open_reader, store_counts
from store.model import Event, parse_event
from store.risk import MetricParams
from store.snapshots import to_jsonable
from store.writer import StoreWriter

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "day"
SLICE_END = "2026-10-22T16:00:00Z"
"""The slice: every event stamped before this (about a day and a half of history)."""
MOMENTS = 60
P = MetricParams(timezone="America/New_York", top_n=10_000)


@functools.cache
def slice_events() -> list[Event]:
    """The fixture day's events stamped before :data:`SLICE_END`, in time order.

    Parsed once per session and shared (the list and its events are read, never changed).
    """
    events: list[Event] = []
    for path in sorted(FIXTURE.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                ts = line.split('"ts":"', 1)[1][:20]
                if ts < SLICE_END:
                    events.append(parse_event(line))
    events.sort(key=lambda e: e.ts)
    return events


def comparable(db: Path, t: datetime) -> dict[str, Any]:
    """Every field of the snapshots at ``t`` except how long they took to compute."""
    reader = open_reader(db)
    try:
        data: dict[str, Any] = to_jsonable(compute_snapshots(reader, t, P))
    finally:
        reader.close()
    data.pop("computed_in_ms")
    return data


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ (paths), for a readable failure."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += diff(a.get(k), b.get(k), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out += diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: full {str(a)[:160]} != prefix {str(b)[:160]}"]


def asof_moments(events: list[Event]) -> list[int]:
    """The test's moments (epoch seconds, in order): random ones, one on an event, one on
    an hour boundary."""
    first, last = epoch(events[0].ts), epoch(events[-1].ts)
    rng = random.Random(11)
    moments = sorted(rng.randint(first, last + 3600) for _ in range(MOMENTS))
    # A moment exactly on an event, and on an hour boundary, are the likeliest to slip.
    moments[MOMENTS // 3] = epoch(events[len(events) // 3].ts)
    moments[MOMENTS // 2] -= moments[MOMENTS // 2] % 3600
    moments.sort()
    return moments


def build_slice_store(db: Path) -> Path:
    """The full store: every event of the slice written at once through the real writer."""

    async def fill() -> None:
        async with StoreWriter(db) as writer:
            await writer.write_many(slice_events())

    asyncio.run(fill())
    return db


def events_in(db: Path) -> int:
    """How many events a store applied (all feeds)."""
    reader = open_reader(db)
    try:
        return int(store_counts(reader)["events"])
    finally:
        reader.close()


def figures_at(db: Path, moments: list[int]) -> list[dict[str, Any]]:
    """:func:`comparable` of ``db`` at every moment."""
    return [comparable(db, datetime.fromtimestamp(t, UTC)) for t in moments]


FullSide = tuple[Path, list[int], list[dict[str, Any]]]
"""A full store, the moments and its figures at each (as the background writes them)."""


def save_full_side(path: Path, side: FullSide) -> None:
    path.write_bytes(pickle.dumps(side))


def load_full_side(path: Path) -> FullSide:
    side: FullSide = pickle.loads(path.read_bytes())
    return side


def background(out: Path) -> None:
    """The full sides of this module's and ``tests/test_asof_catalogue.py``'s property
    tests, into ``out`` (the session runs this in the background from its start)."""
    from tests.test_asof_catalogue import build_catalogue_full_side

    out.mkdir(parents=True, exist_ok=True)
    db = build_slice_store(out / "slice.db")
    moments = asof_moments(slice_events())
    save_full_side(out / "slice.pickle", (db, moments, figures_at(db, moments)))
    save_full_side(out / "catalogue.pickle", build_catalogue_full_side(out / "catalogue.db"))


async def test_report_at_t_equals_report_of_the_events_up_to_t(
    tmp_path: Path, day_slice_figures: FullSide
) -> None:
    events = slice_events()
    # the full store: these same events written at once (built once for the session; read
    # only), and its figures at each moment (computed with it)
    full, moments, full_figures = day_slice_figures
    assert events_in(full) == len(events), "the full store holds every event"
    assert moments == asof_moments(events)
    prefix = tmp_path / "prefix.db"
    failures: list[str] = []
    fed = 0
    async with StoreWriter(prefix) as writer:
        for t, full_at in zip(moments, full_figures, strict=True):
            upto = fed
            while upto < len(events) and epoch(events[upto].ts) <= t:
                upto += 1
            if upto > fed:
                await writer.write_many(events[fed:upto])
                fed = upto
            at = datetime.fromtimestamp(t, UTC)
            differences = diff(full_at, comparable(prefix, at))
            if differences:
                failures.append(f"T={at.isoformat()}: " + "; ".join(differences[:8]))
    assert not failures, f"{len(failures)} of {MOMENTS} moments differ:\n" + "\n".join(
        failures[:10]
    )


def test_the_slice_has_every_kind_of_event() -> None:
    """The slice exercises cancellations, returns, counts, adjustments, listings and POs."""
    kinds = {e.type for e in slice_events()}
    assert {
        "order.placed",
        "order.cancelled",
        "return.received",
        "stock.snapshot",
        "stock.adjusted",
        "listing.updated",
        "inbound.updated",
        "fulfillment.updated",
    } <= kinds


if __name__ == "__main__":  # run as a module: use the one importable copy of it
    from tests.test_asof import background as run

    run(Path(sys.argv[1]))
