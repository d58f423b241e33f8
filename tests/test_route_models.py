"""Models the router builds unvalidated (:func:`rules.routing.orders.trusted`) behave as validated.

They share one ``model_fields_set`` per class (every field): a copy with an update must
not change it for the others, and each still equals and serialises as a validated model.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rules.routing.orders import Candidate, RouteLine, RouteOrder, trusted


def test_a_copy_with_an_update_leaves_the_shared_fields_set_alone() -> None:
    line = RouteLine(sku="TEE", quantity=1)
    first = trusted(RouteOrder, destination_region="northeast", lines=[line])
    second = trusted(RouteOrder, destination_region="west", lines=[line])
    everything = set(RouteOrder.model_fields)
    assert first.model_fields_set == second.model_fields_set == everything
    copied = first.model_copy(update={"promised_by": None, "location_id": "ST-NYC"})
    assert copied.location_id == "ST-NYC" and first.location_id is None
    assert first.model_fields_set == second.model_fields_set == everything
    assert copied.model_fields_set == everything
    assert copied == RouteOrder.model_validate(copied.model_dump())


def test_trusted_models_equal_and_serialise_as_validated_ones() -> None:
    at = datetime(2026, 11, 18, 17, tzinfo=UTC)
    values = {
        "location_id": "WH-NJ",
        "kind": "warehouse",
        "outcome": "rejected",
        "reason": "no_stock",
        "detail": "TEE 0 after buffer 0, needs 1",
        "distance_km": 12.5,
        "at": at,
    }
    built = trusted(Candidate, **values)
    validated = Candidate.model_validate(values)
    assert built == validated
    assert built.model_dump_json() == validated.model_dump_json()
    assert built.model_dump(exclude_unset=True) == validated.model_dump()
