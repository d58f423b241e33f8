"""``serve`` as a real process: SIGKILL mid-burst loses no acknowledged webhook; config; TLS."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from feeds.runtime.serve import Server
from feeds.settings import ServeConfig, load_serve_config
from feeds.webhooks.signatures import sign_shopify

ROOT = Path(__file__).resolve().parent.parent
SECRET = "shpss_sigkill_test_secret_value"
LISTENING = re.compile(r"listening on (https?://\S+)")
MAPPING = """
[shopify.locations]
"655441491" = "WH-NJ"
[shopify.inventory_items]
"808950810" = "IPOD"
"""


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIOPS_")}
    env["OMNIOPS_CONFIG"] = str(tmp_path / "absent.toml")
    env["OMNIOPS_RULES"] = str(tmp_path / "rules.toml")
    env["OMNIOPS_SHOPIFY_WEBHOOK_SECRET"] = SECRET
    env.update(extra)
    return env


@contextmanager
def serve_process(
    tmp_path: Path, db: Path, log: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    with log.open("a", encoding="utf-8") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feeds.runtime.serve",
                "--db",
                str(db),
                "--port",
                "0",
                "--mapping",
                str(mapping),
            ],
            cwd=ROOT,
            env=child_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the child prints this once it accepts requests
        match = LISTENING.search(line)
        assert match, f"no listening line: {line!r}; log: {log.read_text()}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def level(n: int) -> bytes:
    return json.dumps(
        {
            "inventory_item_id": 808950810,
            "location_id": 655441491,
            "available": n,
            "updated_at": f"2026-11-18T10:{n // 60 % 60:02d}:{n % 60:02d}-05:00",
        }
    ).encode()


async def post(http: aiohttp.ClientSession, url: str, n: int) -> str | None:
    """One signed delivery; its event id if the server answered 2xx, else None."""
    body = level(n)
    headers = {
        "X-Shopify-Topic": "inventory_levels/update",
        "X-Shopify-Event-Id": f"burst-{n}",
        "X-Shopify-Hmac-Sha256": sign_shopify(SECRET, body),
    }
    try:
        async with http.post(f"{url}/webhooks/shopify", data=body, headers=headers) as resp:
            return f"shopify:burst-{n}" if 200 <= resp.status < 300 else None
    except (TimeoutError, aiohttp.ClientError):
        return None


async def test_sigkill_mid_burst_loses_no_acknowledged_webhook(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    log = tmp_path / "serve.log"
    acked: list[str] = []
    burst = 600
    with serve_process(tmp_path, db, log) as (proc, url):
        connector = aiohttp.TCPConnector(limit=48)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            tasks = [asyncio.create_task(post(http, url, n)) for n in range(burst)]
            killed = False
            for done in asyncio.as_completed(tasks):
                event_id = await done
                if event_id is not None:
                    acked.append(event_id)
                if not killed and len(acked) >= burst // 4:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed = True
            assert killed
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    assert burst // 4 <= len(acked) < burst

    # Restart on the same store: it opens, recovers the WAL, and serves.
    with serve_process(tmp_path, db, log) as (proc, url):
        async with aiohttp.ClientSession() as http, http.get(f"{url}/health") as resp:
            health = await resp.json()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert health["store"]["events"] >= len(acked)

    conn = sqlite3.connect(db)
    stored = {row[0] for row in conn.execute("SELECT event_id FROM event_log")}
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged webhooks lost: {sorted(missing)[:5]}"
    assert SECRET not in log.read_text(encoding="utf-8")


def test_configuration_errors_exit_2_without_leaking_secrets(tmp_path: Path) -> None:
    bad = tmp_path / "mapping.toml"
    bad.write_text('[shopify]\ninventory_as = "sometimes"\n', encoding="utf-8")
    serve = [sys.executable, "-m", "feeds.runtime.serve", "--db", str(tmp_path / "s.db")]
    # the two refusals are independent processes: started together, each awaited
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in (
            [*serve, "--port", "70000"],
            [*serve, "--port", "0", "--mapping", str(bad)],
        )
    ]
    try:
        (port_out, port_err), (_, mapping_err) = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs[0].returncode == 2
    assert "port" in port_err and SECRET not in port_err + port_out
    assert procs[1].returncode == 2
    assert str(bad) in mapping_err and "shopify.inventory_as" in mapping_err


def test_config_precedence_and_secret_handling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'db = "/srv/shop.db"\n[serve]\nport = 9000\nhost = "127.0.0.2"\n'
        'events_token = "from-file"\n[[serve.streams]]\nname = "wms"\nurl = "http://127.0.0.1:1/s"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("OMNIOPS_CONFIG", str(config))
    monkeypatch.setenv("OMNIOPS_PORT", "9100")
    monkeypatch.setenv("OMNIOPS_SHOPIFY_WEBHOOK_SECRET", "s3cret")
    loaded = load_serve_config(host=None, port=9200)
    assert loaded.port == 9200  # command line over environment over file
    assert loaded.host == "127.0.0.2" and loaded.db == Path("/srv/shop.db")
    assert loaded.streams[0].format == "sse"
    assert isinstance(loaded.shopify_webhook_secret, SecretStr)
    assert "s3cret" not in repr(loaded) and "from-file" not in repr(loaded)
    assert "s3cret" not in loaded.describe() and "shopify, events" in loaded.describe()
    monkeypatch.delenv("OMNIOPS_PORT")
    assert load_serve_config().port == 9000
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("OMNIOPS_SHOPIFY_WEBHOOK_SECRET")
    defaults = load_serve_config()
    assert (defaults.host, defaults.port, defaults.shopify_webhook_secret) == (
        "127.0.0.1",
        8080,
        None,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_when_certificate_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = ServeConfig(db=tmp_path / "s.db", port=0, tls_cert=cert, tls_key=key)
    async with Server(config, feeds=[]) as server:
        assert server.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=str(cert))
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{server.url}/health", ssl=client) as resp,
        ):
            assert resp.status == 200
