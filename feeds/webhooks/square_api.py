"""Square's Orders and Refunds APIs: fetch what a notification lacks, keep it until then.

Square's ``order.created`` / ``order.updated`` notifications name an order but carry no
lines, and ``refund.created`` names a refund but no items.  ``serve`` keeps each such
notification durably (:mod:`store.pending`, through the store's single writer) *before*
answering Square's delivery, then :class:`SquareOrders` fetches:

* ``GET /v2/orders/{order_id}`` (``RetrieveOrder``) →
  :func:`~feeds.webhooks.square.map_square_order`;
* ``GET /v2/refunds/{refund_id}`` (``GetPaymentRefund``), then the order it names →
  :func:`~feeds.webhooks.square.map_square_refund`;

with ``Authorization: Bearer $OMNIOPS_SQUARE_ACCESS_TOKEN`` and ``Square-Version``
(:data:`SQUARE_VERSION`) against ``square_api_url`` (default
``https://connect.squareup.com``), and writes the canonical events through the writer.

What can go wrong, and what happens:

* Square unreachable (connection refused, timeout), ``429``, ``5xx``, or ``401``/``403``
  (a token to fix): the notification stays kept; the next attempt waits the back-off
  (:class:`rules.backoff.Backoff`, doubling up to ``cap``) or ``Retry-After`` when Square
  sends a longer one; until then no other kept notification is tried either.  It is
  retried until it works, never dropped, and at once after a restart (the kept rows are
  in the store).  The feed ``square:orders-api`` (``/health``, the feeds
  view) says how many are kept, since when, and the last error.
* ``404`` (no such order or refund), another ``4xx``, or a body that cannot be read: the
  notification is quarantined with the reason, not retried.
* No token: a configuration error naming ``OMNIOPS_SQUARE_ACCESS_TOKEN`` is logged and
  shown on the feed; notifications are still kept and are fetched once ``serve`` restarts
  with the token.

Edits: Square's ``Order`` holds its lines as they are at its ``version``, not as placed.
When a fetched order's lines (SKU, quantity, unit price, discount, as mapped) are not the
lines the store holds for the placed order, the fetch also writes an ``order.edited``
(``square:order:S:edited:v<version>``, ``ts`` = ``updated_at``); the same lines write
nothing more, so an ``order.updated`` for a payment or a fulfillment adds no event.

Applied exactly once: the events' ids come from the Square ids (``square:order:S:placed``),
so a re-fetch after ``order.updated``, a redelivered notification or a retry after a
crash between the commit and the removal of the kept row is a duplicate in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import SecretStr, ValidationError

from feeds.base import FeedState
from feeds.stream import FeedMonitor
from feeds.webhooks import JsonObject, Mapped, PayloadError
from feeds.webhooks.mapping import SquareMapping
from feeds.webhooks.redact import redact_raw
from feeds.webhooks.square import SOURCE, edit_of, map_square_order, map_square_refund
from rules.backoff import Backoff
from rules.errors import describe_validation_error
from store import pending
from store.apply import Outcome, cents
from store.clock import Clock, SystemClock
from store.model import OrderPlaced, Quarantined
from store.writer import StoreWriter

log = logging.getLogger("omniops.square")

SQUARE_VERSION = "2025-08-20"
"""The ``Square-Version`` header sent (the API version the mapping is written against)."""
DEFAULT_API_URL = "https://connect.squareup.com"
TOKEN_VARIABLE = "OMNIOPS_SQUARE_ACCESS_TOKEN"
ENRICHED = ("order.created", "order.updated", "refund.created")
"""Notification types fetched from the API (the others map from their payload alone)."""
FEED = "square:orders-api"
"""Feed name of the enrichment in ``/health`` and the feeds view."""


class SquareError(Exception):
    """A fetch from Square that did not give a usable body."""


class SquareUnavailable(SquareError):
    """Try again later: Square unreachable, rate-limited, failing, or refusing the token."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SquareRefused(SquareError):
    """Square answered for good (404, another 4xx): retrying cannot help."""


class SquareConfigError(SquareError):
    """``serve`` cannot call Square: the access token is not set."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def _token(token: SecretStr | None) -> str | None:
    value = token.get_secret_value().strip() if token is not None else ""
    return value or None


class SquareApi:
    """A small aiohttp client of the two Square endpoints ``serve`` needs."""

    def __init__(
        self,
        base_url: str = DEFAULT_API_URL,
        token: SecretStr | None = None,
        *,
        timeout: float = 10.0,
        version: str = SQUARE_VERSION,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.version = version
        self._session: aiohttp.ClientSession | None = None

    @property
    def configured(self) -> bool:
        """Whether an access token is set (non-blank)."""
        return _token(self.token) is not None

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, what: str) -> JsonObject:
        """``GET path``: the decoded body of a 200, else the :class:`SquareError` it means."""
        token = _token(self.token)
        if token is None:
            raise SquareConfigError(
                f"{TOKEN_VARIABLE} is not set (or blank): Square notifications are kept until it is"
            )
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        headers = {
            "Authorization": f"Bearer {token}",
            "Square-Version": self.version,
            "Accept": "application/json",
        }
        url = f"{self.base_url}{path}"
        try:
            async with self._session.get(url, headers=headers) as resp:
                status = resp.status
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SquareUnavailable(
                f"Square unreachable fetching {what}: {type(exc).__name__}: {exc}"
            ) from exc
        if status == 200:
            try:
                body = json.loads(text)
            except ValueError as exc:
                raise SquareRefused(
                    f"{what}: Square answered 200 with a body that is not JSON"
                ) from exc
            if not isinstance(body, dict):
                raise SquareRefused(f"{what}: Square answered 200 with a non-object body")
            return body
        detail = _error_detail(text)
        if status == 429 or status >= 500:
            raise SquareUnavailable(f"Square answered {status} for {what}{detail}", retry_after)
        if status in (401, 403):
            raise SquareUnavailable(
                f"Square refused the access token ({status}) for {what}{detail}: "
                f"check {TOKEN_VARIABLE} and its ORDERS_READ / PAYMENTS_READ permissions",
                retry_after,
            )
        if status == 404:
            raise SquareRefused(f"{what} not found in Square (404){detail}")
        raise SquareRefused(f"Square answered {status} for {what}{detail}")

    async def retrieve_order(self, order_id: str) -> JsonObject:
        """``GET /v2/orders/{order_id}``: the ``Order``."""
        what = f"order {order_id}"
        body = await self.get(f"/v2/orders/{_quote(order_id)}", what)
        order = body.get("order")
        if not isinstance(order, dict):
            raise SquareRefused(f"{what}: Square's answer has no order object")
        if order.get("id") not in (None, order_id):
            raise SquareRefused(f"{what}: Square answered with order {order.get('id')!r}")
        return order

    async def get_refund(self, refund_id: str) -> JsonObject:
        """``GET /v2/refunds/{refund_id}``: the ``PaymentRefund``."""
        what = f"refund {refund_id}"
        body = await self.get(f"/v2/refunds/{_quote(refund_id)}", what)
        refund = body.get("refund")
        if not isinstance(refund, dict):
            raise SquareRefused(f"{what}: Square's answer has no refund object")
        return refund


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _error_detail(text: str) -> str:
    """``: NOT_FOUND (Order not found)`` from Square's ``errors`` array, if there is one."""
    try:
        errors = json.loads(text).get("errors")
        first = errors[0]
        return f": {first.get('code', '?')} ({str(first.get('detail', ''))[:200]})"
    except (ValueError, AttributeError, IndexError, KeyError, TypeError):
        return ""


@dataclass(frozen=True)
class Notification:
    """What a kept Square notification asks for: its type, its key, the object's id."""

    kind: str
    key: str
    object_id: str


def enrichment_of(payload: Any) -> Notification | None:
    """The fetch a Square notification needs, or None (it maps from its payload alone)."""
    if not isinstance(payload, dict):
        return None
    kind, key = payload.get("type"), payload.get("event_id")
    if kind not in ENRICHED or not isinstance(key, str) or not key:
        return None
    data = payload.get("data")
    data = data if isinstance(data, dict) else {}
    body = data.get("object")
    body = body if isinstance(body, dict) else {}
    if kind == "refund.created":
        refund = body.get("refund")
        object_id = refund.get("id") if isinstance(refund, dict) else None
    else:
        if isinstance(body.get("order"), dict):
            return None  # a relay already enriched it: mapped from the payload
        summary = body.get("order_created" if kind == "order.created" else "order_updated")
        object_id = summary.get("order_id") if isinstance(summary, dict) else None
    object_id = object_id or data.get("id")
    if not isinstance(object_id, str) or not object_id:
        return None
    return Notification(kind, key, object_id)


class SquareOrders:
    """Keeps Square notifications that need a fetch, fetches them, writes what they became."""

    def __init__(
        self,
        writer: StoreWriter,
        api: SquareApi,
        mapping: Callable[[], SquareMapping],
        *,
        clock: Clock | None = None,
        monitor: FeedMonitor | None = None,
        backoff: Backoff | None = None,
        on_outcomes: Callable[[list[Outcome]], None] | None = None,
        on_kept: Callable[[Mapped, bytes, str], Awaitable[None]] | None = None,
    ) -> None:
        self.writer = writer
        self.on_outcomes = on_outcomes
        """Told the outcomes of every write (``serve`` counts them in ``/metrics``)."""
        self.on_kept = on_kept
        """Told what a fetch became when it quarantined or carried an unmapped id, with the
        notification (the fetched order inside) and its key, after the write: ``serve``
        holds it for ``omniops quarantine replay`` like any webhook delivery."""
        self.summary = pending.PendingSummary(SOURCE, 0, None, "", None, 0)
        """The kept notifications as of the last pass."""
        self.api = api
        self.mapping = mapping
        self.clock: Clock = clock or SystemClock()
        self.monitor = monitor or FeedMonitor(FEED, "enrichment", clock=self.clock)
        self.backoff = backoff or Backoff(base=2.0, cap=300.0, jitter=False)
        """Delay after the n-th failed attempt of one notification (at least 1 s)."""
        self._wake = asyncio.Event()
        self._active = False
        """Set once a notification was kept or tried: until then the feed stays ``starting``."""
        self._hold_until = 0.0
        """Square said it is unavailable: no attempt before this time (epoch seconds)."""
        self.applied = 0
        self.quarantined = 0

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    async def keep(self, body: bytes) -> Notification | None:
        """Keep an authentic notification if it needs a fetch; durable when this returns."""
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        wanted = enrichment_of(payload)
        if wanted is None:
            return None
        raw = body.decode("utf-8")
        now = self._now()
        await self.writer.run(
            lambda db: pending.keep(db, SOURCE, wanted.key, wanted.kind, raw, now)
        )
        self._active = True
        self._wake.set()
        return wanted

    async def run(self, stop: asyncio.Event) -> None:
        """Work through the kept notifications until ``stop`` is set (kept ones first)."""
        if not self.api.configured:
            message = f"{TOKEN_VARIABLE} is not set (or blank): Square orders are kept, not fetched"
            log.error("%s (set it and restart serve)", message)
        first = True
        while not stop.is_set():
            wait = 60.0
            self._wake.clear()  # before the pass: a notification kept during it wakes the wait
            try:
                # After a (re)start every kept notification is tried at once, whatever its
                # back-off said; then each waits its own delay.
                await self.run_due(all_kept=first)
                first = False
                await self._refresh_health()
                next_at = await self.writer.run(lambda db: pending.next_due(db, SOURCE))
                if self.api.configured and next_at is not None:
                    wait = max(0.0, max(next_at, self._hold_until) - self.clock.now().timestamp())
            except Exception:  # the store failing: keep the rows, try again shortly
                log.exception("Square notifications: a pass failed; trying again in 5 s")
                wait = 5.0
            stopper = asyncio.ensure_future(stop.wait())
            waker = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({stopper, waker}, timeout=wait, return_when="FIRST_COMPLETED")
            finally:
                stopper.cancel()
                waker.cancel()

    async def run_due(self, *, all_kept: bool = False) -> int:
        """One pass over the notifications due now (every kept one with ``all_kept``).

        Returns how many were resolved (stored, or quarantined).
        """
        now = self._now()
        if not all_kept and self.clock.now().timestamp() < self._hold_until:
            return 0
        until = 2**62 if all_kept else now
        rows = await self.writer.run(lambda db: pending.due(db, SOURCE, until, limit=500))
        if not rows:
            return 0
        self._active = True
        if not self.api.configured:
            message = f"{TOKEN_VARIABLE} is not set (or blank): set it and restart serve"
            await self.writer.run(lambda db: pending.note_error(db, SOURCE, message, now))
            return 0
        resolved = 0
        for row in rows:
            resolved += await self._attempt(row)
            if self.clock.now().timestamp() < self._hold_until:
                break  # Square is unavailable: the others wait too, they are not tried
        return resolved

    async def _attempt(self, row: pending.Pending) -> int:
        now = self._now()
        body = row.body.encode("utf-8")
        try:
            mapped, body = await self._fetch_and_map(row)
        except SquareUnavailable as exc:
            delay = max(1.0, self.backoff.delay(row.attempts + 1), exc.retry_after or 0.0)
            retry_at = math.ceil(self.clock.now().timestamp() + delay)
            log.warning("Square %s %s kept: %s; retrying in %.0f s", row.kind, row.key, exc, delay)
            error = str(exc)
            await self.writer.run(
                lambda db: pending.record_failure(db, row.id, error, now, retry_at)
            )
            self.monitor.health.errors += 1
            self._hold_until = max(self._hold_until, float(retry_at))
            return 0
        except SquareConfigError as exc:
            error = str(exc)
            await self.writer.run(lambda db: pending.note_error(db, SOURCE, error, now))
            return 0
        except Exception as exc:  # 404, another 4xx, a body the mapping cannot read
            if isinstance(exc, ValidationError):
                reason = describe_validation_error(exc)
            elif isinstance(exc, SquareRefused | PayloadError):
                reason = str(exc)
            else:
                log.exception("Square %s %s could not be mapped", row.kind, row.key)
                reason = f"could not map Square's answer ({type(exc).__name__}: {exc})"
            mapped = Mapped(
                items=[
                    Quarantined(
                        source=SOURCE,
                        raw=redact_raw(row.body.encode("utf-8")),
                        error=f"square: {row.kind} {row.key}: {reason}",
                    )
                ]
            )
        outcomes = await self.writer.write_many(mapped.items)
        if self.on_kept is not None and (
            mapped.unmapped or any(isinstance(item, Quarantined) for item in mapped.items)
        ):
            try:
                await self.on_kept(mapped, body, row.key)
            except Exception:  # the events are durable; only the replay copy is missing
                log.exception("Square %s %s: could not keep it for a replay", row.kind, row.key)
        for note in mapped.ignored:
            log.info("Square %s %s: %s", row.kind, row.key, note)
        self.monitor.record(outcomes)
        if self.on_outcomes is not None:
            self.on_outcomes(outcomes)
        self.applied += outcomes.count("applied")
        self.quarantined += outcomes.count("quarantined")
        await self.writer.run(lambda db: pending.resolve(db, row.id))
        return 1

    async def _fetch_and_map(self, row: pending.Pending) -> tuple[Mapped, bytes]:
        """What the kept notification became, and the body to keep for a replay."""
        wanted = enrichment_of(json.loads(row.body))
        if wanted is None:
            raise SquareRefused("the kept notification names no order or refund")
        mapping = self.mapping()
        if wanted.kind == "refund.created":
            refund = await self.api.get_refund(wanted.object_id)
            order_id = refund.get("order_id")
            order = None
            if isinstance(order_id, str) and order_id:
                try:
                    order = await self.api.retrieve_order(order_id)
                except SquareRefused as exc:
                    log.info("refund %s: its order is not readable: %s", wanted.object_id, exc)
            return map_square_refund(refund, order, mapping), row.body.encode("utf-8")
        order = await self.api.retrieve_order(wanted.object_id)
        mapped = map_square_order(order, mapping)
        body = row.body.encode("utf-8")
        await self._edit(order, mapped)
        if mapped.unmapped or any(isinstance(item, Quarantined) for item in mapped.items):
            # Quarantine the notification with the order inside (the shape a relay sends,
            # ``data.object.order``), so a replay after a mapping fix needs no fetch.
            enriched = json.loads(row.body)
            enriched.setdefault("data", {}).setdefault("object", {})["order"] = order
            body = json.dumps(enriched).encode("utf-8")
            raw = redact_raw(body)
            mapped.items = [
                Quarantined(source=i.source, raw=raw, error=i.error)
                if isinstance(i, Quarantined)
                else i
                for i in mapped.items
            ]
        return mapped, body

    async def _edit(self, order: JsonObject, mapped: Mapped) -> None:
        """Add an ``order.edited`` when the fetched order's lines are not the stored ones.

        Square's ``Order`` has no lines as placed, only as they are at its ``version``: so
        the fetched lines are compared with the lines the store holds for the order (its
        placement's, or its latest edit's); different, they are an edit at ``updated_at``.
        An order not placed yet in the store is placed with these lines (nothing to edit).
        """
        placements = [item for item in mapped.items if isinstance(item, OrderPlaced)]
        if len(placements) != 1 or any(isinstance(i, Quarantined) for i in mapped.items):
            return
        placed = placements[0]
        stored = await self.writer.run(lambda db: stored_lines(db, placed.body.order_id))
        fetched = [
            (line.sku, line.quantity, cents(line.unit_price), cents(line.discount))
            for line in placed.body.lines
        ]
        if stored is None or stored == fetched:
            return
        edit = edit_of(order, placed)
        if edit is not None:
            mapped.items.append(edit)

    async def _refresh_health(self) -> None:
        summary = self.summary = await self.writer.run(
            lambda db: pending.pending_summary(db, SOURCE)
        )
        health = self.monitor.health
        if not self.api.configured:
            health.state = FeedState.FAILED
            health.detail = (
                f"{TOKEN_VARIABLE} is not set (or blank): "
                f"{summary.count} Square notification(s) kept"
            )
        elif summary.count and summary.attempts:
            health.state = FeedState.RETRYING
            health.detail = describe_pending(summary, self._now())
        elif self._active:
            health.state = FeedState.CONNECTED
            health.detail = describe_pending(summary, self._now()) if summary.count else ""

    def gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        """``/metrics`` gauges: notifications kept, and the age of the oldest."""
        summary = self.summary
        age = 0.0
        if summary.oldest_received_at is not None:
            age = max(0.0, self.clock.now().timestamp() - summary.oldest_received_at)
        labels = {"source": SOURCE}
        return [
            (
                "omniops_pending_webhooks",
                "Notifications kept until the vendor's API answers.",
                labels,
                float(summary.count),
            ),
            (
                "omniops_pending_oldest_age_seconds",
                "Age of the oldest kept notification (0 when none).",
                labels,
                round(age, 1),
            ),
        ]

    async def close(self) -> None:
        """Close the API client."""
        await self.api.close()


def stored_lines(db: sqlite3.Connection, order_id: str) -> list[tuple[str, int, int, int]] | None:
    """The lines the store holds for a placed order, or None when it is not placed there.

    SKU, quantity, unit price and discount in cents, in line order.
    """
    placed = db.execute(
        "SELECT 1 FROM orders WHERE order_id = ? AND has_order = 1", (order_id,)
    ).fetchone()
    if placed is None:
        return None
    return [
        (str(sku), int(qty), int(price), int(off))
        for sku, qty, price, off in db.execute(
            "SELECT sku, quantity, unit_price_cents, discount_cents FROM order_lines"
            " WHERE order_id = ? ORDER BY line_no",
            (order_id,),
        )
    ]


def describe_pending(summary: pending.PendingSummary, now: int) -> str:
    """``2 Square notifications kept (oldest 3 min); last error: ...`` for the feeds view."""
    if not summary.count:
        return "no Square notification kept"
    age = now - (summary.oldest_received_at or now)
    if age < 120:
        ago = f"{age} s"
    elif age < 7200:
        ago = f"{age // 60} min"
    else:
        ago = f"{age // 3600} h"
    plural = "" if summary.count == 1 else "s"
    text = f"{summary.count} Square notification{plural} kept (oldest {ago})"
    return f"{text}; last error: {summary.last_error}" if summary.last_error else text


__all__ = [
    "DEFAULT_API_URL",
    "ENRICHED",
    "FEED",
    "SQUARE_VERSION",
    "TOKEN_VARIABLE",
    "Notification",
    "SquareApi",
    "SquareConfigError",
    "SquareError",
    "SquareOrders",
    "SquareRefused",
    "SquareUnavailable",
    "describe_pending",
    "enrichment_of",
    "retry_after_seconds",
]
