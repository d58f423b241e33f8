"""Running a pipeline (feeds → single writer) on its own thread and event loop.

The demo uses this so the console's event loop only draws: replay, validation and
writing run on a background thread, exactly as ``serve`` would run them in another
process, and the console reads the store like any attached console.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from feeds.base import Feed, pump
from feeds.runtime.alerting import RulesRuntime
from store.writer import StoreWriter

log = logging.getLogger(__name__)


class PipelineThread(threading.Thread):
    """Pumps ``feeds`` into one :class:`StoreWriter` on a daemon thread."""

    def __init__(
        self,
        db: Path,
        feeds: Sequence[Feed],
        *,
        background: Sequence[Callable[[StoreWriter], Coroutine[Any, Any, None]]] = (),
        rules: RulesRuntime | None = None,
        writer_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(name="omniops-pipeline", daemon=True)
        self.db = db
        self.feeds = list(feeds)
        self.background = list(background)
        """Tasks given the writer once it runs (alert evaluation)."""
        self.rules = rules
        """The rules file, watched on this thread's loop while the pipeline runs."""
        self.writer_options = dict(writer_options or {})
        self.ready = threading.Event()
        """Set once the store exists and is migrated (readers may open it)."""
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._halt: asyncio.Event | None = None

    def run(self) -> None:
        """Thread body: an event loop running the writer and every feed's pump."""
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the caller, not lost on a dead thread
            self.error = exc
            log.exception("pipeline stopped")
        finally:
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._halt = asyncio.Event()
        async with StoreWriter(self.db, **self.writer_options) as writer:
            self.ready.set()
            if self.rules is not None:
                self.rules.start()
            jobs = [asyncio.create_task(job(writer)) for job in self.background]
            pumps = [asyncio.create_task(pump(feed, writer)) for feed in self.feeds]
            stopper = asyncio.create_task(self._halt.wait())
            await asyncio.wait([stopper, *pumps], return_when=asyncio.FIRST_COMPLETED)
            if not stopper.done():
                await self._halt.wait()
            for task in [*pumps, *jobs]:
                task.cancel()
            await asyncio.gather(*pumps, *jobs, return_exceptions=True)
            if self.rules is not None:
                await self.rules.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the feeds, commit what is queued, close the store, join the thread."""
        loop, stop = self._loop, self._halt
        if loop is not None and stop is not None and loop.is_running():
            loop.call_soon_threadsafe(stop.set)
        self.join(timeout)
