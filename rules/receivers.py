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

Each receiver has its own queue and delivery task (:class:`ReceiverWorker`), so one that is
down delays only itself.  A failed delivery is retried with exponential back-off for as long
as it takes; while it waits, a newer notification for the same alert group replaces the
queued one (it carries the current state), which keeps the queue bounded.  Refusals that
retrying cannot fix (HTTP 4xx other than 408/429) are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from rules.backoff import Backoff
from rules.labels import Duration, labels_text
from store.alerts import ReceiverStatus

log = logging.getLogger(__name__)

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
        url = self.config.url
        timeout = aiohttp.ClientTimeout(total=self.config.timeout.total_seconds())
        try:
            async with self._session().post(
                url,
                json=self.payload(notification),
                headers=self.config.headers,
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


@dataclass
class ReceiverWorker:
    """One receiver's queue and delivery task."""

    name: str
    delivery: Delivery
    retry: Backoff
    now: Callable[[], datetime]
    on_change: Callable[[], None] = lambda: None
    stats: ReceiverStats = field(default_factory=ReceiverStats)
    _queue: OrderedDict[str, Notification] = field(default_factory=OrderedDict)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def pending(self) -> int:
        """Notifications waiting to be delivered."""
        return len(self._queue)

    def enqueue(self, notification: Notification) -> None:
        """Queue ``notification``, replacing an undelivered one for the same group."""
        if notification.group_key in self._queue:
            self.stats.superseded += 1
        self._queue[notification.group_key] = notification
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        """Start the delivery task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"receiver:{self.name}")

    async def stop(self) -> None:
        """Stop delivering (undelivered notifications are dropped with the process)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_idle(self) -> None:
        """Until the queue is empty."""
        await self._idle.wait()

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
        )

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            key, notification = next(iter(self._queue.items()))
            try:
                await self.delivery.send(notification)
            except DeliveryError as exc:
                self.stats.failed_attempts += 1
                self.stats.last_error = str(exc)
                self.stats.last_error_at = self.now()
                if not exc.retry:
                    log.warning("receiver %s refused a notification, dropped: %s", self.name, exc)
                    self._pop_if_same(key, notification)
                    self.stats.dropped += 1
                    attempt = 0
                    self.on_change()
                    continue
                attempt += 1
                delay = self.retry.delay(attempt)
                self.stats.retry_in = delay
                log.warning(
                    "receiver %s: delivery failed (%s); retrying in %.1f s (%d undelivered)",
                    self.name,
                    exc,
                    delay,
                    self.pending,
                )
                self.on_change()
                await asyncio.sleep(delay)
                continue
            except Exception as exc:  # a bug in a delivery must not kill the worker
                log.exception("receiver %s: unexpected delivery error", self.name)
                self.stats.failed_attempts += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self._pop_if_same(key, notification)
                self.stats.dropped += 1
                self.on_change()
                continue
            attempt = 0
            self.stats.retry_in = None
            self.stats.delivered += 1
            self.stats.last_delivered_at = self.now()
            self._pop_if_same(key, notification)
            self.on_change()

    def _pop_if_same(self, key: str, notification: Notification) -> None:
        # A newer notification for the group may have replaced this one during the send.
        if self._queue.get(key) is notification:
            del self._queue[key]


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
