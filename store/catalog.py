"""Catalogue reads for the feeds view and ``/health``: what landed without a category."""

from __future__ import annotations

import sqlite3

from store.model import UNCATEGORISED


def uncategorised_skus(db: sqlite3.Connection) -> int:
    """How many SKUs are in the explicit ``uncategorised`` category (they came without one)."""
    return int(
        db.execute("SELECT COUNT(*) FROM skus WHERE category = ?", (UNCATEGORISED,)).fetchone()[0]
    )


def uncategorised_sku_ids(db: sqlite3.Connection, limit: int = 20) -> list[str]:
    """The first ``limit`` uncategorised SKUs, by SKU, for a list under the count."""
    rows = db.execute(
        "SELECT sku FROM skus WHERE category = ? ORDER BY sku LIMIT ?", (UNCATEGORISED, limit)
    )
    return [str(row[0]) for row in rows]
