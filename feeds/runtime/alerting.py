"""The rules file at work in the process that writes the store (``serve`` or the demo).

* :class:`RulesRuntime`: the hot-reloaded rules file, shared by the writer (fulfillment
  routing of new orders), ``POST /route`` and the alert loop; an invalid edit keeps the
  last good rules.
* :func:`alert_loop`: every ``interval`` seconds, compute the panel snapshots (the same
  function the consoles call), evaluate the alert rules on them, store the transitions
  and hand notifications to the notifier, which delivers them in the background from
  the store's notification outbox (what waits survives a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from rules.engine import AlertEngine
from rules.file import LoadedRules, RulesFileError
from rules.notify import Notifier, NotifyConfig
from rules.receivers import ConsoleSink, ReceiverWorker
from rules.routing.config import FulfillmentRouting
from rules.watch import RulesWatcher
from store import alerts as alert_store
from store.clock import Clock
from store.metrics import compute_snapshots, open_reader
from store.outbox import Outbox
from store.risk import MetricParams
from store.snapshots import Snapshots

log = logging.getLogger(__name__)


def store_node_ids(db: Path) -> set[str] | None:
    """The node (location) ids in the store at ``db``; None while it has none (or no store).

    A store that has not received its locations yet cannot say which nodes exist, so the
    rules file's ``[fulfillment]`` nodes are then not checked (instead of all refused).
    """
    if not Path(db).exists():
        return None
    try:
        conn = open_reader(db)
    except (sqlite3.Error, FileNotFoundError):
        return None
    try:
        rows = conn.execute("SELECT location_id FROM locations").fetchall()
    except sqlite3.Error:  # a store not migrated yet
        return None
    finally:
        conn.close()
    return {str(r[0]) for r in rows} or None


class RulesRuntime:
    """One process's view of the rules file: the last good rules, reloaded on change."""

    def __init__(
        self,
        path: Path,
        *,
        create: bool = True,
        known_nodes: Callable[[], Collection[str] | None] | None = None,
    ) -> None:
        """Load ``path`` now (writing the shipped defaults first if it does not exist).

        ``known_nodes`` (read at each load, e.g. :func:`store_node_ids`): a ``[fulfillment]``
        section naming another node is refused, naming its line (None: unchecked).
        """
        self.listeners: list[Callable[[LoadedRules], None]] = []
        self.watcher = RulesWatcher(
            path,
            on_reload=self._reloaded,
            on_error=self._refused,
            create=create,
            known_nodes=known_nodes,
        )
        self.watcher.load_initial()
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> LoadedRules | None:
        """The rules in force (None if the file was invalid from the start)."""
        return self.watcher.current

    def fulfillment(self) -> FulfillmentRouting:
        """The fulfillment routing rules in force (the built-in defaults without a file)."""
        current = self.watcher.current
        return current.rules.fulfillment if current is not None else FulfillmentRouting()

    def start(self) -> None:
        """Start watching the file (in the running event loop)."""
        if self._task is None:
            self._task = self.watcher.start()

    async def stop(self) -> None:
        """Stop watching."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _reloaded(self, loaded: LoadedRules) -> None:
        for listener in self.listeners:
            listener(loaded)

    def _refused(self, error: RulesFileError) -> None:
        log.error("rules file change refused, the last good rules stay in force: %s", error)


async def alert_loop(
    db: Path,
    runtime: RulesRuntime,
    clock: Clock,
    params: MetricParams,
    interval: float,
    *,
    console: ConsoleSink | None = None,
    stop: asyncio.Event | None = None,
    taps: Sequence[ReceiverWorker] = (),
    adjust: Callable[[Snapshots], Snapshots] | None = None,
) -> None:
    """Evaluate the alert rules every ``interval`` wall seconds until cancelled or ``stop``.

    ``taps`` get a copy of every notification (see :class:`rules.notify.Notifier`);
    ``adjust`` amends the snapshots before evaluation with what only this process knows
    (e.g. a lagging Kafka feed marks the sources it carries stale).
    """
    current = runtime.current
    reader = await asyncio.to_thread(open_reader, db)
    status_conn = await asyncio.to_thread(alert_store.connect, db)
    outbox = await asyncio.to_thread(Outbox.open, db)
    notifier = Notifier(
        current.rules.notify if current else NotifyConfig(),
        clock,
        console=console,
        status_sink=lambda s: alert_store.save_receiver_status(status_conn, s, at=clock.now()),
        taps=taps,
        outbox=outbox,
    )
    engine = AlertEngine(
        current.rules if current else None, lambda: alert_store.connect(db), clock, notifier
    )

    def reloaded(loaded: LoadedRules) -> None:
        engine.set_rules(loaded.rules)
        notifier.set_config(loaded.rules.notify)

    runtime.listeners.append(reloaded)
    stop = stop or asyncio.Event()

    def cycle() -> None:
        snapshots = compute_snapshots(reader, clock.now(), params)
        engine.evaluate(adjust(snapshots) if adjust is not None else snapshots)

    running: asyncio.Future[None] | None = None
    try:
        async with notifier:
            while not stop.is_set():
                running = asyncio.ensure_future(asyncio.to_thread(cycle))
                try:
                    # Shielded: cancelling the loop must not abandon a thread that is
                    # still using the connections closed below.
                    await asyncio.shield(running)
                except asyncio.CancelledError:
                    raise
                except Exception:  # one bad cycle must not end alerting
                    log.exception("alert evaluation failed; retrying in %.0f s", interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
    finally:
        if running is not None and not running.done():
            with contextlib.suppress(Exception):
                await asyncio.wait({running})
        runtime.listeners.remove(reloaded)
        engine.close()
        reader.close()
        status_conn.close()
        outbox.close()
