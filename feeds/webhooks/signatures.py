"""Webhook authentication: each vendor's signature scheme, and bearer tokens.

Every check works on the raw request bytes (never re-serialised JSON) and compares in
constant time (:func:`hmac.compare_digest`).  The ``sign_*`` functions compute what the
vendor sends; tests and the benchmark use them to sign real payloads.

* Shopify: ``X-Shopify-Hmac-Sha256`` = base64(HMAC-SHA256(app secret, body)); during a
  secret rotation the current and the previous secret are both accepted.
* Square: ``x-square-hmacsha256-signature`` = base64(HMAC-SHA256(signature key,
  notification URL + body)); the URL is the one registered with Square, exactly.
* EasyPost: ``X-Hmac-Signature`` = ``hmac-sha256-hex=`` + hex(HMAC-SHA256(NFKD-normalised
  webhook secret, body)).
* Amazon relay and ``POST /events``: ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Iterable

EASYPOST_PREFIX = "hmac-sha256-hex="


def _hmac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def sign_shopify(secret: str, body: bytes) -> str:
    """The ``X-Shopify-Hmac-Sha256`` value Shopify sends for ``body``."""
    return base64.b64encode(_hmac(secret.encode(), body)).decode("ascii")


def verify_shopify(body: bytes, header: str | None, secrets: Iterable[str]) -> bool:
    """True if ``header`` is a valid signature of ``body`` under any of ``secrets``."""
    if not header:
        return False
    given = header.strip().encode("ascii", "replace")
    ok = False
    for secret in secrets:
        # Check every secret (no early exit) so timing does not tell which one matched.
        ok |= hmac.compare_digest(sign_shopify(secret, body).encode("ascii"), given)
    return ok


def sign_square(key: str, notification_url: str, body: bytes) -> str:
    """The ``x-square-hmacsha256-signature`` value Square sends for ``body``."""
    return base64.b64encode(_hmac(key.encode(), notification_url.encode() + body)).decode()


def verify_square(body: bytes, header: str | None, key: str, notification_url: str) -> bool:
    """True if ``header`` signs the notification URL followed by ``body``."""
    if not header:
        return False
    expected = sign_square(key, notification_url, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("ascii", "replace"))


def sign_easypost(secret: str, body: bytes) -> str:
    """The ``X-Hmac-Signature`` value EasyPost sends for ``body``."""
    key = unicodedata.normalize("NFKD", secret).encode("utf-8")
    return EASYPOST_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_easypost(body: bytes, header: str | None, secret: str) -> bool:
    """True if ``header`` is ``hmac-sha256-hex=`` and the hex HMAC of ``body``."""
    if not header:
        return False
    expected = sign_easypost(secret, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().lower().encode("ascii", "replace"))


def verify_bearer(header: str | None, token: str) -> bool:
    """True if the ``Authorization`` header is ``Bearer <token>``."""
    if not header or not token:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8"), token.encode("utf-8"))
