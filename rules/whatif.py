"""What-if: replay orders under draft rules and under the current rules, and compare.

Both sides go through :func:`rules.routing.router.route_sequence`, the very function ingest
routes with, from the same starting stock and load: orders are routed one after another
in placement order, each at the moment it was placed, each seeing the reservations of the
orders before it.  So the "current" side of a what-if is exactly what the router does
(and did, when nothing else moved stock in between), and any difference is the draft's.

Definitions (what the console's what-if view shows):

* **changed**: orders whose nodes (the set of nodes used) or status differ.
* **splits**: extra shipments (nodes − 1) summed over routed orders; **split orders**:
  routed orders using more than one node.
* **mean distance**: mean of ``distance_km`` over the shipments of routed orders whose
  distance is known.
* **late**: routed orders whose promise (ship-by / ready-by) is after the order's own
  promised-by; **newly late**: late under the draft and not under the current rules.
* **newly unfulfillable / held**: that status under the draft, another one now.
* **load per node**: orders routed to each node (a split order counts at each node).

Pure: no I/O.  The store module loads the inputs (:func:`feeds.runtime.routing.load_replay`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rules.routing.config import FulfillmentRouting
from rules.routing.orders import Decision, Inventory, RouteOrder
from rules.routing.router import route_sequence
from store.model import LocationBody


@dataclass(frozen=True)
class ReplayInputs:
    """The orders to replay and the state they start from."""

    orders: Sequence[tuple[RouteOrder, datetime]]
    """Orders with the moment each is routed for (its placement), in that order."""
    inventory: Inventory
    """Catalogue, stock and load as they were before the first order."""
    nodes: Sequence[LocationBody]


@dataclass(frozen=True)
class SideSummary:
    """Totals of one side of a what-if."""

    routed: int
    held: int
    unfulfillable: int
    late: int
    splits: int
    split_orders: int
    mean_distance_km: float | None
    load: dict[str, int]
    """Orders routed per node."""


@dataclass(frozen=True)
class OrderDiff:
    """One order that routes differently under the draft."""

    order_id: str
    current_nodes: tuple[str, ...]
    draft_nodes: tuple[str, ...]
    current_status: str
    draft_status: str
    current_rule: str | None
    draft_rule: str | None
    current_late: bool
    draft_late: bool
    current_km: float | None
    draft_km: float | None


@dataclass(frozen=True)
class WhatIfReport:
    """The difference between routing the same orders under two rule sets."""

    orders: int
    current: SideSummary
    draft: SideSummary
    changed: tuple[OrderDiff, ...]
    newly_late: tuple[str, ...]
    newly_unfulfillable: tuple[str, ...]
    newly_held: tuple[str, ...]
    current_decisions: tuple[Decision, ...]
    draft_decisions: tuple[Decision, ...]
    assigned_too: bool = False
    """True when the replay routed orders that arrived with a node from their channel
    anew (no order of the window was the router's to decide)."""

    @property
    def load_change(self) -> dict[str, tuple[int, int]]:
        """Per node with any load: (current, draft) orders routed."""
        names = sorted(set(self.current.load) | set(self.draft.load))
        return {n: (self.current.load.get(n, 0), self.draft.load.get(n, 0)) for n in names}


def replay(inputs: ReplayInputs, rules: FulfillmentRouting) -> list[Decision]:
    """Route every order of ``inputs`` under ``rules`` (the router's own sequence)."""
    return route_sequence(inputs.orders, inputs.inventory, inputs.nodes, rules)


def summarise(decisions: Sequence[Decision]) -> SideSummary:
    """Totals of one side (see the module docstring for each definition)."""
    status = Counter(d.status for d in decisions)
    routed = [d for d in decisions if d.status == "routed"]
    distances = [s.distance_km for d in routed for s in d.shipments if s.distance_km is not None]
    load: Counter[str] = Counter()
    for d in routed:
        load.update(set(d.nodes))
    return SideSummary(
        routed=status["routed"],
        held=status["held"],
        unfulfillable=status["unfulfillable"],
        late=sum(1 for d in routed if d.late),
        splits=sum(d.splits for d in routed),
        split_orders=sum(1 for d in routed if d.splits > 0),
        mean_distance_km=sum(distances) / len(distances) if distances else None,
        load=dict(sorted(load.items())),
    )


def compare(current: Sequence[Decision], draft: Sequence[Decision]) -> WhatIfReport:
    """The report for two decision lists over the same orders, in the same order."""
    if [d.order_id for d in current] != [d.order_id for d in draft]:
        raise ValueError("the two sides must decide the same orders in the same order")
    changed: list[OrderDiff] = []
    newly_late: list[str] = []
    newly_unfulfillable: list[str] = []
    newly_held: list[str] = []
    for a, b in zip(current, draft, strict=True):
        if set(a.nodes) != set(b.nodes) or a.status != b.status:
            changed.append(
                OrderDiff(
                    order_id=a.order_id,
                    current_nodes=tuple(a.nodes),
                    draft_nodes=tuple(b.nodes),
                    current_status=a.status,
                    draft_status=b.status,
                    current_rule=a.rule_id,
                    draft_rule=b.rule_id,
                    current_late=a.late,
                    draft_late=b.late,
                    current_km=a.mean_distance_km,
                    draft_km=b.mean_distance_km,
                )
            )
        if b.late and not a.late:
            newly_late.append(b.order_id)
        if b.status == "unfulfillable" and a.status != "unfulfillable":
            newly_unfulfillable.append(b.order_id)
        if b.status == "held" and a.status != "held":
            newly_held.append(b.order_id)
    return WhatIfReport(
        orders=len(current),
        current=summarise(current),
        draft=summarise(draft),
        changed=tuple(changed),
        newly_late=tuple(newly_late),
        newly_unfulfillable=tuple(newly_unfulfillable),
        newly_held=tuple(newly_held),
        current_decisions=tuple(current),
        draft_decisions=tuple(draft),
    )


def what_if(
    inputs: ReplayInputs, current: FulfillmentRouting, draft: FulfillmentRouting
) -> WhatIfReport:
    """Replay ``inputs`` under the current rules and under the draft, and compare."""
    return compare(replay(inputs, current), replay(inputs, draft))
