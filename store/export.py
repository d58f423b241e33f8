"""Exporting a panel of a snapshot to CSV or JSON (the console's `e` key)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from store.snapshots import ReturnSpikeRow, Snapshots, to_jsonable

PANELS = ("fulfillment", "stockout", "returns", "headline")


def panel_records(
    snapshots: Snapshots, panel: str, rows: Sequence[object] | None = None
) -> list[dict[str, Any]]:
    """The rows of one panel (or the given ``rows`` of it) as flat JSON-ready records."""
    everything: dict[str, Sequence[object]] = {
        "fulfillment": snapshots.fulfillment.rows,
        "stockout": snapshots.stockout.rows,
        "returns": snapshots.returns.rows,
        "headline": [snapshots.headline],
    }
    if panel not in everything:
        raise ValueError(f"unknown panel {panel!r}; choose one of {', '.join(PANELS)}")
    records = []
    for row in everything[panel] if rows is None else rows:
        record = to_jsonable(row)
        if isinstance(row, ReturnSpikeRow):
            record["top_reasons"] = "; ".join(f"{r} ({n})" for r, n in row.top_reasons)
        records.append(record)
    return records


def export_panel(
    snapshots: Snapshots,
    panel: str,
    fmt: str,
    path: Path,
    *,
    rows: Sequence[object] | None = None,
) -> Path:
    """Write ``panel`` of ``snapshots`` to ``path`` as ``csv`` or ``json``, atomically.

    ``rows``: only these rows of the panel, in this order (what the console shows with its
    filter and sort); default every row.  CSV holds one row per panel row (nested values as
    JSON text); JSON holds the panel with the moment it was computed for.  The folder
    must exist (:class:`FileNotFoundError` naming it): no folder is created.
    """
    records = panel_records(snapshots, panel, rows)
    path = Path(path).expanduser()
    if not path.parent.is_dir():  # a typo in a path must not create folders
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            if fmt == "json":
                as_of = to_jsonable(snapshots.as_of)
                json.dump({"panel": panel, "as_of": as_of, "rows": records}, handle, indent=2)
            elif fmt == "csv":
                fields = [f.name for f in dataclasses.fields(_row_type(panel))]
                writer = csv.DictWriter(handle, fieldnames=fields)
                writer.writeheader()
                for record in records:
                    writer.writerow(
                        {
                            k: json.dumps(v) if isinstance(v, (list, dict)) else v
                            for k, v in record.items()
                        }
                    )
            else:
                raise ValueError(f"unknown format {fmt!r}; use csv or json")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _row_type(panel: str) -> Any:
    from store.snapshots import FulfillmentRow, Headline, ReturnSpikeRow, StockoutRow

    return {
        "fulfillment": FulfillmentRow,
        "stockout": StockoutRow,
        "returns": ReturnSpikeRow,
        "headline": Headline,
    }[panel]
