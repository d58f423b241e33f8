"""External ids → canonical ids, and the per-channel choices the adapters make.

Channels name things their own way: a Shopify ``inventory_item_id`` or ``location_id``
(numbers), a Square ``catalog_object_id``, an Amazon marketplace.  The mapping file (TOML,
``serve.mapping_file``) says which canonical SKU and location each one is.  An id that is
not in the file is never guessed: the payload (or the part of it) is quarantined with a
reason such as ``unmapped Shopify inventory_item_id 808950810``, so the operator adds the
line and nothing is silently attributed to the wrong SKU.  (An order whose location is
unmapped is stored without a node and routed by the fulfillment rules.)  Every id met
without a mapping is recorded: ``omniops mapping suggest`` lists them with a stub to paste
here (:func:`feeds.runtime.quarantine.suggest`), and ``omniops quarantine replay`` maps
the held deliveries again once the lines are added.  The README's "Connect your shop"
documents every key with a worked example over ``fixtures/payloads/``.

Example::

    [shopify]
    channel = "webshop"            # canonical channel of web orders
    pos_channel = "pos"            # orders whose source_name is "pos"
    sla_hours = 48                 # promised_by = created_at + this
    inventory_as = "snapshot"      # or "listing": what inventory_levels/update means
    store_locations = ["655441491"]   # Shopify locations that are stores
    default_return_location = "WH-NJ"
    [shopify.locations]            # Shopify location_id → canonical location
    "655441491" = "WH-NJ"
    [shopify.inventory_items]      # Shopify inventory_item_id → canonical SKU
    "808950810" = "IPOD2008GREEN"
    [shopify.variants]             # optional: variant_id → SKU (else the line's own sku)
    "39072856" = "IPOD2008GREEN"

    [square]
    channel = "pos"
    fulfillment = "pickup"         # or "shipment": what Square fulfillment states mean
    [square.locations]
    "YYQR03DGCTXA4" = "S-BKN"
    [square.catalog_objects]
    "FGQ5JJWT2PYTHF35CKZ2DSKP" = "APP-0001"

    [amazon]
    channel = "marketplace"
    mfn_location = "WH-NJ"         # where merchant-fulfilled orders ship from
    [amazon.marketplaces]          # FBA inventory pool per marketplace → location
    "ATVPDKIKX0DER" = "FBA-US"
    [amazon.skus]                  # optional: SellerSKU → canonical SKU (default: same)
    "SellerSKUID1" = "APP-0001"
"""

from __future__ import annotations

import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rules.errors import describe_validation_error
from rules.textfile import read_regular
from rules.watch import FileWatcher


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShopifyMapping(_Section):
    """How Shopify payloads become canonical events."""

    channel: str = "webshop"
    """Canonical channel of online-store orders."""
    pos_channel: str = "pos"
    """Canonical channel of orders whose ``source_name`` is ``pos`` (Shopify POS)."""
    sla_hours: float = Field(default=48.0, gt=0, le=8760, allow_inf_nan=False)
    """An order's ``promised_by`` is its ``created_at`` plus this many hours."""
    inventory_as: Literal["snapshot", "listing"] = "snapshot"
    """``snapshot``: Shopify is the stock system of record (``stock.snapshot`` with
    on_hand = ``available``); ``listing``: another system owns stock and Shopify's
    ``available`` is what the web shop advertises (``listing.updated``, for oversell)."""
    pickup_markers: tuple[str, ...] = ("pickup", "pick up", "pick-up", "click & collect")
    """A shipping line whose code or title contains one of these is in-store pickup."""
    store_locations: tuple[str, ...] = ()
    """Shopify location ids that are stores: shipping from them is ``ship_from_store``."""
    default_region: str = "unknown"
    """Destination region of an order without a shipping address (pickup, digital)."""
    default_return_location: str | None = None
    """Canonical location of a refund line that names no location."""
    test_orders: Literal["skip", "keep"] = "skip"
    """Orders Shopify marks ``test: true`` (a test gateway, no real payment): ``skip``
    leaves them out of the store (no sales, stock or fulfilment figures; the answer lists
    them as ignored), ``keep`` stores them like any order (a staging shop)."""
    taxes_included: bool = False
    """The shop's prices include tax (VAT): the tax in each refund line (``total_tax``) is
    taken off its refund, and off the lines of an order whose payload does not say
    (``taxes_included``, which an order's own field overrides).  Net sales never count
    tax."""
    locations: dict[str, str] = {}
    """Shopify ``location_id`` → canonical location id."""
    inventory_items: dict[str, str] = {}
    """Shopify ``inventory_item_id`` → canonical SKU."""
    variants: dict[str, str] = {}
    """Shopify ``variant_id`` → canonical SKU; without an entry the line's ``sku`` is used."""


class SquareMapping(_Section):
    """How Square payloads become canonical events."""

    channel: str = "pos"
    """Canonical channel of Square orders."""
    fulfillment: Literal["pickup", "shipment"] = "pickup"
    """What Square's fulfillment states mean: PREPARED is ``ready_for_pickup`` and COMPLETED
    ``picked_up`` for pickup; ``packed`` and ``shipped`` for shipment."""
    sla_hours: float = Field(default=2.0, gt=0, le=8760, allow_inf_nan=False)
    """``promised_by`` of a Square order without a pickup time: created_at plus this."""
    default_region: str = "unknown"
    """Destination region of an order without a shipping address."""
    locations: dict[str, str] = {}
    """Square ``location_id`` → canonical location id."""
    catalog_objects: dict[str, str] = {}
    """Square ``catalog_object_id`` (item variation) → canonical SKU."""


class AmazonMapping(_Section):
    """How Amazon SP-API notifications become canonical events."""

    channel: str = "marketplace"
    """Canonical channel of Amazon orders."""
    mfn_location: str | None = None
    """Canonical location that ships merchant-fulfilled (MFN) orders, if one is fixed."""
    fba_location: str | None = None
    """Canonical location standing for Amazon's network on FBA (AFN) orders."""
    marketplaces: dict[str, str] = {}
    """MarketplaceId → canonical location of that marketplace's FBA inventory pool."""
    skus: dict[str, str] = {}
    """SellerSKU → canonical SKU, where they differ (default: the SellerSKU itself)."""


class DebeziumTable(BaseModel):
    """How the rows of one table become canonical events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(min_length=1)
    """The canonical event type (``stock.snapshot``, ``order.cancelled``, ...)."""
    body: dict[str, Any]
    """Canonical body field → template over the row's columns."""
    when: dict[str, str] = {}
    """Only rows whose columns have these values (as text)."""
    ts_column: str | None = None
    """Column holding the fact's time (default: the source's ``ts_ms``)."""
    ops: tuple[str, ...] = ("c", "u", "r")
    """Which operations produce an event (``r`` is a snapshot read)."""


class DebeziumMapping(BaseModel):
    """The ``[debezium]`` section of the mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = "cdc"
    """Canonical ``source`` of the events."""
    tables: dict[str, DebeziumTable] = {}


class Mapping(_Section):
    """The whole mapping file; every section is optional."""

    shopify: ShopifyMapping = ShopifyMapping()
    square: SquareMapping = SquareMapping()
    amazon: AmazonMapping = AmazonMapping()
    debezium: DebeziumMapping = DebeziumMapping()
    """Debezium change events: table → canonical event (mapped by :mod:`feeds.kafka.debezium`)."""


class MappingError(ValueError):
    """The mapping file cannot be used; the message names the file and the key."""


def parse_mapping(text: str, *, where: str = "mapping") -> Mapping:
    """Validate mapping TOML; :class:`MappingError` names the file and the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{where}: {exc}") from exc
    for section in ("shopify", "square"):
        table = data.get(section)
        if isinstance(table, dict) and isinstance(table.get("store_locations"), list):
            table["store_locations"] = [str(v) for v in table["store_locations"]]
    try:
        return Mapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(f"{where}: {describe_validation_error(exc)}") from exc


EMPTY = (
    "the mapping file is empty; refused so every shop id is not un-mapped by accident "
    "(a file of only a comment, or no mapping file, is a mapping of nothing on purpose)"
)


def load_mapping(path: Path | None) -> Mapping:
    """The mapping at ``path`` (an empty mapping when ``path`` is None).

    An empty or blank file is refused (:data:`EMPTY`): an editor's truncated save or a
    ``: > mapping.toml`` would otherwise un-map every shop id at once.
    """
    if path is None:
        return Mapping()
    try:
        raw = read_regular(path)
    except OSError as exc:
        raise MappingError(f"{path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path}: not UTF-8 text: {exc}") from exc
    if not text.strip():
        raise MappingError(f"{path}: {EMPTY}")
    return parse_mapping(text, where=str(path))


def _load_file(path: Path) -> Mapping:
    return load_mapping(path)


def mapping_watcher(
    path: Path,
    *,
    on_reload: Callable[[Mapping], Awaitable[None] | None] | None = None,
    on_error: Callable[[MappingError], Awaitable[None] | None] | None = None,
    current: Mapping | None = None,
    debounce_ms: int = 200,
) -> FileWatcher[Mapping, MappingError]:
    """A watcher of the mapping file: the rules file's watcher, reading mappings.

    It watches the folder, so every save is seen, atomic renames included; a bad edit
    calls ``on_error`` and the last good mapping stays in force.
    """
    return FileWatcher(
        path,
        _load_file,
        MappingError,
        what="mapping file",
        on_reload=on_reload,
        on_error=on_error,
        current=current,
        debounce_ms=debounce_ms,
    )
