"""A location scope: which canonical events a regional ``serve`` keeps.

A scope lists locations and/or regions.  An event that names a location (stock, listings,
inbound, returns, a location record, an order or fulfillment step at a node) is kept when
the location is listed or lies in a listed region; regions are learned from the
``location.upserted`` events the feed sees.  An order without a node is kept when its
destination region is listed.  Events that name no location (catalogue, channels, a
cancellation) are kept: they are harmless where the order is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable

from store.model import Event, LocationUpserted, OrderPlaced


class Scope:
    """The locations and regions one feed keeps (empty: everything)."""

    def __init__(self, locations: Iterable[str] = (), regions: Iterable[str] = ()) -> None:
        self.locations = frozenset(locations)
        self.regions = frozenset(regions)
        self._region_of: dict[str, str] = {}

    @property
    def everything(self) -> bool:
        """True when the scope filters nothing."""
        return not self.locations and not self.regions

    def _location_in(self, location: str) -> bool:
        if location in self.locations:
            return True
        region = self._region_of.get(location)
        return region is not None and region in self.regions

    def keeps(self, event: Event) -> bool:
        """Whether ``event`` belongs to this scope."""
        if self.everything:
            return True
        if isinstance(event, LocationUpserted):
            self._region_of[event.body.location_id] = event.body.region
            return self._location_in(event.body.location_id)
        if isinstance(event, OrderPlaced) and event.body.location_id is None:
            return event.body.destination_region in self.regions
        location = getattr(event.body, "location_id", None)
        if isinstance(location, str):
            return self._location_in(location)
        return True
