"""The catalogue and routing as of a moment: ``report --at T`` on the full store equals
``report`` on a store fed only what happened at or before T, when the catalogue changes
and orders are routed after they are placed.

The day is the fixture slice of ``tests/test_asof.py`` with, generated from a seed: SKUs
that change category, lead time and reorder point during the day, SKUs whose first
catalogue record arrives hours after their first sales and returns, nodes that change
their safety buffer, and webshop orders placed without a node that the router decides
later (some held first, then routed; some routed twice).  Both stores are fed the same
timeline, events and routing decisions in time order; the full one to the end, the
prefix one up to each of the random moments, where the two are compared on every panel
field.

The full side (the store fed to the end and its figures at every moment) is computed in
the session's background from its start (see ``tests/test_asof.py``), with the same code.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feeds.runtime.routing import save_decisions
from rules.routing.orders import Decision, LineRoute, Shipment
from store.apply import epoch
from store.asof import buffers_as_of, changed_after, skus_as_of, uncatalogued_at
from store.metrics import open_reader
from store.model import Event, parse_event
from store.schema import SCHEMA_VERSION
from store.writer import StoreWriter
from tests.test_asof import FIXTURE, SLICE_END, FullSide, comparable, diff, events_in, figures_at

MOMENTS = 50
SEED = 1101


@dataclass(frozen=True)
class Routing:
    """A routing decision the router makes at ``at`` for an order placed without a node."""

    at: int
    order_id: str
    status: str
    node: str | None
    lines: tuple[tuple[int, str, int], ...]
    """(line number, SKU, quantity) of every line."""


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def generated_day(seed: int) -> tuple[list[Event], list[Routing]]:
    """The slice with catalogue changes, late catalogue records and later routing.

    Generated once per seed per session and shared: read it, never change it.
    """
    rng = random.Random(seed)
    raw: list[dict[str, Any]] = []
    for path in sorted(FIXTURE.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if line.split('"ts":"', 1)[1][:20] < SLICE_END:
                    raw.append(json.loads(line))
    stamp = [epoch(datetime.fromisoformat(e["ts"])) for e in raw]
    first, last = min(stamp), max(stamp)
    skus = {e["body"]["sku"]: e for e in raw if e["type"] == "sku.upserted"}
    categories = sorted({e["body"]["category"] for e in skus.values()})
    orders = [e for e in raw if e["type"] == "order.placed"]
    sold = sorted({ln["sku"] for e in orders for ln in e["body"]["lines"]})
    extra: list[dict[str, Any]] = []
    # SKUs that change category, lead time and reorder point, once or twice, in the day.
    for n, sku in enumerate(rng.sample(sold, 24)):
        for k in range(rng.randint(1, 2)):
            record = json.loads(json.dumps(skus[sku]))
            body = record["body"]
            body["category"] = rng.choice([c for c in categories if c != body["category"]])
            body["lead_time_days"] = float(rng.choice([1, 5, 10, 30]))
            body["reorder_point"] = rng.randint(0, 40)
            record["id"] = f"gen-sku-{n}-{k}"
            record["ts"] = _iso(rng.randint(first + 3600, last))
            extra.append(record)
    # SKUs whose first record arrives hours after their first sales and returns.
    late = rng.sample([s for s in sold if s not in {e["body"]["sku"] for e in extra}], 6)
    for sku in late:
        skus[sku]["ts"] = _iso(rng.randint(first + 12 * 3600, last))
    # Nodes that change their safety buffer during the day.
    for n, node in enumerate(e for e in raw if e["type"] == "location.upserted"):
        for k in range(2):
            record = json.loads(json.dumps(node))
            record["body"]["safety_buffer"] = rng.randint(0, 6)
            record["id"] = f"gen-loc-{n}-{k}"
            record["ts"] = _iso(rng.randint(first, last))
            extra.append(record)
    # Webshop orders placed without a node, routed to their node later (some held first).
    shipped = [
        e
        for e in raw
        if e["type"] == "order.placed"
        and e["body"]["channel"] == "webshop"
        and e["body"]["method"] == "ship"
        and e["body"]["location_id"]
    ]
    # The router decides an order before it is cancelled or its first step is reported.
    bound: dict[str, int] = {}
    for e, ts in zip(raw, stamp, strict=True):
        if e["type"] in ("order.cancelled", "fulfillment.updated"):
            oid = e["body"]["order_id"]
            bound[oid] = min(ts, bound.get(oid, ts))
    routings: list[Routing] = []
    chosen = [
        e
        for e in rng.sample(shipped, 90)
        if bound.get(e["body"]["order_id"], last + 86400) - epoch(datetime.fromisoformat(e["ts"]))
        > 120
    ][:60]
    nodeless = {e["body"]["order_id"] for e in chosen}
    for n, order in enumerate(chosen):
        body = order["body"]
        node = body["location_id"]
        body["location_id"] = None
        for ln in body["lines"]:
            ln.pop("location_id", None)
        placed = epoch(datetime.fromisoformat(order["ts"]))
        lines = tuple((i, ln["sku"], ln["quantity"]) for i, ln in enumerate(body["lines"]))
        room = bound.get(body["order_id"], last + 86400) - placed - 1
        at = placed + rng.randint(60, min(6 * 3600, room))
        if n % 4 == 0:  # held first, routed later
            routings.append(Routing(placed + 30, body["order_id"], "held", None, lines))
        routings.append(Routing(at, body["order_id"], "routed", node, lines))
        if n % 4 == 1 and placed + room - at > 60:  # routed again later (its units reserved anew)
            again = rng.randint(at + 30, placed + room)
            routings.append(Routing(again, body["order_id"], "routed", node, lines))
    for e in raw:  # the node reaches the order only through the router
        if e["type"] == "fulfillment.updated" and e["body"]["order_id"] in nodeless:
            e["body"]["location_id"] = None
    events = [parse_event(json.dumps(e)) for e in raw + extra]
    events.sort(key=lambda e: e.ts)
    routings.sort(key=lambda r: (r.at, r.order_id))
    return events, routings


def decision(r: Routing) -> Decision:
    """The decision of ``r``: one shipment from its node, or held."""
    at = datetime.fromtimestamp(r.at, UTC)
    routed = r.status == "routed" and r.node is not None
    return Decision(
        order_id=r.order_id,
        status=r.status,  # type: ignore[arg-type]
        requested_method="ship",
        method="ship",
        rule_id="default" if routed else None,
        decided_for=at,
        lines=[LineRoute(line_no=n, sku=s, quantity=q, location_id=r.node) for n, s, q in r.lines],
        shipments=[
            Shipment(
                location_id=r.node,
                kind="warehouse",
                line_nos=[n for n, _, _ in r.lines],
                carrier="UPS",
                distance_km=None,
                at=at + timedelta(hours=2),
                until=at + timedelta(hours=8),
            )
        ]
        if routed and r.node is not None
        else [],
        carrier="UPS" if routed else None,
        promised_by=None,
        late=False,
        fallback=None if routed else "hold",
        summary=f"{r.status} {r.node or ''}",
        trace=[],
    )


class Timeline:
    """Feeds a store the day's events and routing decisions in time order, up to a moment."""

    def __init__(self, writer: StoreWriter, events: list[Event], routings: list[Routing]):
        self.writer, self.events, self.routings = writer, events, routings
        self.fed = self.routed = 0

    async def to(self, t: int) -> None:
        """Feed everything at or before ``t`` not fed yet (a decision after the events)."""
        while True:
            due = (
                self.routings[self.routed].at
                if self.routed < len(self.routings) and self.routings[self.routed].at <= t
                else None
            )
            upto = self.fed
            limit = t if due is None else due
            while upto < len(self.events) and epoch(self.events[upto].ts) <= limit:
                upto += 1
            if upto > self.fed:
                await self.writer.write_many(self.events[self.fed : upto])
                self.fed = upto
            if due is None:
                return
            r = self.routings[self.routed]
            at = datetime.fromtimestamp(r.at, UTC)

            def run(db: Any, r: Routing = r, at: datetime = at) -> None:
                db.execute("BEGIN IMMEDIATE")
                save_decisions(db, [decision(r)], at)
                db.execute("COMMIT")

            await self.writer.run(run)
            self.routed += 1


def catalogue_end(events: list[Event]) -> int:
    """Where the full store's timeline ends: six hours after the last event."""
    return epoch(events[-1].ts) + 6 * 3600


def catalogue_moments(events: list[Event], routings: list[Routing]) -> list[int]:
    """The test's moments (epoch seconds, in order)."""
    end = catalogue_end(events)
    rng = random.Random(SEED)
    first = epoch(events[0].ts)
    moments = sorted(rng.randint(first, end) for _ in range(MOMENTS))
    # Moments exactly on a routing decision and on a catalogue change are likeliest to slip.
    moments[MOMENTS // 4] = routings[len(routings) // 2].at
    moments[MOMENTS // 2] = epoch(next(e.ts for e in events if e.id.startswith("gen-sku")))
    moments.sort()
    return moments


def build_catalogue_full_side(full: Path) -> FullSide:
    """The full store (the whole timeline fed), the moments and its figures at each."""
    events, routings = generated_day(SEED)

    async def fill() -> None:
        async with StoreWriter(full) as writer:
            await Timeline(writer, events, routings).to(catalogue_end(events))

    asyncio.run(fill())
    moments = catalogue_moments(events, routings)
    return full, moments, figures_at(full, moments)


async def test_report_at_t_equals_report_of_the_prefix_with_catalogue_and_routing(
    tmp_path: Path, catalogue_figures: FullSide
) -> None:
    events, routings = generated_day(SEED)
    full, moments, full_figures = catalogue_figures
    assert events_in(full) == len(events), "the full store holds every event"
    assert moments == catalogue_moments(events, routings)
    prefix = tmp_path / "prefix.db"
    failures: list[str] = []
    async with StoreWriter(prefix) as writer:
        timeline = Timeline(writer, events, routings)
        for t, full_at in zip(moments, full_figures, strict=True):
            await timeline.to(t)
            at = datetime.fromtimestamp(t, UTC)
            differences = diff(full_at, comparable(prefix, at))
            if differences:
                failures.append(f"T={at.isoformat()}: " + "; ".join(differences[:8]))
    assert not failures, f"{len(failures)} of {MOMENTS} moments differ:\n" + "\n".join(
        failures[:10]
    )


def test_the_generated_day_changes_the_catalogue_and_routes_later() -> None:
    """The day exercises what the property test is about."""
    events, routings = generated_day(SEED)
    assert sum(e.id.startswith("gen-sku") for e in events) >= 24
    assert sum(e.id.startswith("gen-loc") for e in events) >= 10
    assert {r.status for r in routings} == {"held", "routed"}
    assert sum(r.status == "routed" for r in routings) >= 40


def _record(kind: str, n: int, ts: str, body: dict[str, Any]) -> Event:
    return parse_event(
        json.dumps({"id": f"t-{n}", "ts": ts, "source": "catalog", "type": kind, "body": body})
    )


def _sku(category: str, lead: float) -> dict[str, Any]:
    return {
        "sku": "S-1",
        "name": "S",
        "category": category,
        "product_type": "p",
        "unit_cost": "1.00",
        "price": "2.00",
        "reorder_point": 3,
        "lead_time_days": lead,
        "hazmat": False,
        "weight_kg": 1.0,
    }


def _node(buffer: int) -> dict[str, Any]:
    return {
        "location_id": "N-1",
        "name": "N",
        "kind": "warehouse",
        "region": "r",
        "lat": 0.0,
        "lon": 0.0,
        "timezone": "UTC",
        "hours": {"opens": "06:00", "closes": "22:00", "cutoff": None},
        "safety_buffer": buffer,
    }


async def test_the_catalogue_as_of_each_moment_follows_record_time(tmp_path: Path) -> None:
    """Records arriving out of order: as of each moment, the latest one stamped by then."""
    db = tmp_path / "s.db"
    async with StoreWriter(db) as writer:
        await writer.write_many(
            [
                _record("sku.upserted", 1, "2026-10-21T12:00:00Z", _sku("toys", 9.0)),
                _record("location.upserted", 2, "2026-10-21T11:00:00Z", _node(4)),
                _record("sku.upserted", 3, "2026-10-21T08:00:00Z", _sku("games", 2.0)),
                _record("location.upserted", 4, "2026-10-21T07:00:00Z", _node(1)),
            ]
        )
    reader = open_reader(db)
    try:
        at = [epoch(datetime.fromisoformat(f"2026-10-21T{h}:00:00Z")) for h in ("06", "09", "13")]
        assert [skus_as_of(reader, t).get("S-1") for t in at] == [
            None,
            ("games", 3, 2.0),
            ("toys", 3, 9.0),
        ]
        assert [buffers_as_of(reader, t).get("N-1") for t in at] == [None, 1, 4]
        assert [uncatalogued_at(reader, t) for t in at] == [{"S-1"}, set(), set()]
        assert [changed_after(reader, t)[0] for t in at] == [True, True, False]
        # The current state is the latest record, whatever the arrival order.
        assert reader.execute("SELECT category FROM skus").fetchone() == ("toys",)
        assert reader.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        reader.close()
