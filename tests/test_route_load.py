"""Today's node load behind ``POST /route``: recounted in the background, never older than its TTL.

A real store file written through the real writer (with the router's hook, so orders are
routed and counted), :class:`feeds.runtime.routing.StoreRoutingSource` read as the event
loop reads it (``wait=False``), and the source's monotonic clock driven by the test (no
sleeping, nothing timed): a count past half its life is renewed by a background recount
while the loop keeps answering from the old one, and a count past its life is never used.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feeds.runtime import routing as routing_module
from feeds.runtime.routing import StoreRoutingSource, WouldBlock
from rules.routing.config import FulfillmentRouting
from tests.conftest import write
from tests.routing_world import DAY, ny, placed, seed


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        """Start at 1,000 s."""
        self.now = 1000.0

    def __call__(self) -> float:
        """The current reading."""
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(routing_module, "_monotonic", fake)
    return fake


def _routed_loads(source: StoreRoutingSource) -> dict[str, int]:
    inventory, _ = source.inputs(["TEE"], ny(16), wait=False)
    return dict(inventory.load)


async def test_the_load_is_recounted_in_the_background_before_it_expires(
    db_path: Path, clock: Clock
) -> None:
    await seed(db_path, [])
    await write(db_path, DAY[:2], routing=FulfillmentRouting)
    source = StoreRoutingSource(db_path, load_ttl=10)
    try:
        with pytest.raises(WouldBlock):  # nothing counted yet: the worker counts
            source.inputs(["TEE"], ny(16), wait=False)
        first, _ = source.inputs(["TEE"], ny(16), wait=True)
        before = dict(first.load)
        assert sum(before.values()) == 2
        await write(db_path, [placed("o9", ny(15), [("TEE", 1)])], routing=FulfillmentRouting)

        clock.now += 4  # young: the count stands, no recount started
        assert _routed_loads(source) == before
        assert source._recounter is None

        clock.now += 2  # past half its life: answered from it while it is recounted
        assert _routed_loads(source) == before
        assert source._recounter is not None
        source._recounter.shutdown(wait=True)  # let the recount land

        clock.now += 3  # the first count's deadline is past; the recount's is not
        after = _routed_loads(source)
        assert sum(after.values()) == 3

        clock.now += 20  # no request came to renew it: past its life it is never used
        with pytest.raises(WouldBlock):
            source.inputs(["TEE"], ny(16), wait=False)
    finally:
        source.close()


async def test_a_zero_ttl_never_recounts_in_the_background(db_path: Path, clock: Clock) -> None:
    await seed(db_path, [])
    source = StoreRoutingSource(db_path, load_ttl=0)
    try:
        source.inputs(["TEE"], ny(16), wait=True)
        with pytest.raises(WouldBlock):
            source.inputs(["TEE"], ny(16), wait=False)
        assert source._recounter is None
    finally:
        source.close()
