"""The routing HTTP endpoint of ``omniops serve``: ``POST /route`` and ``GET /route/{order_id}``.

``POST /route`` takes either an order or a BOPIS availability check and returns the
routing decision with its trace, as JSON, **without reserving anything**:

* an order: ``{"destination_region": "northeast", "method": "ship", "lines": [{"sku":
  "APP-0001", "quantity": 2}], ...}``, the fields of :class:`rules.routing.orders.RouteOrder`
  (``order_id``, ``channel``, ``method``, ``destination_region``, ``location_id``,
  ``promised_by``, ``lines``) plus an optional ``at`` (ISO time to route for; default now);
* a BOPIS check: ``{"location_id": "ST-NYC", "cart": [{"sku": "APP-0001", "quantity":
  1}]}`` (optional ``destination_region``, default the store's region, and ``at``): can
  this store (or the next nearest ones) have the cart ready, and when; else ship-to-home.

Answers: 200 with the decision (whatever its status: routed, held, unfulfillable);
400 ``{"error", "field"}`` for a body that is not JSON (or nested deeper than 64 levels)
or fails validation (``field`` is
the dotted path of the first bad field, e.g. ``lines.0.quantity``); 422 for an unknown
SKU (``field`` names the line) or an unknown pickup location.

``GET /route/{order_id}`` returns the stored decision of an order (404 if none), as it
was decided; for an order edited since (``order.edited``) it adds ``edited_at`` (the
latest edit's time) and ``current_lines`` (``[{"line_no", "sku", "quantity",
"location_id"}]``: the lines as they stand, each at the node holding it, which is where
the router's reservations follow an edit).  An edit does not re-route the order.

Within ``omniops serve`` both need ``Authorization: Bearer $OMNIOPS_API_TOKEN`` when that
is set (401 without it); see :mod:`feeds.runtime.http.auth`.

Where the work runs: the routing is CPU-bound Python, so a second thread adds no throughput
(the GIL) and costs a hand-off per request (measured: more than the routing itself).  The
handler therefore reads and routes on the event loop's thread, with a read that never
waits: one indexed statement over a WAL snapshot (readers take no lock a writer holds) on a
connection whose busy timeout is 0.  Whatever would wait (a lock, today's node-load
recount every ``load_ttl`` seconds, a store not yet there) goes to the endpoint's one worker
thread instead (:class:`feeds.runtime.routing.WouldBlock`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from aiohttp import web
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)

from feeds.runtime.routing import WouldBlock
from feeds.webhooks.bounded import MAX_DEPTH, MAX_STRINGS, ShapeError
from feeds.webhooks.bounded import loads as bounded_loads
from rules.routing.config import FulfillmentRouting
from rules.routing.orders import Decision, Inventory, RouteLine, RouteOrder, trusted
from rules.routing.router import route
from store.clock import Clock
from store.model import Identifier, LocationBody


class RoutingSource(Protocol):
    """Where the endpoint reads stock, nodes and stored decisions (blocking calls)."""

    def inputs(
        self, skus: Collection[str], now: datetime, *, wait: bool = True
    ) -> tuple[Inventory, list[LocationBody]]:
        """Stock view for ``skus`` and every node, at ``now``.

        ``wait=False`` is the event loop's call: raise :class:`WouldBlock` rather than wait.
        """
        ...

    def decision(self, order_id: str) -> Decision | None:
        """The stored decision of an order, or None."""
        ...


ROUTABLE = (datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))
"""Moments ``at`` may name: a week on either side stays within the calendar's range."""


def _routable(at: datetime | None) -> datetime | None:
    if at is not None and not ROUTABLE[0] <= at < ROUTABLE[1]:
        raise ValueError(f"outside the routable range (1970 to 2199): {at.isoformat()}")
    return at


RoutableAt = Annotated[AwareDatetime | None, AfterValidator(_routable)]
"""``at`` of a request: an aware moment within :data:`ROUTABLE`."""


class RouteRequest(RouteOrder):
    """``POST /route`` with an order."""

    at: RoutableAt = None
    """Route as of this moment (default: the server clock's now)."""


class AvailabilityRequest(BaseModel):
    """``POST /route`` with a cart and a pickup store (a BOPIS availability check)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    location_id: Identifier
    cart: list[RouteLine] = Field(min_length=1, max_length=500)
    destination_region: Identifier | None = None
    channel: Identifier = "web"
    at: RoutableAt = None


_DECISION_JSON = Decision.__pydantic_serializer__.to_json
"""pydantic-core's serialiser of a decision straight to JSON bytes (no dict in between)."""


_CHECK_JSON = AvailabilityRequest.__pydantic_validator__.validate_json
_ORDER_JSON = RouteRequest.__pydantic_validator__.validate_json


def _fast_parse(raw: bytes) -> tuple[AvailabilityRequest | None, RouteRequest | None]:
    """The request validated by pydantic-core straight from the bytes (no dict in between).

    Only a body that cannot break a bound of :func:`~feeds.webhooks.bounded.loads` and is
    valid UTF-8; a cart check when the body holds ``"cart"`` (else an order).  Whatever
    fails here (bad JSON, a lone surrogate, a guess that was wrong, a validation error)
    raises, and the caller goes the full way (``bounded_loads``, then ``model_validate``),
    which words the answer;
    what passes here passes there with the same values (pydantic's JSON and Python modes
    agree on the JSON types).
    """
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH or raw.count(b'"') > 2 * MAX_STRINGS:
        return None, None
    raw.decode("utf-8")  # json.loads sees text: a body that is not UTF-8 is refused there
    if b'"cart"' in raw:
        check: AvailabilityRequest = _CHECK_JSON(raw)
        return check, None
    req: RouteRequest = _ORDER_JSON(raw)
    return None, req


def _with_reserved(decision_json: bytes) -> bytes:
    """The decision's JSON object with ``"reserved": false`` appended (a check reserves nothing)."""
    return decision_json[:-1] + b',"reserved":false}'


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str, field: str | None, **extra: Any) -> web.Response:
    body = {"error": message, "field": field, **extra}
    return web.json_response(body, status=status)


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _validation_error(exc: ValidationError) -> web.Response:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    field = _field(tuple(first["loc"]))
    return _error(
        400,
        f"{field}: {first['msg']}",
        field,
        errors=[{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in errors],
    )


def add_routes(
    app: web.Application,
    *,
    source: RoutingSource,
    rules: Callable[[], FulfillmentRouting],
    clock: Clock,
    prefix: str = "",
    body_timeout: float = 30.0,
) -> None:
    """Mount ``POST {prefix}/route`` and ``GET {prefix}/route/{order_id}`` on ``app``.

    Args:
        app: The serve process's application (or a test's).
        source: Reads of the store, e.g. :class:`feeds.runtime.routing.StoreRoutingSource`;
            called on the loop with ``wait=False``, then in the worker thread if it raised
            :class:`WouldBlock`.  If it has a ``close()``, it is called on cleanup.
        rules: Returns the ``[fulfillment]`` rules in force (the hot-reloaded ones).
        clock: "Now" when a request gives no ``at``.
        prefix: Path prefix, e.g. ``/api``.
        body_timeout: Seconds a request body may take to arrive (then 408).
    """
    # One worker thread for what would wait (see the module docstring): the work is
    # CPU-bound Python, so more threads would only contend for the GIL.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="route")

    async def post_route(request: web.Request) -> web.Response:
        try:
            if request.content.is_eof():  # the whole body came with the headers: no timer
                raw = await request.read()
            else:
                async with asyncio.timeout(body_timeout):
                    raw = await request.read()
        except TimeoutError:
            return _error(408, f"body not received within {body_timeout:g} s", "body")
        check: AvailabilityRequest | None = None
        req: RouteRequest | None = None
        try:  # noqa: SIM105 (a try costs nothing when nothing is raised; suppress() does)
            check, req = _fast_parse(raw)
        except (ValidationError, UnicodeDecodeError):
            pass  # answered below, as the full path words it
        if check is None and req is None:
            try:
                data = bounded_loads(raw)
            except ShapeError as exc:
                return _error(400, exc.message, "body")
            except ValueError as exc:  # not UTF-8, not JSON, an integer of 4,300+ digits
                return _error(400, f"body is not valid JSON: {exc}", "body")
            if not isinstance(data, dict):
                return _error(400, "body must be a JSON object", "body")
            try:
                if "cart" in data:
                    check = AvailabilityRequest.model_validate(data)
                else:
                    req = RouteRequest.model_validate(data)
            except ValidationError as exc:
                return _validation_error(exc)
        if check is not None:
            at = check.at
            skus = [line.sku for line in check.cart]
            lines_field = "cart"
        else:
            assert req is not None
            at = req.at
            skus = [line.sku for line in req.lines]
            lines_field = "lines"
        now = at or clock.now()
        current = rules()

        def decide(wait: bool) -> web.Response:
            inventory, nodes = source.inputs(skus, now, wait=wait)
            for n, sku in enumerate(skus):
                if sku not in inventory.skus:
                    return _error(422, f"unknown SKU {sku!r}", f"{lines_field}.{n}.sku", sku=sku)
            if check is not None:
                store = next((n for n in nodes if n.location_id == check.location_id), None)
                if store is None or store.kind != "store":
                    what = "unknown location" if store is None else f"{store.kind}, not a store"
                    return _error(
                        422,
                        f"{what}: {check.location_id!r}",
                        "location_id",
                        location=check.location_id,
                    )
                # Every value is already valid (the check was validated): not again.
                order = trusted(
                    RouteOrder,
                    order_id="availability-check",
                    channel=check.channel,
                    method="bopis",
                    destination_region=check.destination_region or store.region,
                    location_id=check.location_id,
                    lines=check.cart,
                )
            else:
                assert req is not None
                order = req  # a RouteRequest is a RouteOrder (its ``at`` is not routed on)
            decision = route(order, inventory, nodes, current, now)
            return _json(_with_reserved(_DECISION_JSON(decision)))

        try:
            try:
                return decide(False)  # on the loop: see the module docstring
            except WouldBlock:
                return await asyncio.get_running_loop().run_in_executor(pool, decide, True)
        except FileNotFoundError as exc:
            return _error(503, f"store not available: {exc}", None)

    async def get_route(request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        lines_of = getattr(source, "edited_lines", None)

        def look_up() -> tuple[Decision | None, Any]:
            decision = source.decision(order_id)
            if decision is None or not callable(lines_of):
                return decision, None
            return decision, lines_of(order_id)

        try:  # one hop to a thread for both reads
            decision, edited = await asyncio.to_thread(look_up)
        except FileNotFoundError as exc:
            return _error(503, f"store not available: {exc}", None)
        if decision is None:
            return _error(404, f"no routing decision for order {order_id!r}", "order_id")
        answer = _DECISION_JSON(decision)
        if edited is not None:
            at, lines = edited
            extra = {
                "edited_at": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
                "current_lines": [
                    {"line_no": n, "sku": sku, "quantity": qty, "location_id": node}
                    for n, sku, qty, node in lines
                ],
            }
            answer = answer[:-1] + b"," + json.dumps(extra, separators=(",", ":"))[1:].encode()
        return _json(answer)

    app.router.add_post(f"{prefix}/route", post_route)
    app.router.add_get(f"{prefix}/route/{{order_id}}", get_route)
    close = getattr(source, "close", None)
    if callable(close):

        async def _close(_: web.Application) -> None:
            pool.shutdown(wait=True)
            close()

        app.on_cleanup.append(_close)


def make_app(
    *, source: RoutingSource, rules: Callable[[], FulfillmentRouting], clock: Clock
) -> web.Application:
    """A standalone application with only the routing endpoint (tests, the benchmark)."""
    app = web.Application()
    add_routes(app, source=source, rules=rules, clock=clock)
    return app
