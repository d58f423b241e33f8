"""``omniops mapping suggest`` and ``omniops quarantine list | show | replay | edit``.

Exit codes: ``mapping suggest`` 0 (1 when nothing is unmapped); ``quarantine list`` and
``show`` 0 (``show`` 1 for an unknown id); ``quarantine replay`` 0 when every delivery
selected is placed (or none was selected), 1 when some are still held; ``quarantine
edit`` 0 when the edit was saved and the row placed (``--dry-run``: would be), 1 when it
was refused (unknown id, no change, or the edited payload would still be held: the row is
left as it was); every command 2 for a store or mapping file that cannot be used.
``replay`` prints one summary line; ``edit`` what changed, then one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feeds.runtime import quarantine
from feeds.runtime.quarantine import ReplayResult, replay, suggest, utc
from feeds.runtime.routing import router_hook
from feeds.settings import ServeConfig, load_serve_config
from feeds.webhooks.mapping import Mapping, MappingError, load_mapping
from store.held import HeldRow, held_edits, held_row, held_rows
from store.metrics import open_reader
from store.model import TimeWindow, set_time_window
from store.writer import StoreWriter

if TYPE_CHECKING:
    from feeds.runtime.quarantine_edit import EditOutcome


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

    quar = sub.add_parser("quarantine", help="held deliveries: list, show, replay, edit")
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
    edit = qsub.add_parser(
        "edit",
        help="fix a held payload ($EDITOR, --set or --from-file), validate it as replay"
        " does, save it (audited) and replay it",
    )
    edit.add_argument("id", type=int, help="the id `quarantine list` shows")
    how = edit.add_mutually_exclusive_group()
    how.add_argument(
        "--set",
        action="append",
        default=None,
        metavar="FIELD=VALUE",
        help="set one field (repeatable): a dotted JSON path, LINE.Column for a CSV row",
    )
    how.add_argument(
        "--from-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="the whole fixed payload from a file (- for standard input)",
    )
    edit.add_argument(
        "--by", default=None, help="who made the edit, for the audit (default: the OS user)"
    )
    edit.add_argument(
        "--dry-run", action="store_true", help="validate and show what changes; save nothing"
    )
    edit.add_argument("--db", type=Path, default=None, help="store file (default from config)")
    edit.add_argument("--mapping", type=Path, default=None, help="mapping file (default: serve's)")


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
        out["raw"] = _payload(row.raw)
    return out


def _payload(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _run_edit(args: argparse.Namespace, config: ServeConfig, db: Path) -> int:
    """``omniops quarantine edit ID`` (exit codes in the module docstring)."""
    from feeds.runtime.quarantine_edit import (
        EditError,
        kept,
        run_editor,
        set_fields,
    )
    from rules.roles import current_user

    name = f"omniops quarantine edit: held {args.id}"
    reader = open_reader(db)
    try:
        row = held_row(reader, args.id)
    finally:
        reader.close()
    if row is None:
        print(f"{name}: no such held delivery", file=sys.stderr)
        return 1
    mapping = _mapping(config)
    set_time_window(_window(config))
    quarantine.HISTORY_WINDOW = TimeWindow()
    saved: Path | None = None
    try:
        if row.state != "held":
            raise EditError(f"it is {row.state}, not held: there is nothing to fix")
        if args.set:
            how, text = "set", set_fields(row, args.set)
        elif args.from_file is not None:
            how = "file"
            try:
                text = (
                    sys.stdin.read()
                    if str(args.from_file) == "-"
                    else args.from_file.read_text(encoding="utf-8")
                )
            except (OSError, UnicodeDecodeError) as exc:
                raise EditError(f"--from-file {args.from_file}: {exc}") from None
        else:
            how = "editor"
            text, saved = run_editor(row)
        after = kept(row, text)
        if after == row.raw:
            if saved is not None:
                saved.unlink(missing_ok=True)
            print(f"{name}: no change; left as it was", file=sys.stderr)
            return 1
        outcome = asyncio.run(
            _edit(
                db,
                mapping,
                row.id,
                after,
                by=args.by or current_user(),
                how=how,
                expect=row.raw,
                dry_run=args.dry_run,
            )
        )
    except EditError as exc:
        print(f"{name}: {exc}; nothing changed", file=sys.stderr)
        if saved is not None:
            print(
                f"  your edit is kept in {saved}: fix it, then run"
                f" omniops quarantine edit {args.id} --db {db} --from-file {saved}",
                file=sys.stderr,
            )
        return 1
    if saved is not None:
        saved.unlink(missing_ok=True)
    for field, before, after_value in outcome.changes:
        print(
            f"  {field}: {json.dumps(before, ensure_ascii=False)} -> "
            f"{json.dumps(after_value, ensure_ascii=False)}"
        )
    if outcome.result is None:
        print(
            f"{name}: the edit would place it ({len(outcome.tried.events)} events);"
            " nothing saved (--dry-run)"
        )
        return 0
    result = outcome.result
    state = "placed" if result.placed else "saved, still held"
    print(f"{name}: edit {outcome.edit_id} saved, {state}; {result.summary()}")
    for held_id, reason in result.reasons:
        print(f"  still held {held_id}: {reason}")
    return 0 if result.placed else 1


def _window(config: ServeConfig) -> TimeWindow:
    """``serve``'s validation windows (a replay validates as ``serve`` would)."""
    return TimeWindow(
        past=timedelta(days=config.max_past_days),
        future=timedelta(days=config.max_future_days),
        promise=timedelta(days=config.max_promise_days),
    )


def _run_quarantine(args: argparse.Namespace) -> int:
    config = _config(args)
    db = _store(config)
    if args.action == "edit":
        return _run_edit(args, config, db)
    if args.action == "replay":
        if config.mapping_file is None:
            print(
                "omniops quarantine replay: no mapping file (give --mapping, or set"
                " serve.mapping_file / OMNIOPS_MAPPING_FILE): replaying with an empty mapping",
                file=sys.stderr,
            )
        mapping = _mapping(config)
        set_time_window(_window(config))
        quarantine.HISTORY_WINDOW = TimeWindow()
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
            shown = _row_json(row, raw=True)
            edits = held_edits(reader, row.id)
            if edits:
                shown["original"] = _payload(edits[0].before)
                shown["edits"] = [
                    {
                        "id": e.id,
                        "at": utc(e.at),
                        "by": e.by,
                        "how": e.how,
                        "changes": [{"field": f, "before": b, "after": a} for f, b, a in e.changes],
                    }
                    for e in edits
                ]
            print(json.dumps(shown, indent=2, ensure_ascii=False))
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
    history, quarantine.HISTORY_WINDOW = quarantine.HISTORY_WINDOW, TimeWindow()
    try:
        result = asyncio.run(_replay(db, mapping))
    finally:
        set_time_window(previous)
        quarantine.HISTORY_WINDOW = history
    return f"replay: {result.summary()}"


def _writer(db: Path) -> StoreWriter:
    """The store's writer, routing what it applies with the rules file's fulfillment rules."""
    from feeds.settings import Settings
    from rules.file import RulesFileError, default_rules_path, load_rules
    from rules.routing.config import FulfillmentRouting

    settings = Settings()
    path = settings.rules_file or default_rules_path()
    try:
        routing = load_rules(path).rules.fulfillment if path.exists() else FulfillmentRouting()
    except RulesFileError:
        routing = FulfillmentRouting()
    return StoreWriter(db, params=settings.metrics, after_commit=router_hook(lambda: routing))


async def _replay(
    db: Path,
    mapping: Mapping,
    *,
    reason: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
) -> ReplayResult:
    async with _writer(db) as writer:
        return await replay(writer, mapping, reason=reason, source=source, since=since)


async def _edit(
    db: Path,
    mapping: Mapping,
    held_id: int,
    after: str,
    *,
    by: str,
    how: str,
    expect: str,
    dry_run: bool,
) -> EditOutcome:
    from feeds.runtime.quarantine_edit import save_and_replay

    async with _writer(db) as writer:
        return await save_and_replay(
            writer, mapping, held_id, after, by=by, how=how, expect=expect, dry_run=dry_run
        )


__all__ = ["add_arguments", "replay_store", "run_mapping", "run_quarantine"]
