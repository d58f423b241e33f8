"""Writing the ``[fulfillment]`` section into the rules file's TOML document, comments kept."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import tomlkit
from pydantic import (
    BaseModel,
)

from rules.routing.config import FulfillmentRouting, section_key


def _plain(value: Any) -> Any:
    """A tomlkit item as plain Python data (plain data passes through)."""
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _set_fields(
    table: MutableMapping[str, Any], old: BaseModel | None, new: BaseModel, skip: str = ""
) -> None:
    """Rewrite only the keys of ``table`` whose parsed value differs between the models."""
    dumped = new.model_dump(mode="json", exclude_none=True)  # TOML has no null
    for name, info in type(new).model_fields.items():
        if name == skip:
            continue
        value = getattr(new, name)
        if old is not None and getattr(old, name) == value:
            continue
        is_default = not info.is_required() and value == info.get_default(call_default_factory=True)
        if is_default:
            if name in table:
                del table[name]
        elif _plain(table.get(name)) != dumped[name]:
            table[name] = dumped[name]


def update_fulfillment_document(
    document: MutableMapping[str, Any], routing: FulfillmentRouting
) -> None:
    """Write ``routing`` into a tomlkit document's ``[fulfillment]`` section, in place.

    Only what changed is touched, so comments survive: a rule that did not change keeps
    its table exactly (comments and all) even when rules are reordered; in a changed rule
    only the changed keys are rewritten (a key set back to its default is removed); the
    other settings are rewritten only when their value changed.  The caller validates and
    saves the document atomically (``rules.file``).
    """
    key = section_key(document)  # a file that says [fulfilment] keeps saying it
    section = document.get(key)
    if section is None:
        if routing == FulfillmentRouting():
            return
        document[key] = tomlkit.table()
        section = document[key]
    try:
        before: FulfillmentRouting | None = FulfillmentRouting.model_validate(_plain(section))
    except ValueError:
        before = None
    _set_fields(section, before, routing, skip="rules")
    if before is not None and before.rules == routing.rules:
        return
    old_tables = {str(t.get("id")): t for t in section.get("rules") or []}
    old_rules = {r.id: r for r in before.rules} if before is not None else {}
    aot = tomlkit.aot()
    for rule in routing.rules:
        table = old_tables.get(rule.id)
        if table is None:
            table = tomlkit.table()
            table["id"] = rule.id
        _set_fields(table, old_rules.get(rule.id) if rule.id in old_tables else None, rule)
        aot.append(table)
    if "rules" in section:
        del section["rules"]
    if routing.rules:
        section["rules"] = aot
