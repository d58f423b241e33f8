"""The life cycle of a background delivery task: start, stop, wait until idle.

Shared by the notification receivers (:class:`rules.receivers.ReceiverWorker`) and the
Kafka decisions outbox (``feeds.kafka.publish.DecisionOutbox``): each runs one task on the
event loop that delivers what is queued and sets an *idle* event when nothing is left.
"""

from __future__ import annotations

import asyncio
import contextlib


class DeliveryLoop:
    """Start, stop and wait-idle around a subclass's :meth:`_run` coroutine.

    A subclass provides ``_task`` (None until started), ``_idle`` (set while nothing is
    queued), :meth:`_task_name` and :meth:`_run`; :meth:`_starting` runs just before the
    task is created (on the event loop).
    """

    _task: asyncio.Task[None] | None
    _idle: asyncio.Event

    def _task_name(self) -> str:
        """The asyncio task's name (shown in task dumps)."""
        raise NotImplementedError

    async def _run(self) -> None:
        """Deliver until cancelled."""
        raise NotImplementedError

    def _starting(self) -> None:
        """Called by :meth:`start` before the task is created."""

    def start(self) -> None:
        """Start the delivery task (on the running loop); a second call does nothing."""
        if self._task is None:
            self._starting()
            self._task = asyncio.create_task(self._run(), name=self._task_name())

    async def stop(self) -> None:
        """Cancel the delivery task and wait for it to end."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_idle(self) -> None:
        """Until nothing is queued."""
        await self._idle.wait()
