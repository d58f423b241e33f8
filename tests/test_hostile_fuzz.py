"""Property-based fuzz of every webhook endpoint and ``/events`` over real HTTP.

Hypothesis generates random JSON and mutations of the vendors' real sample payloads
(huge and non-finite numbers, lone surrogates, absurd times, long words, deep nesting,
random bytes); each body is signed as its vendor signs it and sent to ``serve`` on
127.0.0.1.  Properties: never a 5xx; every refusal of an authentic body (4xx other
than 401/413) or partial quarantine (202) adds quarantine rows, each with a reason;
``/health`` answers 200 throughout (a probe polls it while the examples run).

The server runs on its own event loop in a thread for the whole test, so hypothesis's
synchronous examples can drive it; the example count is bounded to keep it under 30 s.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile_world import Hostile, hostile_server, now_iso, payload, stock_event

T = TypeVar("T")

ENDPOINTS = ["shopify", "square", "easypost", "amazon", "events"]
SHOPIFY = [
    ("orders/create", "shopify/rest-2024-04_order.json"),
    ("refunds/create", "shopify/rest-2024-04_refund.json"),
    ("fulfillments/create", "shopify/rest-2024-04_fulfillment.json"),
    ("fulfillment_events/create", "shopify/rest-2024-04_fulfillment_event.json"),
    ("inventory_levels/update", "shopify/rest-2024-04_inventory_level.json"),
]
BASES: dict[str, list[Any]] = {
    "square": [payload(f"square/{n}.json") for n in ("order.created", "inventory.count.updated")],
    "easypost": [payload("easypost/tracker.updated.event-body.json")],
    "amazon": [payload(f"amazon/{n}.json") for n in ("ORDER_CHANGE",)],
    "events": [[stock_event(n) for n in range(3)]],
}

HOSTILE_SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63, -(2**63) - 1, 10**25, 1e25, float("inf"), float("-inf"), float("nan")]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["\ud800", "a\udfffb", "w" * 5000, "1.005", "", "  "]),
    st.sampled_from(
        ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", now_iso()]
    ),
    st.booleans(),
    st.none(),
)
JSON_VALUES = st.recursive(
    HOSTILE_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.deepcopy(value)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return out


@st.composite
def bodies(draw: st.DrawFn, endpoint: str) -> tuple[str | None, bytes]:
    """A body for ``endpoint``: a mutated sample, random JSON, deep nesting or raw bytes."""
    topic = None
    if endpoint == "shopify":
        topic, name = draw(st.sampled_from(SHOPIFY))
        base = payload(name)
    else:
        base = draw(st.sampled_from(BASES[endpoint]))
    kind = draw(st.sampled_from(["mutate", "mutate", "mutate", "random", "deep", "bytes"]))
    if kind == "mutate":
        paths = list(_paths(base))
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(paths))
            base = _replace(base, path, draw(JSON_VALUES))
            paths = list(_paths(base))
        return topic, json.dumps(base).encode()  # NaN and Infinity as Python writes them
    if kind == "random":
        return topic, json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(60, 5000))
        return topic, b"[" * depth + b"]" * depth
    return topic, draw(st.binary(max_size=300))


class Running:
    """``serve`` on a loop of its own in a thread, with a /health probe."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.done: asyncio.Event | None = None
        self.served: Hostile | None = None
        self.health: list[int] = []
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._run())

    async def _run(self) -> None:
        self.done = asyncio.Event()
        async with hostile_server(self.tmp, max_body_bytes=512 * 1024) as served:
            self.served = served
            probe = asyncio.create_task(self._probe(served))
            self.ready.set()
            await self.done.wait()
            await probe

    async def _probe(self, served: Hostile) -> None:
        assert self.done is not None
        for _ in range(100_000):
            if self.done.is_set():
                return
            async with served.http.get("/health") as resp:
                self.health.append(resp.status)
                await resp.read()
            await asyncio.sleep(0.02)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def __enter__(self) -> Running:
        self.thread.start()
        assert self.ready.wait(30), "serve did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.done is not None
        self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(30)


async def _send(served: Hostile, endpoint: str, topic: str | None, body: bytes) -> int:
    if endpoint == "shopify":
        status, _ = await served.shopify(topic or "orders/create", body, event_id="fuzz")
    else:
        status, _ = await getattr(served, endpoint)(body)
    return status


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with Running(tmp_path_factory.mktemp("fuzz")) as server:
        yield server
    assert server.health and set(server.health) == {200}, set(server.health)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_fuzz_never_5xx_and_every_refusal_quarantined(
    running: Running, endpoint: str, data: st.DataObject
) -> None:
    served = running.served
    assert served is not None
    topic, body = data.draw(bodies(endpoint))
    before = len(served.quarantine())
    try:
        status = running.call(_send(served, endpoint, topic, body))
    except aiohttp.ContentTypeError as exc:  # pragma: no cover - would be a non-JSON answer
        pytest.fail(f"non-JSON answer: {exc}")
    assert status < 500, (endpoint, status, body[:200])
    rows = served.quarantine()[before:]
    if status in (400, 422, 202):
        assert rows, (endpoint, status, body[:200])
        assert all(error.strip() for _, error, _ in rows)
    for _, _, raw in rows:
        raw.encode("utf-8")
