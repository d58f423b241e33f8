"""``POST /route`` under load beside the HTTP ceiling (a fixed workload, not a test).

``python -m tests.bench_route_api [--connections 1 8 50] [--seconds 5] [--windows 4]
[--window-seconds 20] [--db PATH]``

``python -m tests.bench_route_api --db PATH --record FILE`` / ``--compare FILE``: no load;
every bench body (and variants: other moments, promises, other methods, invalid bodies,
unknown SKUs and stores), under the built-in and the demo rules, posted in-process over
loopback; the answers (status, content type, bytes) are written to ``FILE``, or compared
byte for byte with those in it (exit 1 on a difference).  Record on one commit, compare
on another: a speed-up must not change one byte of an answer.

Two servers run in their own processes on 127.0.0.1 (a port chosen by the OS), in the same
run and on the same machine:

* **omniops**: :func:`feeds.runtime.route_api.add_routes` over a :class:`StoreRoutingSource`
  on the fixture day's store (catalogue, stock and the day's routed orders, as a live store
  has them; see :mod:`tests.bench_routing`), with one rules object for the server's life
  (what ``serve`` hands it from the hot-reloaded rules file);
* **bare**: an aiohttp handler that reads the body and returns one captured ``/route``
  answer (the same bytes every time): the ceiling of aiohttp on this machine.

The load generator is ``wrk`` (Debian's ``wrk`` package) when installed: one thread, a
fixed number of open connections, each sending the next of a fixed list of order and
BOPIS-cart bodies drawn from the fixture day (a Lua script); else a small aiohttp client
with the same fixed connection count (it is slower than wrk, so the ceiling it measures is
lower).  For each connection count it prints p50 / p99 latency and requests/s of both and
the ratio omniops / bare; then omniops at 50 connections in consecutive windows, to show
throughput does not fall as the server lives.  Each line also gives the server process's
CPU time per request (``/proc/<pid>/stat``) and bare / omniops of it: on a shared machine,
where wall-clock rates move with the neighbours' load, the CPU ratio is the steadier
estimate of the throughput ratio.  Exit status 0 whatever the figures (the
goals are in the issue, not asserted here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from feeds.runtime.route_api import add_routes
from feeds.runtime.routing import StoreRoutingSource
from rules.routing.config import FulfillmentRouting
from store.clock import FixedClock
from tests.bench_routing import AT, bench_store, bodies, build_store, percentile
from tests.routing_world import FIXTURE_DAY

BODIES = 2000
"""Distinct request bodies the load generator cycles through."""


@dataclass(frozen=True)
class Result:
    """One load-generator run against one server."""

    connections: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0
    """The server process's CPU time (user + system) per request, in µs."""

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def _serve_omniops(db: str, port_out: Any) -> None:
    async def main() -> None:
        app = web.Application()
        rules = FulfillmentRouting()  # one object for the server's life, as serve's rules file
        add_routes(
            app,
            source=StoreRoutingSource(Path(db)),
            rules=lambda: rules,
            clock=FixedClock(AT),
        )
        await _run(app, port_out)

    asyncio.run(main())


def _serve_bare(answer: bytes, port_out: Any) -> None:
    async def main() -> None:
        async def handler(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(body=answer, content_type="application/json")

        app = web.Application()
        app.router.add_post("/route", handler)
        await _run(app, port_out)

    asyncio.run(main())


async def _run(app: web.Application, port_out: Any) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port_out.put(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    await asyncio.Event().wait()


class Server:
    """A server process (``target(*args, port_queue)``) and its base URL."""

    def __init__(self, target: Any, *args: Any) -> None:
        """Start ``target`` in a spawned process and wait for its port."""
        ctx = multiprocessing.get_context("spawn")
        queue: Any = ctx.Queue()
        self.proc = ctx.Process(target=target, args=(*args, queue), daemon=True)
        self.proc.start()
        self.base = f"http://127.0.0.1:{queue.get(timeout=60)}"

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (Linux ``/proc``)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """Terminate the process."""
        self.proc.terminate()
        self.proc.join(5)


_LUA = """
local bodies = {}
for line in io.lines("%(path)s") do bodies[#bodies + 1] = line end
local reqs = {}
local n = 0
init = function(args)
  local headers = {["Content-Type"] = "application/json", ["Host"] = wrk.host .. ":" .. wrk.port}
  for i, body in ipairs(bodies) do reqs[i] = wrk.format("POST", "/route", headers, body) end
end
request = function()
  n = n %% #reqs + 1
  return reqs[n]
end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    'WRK {"requests": %%d, "us": %%d, "p50": %%d, "p99": %%d, "errors": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), errors))
end
"""


def wrk_run(base: str, script: Path, connections: int, seconds: float) -> Result:
    """One ``wrk`` run (one thread, ``connections`` open connections)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{base}/route",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    data = json.loads(line[4:])
    return Result(
        connections=connections,
        requests=int(data["requests"]),
        seconds=data["us"] / 1e6,
        p50_ms=data["p50"] / 1000,
        p99_ms=data["p99"] / 1000,
        errors=int(data["errors"]),
    )


async def _client_run(base: str, payloads: list[bytes], connections: int, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:

        async def client(offset: int) -> None:
            nonlocal errors
            n = offset
            while time.perf_counter() < deadline:
                body = payloads[n % len(payloads)]
                n += connections
                started = time.perf_counter()
                async with session.post(f"{base}/route", data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(connections)))
        wall = time.perf_counter() - started
    ms = [x * 1000 for x in latencies]
    return Result(
        connections=connections,
        requests=len(ms),
        seconds=wall,
        p50_ms=statistics.median(ms),
        p99_ms=percentile(ms, 0.99),
        errors=errors,
    )


def client_run(base: str, payloads: list[bytes], connections: int, seconds: float) -> Result:
    """The fallback load generator: ``connections`` aiohttp clients for ``seconds``."""
    return asyncio.run(_client_run(base, payloads, connections, seconds))


def _fmt(r: Result) -> str:
    return (
        f"p50 {r.p50_ms:6.2f} ms, p99 {r.p99_ms:6.2f} ms, {r.rate:8,.0f} req/s,"
        f" {r.cpu_us:5.0f} µs CPU/req" + (f", {r.errors} errors" if r.errors else "")
    )


def capture_answer(base: str, body: bytes) -> bytes:
    """One real ``/route`` answer (what the bare server returns every time)."""

    async def get() -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{base}/route", data=body, headers={"Content-Type": "application/json"}
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            return await resp.read()

    return asyncio.run(get())


DEMO_RULES = Path(__file__).resolve().parent.parent / "fixtures" / "demo-fulfillment.toml"


def answer_bodies(seed: int = 7) -> list[bytes]:
    """The bench bodies and variants of them that reach the other paths of ``/route``.

    Other moments (through two days, so closed, past cut-off and next-day slots), promises,
    every method, ship-to-home fallbacks, and bodies that must be refused (bad JSON,
    validation errors, unknown SKUs and stores, a warehouse as pickup store).
    """
    rng = random.Random(seed)
    base = bodies(BODIES)
    out = [json.dumps(b).encode() for b in base]
    for n, body in enumerate(base[:600]):
        variant = dict(body)
        at = AT + timedelta(minutes=37 * n)
        variant["at"] = at.isoformat() if n % 3 else at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if n % 4 == 1 and "cart" not in variant:
            variant["method"] = rng.choice(["ship", "bopis", "ship_from_store"])
            if variant["method"] == "bopis" and not variant.get("location_id"):
                variant["location_id"] = rng.choice(["ST-NYC", "ST-CHI", "ST-LA", "ST-ATL"])
        if n % 5 == 2 and "cart" not in variant:
            variant["promised_by"] = (at + timedelta(hours=rng.choice([1, 5, 30]))).isoformat()
        if n % 7 == 3:
            variant["destination_region"] = rng.choice(
                ["northeast", "west", "mountain", "south", "10001", "zz-unknown"]
            )
        if n % 11 == 4 and "lines" in variant:
            variant["lines"] = [
                {**line, "unit_price": "12.50", "discount": "1.25"} for line in variant["lines"]
            ]
        out.append(json.dumps(variant).encode())
    cart = [{"sku": base[0].get("lines", base[0].get("cart"))[0]["sku"], "quantity": 1}]
    bad: list[Any] = [
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b"\xff\xfe",
        b"[" * 100 + b"]" * 100,
        {"destination_region": "northeast", "lines": []},
        {"destination_region": "northeast", "lines": [{"sku": "NOPE-1", "quantity": 1}]},
        {"destination_region": "northeast", "lines": [{**cart[0], "quantity": 0}]},
        {"destination_region": "northeast", "lines": [{**cart[0], "extra": 1}]},
        {"destination_region": "northeast", "lines": cart, "at": "2026-11-18T12:00:00"},
        {"destination_region": "northeast", "lines": cart, "method": "drone"},
        {"destination_region": "northeast", "lines": cart, "surprise": True},
        {"destination_region": 5, "lines": cart},
        {"lines": cart},
        {"location_id": "ST-NOPE", "cart": cart},
        {"location_id": "WH-NJ", "cart": cart},
        {"location_id": "ST-NYC", "cart": []},
        {"location_id": "ST-NYC", "cart": [{"sku": "NOPE-1", "quantity": 1}]},
        {"location_id": "ST-NYC", "cart": cart, "channel": "pos", "at": "2026-11-19T03:00:00Z"},
        {"location_id": "ST-NYC", "cart": [{**cart[0], "quantity": 10_000}]},
        {"location_id": "ST-NYC", "cart": cart, "extra": 1},
    ]
    sku = cart[0]["sku"].encode()
    edges = [  # where decoding the bytes directly could differ from json.loads, then validating
        b'{"order_id": "cart", "destination_region": "northeast", "lines": [{"sku": "%s", '
        b'"quantity": 1}]}' % sku,
        b'{"location_id": "ST-NYC", "\\u0063art": [{"sku": "%s", "quantity": 1}]}' % sku,
        b'{"location_id": "ST-NYC", "cart": [{"sku": "\\ud800", "quantity": 1}]}',
        b'{"location_id": "ST-NYC", "cart": [{"sku": "A\tB", "quantity": 1}]}',
        b'{"location_id": "ST-NYC", "cart": [{"sku": "%s", "quantity": NaN}]}' % sku,
        b'{"location_id": "ST-NYC", "cart": [{"sku": "%s", "quantity": 1}], "cart": []}' % sku,
        b'{"destination_region": "west", "lines": [{"sku": "%s", "quantity": "2", '
        b'"unit_price": 12.10, "discount": 0.5}]}' % sku,
        b'{"destination_region": "west", "lines": [{"sku": "%s", "quantity": true}]}' % sku,
        b'{"destination_region": "west", "lines": [{"sku": "%s", "quantity": 1.0}]}' % sku,
        b'{"destination_region": "west", "lines": [{"sku": "%s", "quantity": 1}]} []' % sku,
        b'{"destination_region": "w\\u00e9st", "lines": [{"sku": "%s", "quantity": 1}]}' % sku,
        b'{"destination_region": "west", "lines": [{"sku": "%s", "quantity": 1, '
        b'"unit_price": 1.234}]}' % sku,
    ]
    out.extend(b if isinstance(b, bytes) else json.dumps(b).encode() for b in bad)
    out.extend(edges)
    return out


def record_answers(db: Path) -> list[dict[str, Any]]:
    """Every :func:`answer_bodies` body's answer, under the built-in and the demo rules."""
    demo = FulfillmentRouting.model_validate(tomllib.loads(DEMO_RULES.read_text())["fulfillment"])
    payloads = answer_bodies()

    async def run() -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, rules in (("builtin", FulfillmentRouting()), ("demo", demo)):
            app = web.Application()
            add_routes(
                app, source=StoreRoutingSource(db), rules=lambda r=rules: r, clock=FixedClock(AT)
            )
            async with TestClient(TestServer(app)) as client:
                for n, body in enumerate(payloads):
                    resp = await client.post(
                        "/route", data=body, headers={"Content-Type": "application/json"}
                    )
                    raw = await resp.read()
                    out.append(
                        {
                            "rules": name,
                            "n": n,
                            "status": resp.status,
                            "type": resp.content_type,
                            "body": raw.decode("utf-8", "replace"),
                        }
                    )
        return out

    return asyncio.run(run())


def compare_answers(db: Path, path: Path) -> int:
    """Compare the answers now with those recorded in ``path``; the number that differ."""
    recorded = [json.loads(line) for line in path.read_text().splitlines()]
    now = record_answers(db)
    if len(now) != len(recorded):
        print(f"{len(now)} answers now, {len(recorded)} recorded")
        return abs(len(now) - len(recorded)) or 1
    differ = 0
    for old, new in zip(recorded, now, strict=True):
        if old != new:
            differ += 1
            if differ <= 5:
                print(f"differs: rules {old['rules']} body {old['n']}:")
                print(f"  was {old['status']} {old['body'][:400]}")
                print(f"  now {new['status']} {new['body'][:400]}")
    statuses: dict[int, int] = {}
    for a in now:
        statuses[a["status"]] = statuses.get(a["status"], 0) + 1
    print(f"{len(now):,} answers compared, {differ} differ; statuses {statuses}")
    return differ


def main() -> None:
    """Build the store, start both servers, load them at each connection count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 50])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--windows", type=int, default=4, help="life-of-server windows at 50")
    parser.add_argument(
        "--window-seconds", type=float, default=None, help="length of each window (--seconds)"
    )
    parser.add_argument("--db", type=Path, default=None, help="reuse / keep the store here")
    parser.add_argument("--client", action="store_true", help="aiohttp client even with wrk")
    parser.add_argument("--record", type=Path, default=None, help="write the answers here")
    parser.add_argument("--compare", type=Path, default=None, help="compare with these answers")
    args = parser.parse_args()
    if not (FIXTURE_DAY / "manifest.json").exists():
        raise SystemExit("no fixtures/day: run python fixtures/generate.py first")
    if args.record or args.compare:
        if args.db is None:
            raise SystemExit("--record / --compare need --db (a store built by a bench run)")
        if args.record:
            answers = record_answers(args.db)
            args.record.write_text("".join(json.dumps(a) + "\n" for a in answers))
            print(f"{len(answers):,} answers written to {args.record}")
            return
        raise SystemExit(1 if compare_answers(args.db, args.compare) else 0)
    use_wrk = shutil.which("wrk") is not None and not args.client
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.db"
        if not db.exists():
            orders = asyncio.run(build_store(db))
            bench_store(db, orders)  # leaves the day's decisions, as a live store has them
        payloads = [json.dumps(b).encode() for b in bodies(BODIES)]
        script = Path(tmp) / "route.lua"
        lines = Path(tmp) / "bodies.jsonl"
        lines.write_bytes(b"\n".join(payloads) + b"\n")
        script.write_text(_LUA % {"path": lines})
        omniops = Server(_serve_omniops, str(db))
        try:
            answer = capture_answer(omniops.base, payloads[0])
            bare = Server(_serve_bare, answer)
            try:

                def run(server: Server, connections: int, seconds: float) -> Result:
                    cpu = server.cpu_seconds()
                    if use_wrk:
                        r = wrk_run(server.base, script, connections, seconds)
                    else:
                        r = client_run(server.base, payloads, connections, seconds)
                    used = server.cpu_seconds() - cpu
                    return replace(r, cpu_us=used / r.requests * 1e6 if r.requests else 0.0)

                tool = "wrk -t1" if use_wrk else "aiohttp client"
                print(
                    f"load generator: {tool}; {args.seconds:g} s per run; {len(payloads):,} "
                    f"bodies; bare answer {len(answer):,} bytes"
                )
                run(omniops, 8, 1)  # warm up both
                run(bare, 8, 1)
                for c in args.connections:
                    ours = run(omniops, c, args.seconds)
                    ceiling = run(bare, c, args.seconds)
                    cpu_ratio = ceiling.cpu_us / ours.cpu_us if ours.cpu_us else float("nan")
                    print(
                        f"{c:>3} conn  omniops {_fmt(ours)} | bare {_fmt(ceiling)} | "
                        f"ratio {ours.rate / ceiling.rate:.2f} (CPU per request {cpu_ratio:.2f})"
                    )
                rates = []
                for w in range(args.windows):
                    r = run(omniops, 50, args.window_seconds or args.seconds)
                    rates.append(r.rate)
                    print(f"life window {w + 1} at 50 conn: omniops {_fmt(r)}")
                if rates:
                    print(f"last / first window throughput: {rates[-1] / rates[0]:.2f}")
            finally:
                bare.stop()
        finally:
            omniops.stop()


if __name__ == "__main__":
    main()
