"""``omniops mapping suggest`` and ``omniops quarantine list | show | replay``.

Exit codes: ``mapping suggest`` 0 (1 when nothing is unmapped); ``quarantine list`` and
``show`` 0 (``show`` 1 for an unknown id); ``quarantine replay`` 0 when every delivery
selected is placed (or none was selected), 1 when some are still held; every command 2
for a store or mapping file that cannot be used.  ``replay`` prints one summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from feeds.runtime.quarantine import ReplayResult, replay, suggest, utc
from feeds.runtime.routing import router_hook
from feeds.settings import ServeConfig, load_serve_config
from feeds.webhooks.mapping import Mapping, MappingError, load_mapping
from store.held import HeldRow, held_row, held_rows
from store.metrics import open_reader
from store.model import TimeWindow, set_time_window
from store.writer import StoreWriter


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--since: not an ISO 8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--since: give a zone, e.g. {text}Z")
    return moment.astimezone(UTC)


def add_arguments(sub: Any) -> None:
    """The ``mapping`` and ``quarantine`` sub-commands of ``omniops``."""
    mapping = sub.add_parser("mapping", help="external ids seen without a mapping")
    msub = mapping.add_subparsers(dest="action", required=True)
    sug = msub.add_parser(
        "suggest", help="every unmapped id, its event count, and a TOML stub to paste"
    )
    sug.add_argument("--db", type=Path, default=None, help="store file (default from config)")
    sug.add_argument(
        "--mapping", type=Path, default=None, help="mapping file: leave out ids it maps already"
    )
    sug.add_argument("--json", action="store_true", help="print JSON")

    quar = sub.add_parser("quarantine", help="held deliveries: list, show, replay")
    qsub = quar.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "held deliveries, oldest first"),
        ("replay", "map held deliveries again with today's mapping; apply what now maps, once"),
    ):
        q = qsub.add_parser(name, help=text)
        q.add_argument("--reason", default=None, help="only reasons containing this text")
        q.add_argument(
            "--source",
            default=None,
            help="only this adapter (shopify, square, ..., kafka, dropfolder, ingest)",
        )
        q.add_argument("--since", type=_since, default=None, help="only held since this time")
        q.add_argument("--db", type=Path, default=None, help="store file (default from config)")
        if name == "replay":
            q.add_argument(
                "--mapping", type=Path, default=None, help="mapping file (default: serve's)"
            )
        else:
            q.add_argument("--json", action="store_true", help="print JSON")
    show = qsub.add_parser("show", help="one held delivery, with its redacted payload")
    show.add_argument("id", type=int, help="the id `quarantine list` shows")
    show.add_argument("--db", type=Path, default=None, help="store file (default from config)")


def _config(args: argparse.Namespace) -> ServeConfig:
    return load_serve_config(db=args.db, mapping_file=getattr(args, "mapping", None))


class Refused(Exception):
    """A store or mapping file the command cannot use (exit 2, the message on stderr)."""


def _mapping(config: ServeConfig) -> Mapping:
    try:
        return load_mapping(config.mapping_file)
    except MappingError as exc:
        raise Refused(str(exc)) from None


def _store(config: ServeConfig) -> Path:
    if not config.db.exists():
        raise Refused(f"{config.db}: no such store")
    return config.db


def run_mapping(args: argparse.Namespace) -> int:
    """``omniops mapping suggest`` (exit 2 for a store or mapping file it cannot use)."""
    try:
        return _run_mapping(args)
    except Refused as exc:
        print(f"omniops mapping suggest: {exc}", file=sys.stderr)
        return 2


def run_quarantine(args: argparse.Namespace) -> int:
    """``omniops quarantine list | show | replay`` (exit 2: store or mapping unusable)."""
    try:
        return _run_quarantine(args)
    except Refused as exc:
        print(f"omniops quarantine {args.action}: {exc}", file=sys.stderr)
        return 2


def _run_mapping(args: argparse.Namespace) -> int:
    config = _config(args)
    db = _store(config)
    mapping = _mapping(config) if config.mapping_file else None
    reader = open_reader(db)
    try:
        found = suggest(reader, mapping)
        known = [str(r[0]) for r in reader.execute("SELECT location_id FROM locations ORDER BY 1")]
    finally:
        reader.close()
    if args.json:
        print(json.dumps({**found.as_json(), "known_locations": known}, indent=2))
        return 0 if found.ids else 1
    if not found.ids:
        print("every external id seen has a mapping")
        return 1
    print(f"{len(found.ids)} external ids seen without a mapping:")
    for u in found.ids:
        print(
            f"  {u.adapter:8} {u.kind:18} {u.external_id:28} {u.events:>6} events"
            f"  last {utc(u.last_seen)}"
        )
    print()
    print("# paste into the mapping file, fill in the canonical ids, then run")
    print(f"# omniops quarantine replay --db {db}")
    if known:
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        print(f"# canonical locations in the store: {shown}")
    print(found.toml, end="")
    return 0


def _row_json(row: HeldRow, *, raw: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "source": row.source,
        "topic": row.topic,
        "state": row.state,
        "reason": row.reason,
        "unmapped": [list(pair) for pair in row.unmapped],
        "event_ids": list(row.event_ids),
        "deliveries": row.deliveries,
        "attempts": row.attempts,
        "first_seen": utc(row.first_seen),
        "last_seen": utc(row.last_seen),
        "replayed_at": None if row.replayed_at is None else utc(row.replayed_at),
    }
    if raw:
        try:
            out["raw"] = json.loads(row.raw)
        except ValueError:
            out["raw"] = row.raw
    return out


def _run_quarantine(args: argparse.Namespace) -> int:
    config = _config(args)
    db = _store(config)
    if args.action == "replay":
        if config.mapping_file is None:
            print(
                "omniops quarantine replay: no mapping file (give --mapping, or set"
                " serve.mapping_file / OMNIOPS_MAPPING_FILE): replaying with an empty mapping",
                file=sys.stderr,
            )
        mapping = _mapping(config)
        set_time_window(
            TimeWindow(
                past=timedelta(days=config.max_past_days),
                future=timedelta(days=config.max_future_days),
                promise=timedelta(days=config.max_promise_days),
            )
        )
        result = asyncio.run(
            _replay(db, mapping, reason=args.reason, source=args.source, since=args.since)
        )
        for held_id, reason in result.reasons[:20]:
            print(f"  still held {held_id}: {reason}")
        print(f"omniops quarantine replay: {result.summary()}")
        return 1 if result.still_held else 0
    reader = open_reader(db)
    try:
        if args.action == "show":
            row = held_row(reader, args.id)
            if row is None:
                print(f"omniops quarantine show: no held delivery {args.id}", file=sys.stderr)
                return 1
            print(json.dumps(_row_json(row, raw=True), indent=2, ensure_ascii=False))
            return 0
        rows = held_rows(reader, reason=args.reason, source=args.source, since=args.since)
    finally:
        reader.close()
    if args.json:
        print(json.dumps([_row_json(r) for r in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("nothing held")
        return 0
    print(f"{'ID':>5}  {'SOURCE':8} {'LAST SEEN':20} {'SEEN':>4}  REASON")
    for r in rows:
        print(f"{r.id:>5}  {r.source:8} {utc(r.last_seen):20} {r.deliveries:>4}  {r.reason}")
    print(f"{len(rows)} held; `omniops quarantine replay --db {db}` maps them again")
    return 0


def replay_store(db: Path) -> str:
    """Replay every held delivery of ``db`` with serve's mapping file; the summary line.

    For the console's feeds view (``p``), which checks the user's role first.  Raises
    :class:`~feeds.webhooks.mapping.MappingError` when the mapping file cannot be used.
    """
    config = load_serve_config(db=db)
    mapping = load_mapping(config.mapping_file)
    previous = set_time_window(
        TimeWindow(
            past=timedelta(days=config.max_past_days),
            future=timedelta(days=config.max_future_days),
            promise=timedelta(days=config.max_promise_days),
        )
    )
    try:
        result = asyncio.run(_replay(db, mapping))
    finally:
        set_time_window(previous)
    return f"replay: {result.summary()}"


async def _replay(
    db: Path,
    mapping: Mapping,
    *,
    reason: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
) -> ReplayResult:
    from feeds.settings import Settings
    from rules.file import RulesFileError, default_rules_path, load_rules
    from rules.routing.config import FulfillmentRouting

    settings = Settings()
    path = settings.rules_file or default_rules_path()
    try:
        routing = load_rules(path).rules.fulfillment if path.exists() else FulfillmentRouting()
    except RulesFileError:
        routing = FulfillmentRouting()
    async with StoreWriter(
        db, params=settings.metrics, after_commit=router_hook(lambda: routing)
    ) as writer:
        return await replay(writer, mapping, reason=reason, source=source, since=since)


__all__ = ["add_arguments", "replay_store", "run_mapping", "run_quarantine"]
