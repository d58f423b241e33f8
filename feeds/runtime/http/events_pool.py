"""``POST /events`` bodies read in worker processes, so the writer never waits for the GIL.

Validating a batch of canonical events is CPU work in Python (pydantic plus the model's
own validators); in ``serve``'s process it competes for the GIL with the writer thread,
which then applies each batch at a fraction of its own speed.  :class:`EventsPool` runs
:func:`feeds.webhooks.canonical.read_events` (the one reader of a body: the same
validation, limits and quarantine reasons, a bad line quarantined beside the good ones)
in ``[serve] events_workers`` processes of their own (default 0: the payload threads; the
README's issue-17 figures say why).

What comes back is cheap to rebuild: the validated models are pickled as their field
values (``__dict__``, fields set) and rebuilt with ``object.__setattr__``, no validation
and no Python ``__setstate__`` per model.  Each job carries the time window in force and
the server's clock reading, so the plausibility bounds are the ones the thread path uses.

The pool is a speed-up, never a new way to fail: until its worker has started, after it
died (a worker killed, out of memory), or for a body the worker could not answer, the
caller reads the body in its threads as before (:meth:`EventsPool.read` answers None).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import multiprocessing
import pickle
import socket
import struct
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from feeds.webhooks import PayloadError
from feeds.webhooks.canonical import read_events
from store.model import Event, Quarantined, TimeWindow, set_time_window, time_window

log = logging.getLogger("omniops.serve")

Items = list[Event | Quarantined]

INLINE_REBUILD_BYTES = 64 * 1024
"""An answer up to this size (a few hundred events, well under a millisecond) is rebuilt
on the event loop; a larger one in the payload threads, so ``/health`` never waits."""

_set = object.__setattr__


def _model(
    cls: type[BaseModel],
    values: dict[str, Any],
    fields_set: tuple[str, ...],
    extra: dict[str, Any] | None,
    private: dict[str, Any] | None,
) -> BaseModel:
    """A validated model rebuilt from its state (what the worker validated), unchecked."""
    model = cls.__new__(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", set(fields_set))
    _set(model, "__pydantic_extra__", extra)
    _set(model, "__pydantic_private__", private)
    return model


class _StatePickler(pickle.Pickler):
    """Pickles a pydantic model as :func:`_model` of its state.

    The set of fields given is sent as a tuple shared by every model with the same set
    (pickled once, then referenced): unpickling a set costs more than the model itself.
    """

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._fields: dict[frozenset[str], tuple[str, ...]] = {}

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            given = frozenset(obj.__pydantic_fields_set__)
            fields = self._fields.get(given)
            if fields is None:
                fields = self._fields[given] = tuple(sorted(given))
            return _model, (
                type(obj),
                obj.__dict__,
                fields,
                obj.__pydantic_extra__,
                obj.__pydantic_private__,
            )
        return NotImplemented


def dump_items(items: Items) -> bytes:
    """``items`` as bytes :func:`pickle.loads` turns back into equal items."""
    out = io.BytesIO()
    _StatePickler(out).dump(items)
    return out.getvalue()


def _read(
    body: bytes, now: datetime, past: timedelta, future: timedelta, promise: timedelta
) -> tuple[str, Any]:
    """In the worker: ``("items", bytes)``, ``("payload", (field, message, status))``."""
    set_time_window(TimeWindow(past=past, future=future, promise=promise, now=lambda: now))
    try:
        return "items", dump_items(read_events(body))
    except PayloadError as exc:
        return "payload", (exc.field, exc.message, exc.status)
    except Exception as exc:  # the caller reads this body in its threads (same exception)
        return "fallback", f"{type(exc).__name__}: {exc}"


_HEADER = struct.Struct("!Q")
"""A frame on the worker's socket: its length, then a pickle."""


def _send(sock: socket.socket, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _work(sock: socket.socket) -> None:
    """A worker process: answer each job frame, in order, until the socket closes."""
    _send(sock, (0, "ready", None))
    while True:
        header = _recv_exactly(sock, _HEADER.size)
        if header is None:
            return
        data = _recv_exactly(sock, _HEADER.unpack(header)[0])
        if data is None:
            return
        job, body, now, past, future, promise = pickle.loads(data)
        kind, value = _read(body, now, past, future, promise)
        _send(sock, (job, kind, value))


class _Worker:
    """One worker process and the stream to it (jobs answered in order)."""

    def __init__(self) -> None:
        parent, child = socket.socketpair()
        # spawn: never fork a process that runs threads (the writer, aiohttp's resolver).
        self.process = multiprocessing.get_context("spawn").Process(
            target=_work, args=(child,), name="omniops-events", daemon=True
        )
        self.process.start()
        child.close()
        self.sock = parent
        self.pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.writer: asyncio.StreamWriter | None = None
        self.task = asyncio.create_task(self._run(), name="omniops-events-reader")

    async def _run(self) -> None:
        try:
            reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=1 << 16)
            while True:
                header = await reader.readexactly(_HEADER.size)
                job, kind, value = pickle.loads(await reader.readexactly(_HEADER.unpack(header)[0]))
                if kind == "ready":
                    self.ready.set_result(True)
                    continue
                waiting = self.pending.pop(job, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result((kind, value))
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError) as exc:
            self._fail(exc)
        except asyncio.CancelledError:
            self._fail(ConnectionError("events worker stopped"))
            raise

    def _fail(self, exc: BaseException) -> None:
        if not self.ready.done():
            self.ready.set_result(False)
        for waiting in self.pending.values():
            if not waiting.done():
                waiting.set_exception(ConnectionError(f"events worker gone ({exc!r})"))
        self.pending.clear()

    @property
    def alive(self) -> bool:
        return not self.task.done() and self.writer is not None

    async def ask(self, job: int, frame: tuple[object, ...]) -> tuple[str, Any]:
        assert self.writer is not None
        waiting: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[job] = waiting
        data = pickle.dumps(frame, protocol=pickle.HIGHEST_PROTOCOL)
        self.writer.write(_HEADER.pack(len(data)) + data)
        await self.writer.drain()
        return await waiting

    def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # the worker reads its end of file now
        if self.writer is not None:
            self.writer.close()
        else:
            self.sock.close()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)


class EventsPool:
    """``workers`` processes that read ``POST /events`` bodies (see the module docstring).

    Each worker is a process of its own (spawned, so it inherits no thread) on one end
    of a socket pair; the event loop writes job frames to it and a reader task resolves
    each job's future from the answers.  No thread of the server takes part: the GIL
    stays with the writer and the loop.
    """

    def __init__(self, workers: int, now: Any, threads: Executor | None = None) -> None:
        self.workers = workers
        self.now = now
        """The server's clock (``Clock.now``): each job is validated against its reading."""
        self.threads = threads
        """Where a large answer is rebuilt (off the event loop); None: the loop's default."""
        self._workers: list[_Worker] = []
        self._jobs = 0
        self.fallbacks = 0
        """Bodies read in threads because the pool could not answer (not started, broken)."""
        self.answered = 0
        """Bodies a worker read (items or a refusal)."""

    def start(self) -> None:
        """Start the workers (idempotent, needs the running loop); used once they answer."""
        self._workers = [w for w in self._workers if not w.task.done()]
        while len(self._workers) < self.workers:
            self._workers.append(_Worker())

    async def warm(self) -> bool:
        """Start the workers and wait until each answers; False if one cannot start."""
        self.start()
        answers = await asyncio.gather(*(w.ready for w in self._workers))
        return all(answers) and bool(answers)

    @property
    def ready(self) -> bool:
        """True once a worker answered (and the pool has not broken since)."""
        return any(w.alive and w.ready.done() and w.ready.result() for w in self._workers)

    def _pick(self) -> _Worker | None:
        ready = [w for w in self._workers if w.alive and w.ready.done() and w.ready.result()]
        if len(ready) < self.workers:
            self.start()  # a worker died or is not started: a new one, used once it answers
        return min(ready, key=lambda w: len(w.pending), default=None)

    async def read(self, body: bytes) -> Items | None:
        """The items of ``body`` as :func:`read_events` gives them; None: read it yourself.

        Raises :class:`PayloadError` exactly as :func:`read_events` would.
        """
        worker = self._pick()
        if worker is None:
            self.fallbacks += 1
            return None
        window = time_window()
        self._jobs += 1
        frame = (self._jobs, body, self.now(), window.past, window.future, window.promise)
        try:
            kind, value = await worker.ask(self._jobs, frame)
        except (ConnectionError, OSError) as exc:  # the worker died: this body in threads
            log.warning("events worker failed (%s): reading in threads", exc)
            self.fallbacks += 1
            return None
        if kind == "payload":
            self.answered += 1
            field, message, status = value
            raise PayloadError(field, message, status=status)
        if kind != "items":
            self.fallbacks += 1
            return None
        self.answered += 1
        if len(value) <= INLINE_REBUILD_BYTES:
            items: Items = pickle.loads(value)
        else:
            items = await asyncio.get_running_loop().run_in_executor(
                self.threads, pickle.loads, value
            )
        return items

    def close(self) -> None:
        """Stop the workers (a job under way is answered by the caller's threads)."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()


__all__ = ["EventsPool", "dump_items"]
