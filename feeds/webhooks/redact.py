"""PII redaction: what of a customer's data omniops keeps, and what it never stores.

omniops needs operations data, not people.  The adapters copy into canonical events only:

* ids: order, line, fulfillment, refund, tracking number and carrier, external SKU and
  location ids (mapped to canonical SKUs and locations);
* where an order goes, coarsely: the destination *region* (Shopify ``country_code`` and
  ``province_code`` as ``US-KY``; Square's country and state; Amazon's marketplace
  country and the first three characters of ``DestinationPostalCode``);
* quantities, prices, discounts, refund amounts, times, order states, and the carrier's
  status and delivery estimate;
* a refund's note, truncated to 80 characters, after :func:`scrub_text` removed e-mail
  addresses and phone numbers (staff write these; they feed "top return reasons").

Never stored, in events *or* in quarantine: customer names, e-mail addresses, phone
numbers, street addresses (``address1``/``address2``/street lines), cities, companies,
the whole ``customer`` object, customer ids (``CustomerID`` of order-history files),
browser IP and client details, order notes and note attributes, line-item custom
properties (engraving texts), cart/checkout tokens, landing and referring URLs, the
name of whoever signed for a parcel, and a carrier's ``destination_location`` text.

Quarantined raw payloads are redacted by :func:`redact_raw` before they are written:
the fields above are replaced by ``"[redacted]"``, postal codes are cut to their first
three characters (``"40202"`` → ``"402**"``), coordinates are rounded to one decimal
(about 11 km), and e-mail addresses are scrubbed from every remaining string.  A body
that is not JSON (or nested too deeply to decode safely, see :mod:`feeds.webhooks.bounded`)
is scrubbed as text (e-mail addresses and phone-like numbers) and cut to :data:`TEXT_LIMIT`
characters.

Every step takes time linear in its input: a string is cut to :data:`STRING_LIMIT`
characters *before* it is scrubbed, e-mail addresses are found by a scan from each ``@``
(no backtracking pattern), and the phone pattern's repetition is bounded.  What comes out
is always valid UTF-8 (a lone surrogate is kept as its backslash escape), so the
quarantine row can be stored whatever came in.
"""

from __future__ import annotations

import json
import re
from typing import Any

from feeds.webhooks.bounded import MAX_DEPTH, ShapeError
from feeds.webhooks.bounded import loads as bounded_loads

REDACTED = "[redacted]"
RAW_LIMIT = 64 * 1024
"""Quarantined raw payloads are cut to this many characters."""
TEXT_LIMIT = 8 * 1024
"""A quarantined body that is not JSON is cut to this many characters (it is kept only to
show the sender what arrived; the phone scan over it stays a few milliseconds)."""
STRING_LIMIT = 4096
"""A string of a quarantined payload is cut to this many characters before it is scrubbed."""
TOO_DEEP = "[too deep]"
CUT = "[cut]"

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
"""The shape of an e-mail address (reference only: it backtracks quadratically on long
words, so :func:`scrub_emails` finds the same matches by a linear scan)."""
_LOCAL_RUN = re.compile(r"[\w.+-]+")
_DOMAIN = re.compile(r"[\w-]++(?:\.[\w-]++)+")
PHONE = re.compile(r"(?<![\w-])\+?\(?\d[\d\s().-]{6,24}\d(?![\w-])")
"""Phone-like numbers; the repetition is bounded so a long run of digits costs linear time."""


def _norm(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


DROP_KEYS = frozenset(
    _norm(k)
    for k in (
        "email",
        "contact_email",
        "buyer_email",
        "buyer_email_address",
        "BuyerEmail",
        "phone",
        "phone_number",
        "first_name",
        "last_name",
        "given_name",
        "family_name",
        "buyer_name",
        "BuyerName",
        "recipient_name",
        "address1",
        "address2",
        "address3",
        "address_line_1",
        "address_line_2",
        "address_line_3",
        "AddressLine1",
        "AddressLine2",
        "AddressLine3",
        "street",
        "street_address",
        "city",
        "company",
        "customer",
        "customer_id",
        "CustomerID",
        "browser_ip",
        "client_details",
        "note",
        "note_attributes",
        "properties",
        "token",
        "cart_token",
        "checkout_token",
        "order_status_url",
        "landing_site",
        "landing_site_ref",
        "referring_site",
        "signed_by",
        "destination_location",
        "BuyerInfo",
    )
)
"""Keys whose values are replaced wherever they appear."""

PERSON_CONTEXTS = frozenset(
    _norm(k)
    for k in (
        "shipping_address",
        "billing_address",
        "default_address",
        "address",
        "addresses",
        "recipient",
        "destination_address",
        "ShippingAddress",
        "fulfillment_contact",
        "buyer",
    )
)
"""Objects that describe a person: their ``name`` is redacted too."""

POSTAL_KEYS = frozenset(
    _norm(k) for k in ("zip", "zip_code", "postal_code", "postcode", "DestinationPostalCode")
)
COORD_KEYS = frozenset(_norm(k) for k in ("latitude", "longitude", "lat", "lon", "lng"))


def postal_prefix(code: str, keep: int = 3) -> str:
    """The first ``keep`` characters of a postal code, the rest masked."""
    code = code.strip()
    if len(code) <= keep:
        return code
    return code[:keep] + "*" * min(len(code) - keep, 4)


def scrub_emails(value: str) -> str:
    """``value`` with every match of :data:`EMAIL` replaced by ``[redacted]``, in linear time.

    The same matches as ``EMAIL.sub`` (leftmost, longest local part), found from each
    ``@``: the local part is the run of word characters, ``.``, ``+`` and ``-`` before
    it (read on the reversed text, never before the end of the previous match), the
    domain is matched forward with possessive quantifiers.  Each character is looked at
    a bounded number of times.
    """
    at = value.find("@")
    if at == -1:
        return value
    reverse = value[::-1]
    size = len(value)
    out: list[str] = []
    last = 0
    while at != -1:
        local = _LOCAL_RUN.match(reverse, size - at, size - last)
        domain = _DOMAIN.match(value, at + 1) if local is not None else None
        if local is not None and domain is not None:
            out.append(value[last : size - local.end()])
            out.append(REDACTED)
            last = domain.end()
            at = value.find("@", last)
        else:
            at = value.find("@", at + 1)
    out.append(value[last:])
    return "".join(out)


def scrub_text(value: str, limit: int | None = None) -> str:
    """Free text with e-mail addresses and phone numbers replaced by ``[redacted]``.

    With ``limit``, the result is at most that long; the text is cut (with a margin, so an
    address across the cut is still recognised) *before* scrubbing, which keeps the work
    proportional to ``limit`` however long the input.
    """
    if limit is not None:
        value = value[: limit + 256]
    scrubbed = PHONE.sub(REDACTED, scrub_emails(value))
    return scrubbed if limit is None else scrubbed[:limit]


def valid_utf8(value: str) -> str:
    """``value`` if it encodes as UTF-8, else with lone surrogates as backslash escapes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _round_coord(value: Any) -> Any:
    try:
        return round(float(value), 1)
    except (TypeError, ValueError):
        return REDACTED


def redact_payload(
    data: Any, *, person: bool = False, _depth: int = 0, _budget: list[int] | None = None
) -> Any:
    """A copy of decoded JSON with every PII field of the module docstring removed.

    Strings are cut to :data:`STRING_LIMIT` before scrubbing; anything nested deeper than
    :data:`~feeds.webhooks.bounded.MAX_DEPTH` is replaced by ``"[too deep]"``.  With a
    budget (characters still to produce, see :func:`redact_json`), the walk stops once
    it is spent: the rest becomes ``"[cut]"``, so a 2 MB payload costs what 64 KB does.
    """
    if _depth > MAX_DEPTH:
        return TOO_DEEP
    if _budget is not None:
        if _budget[0] <= 0:
            return CUT
        _budget[0] -= 8
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            if _budget is not None and _budget[0] <= 0:
                out[CUT] = f"{len(data) - len(out)} more keys"
                break
            norm = _norm(str(key))
            if norm in DROP_KEYS or (person and norm in ("name", "fullname", "displayname")):
                out[key] = None if value is None else REDACTED
            elif norm in POSTAL_KEYS and isinstance(value, str | int):
                out[key] = postal_prefix(str(value))
            elif norm in COORD_KEYS and value is not None:
                out[key] = _round_coord(value)
            else:
                out[key] = redact_payload(
                    value, person=norm in PERSON_CONTEXTS, _depth=_depth + 1, _budget=_budget
                )
        return out
    if isinstance(data, list):
        items: list[Any] = []
        for item in data:
            if _budget is not None and _budget[0] <= 0:
                items.append(f"{CUT} {len(data) - len(items)} more items")
                break
            items.append(redact_payload(item, person=person, _depth=_depth + 1, _budget=_budget))
        return items
    if isinstance(data, str):
        text = scrub_emails(data[:STRING_LIMIT])
        if _budget is not None:
            _budget[0] -= len(text)
        return text
    return data


def redact_json(data: Any, *, limit: int = RAW_LIMIT) -> str:
    """Decoded JSON made safe to keep in quarantine, as text of at most ``limit`` characters.

    Walks only as much of ``data`` as fits in ``limit`` (the rest is marked ``[cut]``), so
    the work is bounded by the limit, not by the payload.
    """
    redacted = redact_payload(data, _budget=[limit])
    text = json.dumps(redacted, ensure_ascii=False, separators=(",", ":"), default=str)
    return valid_utf8(text[:limit])


def redact_raw(raw: bytes | str, *, limit: int = RAW_LIMIT) -> str:
    """A request body made safe to keep in quarantine (see the module docstring)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    try:
        data = bounded_loads(text)
    except (ShapeError, ValueError, RecursionError):
        data = None
    else:
        if isinstance(data, dict | list):
            return redact_json(data, limit=limit)
    return valid_utf8(scrub_text(text, min(limit, TEXT_LIMIT)))


HELD_RAW_LIMIT = 512 * 1024
"""A payload kept for ``omniops quarantine replay`` is redacted whole up to this size
(quarantine cuts at 64 KB: a replay of a cut payload would store an order without its cut
lines); a larger one is kept as "too large" and never replayed."""


def keep_raw(raw: bytes | str) -> str:
    """A payload as it is kept for a replay: redacted whole, or marked too large to keep.

    Every ingress that holds what it quarantined (webhooks, Kafka records, dropped and
    ingested lines) keeps it this way; a payload over :data:`HELD_RAW_LIMIT` is not
    redacted at all, so the work stays bounded.
    """
    if len(raw) > HELD_RAW_LIMIT:
        return json.dumps({CUT: f"a payload of {len(raw)} bytes is too large to keep"})
    return redact_raw(raw, limit=HELD_RAW_LIMIT)
