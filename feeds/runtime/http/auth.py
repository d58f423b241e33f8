"""Authentication of ``serve``'s endpoints, and which configured secrets are unusable.

A secret or token that is **empty or only whitespace** is a configuration error, never a
key: the endpoint stays off and answers **503** naming the variable, exactly as if it were
unset (an empty HMAC key would let anyone sign, an empty bearer token would match
``Authorization: Bearer``).  :func:`secret_problems` lists these for the log at start,
and warns about secrets shorter than :data:`MIN_SECRET_LENGTH` characters.

Webhooks are checked by their vendor's signature over the raw body
(:mod:`feeds.webhooks.signatures`); ``/events`` and the Amazon relay by a bearer token.
The read endpoints (``GET /health``, ``GET /metrics``, ``POST /route``,
``GET /route/{order_id}``) are open unless ``OMNIOPS_API_TOKEN`` is set; then they need
``Authorization: Bearer <token>`` (:func:`read_guard`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from pydantic import SecretStr

from feeds.settings import ServeConfig
from feeds.webhooks.signatures import (
    verify_bearer,
    verify_easypost,
    verify_shopify,
    verify_square,
)

MIN_SECRET_LENGTH = 16
"""Secrets and tokens shorter than this are accepted but warned about at start."""

NOT_CONFIGURED = "not configured: "
"""Prefix of an authentication answer that means 503 (the endpoint is off), not 401."""


def usable(secret: SecretStr | None) -> str | None:
    """The secret's value, or None when it is unset, empty or only whitespace."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    return value if value.strip() else None


def _unset(variable: str, secret: SecretStr | None) -> str:
    if secret is None:
        return f"{NOT_CONFIGURED}set {variable}"
    return f"{NOT_CONFIGURED}{variable} is empty; set it to the secret (an empty key is no key)"


@dataclass(frozen=True)
class SecretProblem:
    """One configured secret that is unusable (``error``) or weak (``warning``)."""

    variable: str
    level: str
    """``error`` (the endpoint is off) or ``warning`` (it works, but the secret is short)."""
    message: str


SECRETS: tuple[tuple[str, str, str], ...] = (
    ("shopify_webhook_secret", "OMNIOPS_SHOPIFY_WEBHOOK_SECRET", "/webhooks/shopify"),
    (
        "shopify_webhook_secret_previous",
        "OMNIOPS_SHOPIFY_WEBHOOK_SECRET_PREVIOUS",
        "the previous Shopify secret",
    ),
    ("square_signature_key", "OMNIOPS_SQUARE_SIGNATURE_KEY", "/webhooks/square"),
    ("easypost_webhook_secret", "OMNIOPS_EASYPOST_WEBHOOK_SECRET", "/webhooks/easypost"),
    ("amazon_relay_token", "OMNIOPS_AMAZON_RELAY_TOKEN", "/webhooks/amazon"),
    ("events_token", "OMNIOPS_EVENTS_TOKEN", "POST /events"),
    ("api_token", "OMNIOPS_API_TOKEN", "the read endpoints (/health, /metrics, /route)"),
)
"""``(config field, environment variable, what it guards)`` of every inbound secret."""


def secret_problems(config: ServeConfig) -> list[SecretProblem]:
    """Every set secret that is empty or blank (an error) or short (a warning), for the log."""
    problems: list[SecretProblem] = []
    for name, variable, guards in SECRETS:
        secret: SecretStr | None = getattr(config, name, None)
        if secret is None:
            continue
        value = usable(secret)
        if value is None:
            problems.append(
                SecretProblem(
                    variable,
                    "error",
                    f"{variable} is set but empty or blank: {guards} stays off "
                    "(answers 503) until it holds a real secret",
                )
            )
        elif len(value.strip()) < MIN_SECRET_LENGTH:
            problems.append(
                SecretProblem(
                    variable,
                    "warning",
                    f"{variable} is only {len(value.strip())} characters: use at least "
                    f"{MIN_SECRET_LENGTH} random characters for {guards}",
                )
            )
    for kind, subscriptions in (("stream", config.streams), ("poll", config.polls)):
        for sub in subscriptions:
            if sub.token is not None and usable(sub.token) is None:
                problems.append(
                    SecretProblem(
                        f"{kind} {sub.name}.token",
                        "error",
                        f"{kind} {sub.name!r}: token is empty or blank; no Authorization "
                        "header is sent until it is set",
                    )
                )
    return problems


Authenticate = Callable[[web.Request, bytes, ServeConfig], str | None]
"""Returns None when the request is authentic, else the 401 message (or ``not configured``)."""


def auth_shopify(request: web.Request, body: bytes, cfg: ServeConfig) -> str | None:
    """``X-Shopify-Hmac-Sha256`` under the current (or, during a rotation, previous) secret."""
    current = usable(cfg.shopify_webhook_secret)
    if current is None:
        return _unset("OMNIOPS_SHOPIFY_WEBHOOK_SECRET", cfg.shopify_webhook_secret)
    secrets = [current]
    previous = usable(cfg.shopify_webhook_secret_previous)
    if previous is not None:
        secrets.append(previous)
    if not verify_shopify(body, request.headers.get("X-Shopify-Hmac-Sha256"), secrets):
        return "invalid or missing X-Shopify-Hmac-Sha256 signature"
    return None


def auth_square(request: web.Request, body: bytes, cfg: ServeConfig) -> str | None:
    """``x-square-hmacsha256-signature`` over the notification URL and the body."""
    key = usable(cfg.square_signature_key)
    url = (cfg.square_notification_url or "").strip()
    if key is None and cfg.square_signature_key is not None:
        return _unset("OMNIOPS_SQUARE_SIGNATURE_KEY", cfg.square_signature_key)
    if key is None or not url:
        return (
            f"{NOT_CONFIGURED}set OMNIOPS_SQUARE_SIGNATURE_KEY and OMNIOPS_SQUARE_NOTIFICATION_URL"
        )
    header = request.headers.get("x-square-hmacsha256-signature")
    if not verify_square(body, header, key, cfg.square_notification_url or ""):
        return "invalid or missing x-square-hmacsha256-signature"
    return None


def auth_easypost(request: web.Request, body: bytes, cfg: ServeConfig) -> str | None:
    """``X-Hmac-Signature`` under the EasyPost webhook secret."""
    secret = usable(cfg.easypost_webhook_secret)
    if secret is None:
        return _unset("OMNIOPS_EASYPOST_WEBHOOK_SECRET", cfg.easypost_webhook_secret)
    if not verify_easypost(body, request.headers.get("X-Hmac-Signature"), secret):
        return "invalid or missing X-Hmac-Signature"
    return None


def bearer(variable: str, token_of: Callable[[ServeConfig], SecretStr | None]) -> Authenticate:
    """An ``Authorization: Bearer`` check against the token ``token_of`` reads."""

    def check(request: web.Request, body: bytes, cfg: ServeConfig) -> str | None:
        secret = token_of(cfg)
        token = usable(secret)
        if token is None:
            return _unset(variable, secret)
        if not verify_bearer(request.headers.get("Authorization"), token):
            return "invalid or missing bearer token"
        return None

    return check


auth_amazon = bearer("OMNIOPS_AMAZON_RELAY_TOKEN", lambda c: c.amazon_relay_token)
auth_events = bearer("OMNIOPS_EVENTS_TOKEN", lambda c: c.events_token)


def is_read_path(path: str) -> bool:
    """The read endpoints the API token guards: ``/health``, ``/metrics``, ``/route...``."""
    return path in ("/health", "/metrics", "/route") or path.startswith("/route/")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def read_guard(
    config_of: Callable[[], ServeConfig],
    answer: Callable[[int, dict[str, object], dict[str, str]], web.StreamResponse],
) -> Middleware:
    """Middleware: with ``OMNIOPS_API_TOKEN`` set, the read endpoints need it.

    Without a configured token the endpoints are open, as before; a token set but empty
    is a configuration error (503 naming it).
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_read_path(request.path):
            return await handler(request)
        cfg = config_of()
        secret = getattr(cfg, "api_token", None)
        if secret is None:
            return await handler(request)
        token = usable(secret)
        if token is None:
            return answer(503, {"error": _unset("OMNIOPS_API_TOKEN", secret)}, {})
        if not verify_bearer(request.headers.get("Authorization"), token):
            return answer(
                401,
                {"error": "invalid or missing bearer token (OMNIOPS_API_TOKEN)"},
                {"WWW-Authenticate": 'Bearer realm="omniops"'},
            )
        return await handler(request)

    return guard


def presented_api_token(request: web.Request, cfg: ServeConfig) -> bool:
    """True if the request carries the configured ``OMNIOPS_API_TOKEN`` (False if none is set).

    ``/health`` shows file-system paths only to such a caller.
    """
    token = usable(getattr(cfg, "api_token", None))
    return token is not None and verify_bearer(request.headers.get("Authorization"), token)


__all__ = [
    "MIN_SECRET_LENGTH",
    "NOT_CONFIGURED",
    "SECRETS",
    "Authenticate",
    "SecretProblem",
    "auth_amazon",
    "auth_easypost",
    "auth_events",
    "auth_shopify",
    "auth_square",
    "bearer",
    "is_read_path",
    "presented_api_token",
    "read_guard",
    "secret_problems",
    "usable",
]
