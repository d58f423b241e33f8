"""Notification receivers: where alerts go, in which format, and how delivery is retried.

Receivers are configured in the ``[[notify.receivers]]`` tables of the rules file:

* ``console`` — always present (named ``console``); hands notifications to a callback the
  process installs (the demo's bell), or logs them.
* ``webhook`` — a JSON ``POST`` with aiohttp, in one of three formats: ``generic`` (one
  object with the group and its alerts), ``chat`` (``{"text": ...}``, which Slack,
  Mattermost, Rocket.Chat and Google Chat incoming webhooks accept) and ``alertmanager``
  (Alertmanager's API v2 array of postable alerts: point ``url`` at
  ``http://alertmanager:9093/api/v2/alerts`` and a team's Alertmanager takes over paging).
* ``log`` — one JSON line per notification (the generic format) appended to a file.

Each receiver has its own delivery task (:class:`ReceiverWorker`), so one that is down
delays only itself.  Notifications wait in the outbox (:mod:`store.outbox`; the store's in
``serve``, so they survive a restart): stored before the first attempt, deleted once
delivered.  A failed delivery puts the receiver on exponential back-off (capped); while a
notification waits, a newer one for the same alert group replaces it (it carries the
current state), which keeps the outbox bounded.  Refusals that retrying cannot fix (HTTP
4xx other than 408/429), notifications older than ``give_up_after`` and those past
``max_attempts`` become dead letters: kept in the outbox and counted, never silently
dropped.  Every webhook POST carries the notification's ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rules.backoff import Backoff
from rules.delivery_loop import DeliveryLoop
from rules.labels import Duration, format_duration, labels_text
from store import outbox as outbox_store
from store.alerts import ReceiverStatus
from store.outbox import Outbox

if TYPE_CHECKING:  # imported where a delivery runs: the console reads rules without HTTP
    import aiohttp

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSOLE = "console"
"""The name of the built-in console receiver."""


# -- what is delivered -------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifyAlert:
    """One alert inside a notification."""

    fingerprint: str
    status: Literal["firing", "resolved"]
    state: str
    """pending, firing, nodata or resolved (nodata notifies as firing)."""
    labels: Mapping[str, str]
    description: str
    summary: str
    value: float | None
    threshold: float
    op: str
    starts_at: datetime
    ends_at: datetime | None = None
    acked_by: str | None = None


@dataclass(frozen=True)
class Notification:
    """One message to one receiver about one alert group."""

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: tuple[NotifyAlert, ...]
    created_at: datetime
    route_path: tuple[str, ...] = ()

    @property
    def status(self) -> Literal["firing", "resolved"]:
        """``firing`` while any alert of the group fires."""
        return "firing" if any(a.status == "firing" for a in self.alerts) else "resolved"

    @property
    def firing(self) -> tuple[NotifyAlert, ...]:
        """The firing alerts."""
        return tuple(a for a in self.alerts if a.status == "firing")

    @property
    def key(self) -> str:
        """The idempotency key: the same for every attempt and across restarts.

        Derived from the receiver, group, moment and the alerts' states, all of which the
        outbox keeps, so a notification read back from the store has the same key.
        """
        parts = [self.receiver, self.group_key, _iso(self.created_at) or ""]
        parts += [f"{a.fingerprint}:{a.status}:{a.state}:{a.acked_by or ''}" for a in self.alerts]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _common_labels(n: Notification) -> dict[str, str]:
    if not n.alerts:
        return {}
    common = dict(n.alerts[0].labels)
    for a in n.alerts[1:]:
        common = {k: v for k, v in common.items() if a.labels.get(k) == v}
    return common


def generic_payload(n: Notification) -> dict[str, Any]:
    """The generic JSON format (shaped like Alertmanager's webhook payload)."""
    return {
        "version": "omniops/1",
        "receiver": n.receiver,
        "status": n.status,
        "groupKey": n.group_key,
        "notificationId": n.key,
        "groupLabels": dict(n.group_labels),
        "commonLabels": _common_labels(n),
        "sentAt": _iso(n.created_at),
        "alerts": [
            {
                "fingerprint": a.fingerprint,
                "status": a.status,
                "state": a.state,
                "labels": dict(a.labels),
                "annotations": {"description": a.description, "summary": a.summary},
                "value": a.value,
                "op": a.op,
                "threshold": a.threshold,
                "startsAt": _iso(a.starts_at),
                "endsAt": _iso(a.ends_at),
                "acknowledgedBy": a.acked_by,
            }
            for a in n.alerts
        ],
    }


def chat_text(n: Notification) -> str:
    """Plain text for a chat channel: a headline and one line per alert."""
    firing = len(n.firing)
    head = f"[FIRING:{firing}]" if firing else "[RESOLVED]"
    group = labels_text(n.group_labels) or "all alerts"
    lines = [f"{head} {group}"]
    for a in n.alerts:
        mark = "🔥" if a.status == "firing" else "✅"
        when = _iso(a.ends_at if a.status == "resolved" else a.starts_at)
        line = f"{mark} {a.summary} (since {when})"
        if a.state == "nodata":
            line += " — no data"
        if a.acked_by:
            line += f" — acknowledged by {a.acked_by}"
        if a.description:
            line += f"\n    {a.description}"
        lines.append(line)
    return "\n".join(lines)


def alertmanager_payload(n: Notification) -> list[dict[str, Any]]:
    """Alertmanager API v2 ``postableAlerts``: an array of labels/annotations/start/end."""
    out: list[dict[str, Any]] = []
    for a in n.alerts:
        item: dict[str, Any] = {
            "labels": dict(a.labels),
            "annotations": {"description": a.description, "summary": a.summary},
            "startsAt": _iso(a.starts_at),
            "generatorURL": "",
        }
        if a.ends_at is not None:
            item["endsAt"] = _iso(a.ends_at)
        out.append(item)
    return out


# -- configuration -----------------------------------------------------------------------------


class _ReceiverBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    """What routes call this receiver."""
    give_up_after: Duration = timedelta(hours=24)
    """A notification still undelivered this long after it was queued becomes a dead letter."""
    max_attempts: int = Field(default=0, ge=0)
    """Failed attempts after which a notification becomes a dead letter (0: no limit)."""


class ConsoleReceiverConfig(_ReceiverBase):
    """The console (always present as ``console``; declaring it is optional)."""

    type: Literal["console"]


class WebhookReceiverConfig(_ReceiverBase):
    """An outbound HTTP webhook."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://\S+$")
    """Where to POST, e.g. ``https://hooks.example.com/T000/B000``."""
    format: Literal["generic", "chat", "alertmanager"] = "generic"
    """The body: ``generic`` JSON, ``chat`` text, or Alertmanager's v2 alert array."""
    headers: dict[str, str] = {}
    """Extra request headers (e.g. an ``Authorization`` token)."""
    timeout: Duration = timedelta(seconds=10)
    """Give up on one attempt after this long (it is then retried)."""


class LogReceiverConfig(_ReceiverBase):
    """A JSON Lines file, one notification per line."""

    type: Literal["log"]
    path: Path
    """The file to append to (created if missing)."""


ReceiverConfig = Annotated[
    ConsoleReceiverConfig | WebhookReceiverConfig | LogReceiverConfig,
    Field(discriminator="type"),
]


# -- delivery ----------------------------------------------------------------------------------


class DeliveryError(Exception):
    """A delivery attempt failed; ``retry`` says whether trying again can help."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class Delivery(Protocol):
    """Sends one notification or raises :class:`DeliveryError`."""

    async def send(self, notification: Notification) -> None:
        """Deliver, or raise."""
        ...


ConsoleSink = Callable[[Notification], None]
"""What the console receiver calls; it must return at once (post a message, ring a bell)."""


class ConsoleDelivery:
    """Hands notifications to a callback (or logs them)."""

    def __init__(self, sink: ConsoleSink | None = None) -> None:
        self.sink = sink

    async def send(self, notification: Notification) -> None:
        """Call the sink; an exception in it is a failed (retried) delivery."""
        if self.sink is None:
            log.info("alert notification: %s", chat_text(notification))
            return
        try:
            self.sink(notification)
        except Exception as exc:
            raise DeliveryError(f"console sink failed: {exc}") from exc


IDEMPOTENCY_HEADER = "Idempotency-Key"
"""Sent with every webhook POST: the notification's key, the same on every retry, so a
receiver that keeps the keys it saw can drop a repeat (delivery is at least once)."""


class WebhookDelivery:
    """JSON POST to a URL in the configured format, on a shared ``ClientSession``."""

    def __init__(
        self, config: WebhookReceiverConfig, session: Callable[[], aiohttp.ClientSession]
    ) -> None:
        self.config = config
        self._session = session

    def payload(self, notification: Notification) -> Any:
        """The request body for ``notification``."""
        if self.config.format == "chat":
            return {"text": chat_text(notification)}
        if self.config.format == "alertmanager":
            return alertmanager_payload(notification)
        return generic_payload(notification)

    async def send(self, notification: Notification) -> None:
        """POST once; 2xx is success, 5xx/408/429/network errors are retried."""
        import aiohttp  # here, not at the top: the console imports rules without HTTP

        url = self.config.url
        timeout = aiohttp.ClientTimeout(total=self.config.timeout.total_seconds())
        try:
            async with self._session().post(
                url,
                json=self.payload(notification),
                headers={IDEMPOTENCY_HEADER: notification.key, **self.config.headers},
                timeout=timeout,
            ) as response:
                if 200 <= response.status < 300:
                    return
                body = (await response.text())[:200]
                retry = response.status >= 500 or response.status in (408, 429)
                raise DeliveryError(
                    f"HTTP {response.status} from {url}: {body.strip()}", retry=retry
                )
        except DeliveryError:
            raise
        except TimeoutError as exc:
            raise DeliveryError(f"timed out after {self.config.timeout} posting to {url}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"{type(exc).__name__} posting to {url}: {exc}") from exc


class LogDelivery:
    """Appends the generic JSON of each notification as one line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    async def send(self, notification: Notification) -> None:
        """Append off the event loop; an OS error is retried."""
        line = json.dumps(generic_payload(notification), ensure_ascii=False)
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            raise DeliveryError(f"cannot write {self.path}: {exc}") from exc


def delivery_backoff() -> Backoff:
    """The receivers' default: 1 s, 2 s, 4 s … up to 60 s, without jitter (the status says when)."""
    return Backoff(base=1.0, cap=60.0, jitter=False)


GIVE_UP_AFTER = timedelta(hours=24)
"""Default ``give_up_after``: a notification still undelivered this long after it was
queued becomes a dead letter (a firing group is re-notified every ``repeat_interval``, and
the newer notification replaces the waiting one, so what ages out is mostly old news)."""

DEAD_LETTER_KEEP = timedelta(days=30)
"""Dead letters older than this are deleted from the store when a receiver starts."""

OUTBOX_RETRY_SECONDS = 5.0
"""Pause before a receiver tries the outbox again after the store failed (locked, I/O)."""


@dataclass
class ReceiverStats:
    """Running counters of one receiver (mutable; read with :meth:`status`)."""

    delivered: int = 0
    failed_attempts: int = 0
    dropped: int = 0
    superseded: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_delivered_at: datetime | None = None
    retry_in: float | None = None
    """Seconds until the next attempt while a delivery is failing."""
    dead_letter: int = 0
    """Notifications given up on since start (also counted in ``dropped``)."""


def notification_json(n: Notification) -> str:
    """A notification as stored in the outbox (restored by :func:`notification_from_json`)."""
    return json.dumps(
        {
            "receiver": n.receiver,
            "group_key": n.group_key,
            "group_labels": dict(n.group_labels),
            "created_at": n.created_at.isoformat(),
            "route_path": list(n.route_path),
            "alerts": [
                {
                    "fingerprint": a.fingerprint,
                    "status": a.status,
                    "state": a.state,
                    "labels": dict(a.labels),
                    "description": a.description,
                    "summary": a.summary,
                    "value": a.value,
                    "threshold": a.threshold,
                    "op": a.op,
                    "starts_at": a.starts_at.isoformat(),
                    "ends_at": None if a.ends_at is None else a.ends_at.isoformat(),
                    "acked_by": a.acked_by,
                }
                for a in n.alerts
            ],
        },
        ensure_ascii=False,
    )


def notification_from_json(text: str) -> Notification:
    """The notification stored by :func:`notification_json`."""
    d = json.loads(text)
    return Notification(
        receiver=d["receiver"],
        group_key=d["group_key"],
        group_labels=d["group_labels"],
        created_at=datetime.fromisoformat(d["created_at"]),
        route_path=tuple(d["route_path"]),
        alerts=tuple(
            NotifyAlert(
                fingerprint=a["fingerprint"],
                status=a["status"],
                state=a["state"],
                labels=a["labels"],
                description=a["description"],
                summary=a["summary"],
                value=a["value"],
                threshold=a["threshold"],
                op=a["op"],
                starts_at=datetime.fromisoformat(a["starts_at"]),
                ends_at=None if a["ends_at"] is None else datetime.fromisoformat(a["ends_at"]),
                acked_by=a["acked_by"],
            )
            for a in d["alerts"]
        ),
    )


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReceiverWorker(DeliveryLoop):
    """One receiver's delivery task, delivering from the outbox.

    :meth:`enqueue` never blocks: the task first stores what was handed to it (replacing
    a waiting notification of the same group), then delivers the stored notifications of
    its receiver one at a time, oldest first, deleting each once delivered.  A failure
    counts on the notification and puts the whole receiver on back-off (``retry``: the
    n-th consecutive failure waits ``retry.delay(n)``, at most its cap); a notification
    refused for good (HTTP 4xx), older than ``max_age`` or tried ``max_attempts`` times
    becomes a dead letter, kept in the outbox and counted.  On start it delivers what a
    previous run left waiting in the same store, at the stored next try.

    The outbox's times are wall time (``wall``), whatever clock ``now`` is: back-off and
    the age limit are about the receiver, not about the replayed day.
    """

    name: str
    delivery: Delivery
    retry: Backoff
    now: Callable[[], datetime]
    on_change: Callable[[], None] = lambda: None
    stats: ReceiverStats = field(default_factory=ReceiverStats)
    outbox: Outbox = field(default_factory=Outbox.memory)
    """Where notifications wait (the store's, to survive a restart)."""
    max_age: timedelta | None = GIVE_UP_AFTER
    """Give up on a notification still undelivered this long after it was queued."""
    max_attempts: int = 0
    """Give up on a notification after this many failed attempts (0: no limit)."""
    wall: Callable[[], datetime] = _wall
    _incoming: list[Notification] = field(default_factory=list)
    _waiting: int = 0
    _dead: int = 0
    _next_attempt_at: datetime | None = None
    _failures: int = 0
    _retry_until: datetime | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def pending(self) -> int:
        """Notifications waiting to be delivered (in the outbox or about to be stored)."""
        return self._waiting + len(self._incoming)

    @property
    def dead_letters(self) -> int:
        """Notifications of this receiver given up on and kept in the outbox."""
        return self._dead

    @property
    def next_attempt_at(self) -> datetime | None:
        """When the waiting notifications are tried next (wall time), or None."""
        return self._next_attempt_at if self.pending else None

    def enqueue(self, notification: Notification) -> None:
        """Hand over ``notification``; the task stores it before it tries to deliver it."""
        self._incoming.append(notification)
        self._idle.clear()
        self._wake.set()

    @property
    def unstored(self) -> bool:
        """Whether notifications handed over are not yet in the outbox."""
        return bool(self._incoming)

    def use_outbox(self, outbox: Outbox) -> None:
        """Deliver from ``outbox`` from now on (before anything was enqueued here)."""
        self.outbox = outbox
        self._idle.clear()
        self._wake.set()

    def _task_name(self) -> str:
        return f"receiver:{self.name}"

    def _starting(self) -> None:
        self._idle.clear()  # until it has looked at what a previous run left

    async def stop(self) -> None:
        """Stop delivering; what waits stays in the outbox for the next run."""
        await super().stop()
        if self._incoming:
            with contextlib.suppress(Exception):
                await self._store_incoming()

    def status(self) -> ReceiverStatus:
        """The counters in their stored form."""
        s = self.stats
        return ReceiverStatus(
            receiver=self.name,
            delivered=s.delivered,
            failed_attempts=s.failed_attempts,
            pending=self.pending,
            dropped=s.dropped + s.superseded,
            last_error=s.last_error,
            last_error_at=s.last_error_at,
            last_delivered_at=s.last_delivered_at,
            dead_letter=self._dead,
            next_attempt_at=self.next_attempt_at,
        )

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self.outbox.run, fn)

    async def _store_incoming(self) -> None:
        batch = list(self._incoming)
        items = [
            outbox_store.NewItem(self.name, n.key, n.group_key, notification_json(n)) for n in batch
        ]
        at, until = self.wall(), self._retry_until
        replaced = await self._call(
            lambda db: outbox_store.enqueue(db, items, at=at, next_attempt_at=until)
        )
        # Storing is idempotent (by key): a cancelled call that went through is harmless.
        del self._incoming[: len(batch)]
        self.stats.superseded += replaced

    async def _refresh(self) -> None:
        counts = await self._call(lambda db: outbox_store.counts(db, self.name))
        mine = counts.get(self.name)
        self._waiting = mine.waiting if mine else 0
        self._dead = mine.dead if mine else 0
        self._next_attempt_at = mine.next_attempt_at if mine else None
        self.on_change()

    async def _run(self) -> None:
        started = False
        while True:
            try:
                if not started:
                    await self._start_up()
                    started = True
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store busy or failing must not end delivery
                pause = min(self.retry.cap, OUTBOX_RETRY_SECONDS)
                log.exception(
                    "receiver %s: outbox unavailable; retrying in %.0f s", self.name, pause
                )
                await asyncio.sleep(pause)

    async def _start_up(self) -> None:
        keep_after = self.wall() - DEAD_LETTER_KEEP
        await self._call(lambda db: outbox_store.prune_dead(db, keep_after))
        await self._refresh()
        if self._next_attempt_at is not None and self._next_attempt_at > self.wall():
            self._retry_until = self._next_attempt_at  # a previous run's back-off still holds
        if self._waiting:
            log.info(
                "receiver %s: %d notifications waiting from before, delivering",
                self.name,
                self._waiting,
            )

    async def _step(self) -> None:
        """Store what was handed over, then wait for the next try or make it."""
        self._wake.clear()
        if self._incoming:
            await self._store_incoming()
            await self._refresh()
        item = await self._call(self._next_waiting)
        if item is None:
            self._waiting = 0
            if not self._incoming:
                self._idle.set()
                await self._wake.wait()
            return
        wait = (item.next_attempt_at - self.wall()).total_seconds()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            return
        await self._attempt(item)
        await self._refresh()

    def _next_waiting(self, db: sqlite3.Connection) -> outbox_store.OutboxItem | None:
        return outbox_store.next_waiting(db, self.name)

    async def _attempt(self, item: outbox_store.OutboxItem) -> None:
        """Try one stored notification once, and record what happened."""
        at = self.wall()
        if self.max_age is not None and at - item.enqueued_at > self.max_age:
            error = f"given up: undelivered for more than {format_duration(self.max_age)}"
            await self._give_up(item, error, attempted=False)
            return
        try:
            notification = notification_from_json(item.payload)
            await self.delivery.send(notification)
        except DeliveryError as exc:
            self._record_error(str(exc))
            if not exc.retry:
                log.warning("receiver %s refused a notification (dead letter): %s", self.name, exc)
                await self._give_up(item, str(exc))
                return
            self._failures += 1
            delay = self.retry.delay(self._failures)
            self.stats.retry_in = delay
            until = self._retry_until = self.wall() + timedelta(seconds=delay)
            error = str(exc)
            attempts = await self._call(
                lambda db: outbox_store.mark_failed(
                    db, item.id, at=at, next_attempt_at=until, error=error
                )
            )
            if self.max_attempts and attempts >= self.max_attempts:
                log.warning("receiver %s: %s; gave up (dead letter)", self.name, exc)
                await self._give_up(
                    item, f"{exc} (gave up after {attempts} attempts)", attempted=False
                )
                return
            log.warning(
                "receiver %s: delivery failed (%s); retrying in %.1f s (%d undelivered)",
                self.name,
                exc,
                delay,
                self.pending,
            )
            return
        except Exception as exc:  # a bug (or an unreadable stored row) must not kill the worker
            log.exception("receiver %s: unexpected delivery error", self.name)
            self._record_error(f"{type(exc).__name__}: {exc}")
            await self._give_up(item, f"{type(exc).__name__}: {exc}")
            return
        self._failures = 0
        self._retry_until = None
        self.stats.retry_in = None
        self.stats.delivered += 1
        self.stats.last_delivered_at = self.now()
        await self._call(lambda db: outbox_store.mark_delivered(db, item.id))

    def _record_error(self, error: str) -> None:
        self.stats.failed_attempts += 1
        self.stats.last_error = error
        self.stats.last_error_at = self.now()

    async def _give_up(
        self, item: outbox_store.OutboxItem, error: str, *, attempted: bool = True
    ) -> None:
        at = self.wall()
        dead = await self._call(
            lambda db: outbox_store.mark_dead(db, item.id, at=at, error=error, attempted=attempted)
        )
        if dead:
            self.stats.dropped += 1
            self.stats.dead_letter += 1
            self.stats.last_error = error
            self.stats.last_error_at = self.now()


def build_delivery(
    config: ConsoleReceiverConfig | WebhookReceiverConfig | LogReceiverConfig,
    *,
    session: Callable[[], aiohttp.ClientSession],
    console: ConsoleSink | None,
) -> Delivery:
    """The delivery for one receiver configuration."""
    if isinstance(config, WebhookReceiverConfig):
        return WebhookDelivery(config, session)
    if isinstance(config, LogReceiverConfig):
        return LogDelivery(config.path)
    return ConsoleDelivery(console)
