"""``POST /events`` batches read in a worker process answer exactly as the threads do (issue 17).

Two real servers over loopback, one reading batches in ``events_workers = 1`` process and
one in its threads (``events_workers = 0``), get the same bodies: a valid batch, a batch
with bad lines among good ones, an unreadable body.  The answers and what each store holds
(event log, quarantine reasons) must be the same; a killed worker costs no request.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from feeds.runtime.http.events_pool import EventsPool
from feeds.runtime.http.handlers import INLINE_PAYLOAD_BYTES
from feeds.runtime.serve import Server
from feeds.settings import ServeConfig

TOKEN = "events-pool-test-token-0123456789"
NOW = datetime.now(UTC).replace(microsecond=0)


def event(n: int, **body: Any) -> dict[str, Any]:
    return {
        "id": f"pool-{n}",
        "type": "stock.snapshot",
        "ts": (NOW - timedelta(minutes=n)).isoformat().replace("+00:00", "Z"),
        "source": "wms",
        "body": {"sku": f"SKU{n % 7}", "location_id": "WH-NJ", "on_hand": n % 50, **body},
    }


def lines(events: list[Any]) -> bytes:
    return "\n".join(e if isinstance(e, str) else json.dumps(e) for e in events).encode()


def bodies() -> list[bytes]:
    good = [event(n) for n in range(120)]
    mixed: list[Any] = [event(n) for n in range(200, 330)]
    mixed[3] = event(203, on_hand="many")  # a mistyped field
    mixed[10] = "{not json"
    mixed[20] = event(220, colour="red")  # an unknown field
    mixed[30] = event(230) | {"ts": "1900-01-01T00:00:00Z"}  # outside the time window
    mixed[40] = [1, 2]  # not an object
    mixed[50] = event(250, on_hand=10**13)  # beyond the count limit
    mixed[60] = event(3)  # a duplicate of a stored event
    escaped = [event(n, source_system='a "quoted" \\ name') for n in range(400, 460)]
    deep = b"[" * 70 + b"]" * 70 + b"\n" + lines(good)
    as_array = json.dumps([event(n) for n in range(500, 600)]).encode()
    found = [lines(good), lines(mixed), lines(escaped), deep, as_array, b"\xff" * 9000]
    assert all(len(b) > INLINE_PAYLOAD_BYTES for b in found)  # all go to the worker
    return found


async def post_all(config: ServeConfig) -> tuple[list[tuple[int, Any]], Server]:
    answers = []
    async with Server(config, feeds=[]) as server:
        assert server.state is not None
        pool = server.state.events
        if config.events_workers:
            assert pool is not None and await pool.warm()
        else:
            assert pool is None
        async with aiohttp.ClientSession(base_url=server.url) as http:
            for body in bodies():
                async with http.post(
                    "/events", data=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    answers.append((resp.status, await resp.json()))
        if pool is not None:
            assert pool.answered == len(bodies()) and pool.fallbacks == 0
    return answers, server


def stored(db: Path) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(db)
    try:
        log = conn.execute("SELECT event_id, type, ts, source, body FROM event_log ORDER BY seq")
        quarantine = conn.execute("SELECT source, error, raw FROM quarantine ORDER BY id")
        return log.fetchall(), quarantine.fetchall()
    finally:
        conn.close()


def config(tmp_path: Path, name: str, workers: int) -> ServeConfig:
    return ServeConfig(
        db=tmp_path / f"{name}.db",
        port=0,
        events_token=TOKEN,
        events_workers=workers,
        batch_wait_ms=1,
    )


@pytest.fixture
def no_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))


@pytest.mark.usefixtures("no_config_file")
async def test_worker_and_threads_answer_and_store_the_same(tmp_path: Path) -> None:
    in_worker, _ = await post_all(config(tmp_path, "worker", 1))
    in_threads, _ = await post_all(config(tmp_path, "threads", 0))
    assert in_worker == in_threads
    statuses = [status for status, _ in in_worker]
    assert statuses == [200, 422, 200, 400, 200, 400]
    reasons = [r.get("reason", "") for r in in_worker[1][1]["results"]]
    assert reasons[3].startswith("POST /events line 4: stock.snapshot.body.on_hand")
    assert reasons[10].startswith("POST /events line 11: not JSON")
    assert [r["outcome"] for r in in_worker[1][1]["results"]].count("applied") == 123
    assert stored(tmp_path / "worker.db") == stored(tmp_path / "threads.db")


@pytest.mark.usefixtures("no_config_file")
async def test_a_killed_worker_costs_no_request(tmp_path: Path) -> None:
    async with Server(config(tmp_path, "killed", 1), feeds=[]) as server:
        assert server.state is not None and server.state.events is not None
        pool: EventsPool = server.state.events
        assert await pool.warm()
        for worker in pool._workers:
            worker.process.kill()
            worker.process.join(5)
        async with aiohttp.ClientSession(base_url=server.url) as http:
            for n, body in enumerate(bodies()[:3]):
                async with http.post(
                    "/events", data=body, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as resp:
                    assert resp.status == (422 if n == 1 else 200)
        assert pool.fallbacks >= 1
        assert await pool.warm()  # a new worker was started, and answers
        async with (
            aiohttp.ClientSession(base_url=server.url) as http,
            http.post(
                "/events", data=bodies()[0], headers={"Authorization": f"Bearer {TOKEN}"}
            ) as resp,
        ):
            assert resp.status == 200
            assert {r["outcome"] for r in (await resp.json())["results"]} == {"duplicate"}
        assert pool.answered >= 1
