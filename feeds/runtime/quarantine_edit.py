"""``omniops quarantine edit``: fix a held payload, validate it as a replay would, replay it.

A held delivery (:mod:`store.held`) keeps its payload redacted; when the payload itself
is wrong (a date no format reads, a quantity typed as a word, a SKU with a typo) no
mapping fix places it.  An edit replaces the payload with its fixed version:

1. the payload is shown to the operator as text (:func:`view`): pretty JSON for a JSON
   body (a webhook's, a Kafka record's, a canonical line), JSON Lines for what
   ``POST /events`` kept, and a JSON list ``[[line, {column: value}], ...]`` for a dropped
   CSV file's rows (an order-history invoice's rows carry a third number, the count
   that numbers its returns: leave it);
2. the edited text (from ``$VISUAL``/``$EDITOR``, ``--set FIELD=VALUE`` or ``--from-file``)
   is read back (:func:`kept`) and redacted as the ingress keeps payloads, so an edit can
   never store what the ingress would not;
3. it is mapped and validated by the path ``quarantine replay`` takes
   (:func:`feeds.runtime.quarantine.attempt`, with today's mapping and windows); if it
   still would not be placed, **nothing changes** and the reason (naming the field) is
   the error;
4. otherwise the edit is saved with who, when, how and what changed, the payload before
   and after (:func:`store.held.edit_held`, one transaction: the original is never
   lost), and the row is replayed (:func:`feeds.runtime.quarantine.replay_rows`): its
   events applied once, a node-less placement replaced, the row ``placed``.

``--set`` fields: a dotted path into a JSON payload (``line_items.0.sku``; a list item by
its index; a new key may be added to an existing object), ``N.path`` for the N-th kept
line of ``POST /events`` (1-based; optional when one line is kept), and ``LINE.Column``
for a dropped CSV row by its line in the file (optional when one row is held).  A value
replaces a text value as text; anything else is read as JSON when it is valid JSON
(``3``, ``true``, ``null``, ``"007"``), else as text.  A CSV row's values are always text.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from feeds.runtime.quarantine import (
    Attempt,
    ReplayResult,
    attempt,
    replay_rows,
    tracking_lookup,
)
from feeds.webhooks.canonical import json_lines
from feeds.webhooks.mapping import Mapping
from feeds.webhooks.redact import keep_raw, redact_payload, redact_raw
from store.apply import epoch
from store.held import HeldRow, StaleEdit, edit_held, held_row
from store.writer import StoreWriter

Change = tuple[str, object, object]
"""``(field, before, after)``."""


class EditError(ValueError):
    """An edit that is refused: the held row is left as it was; the message says why."""


def shape(row: HeldRow) -> str:
    """How ``row``'s payload is edited: ``rows``, ``lines``, ``json`` or ``text``."""
    if row.source == "history":
        return "rows"
    if row.source == "dropfolder":
        try:
            kind = json.loads(row.topic).get("kind")
        except (ValueError, AttributeError):
            kind = None
        return "json" if kind == "jsonl" else "rows"
    if row.source == "events":
        return "lines"
    try:
        data = json.loads(row.raw)
    except ValueError:
        return "text"
    return "json" if isinstance(data, dict | list) else "text"


def _kind(row: HeldRow) -> str:
    if row.source == "history":
        return "history"
    try:
        return str(json.loads(row.topic).get("kind", ""))
    except (ValueError, AttributeError):
        return ""


def columns(row: HeldRow) -> tuple[str, ...]:
    """The columns a held CSV row may have (its kind's, optional ones included)."""
    from feeds.csv_import import COLUMNS
    from feeds.dropfolder import COUNT_COLUMNS, POS_COLUMNS

    return {
        "history": COLUMNS,
        "pos": (*POS_COLUMNS, "discount"),
        "counts": (*COUNT_COLUMNS, "reserved"),
    }.get(_kind(row), ())


def view(row: HeldRow) -> str:
    """The payload as the operator edits it (see the module docstring)."""
    form = shape(row)
    if form in ("rows", "json"):
        return json.dumps(json.loads(row.raw), indent=2, ensure_ascii=False) + "\n"
    return row.raw if row.raw.endswith("\n") else row.raw + "\n"


def suffix(row: HeldRow) -> str:
    """The file name ending of the editor's file (so the editor knows the syntax)."""
    return {"rows": ".json", "json": ".json", "lines": ".jsonl"}.get(shape(row), ".txt")


# -- reading an edit back -------------------------------------------------------------------


def _doc(line: str) -> Any:
    """A kept line as JSON, or as its text when it is not JSON (shown, never edited)."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return line


def _json_error(exc: json.JSONDecodeError, what: str) -> EditError:
    return EditError(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")


def kept(row: HeldRow, text: str) -> str:
    """The edited ``text`` as ``row`` keeps payloads (redacted); :class:`EditError` if unusable."""
    form = shape(row)
    if form == "rows":
        return _kept_rows(row, text)
    if form == "lines":
        lines = [line for line in json_lines(text) if line.strip()]
        for n, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise _json_error(exc, f"line {n}") from None
        return "\n".join(redact_raw(line) for line in lines)
    if form == "json":
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, "the edited payload") from None
    return keep_raw(text.strip() if form == "json" else text.rstrip("\n"))


def _kept_rows(row: HeldRow, text: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc, "the edited rows") from None
    old = json.loads(row.raw)
    if not isinstance(data, list) or len(data) != len(old):
        raise EditError(
            f"keep the {len(old)} rows as a list of [line, {{column: value}}]; edit their values"
        )
    allowed = set(columns(row))
    out: list[list[object]] = []
    for new, before in zip(data, old, strict=True):
        if not isinstance(new, list) or len(new) != len(before) or new[0] != before[0]:
            raise EditError(
                f"row of line {before[0]}: keep it as [{before[0]}, {{...}}"
                + "".join(f", {x}" for x in before[2:])
                + "]; edit its values"
            )
        if new[2:] != before[2:]:
            raise EditError(
                f"row of line {before[0]}: its count {before[2]} numbers its returns; leave it"
            )
        values = new[1]
        if not isinstance(values, dict):
            raise EditError(f"row of line {before[0]}: expected {{column: value}}")
        fixed: dict[str, str] = {}
        for column, value in values.items():
            if column not in before[1] and column not in allowed:
                known = ", ".join(sorted(allowed | set(before[1])))
                raise EditError(f"line {before[0]} {column}: no such column (columns: {known})")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise EditError(
                    f"line {before[0]} {column}: a CSV value is text, got {json.dumps(value)}"
                )
            fixed[str(column)] = str(value)
        safe = (
            fixed if row.source == "history" or _kind(row) == "history" else redact_payload(fixed)
        )
        out.append([new[0], safe, *new[2:]])
    return json.dumps(out, ensure_ascii=False)


# -- --set ----------------------------------------------------------------------------------


def set_fields(row: HeldRow, assignments: Sequence[str]) -> str:
    """The payload's editing text with each ``FIELD=VALUE`` of ``assignments`` applied."""
    form = shape(row)
    if form == "text":
        raise EditError(
            "the payload is not JSON, so --set cannot name a field in it: use --from-file"
            " or the editor"
        )
    if form == "lines":
        docs: list[Any] = []
        for n, line in enumerate((x for x in json_lines(row.raw) if x.strip()), start=1):
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise EditError(
                    f"kept line {n} is not JSON ({exc.msg}), so --set cannot name a field in"
                    " it: use --from-file or the editor"
                ) from None
    else:
        docs = [json.loads(row.raw)]
    for assignment in assignments:
        field, sep, value = assignment.partition("=")
        if not sep or not field:
            raise EditError(f"--set {assignment!r}: give FIELD=VALUE")
        if form == "rows":
            _set_row(row, docs[0], field, value)
        elif form == "lines":
            head, _, rest = field.partition(".")
            if head.isdigit() and rest:
                index = int(head) - 1
                if not 0 <= index < len(docs):
                    raise EditError(f"--set {field}: there are {len(docs)} kept lines")
                _set_path(docs, index, rest, value, field)
            elif len(docs) == 1:
                _set_path(docs, 0, field, value, field)
            else:
                raise EditError(
                    f"--set {field}: {len(docs)} lines are kept: say which,"
                    f" e.g. --set 1.{field}=..."
                )
        else:
            holder = [docs[0]]
            _set_path(holder, 0, field, value, field)
            docs[0] = holder[0]
    if form == "lines":
        return "\n".join(json.dumps(doc, ensure_ascii=False) for doc in docs) + "\n"
    return json.dumps(docs[0], indent=2, ensure_ascii=False) + "\n"


def _set_row(row: HeldRow, rows: list[list[Any]], field: str, value: str) -> None:
    head, _, rest = field.partition(".")
    lines = [int(r[0]) for r in rows]
    if head.isdigit() and rest:
        if int(head) not in lines:
            raise EditError(f"--set {field}: no held row at line {head} (lines {_join(lines)})")
        target, column = rows[lines.index(int(head))], rest
    elif len(rows) == 1:
        target, column = rows[0], field
    else:
        raise EditError(
            f"--set {field}: rows at lines {_join(lines)} are held: say which, e.g."
            f" --set {lines[0]}.{field}=..."
        )
    allowed = set(columns(row)) | set(target[1])
    if column not in allowed:
        raise EditError(
            f"--set {field}: no such column {column!r} (columns: {', '.join(sorted(allowed))})"
        )
    target[1][column] = value


def _join(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


def _set_path(holder: list[Any], index: int, path: str, value: str, field: str) -> None:
    """Set ``holder[index]`` ``.path`` to ``value`` (see the module docstring)."""
    parent: Any = holder
    key: Any = index
    walked: list[str] = []
    for part in path.split("."):
        node = parent[key]
        where = ".".join(walked) or "the payload"
        if isinstance(node, dict):
            if part not in node and walked != path.split(".")[:-1]:
                raise EditError(f"--set {field}: {where} has no field {part!r}")
            parent, key = node, part
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise EditError(
                    f"--set {field}: {where} is a list of {len(node)}:"
                    f" give an index 0..{len(node) - 1}"
                )
            parent, key = node, int(part)
        else:
            raise EditError(f"--set {field}: {where} is {json.dumps(node)}, not an object or list")
        walked.append(part)
    old = (
        parent[key]
        if (isinstance(parent, dict) and key in parent) or isinstance(parent, list)
        else None
    )
    if isinstance(old, str):
        parent[key] = value
        return
    try:
        parent[key] = json.loads(value)
    except ValueError:
        parent[key] = value


# -- what changed ---------------------------------------------------------------------------


def _leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _leaves(v, f"{path}.{i}" if path else str(i), out)
    else:
        out[path] = value


def changes(row: HeldRow, after: str) -> list[Change]:
    """What an edit changed: ``(field, before, after)`` per value (``(payload)`` for text)."""
    form = shape(row)
    if form == "text":
        return [] if after == row.raw else [("(payload)", row.raw, after)]
    if form == "rows":
        out: list[Change] = []
        for old, new in zip(json.loads(row.raw), json.loads(after), strict=True):
            for column in sorted(set(old[1]) | set(new[1])):
                a, b = old[1].get(column), new[1].get(column)
                if a != b:
                    out.append((f"line {old[0]} {column}", a, b))
        return out
    if form == "lines":
        old_docs = [_doc(x) for x in json_lines(row.raw) if x.strip()]
        new_docs = [_doc(x) for x in json_lines(after) if x.strip()]
        before_map: dict[str, Any] = {}
        after_map: dict[str, Any] = {}
        _leaves(old_docs, "", before_map)
        _leaves(new_docs, "", after_map)
        renamed = {}
        for key in set(before_map) | set(after_map):
            n, _, rest = key.partition(".")
            renamed[key] = f"line {int(n) + 1}" + (f" {rest}" if rest else "")
    else:
        before_map, after_map = {}, {}
        _leaves(json.loads(row.raw), "", before_map)
        _leaves(json.loads(after), "", after_map)
        renamed = {key: key or "(payload)" for key in set(before_map) | set(after_map)}
    missing = object()
    out = []
    for key in sorted(set(before_map) | set(after_map)):
        a, b = before_map.get(key, missing), after_map.get(key, missing)
        if a != b or type(a) is not type(b):
            out.append((renamed[key], None if a is missing else a, None if b is missing else b))
    return out


# -- the editor -----------------------------------------------------------------------------


def editor_command() -> list[str]:
    """``$VISUAL``, else ``$EDITOR``, else ``vi``, split as a shell would."""
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


def run_editor(row: HeldRow) -> tuple[str, Path]:
    """Open the editor on the payload; the text saved and the file it is in.

    The caller removes the file once the edit is saved or found unchanged; a refused
    edit leaves it, so the operator's work is not lost.
    """
    handle, name = tempfile.mkstemp(prefix=f"omniops-held-{row.id}-", suffix=suffix(row))
    path = Path(name)
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(view(row))
    try:
        done = subprocess.run([*editor_command(), str(path)], check=False)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise EditError(f"could not start the editor {editor_command()[0]!r}: {exc}") from None
    if done.returncode != 0:
        path.unlink(missing_ok=True)
        raise EditError(f"the editor exited with {done.returncode}")
    return path.read_text(encoding="utf-8"), path


# -- saving and replaying -------------------------------------------------------------------


@dataclass
class EditOutcome:
    """What an edit did."""

    row: HeldRow
    """The held row as it was."""
    after: str
    """The payload as saved."""
    changes: list[Change]
    tried: Attempt
    """The edited payload mapped and validated as a replay maps it."""
    edit_id: int | None = None
    """The ``held_edits`` row (None for ``--dry-run``)."""
    result: ReplayResult | None = None
    """The replay of the edited row (None for ``--dry-run``)."""


def why(tried: Attempt) -> str:
    """Why an edited payload would still be held, each cause once.

    A row another row held back (``invoice ... held back by ...``) is left out: the row
    that holds it back is named already.
    """
    if tried.error is not None or tried.mapped is None:
        return tried.reason
    own = [q.error for q in tried.quarantined if " held back by " not in q.error]
    parts = list(dict.fromkeys(own or [q.error for q in tried.quarantined]))
    text = "; ".join(parts)
    rest = [p for p in tried.reason.split("; ") if p.startswith("stored with unmapped")]
    return "; ".join(parts + [p for p in rest if p not in text]) or tried.reason


async def save_and_replay(
    writer: StoreWriter,
    mapping: Mapping,
    held_id: int,
    after: str,
    *,
    by: str,
    how: str,
    expect: str,
    dry_run: bool = False,
) -> EditOutcome:
    """Validate the payload ``after`` for held row ``held_id``; if it places, save and replay.

    ``expect``: the payload the edit was made from (a row changed since is refused).
    Raises :class:`EditError` (nothing written) when the row is not held, when nothing
    changed, or when the edited payload would still not be placed (its reason).
    """
    row = await writer.run(lambda db: held_row(db, held_id))
    if row is None:
        raise EditError("no such held delivery")
    if row.state != "held":
        raise EditError(f"it is {row.state}, not held: there is nothing to fix")
    if row.raw != expect:
        raise EditError("it changed while it was edited (a replay or another edit): edit it again")
    if after == row.raw:
        raise EditError("no change")
    edited = replace(row, raw=after)
    tried = await writer.run(lambda db: attempt(edited, mapping, tracking_lookup(db)))
    if not tried.placed:
        raise EditError(f"the edited payload would still be held: {why(tried)}")
    found = changes(row, after)
    outcome = EditOutcome(row, after, found, tried)
    if dry_run:
        return outcome
    at = epoch(writer.clock.now())
    try:
        outcome.edit_id = await writer.run(
            lambda db: edit_held(
                db, held_id, before=row.raw, after=after, by=by, how=how, changes=found, at=at
            )
        )
    except StaleEdit as exc:
        raise EditError(str(exc)) from None
    # Saved: from here a failure leaves the edit (audited) for `quarantine replay` to apply.
    outcome.result = await replay_rows(writer, [edited], mapping)
    return outcome


__all__ = [
    "Change",
    "EditError",
    "EditOutcome",
    "changes",
    "columns",
    "editor_command",
    "kept",
    "run_editor",
    "save_and_replay",
    "set_fields",
    "shape",
    "suffix",
    "view",
    "why",
]
