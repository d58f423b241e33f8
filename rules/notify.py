"""Notification routing, grouping, inhibition and the asynchronous notifier.

The ``[notify]`` section of the rules file follows Prometheus Alertmanager's semantics:

* **Routing tree** (``[notify.route]`` and nested ``[[...routes]]``): an alert enters at the
  root and goes down depth-first; the first child whose matchers all hold takes it, unless
  that child says ``continue = true``, in which case the following siblings are tried too.
  A route with no matching child handles the alert itself.  Children inherit ``receiver``,
  ``group_by``, ``group_wait``, ``group_interval`` and ``repeat_interval`` from their parent
  unless they set them.  The root matches every alert (it may not have matchers).
* **Grouping**: alerts that reach the same route with equal values of its ``group_by``
  labels (``["..."]``: all labels) form one group and one notification.  A new group waits
  ``group_wait`` (to collect its siblings); later changes to it go out at most every
  ``group_interval``; an unchanged firing group is re-sent every ``repeat_interval``.
  Resolved alerts are sent once, to the groups that were told they fired.
* **Inhibition** (``[[notify.inhibit]]``): while an alert matching ``source_matchers``
  fires, alerts matching ``target_matchers`` that have the same values for every label in
  ``equal`` are muted (an alert never inhibits itself).

:class:`Notifier` runs this in the background: :meth:`Notifier.submit` is non-blocking and
thread-safe (the evaluator calls it from a worker thread), a dispatcher task decides what is
due against the injected clock, and each receiver delivers from the outbox
(:mod:`rules.receivers`, :mod:`store.outbox`), so a receiver that is down never blocks
evaluation, and what waits for it survives a restart when the outbox is the store's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rules.backoff import Backoff
from rules.labels import Duration, MatcherList, format_duration, labels_text
from rules.matchers import format_matchers, matches_all
from rules.receivers import (
    CONSOLE,
    ConsoleReceiverConfig,
    ConsoleSink,
    Notification,
    NotifyAlert,
    ReceiverConfig,
    ReceiverWorker,
    build_delivery,
    delivery_backoff,
)
from store import outbox as outbox_store
from store.alerts import ReceiverStatus
from store.clock import Clock
from store.outbox import GroupMemory, Outbox

if TYPE_CHECKING:  # imported when a session is opened: the console reads rules without HTTP
    import aiohttp

log = logging.getLogger(__name__)

ALL_LABELS = "..."
"""``group_by = ["..."]``: every label (one group per alert)."""


class Route(BaseModel):
    """One node of the routing tree."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    """Shown in the route tester's path (default: ``routes[i]``)."""
    matchers: MatcherList = ()
    """The alert labels this route takes, e.g. ``'severity=critical'``."""
    receiver: str | None = None
    """Where its alerts go (inherited when unset)."""
    group_by: tuple[str, ...] | None = None
    """Labels that split alerts into groups (inherited when unset)."""
    group_wait: Duration | None = None
    """How long a new group waits for more alerts before its first notification."""
    group_interval: Duration | None = None
    """Least time between notifications about changes to a group."""
    repeat_interval: Duration | None = None
    """How often an unchanged, still-firing group is notified again."""
    continue_: bool = Field(default=False, alias="continue")
    """After matching, also try the following siblings."""
    routes: tuple[Route, ...] = ()
    """Child routes, tried in order."""


class InhibitRule(BaseModel):
    """While a source alert fires, mute matching target alerts that share ``equal`` labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_matchers: MatcherList
    """The inhibiting alerts, e.g. ``'alertname=stale_feed'``."""
    target_matchers: MatcherList
    """The alerts they mute, e.g. ``'alertname=~aov_drop|net_sales_drop'``."""
    equal: tuple[str, ...] = ()
    """Labels that must have the same value on source and target (e.g. ``channel``)."""

    @model_validator(mode="after")
    def _not_empty(self) -> InhibitRule:
        if not self.source_matchers or not self.target_matchers:
            raise ValueError("an inhibit rule needs both source_matchers and target_matchers")
        return self


class NotifyConfig(BaseModel):
    """The ``[notify]`` section: routing tree, receivers and inhibition rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    route: Route = Route()
    """The root route; unset settings default to console, alertname, 30s, 5m, 4h."""
    receivers: tuple[ReceiverConfig, ...] = ()
    """Named receivers; ``console`` always exists."""
    inhibit: tuple[InhibitRule, ...] = ()

    def receiver_names(self) -> set[str]:
        """Every receiver a route may name."""
        return {CONSOLE, *(r.name for r in self.receivers)}


def check_notify(config: NotifyConfig) -> list[tuple[tuple[str | int, ...], str]]:
    """Cross-reference problems as (location in the file, message); empty when valid."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    names: set[str] = set()
    for i, r in enumerate(config.receivers):
        if r.name in names:
            problems.append((("notify", "receivers", i, "name"), f"duplicate receiver {r.name!r}"))
        if r.name == CONSOLE and not isinstance(r, ConsoleReceiverConfig):
            problems.append(
                (("notify", "receivers", i, "name"), "the name 'console' is the console's")
            )
        names.add(r.name)
    known = config.receiver_names()
    if config.route.matchers:
        problems.append(
            (
                ("notify", "route", "matchers"),
                "the root route matches every alert; put matchers on child routes",
            )
        )

    def walk(route: Route, loc: tuple[str | int, ...]) -> None:
        if route.receiver is not None and route.receiver not in known:
            problems.append(
                (
                    (*loc, "receiver"),
                    f"unknown receiver {route.receiver!r}; known: {', '.join(sorted(known))}",
                )
            )
        for i, child in enumerate(route.routes):
            walk(child, (*loc, "routes", i))

    walk(config.route, ("notify", "route"))
    return problems


# -- routing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RouteSettings:
    """A route's effective settings after inheritance."""

    receiver: str = CONSOLE
    group_by: tuple[str, ...] = ("alertname",)
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)

    def inherit(self, route: Route) -> RouteSettings:
        """These settings overridden by what ``route`` sets."""
        return RouteSettings(
            receiver=route.receiver if route.receiver is not None else self.receiver,
            group_by=route.group_by if route.group_by is not None else self.group_by,
            group_wait=route.group_wait if route.group_wait is not None else self.group_wait,
            group_interval=(
                route.group_interval if route.group_interval is not None else self.group_interval
            ),
            repeat_interval=(
                route.repeat_interval if route.repeat_interval is not None else self.repeat_interval
            ),
        )


@dataclass(frozen=True)
class RouteMatch:
    """A route that handles an alert: its path from the root and its settings."""

    path: tuple[str, ...]
    settings: RouteSettings

    @property
    def receiver(self) -> str:
        """The receiver it delivers to."""
        return self.settings.receiver

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The values of the group_by labels (all labels for ``...``)."""
        if ALL_LABELS in self.settings.group_by:
            return dict(labels)
        return {k: labels.get(k, "") for k in self.settings.group_by}

    def group_key(self, labels: Mapping[str, str]) -> str:
        """``root/routes[0]:{alertname=late}``: one group per route and group label values."""
        return f"{'/'.join(self.path)}:{{{labels_text(self.group_labels(labels))}}}"


def _step_name(route: Route, index: int) -> str:
    if route.name:
        return route.name
    return f"routes[{index}]"


def match_routes(route: Route, labels: Mapping[str, str]) -> list[RouteMatch]:
    """The routes that handle an alert with ``labels`` (Alertmanager semantics)."""
    root = RouteSettings().inherit(route)
    return _match(route, labels, root, ("root",))


def _match(
    route: Route, labels: Mapping[str, str], settings: RouteSettings, path: tuple[str, ...]
) -> list[RouteMatch]:
    found: list[RouteMatch] = []
    for i, child in enumerate(route.routes):
        if not matches_all(child.matchers, labels):
            continue
        found.extend(_match(child, labels, settings.inherit(child), (*path, _step_name(child, i))))
        if not child.continue_:
            break
    return found or [RouteMatch(path, settings)]


@dataclass(frozen=True)
class RouteTestResult:
    """What the route tester answers for a set of labels."""

    labels: Mapping[str, str]
    matches: tuple[RouteMatch, ...]

    @property
    def receivers(self) -> list[str]:
        """The receivers reached, in order, without repeats."""
        out: list[str] = []
        for m in self.matches:
            if m.receiver not in out:
                out.append(m.receiver)
        return out

    def text(self, route: Route | None = None) -> str:
        """A readable answer: one line per receiver, with the path through the tree."""
        lines = [f"labels: {labels_text(self.labels) or '(none)'}"]
        for m in self.matches:
            s = m.settings
            path = " > ".join(_describe_path(route, m.path) if route else m.path)
            lines.append(
                f"→ {m.receiver}  via {path}  (group_by [{', '.join(s.group_by)}], wait "
                f"{format_duration(s.group_wait)}, interval {format_duration(s.group_interval)}, "
                f"repeat {format_duration(s.repeat_interval)})"
            )
        return "\n".join(lines)


def _describe_path(root: Route, path: tuple[str, ...]) -> list[str]:
    """Path steps with each route's matchers, e.g. ``routes[0] {severity=critical}``."""
    out = [path[0]]
    node = root
    for step in path[1:]:
        for i, child in enumerate(node.routes):
            if _step_name(child, i) == step:
                node = child
                break
        text = format_matchers(node.matchers)
        out.append(f"{step} {{{text}}}" if text else step)
    return out


def route_test(config: NotifyConfig, labels: Mapping[str, str]) -> RouteTestResult:
    """Which receivers an alert with ``labels`` reaches, and by which path."""
    return RouteTestResult(dict(labels), tuple(match_routes(config.route, labels)))


def parse_label_args(args: Sequence[str]) -> dict[str, str]:
    """``["severity=critical", "location=WH-NJ"]`` → labels.

    Raises:
        ValueError: for an argument without ``=``.
    """
    labels: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected key=value, got {arg!r}")
        labels[name.strip()] = value.strip().strip('"')
    return labels


# -- inhibition --------------------------------------------------------------------------------


def inhibiting_source(
    fingerprint: str,
    labels: Mapping[str, str],
    firing: Sequence[tuple[str, Mapping[str, str]]],
    rules: Sequence[InhibitRule],
) -> str | None:
    """The fingerprint of a firing alert that inhibits this one, or None."""
    for rule in rules:
        if not matches_all(rule.target_matchers, labels):
            continue
        for source_fp, source_labels in firing:
            if source_fp == fingerprint:
                continue
            if not matches_all(rule.source_matchers, source_labels):
                continue
            if all(source_labels.get(k, "") == labels.get(k, "") for k in rule.equal):
                return source_fp
    return None


# -- grouping ----------------------------------------------------------------------------------


@dataclass
class _Group:
    key: str
    match: RouteMatch
    group_labels: dict[str, str]
    created_at: datetime
    firing: dict[str, NotifyAlert] = field(default_factory=dict)
    resolved: dict[str, NotifyAlert] = field(default_factory=dict)
    notified: dict[str, str] = field(default_factory=dict)
    """Fingerprint -> state of each alert the latest notification announced as firing."""
    last_sent_at: datetime | None = None
    changed: bool = True


class Dispatcher:
    """Alert groups and the decision of what to send when.  Pure of I/O; the clock is passed in.

    Each :meth:`update` takes the complete set of firing alerts to notify (silenced and
    inhibited ones already left out) and those that just resolved; :meth:`due` returns the
    notifications to send at ``now``.

    What a group was last told is its *memory* (:class:`store.outbox.GroupMemory`):
    :meth:`take_changes` hands over what changed since it was last asked, for the notifier
    to store, and :meth:`restore` takes back what a previous process stored, so that after
    a restart a group already announced is neither announced again nor made to wait its
    ``group_wait`` again.
    """

    def __init__(self, config: NotifyConfig) -> None:
        self.config = config
        self.groups: dict[str, _Group] = {}
        self._restored: dict[str, GroupMemory] = {}
        self._changes: dict[str, GroupMemory | None] = {}

    def restore(self, memories: Iterable[GroupMemory]) -> None:
        """Take back the groups a previous process announced (before the first update)."""
        self._restored = {m.key: m for m in memories}

    def take_changes(self) -> dict[str, GroupMemory | None]:
        """Memories changed since the last call (``None``: forget the group); clears them."""
        changes, self._changes = self._changes, {}
        return changes

    def _group(
        self, key: str, match: RouteMatch, labels: Mapping[str, str], now: datetime
    ) -> _Group:
        group = _Group(key, match, match.group_labels(labels), now)
        memory = self._restored.pop(key, None)
        if memory is not None:
            group.created_at = memory.created_at
            group.last_sent_at = memory.last_sent_at
            group.notified = dict(memory.notified)
        self.groups[key] = group
        return group

    def _forget(self, key: str) -> None:
        del self.groups[key]
        self._changes[key] = None

    def update(
        self, firing: Sequence[NotifyAlert], resolved: Sequence[NotifyAlert], now: datetime
    ) -> None:
        """Fold one evaluation's alerts into the groups."""
        seen: dict[str, set[str]] = {}
        restored = set(self._restored)
        for alert in firing:
            for match in match_routes(self.config.route, alert.labels):
                key = match.group_key(alert.labels)
                group = self.groups.get(key) or self._group(key, match, alert.labels, now)
                old = group.firing.get(alert.fingerprint)
                if old is None or old.state != alert.state:
                    group.changed = True
                group.firing[alert.fingerprint] = alert
                group.resolved.pop(alert.fingerprint, None)
                seen.setdefault(key, set()).add(alert.fingerprint)
        resolved_fps = {a.fingerprint for a in resolved}
        for alert in resolved:
            for match in match_routes(self.config.route, alert.labels):
                key = match.group_key(alert.labels)
                known = self.groups.get(key)
                if known is None:
                    memory = self._restored.get(key)
                    if memory is None or alert.fingerprint not in memory.notified:
                        continue
                    known = self._group(key, match, alert.labels, now)
                group = known
                group.firing.pop(alert.fingerprint, None)
                if alert.fingerprint in group.notified:
                    group.resolved[alert.fingerprint] = alert
                    group.changed = True
        # Alerts no longer submitted (silenced, inhibited, rerouted) leave their groups quietly.
        for key, group in self.groups.items():
            keep = seen.get(key, set())
            for fp in list(group.firing):
                if fp not in keep and fp not in resolved_fps:
                    del group.firing[fp]
                    group.notified.pop(fp, None)
            if key in restored:
                # Taken back from a previous process: changed only if what fires now is not
                # what that process announced.
                now_firing = {fp: a.state for fp, a in group.firing.items()}
                group.changed = bool(group.resolved) or now_firing != group.notified
        # A remembered group none of whose alerts came back is over (they ended or were
        # silenced while no process was watching): forget it.
        for key in self._restored:
            self._changes[key] = None
        self._restored = {}

    def due(self, now: datetime) -> list[Notification]:
        """The notifications to send at ``now``; marks them sent."""
        out: list[Notification] = []
        for key in list(self.groups):
            group = self.groups[key]
            s = group.match.settings
            send = False
            if group.last_sent_at is None:
                if not group.firing:
                    del self.groups[key]  # resolved before it was ever announced
                    continue
                send = now >= group.created_at + s.group_wait
            elif group.changed and now >= group.last_sent_at + s.group_interval:
                send = bool(group.firing or group.resolved)
            elif group.firing and now >= group.last_sent_at + s.repeat_interval:
                send = True
            if send:
                alerts = (*group.firing.values(), *group.resolved.values())
                out.append(
                    Notification(
                        receiver=s.receiver,
                        group_key=key,
                        group_labels=dict(group.group_labels),
                        alerts=tuple(alerts),
                        created_at=now,
                        route_path=group.match.path,
                    )
                )
                group.notified = {fp: a.state for fp, a in group.firing.items()}
                group.resolved.clear()
                group.changed = False
                group.last_sent_at = now
                self._changes[key] = GroupMemory(key, group.created_at, now, dict(group.notified))
            idle = not group.firing and not group.resolved and not group.changed
            if idle and group.last_sent_at is not None:
                self._forget(key)
        return out


# -- the notifier ------------------------------------------------------------------------------


class Notifier:
    """Groups alerts and delivers notifications in the background.

    Use ``async with Notifier(config, clock) as notifier`` (or :meth:`start` /
    :meth:`close`) on the event loop of the process that evaluates alerts; call
    :meth:`submit` after every evaluation, from any thread.
    """

    def __init__(
        self,
        config: NotifyConfig,
        clock: Clock,
        *,
        console: ConsoleSink | None = None,
        retry: Backoff | None = None,
        tick: float = 1.0,
        status_sink: Callable[[list[ReceiverStatus]], None] | None = None,
        session: aiohttp.ClientSession | None = None,
        taps: Sequence[ReceiverWorker] = (),
        outbox: Outbox | None = None,
    ) -> None:
        """Create the notifier.

        Args:
            config: The ``[notify]`` section in force; replace with :meth:`set_config`.
            clock: "now" for group_wait, group_interval and repeat_interval.
            console: What the console receiver calls (e.g. the app's bell); default: log.
            retry: Back-off between delivery attempts.
            tick: Wall seconds between checks for due groups.
            status_sink: Blocking; stores receiver counters (e.g. into the store), called
                off the event loop after deliveries change them.
            session: An aiohttp session to use (default: one of its own, closed on close).
            taps: Receivers (started and stopped by their owner) that get a copy of every
                notification whatever the routing tree says, e.g. ``serve``'s Kafka topic.
            outbox: Where notifications wait for their receivers (the store's:
                :meth:`store.outbox.Outbox.open`, so they survive a restart; default: in
                memory, lost with the process).  The taps deliver from it too.
        """
        self.clock = clock
        self.retry = retry or delivery_backoff()
        self.tick = tick
        self._console = console
        self._status_sink = status_sink
        self._session = session
        self._own_session = session is None
        self._dispatcher = Dispatcher(config)
        self._workers: dict[str, ReceiverWorker] = {}
        self._inbox: list[tuple[Sequence[NotifyAlert], Sequence[NotifyAlert]]] = []
        self._inbox_lock = threading.Lock()
        self._pending_config: NotifyConfig | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._status_dirty = False
        self._config = config
        self._stopping: set[asyncio.Future[None]] = set()
        self._taps = tuple(taps)
        self._own_outbox = outbox is None
        self.outbox = outbox or Outbox.memory()
        self._unsaved: dict[str, GroupMemory | None] = {}
        """Where the notifications wait (shared by every receiver of this notifier)."""
        for tap in self._taps:
            tap.on_change = self._mark_status
            if outbox is not None:
                tap.use_outbox(outbox)

    async def __aenter__(self) -> Notifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def config(self) -> NotifyConfig:
        """The configuration in force."""
        return self._config

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession()
        return self._session

    async def start(self) -> None:
        """Start the dispatcher and one delivery task per receiver."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self.outbox.durable:
            try:
                memories = await asyncio.to_thread(self.outbox.run, outbox_store.load_groups)
            except Exception:  # a memory that cannot be read: notify as a fresh process would
                log.exception("could not read the alert groups' memory; starting without it")
            else:
                self._dispatcher.restore(memories)
        self._build_workers(self._config)
        self._task = asyncio.create_task(self._run(), name="notifier")

    async def close(self) -> None:
        """Stop every task and close the session.

        Undelivered notifications stay in the outbox: with the store's, the next run
        delivers them.
        """
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for worker in self._workers.values():
            await worker.stop()
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        await self._save_groups()
        await self._write_status()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        if self._own_outbox:
            self.outbox.close()

    def _build_workers(self, config: NotifyConfig) -> None:
        configs: dict[str, Any] = {CONSOLE: ConsoleReceiverConfig(name=CONSOLE, type="console")}
        configs.update({r.name: r for r in config.receivers})
        for name in list(self._workers):
            old = self._workers[name]
            if name not in configs:
                # A removed receiver: what waits for it becomes dead letters (counted).
                retiring = asyncio.ensure_future(self._retire(old))
                self._stopping.add(retiring)
                retiring.add_done_callback(self._stopping.discard)
                del self._workers[name]
        for name, rc in configs.items():
            worker = self._workers.get(name)
            delivery = build_delivery(rc, session=self._session_now, console=self._console)
            if worker is None:
                worker = ReceiverWorker(
                    name,
                    delivery,
                    self.retry,
                    self.clock.now,
                    on_change=self._mark_status,
                    outbox=self.outbox,
                    max_age=rc.give_up_after,
                    max_attempts=rc.max_attempts,
                )
                self._workers[name] = worker
                worker.start()
            else:
                worker.delivery = delivery  # keep its queue and counters
                worker.max_age, worker.max_attempts = rc.give_up_after, rc.max_attempts

    async def _retire(self, worker: ReceiverWorker) -> None:
        await worker.stop()
        at, name = datetime.now(UTC), worker.name
        given_up = await asyncio.to_thread(
            self.outbox.run,
            lambda db: outbox_store.give_up_receiver(
                db, name, at=at, error="receiver removed from the rules file"
            ),
        )
        if given_up:
            log.warning("receiver %s removed: %d waiting notifications given up", name, given_up)

    def set_config(self, config: NotifyConfig) -> None:
        """Use a new ``[notify]`` section (the rules watcher's reload).  Thread-safe."""
        with self._inbox_lock:
            self._pending_config = config
        self._poke()

    def submit(self, firing: Sequence[NotifyAlert], resolved: Sequence[NotifyAlert]) -> None:
        """Take the alerts of one evaluation.  Never blocks; safe from any thread."""
        with self._inbox_lock:
            self._inbox.append((tuple(firing), tuple(resolved)))
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def _mark_status(self) -> None:
        self._status_dirty = True
        self._poke()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that arrives as its own timeout fires, and close() would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self.process()
                await self._save_groups()
                if self._status_dirty:
                    await self._write_status()
            except Exception:  # keep notifying whatever went wrong once
                log.exception("notifier cycle failed")

    def process(self) -> list[Notification]:
        """Apply submitted alerts and config, enqueue what is due now; return it."""
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
            config, self._pending_config = self._pending_config, None
        if config is not None:
            self._config = config
            self._dispatcher.config = config
            self._build_workers(config)
        now = self.clock.now()
        for firing, resolved in inbox:
            self._dispatcher.update(firing, resolved, now)
        due = self._dispatcher.due(now)
        for notification in due:
            worker = self._workers.get(notification.receiver)
            if worker is None:
                log.error(
                    "no receiver %r for group %s", notification.receiver, notification.group_key
                )
                continue
            worker.enqueue(notification)
            for tap in self._taps:
                tap.enqueue(dataclasses.replace(notification, receiver=tap.name))
        self._unsaved.update(self._dispatcher.take_changes())
        return due

    async def _save_groups(self) -> None:
        """Store the groups' memory once the notifications it speaks of are in the outbox.

        A group is remembered as told only after its notification is stored, never before:
        a crash in between makes the next process announce the group once more (at least
        once), never forget to.
        """
        if not self._unsaved or not self.outbox.durable:
            self._unsaved.clear()
            return
        if any(w.unstored for w in (*self._workers.values(), *self._taps)):
            return  # next cycle
        changes, self._unsaved = self._unsaved, {}
        try:
            await asyncio.to_thread(
                self.outbox.run, lambda db: outbox_store.save_groups(db, changes)
            )
        except Exception:
            self._unsaved = {**changes, **self._unsaved}
            raise

    async def flush(self) -> list[Notification]:
        """Process now (instead of at the next tick); return the notifications enqueued."""
        return self.process()

    async def wait_delivered(self, timeout: float = 10.0) -> None:
        """Until every receiver's queue is empty (or ``timeout`` seconds: TimeoutError)."""
        async with asyncio.timeout(timeout):
            for worker in list(self._workers.values()):
                await worker.wait_idle()

    def stats(self) -> dict[str, ReceiverStatus]:
        """Current counters per receiver."""
        return {w.name: w.status() for w in (*self._workers.values(), *self._taps)}

    async def _write_status(self) -> None:
        self._status_dirty = False
        if self._status_sink is None or not self._workers:
            return
        statuses = [w.status() for w in (*self._workers.values(), *self._taps)]
        try:
            await asyncio.to_thread(self._status_sink, statuses)
        except Exception:
            log.exception("storing receiver status failed")
