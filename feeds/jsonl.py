"""Reading canonical JSON Lines: files, gzip files and folders of them.

A line that is not JSON or not a valid canonical event becomes a
:class:`store.model.Quarantined` item holding the raw line and a reason that names the
file, the line number and the failing field; nothing is dropped.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from rules.errors import describe_validation_error
from store.model import Event, Quarantined, parse_event

SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")


def parse_record(record: object, *, source: str, where: str) -> Event | Quarantined:
    """Validate one already-decoded JSON value (an entry of a poll page), as :func:`parse_line`.

    The value is validated as it is, not written out and parsed again; only a quarantined
    one is turned back into text, for its ``raw``.
    """
    if isinstance(record, dict):
        try:
            return parse_event(record)
        except ValidationError as exc:
            reason = describe_validation_error(exc)
        named = record.get("source")
        if isinstance(named, str) and named:
            source = named
    else:
        reason = f"expected a JSON object, got {type(record).__name__}"
    raw = json.dumps(record, ensure_ascii=False)
    return Quarantined(source=source, raw=raw, error=f"{where}: {reason}")


def parse_line(line: str, *, source: str, where: str) -> Event | Quarantined:
    """Validate one JSON line; a bad one comes back quarantined with ``where`` in the reason."""
    if isinstance(line, NotUtf8):
        reason = f"not UTF-8 text (byte {line.byte} of the line; kept with \\xNN escapes)"
        return Quarantined(source=source, raw=str(line), error=f"{where}: {reason}")
    try:
        return parse_event(line)
    except ValidationError as exc:
        reason = describe_validation_error(exc)
        # Attribute the payload to the feed it names, when it names one.
        try:
            data = json.loads(line)
            if isinstance(data, dict) and isinstance(data.get("source"), str) and data["source"]:
                source = data["source"]
        except ValueError:
            pass
        return Quarantined(source=source, raw=line, error=f"{where}: {reason}")


def feed_files(path: Path) -> list[Path]:
    """The JSON Lines files at ``path``: the file itself, or a folder's files sorted by name."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.name.endswith(SUFFIXES))
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def source_of(path: Path) -> str:
    """The feed name a file stands for: its name without the JSON Lines suffixes."""
    name = path.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


class NotUtf8(str):
    r"""A line that is not UTF-8 text, its bad bytes written as ``\xNN`` (nothing lost).

    :func:`read_lines` yields it in the line's place; :func:`parse_line` quarantines it
    with the offset of its first bad byte, so one such line never stops its file.
    """

    byte: int
    """Offset in the line of its first byte that is not UTF-8."""


def _checked(text: str) -> str:
    """``text`` as read with ``surrogateescape``; a :class:`NotUtf8` if bytes were bad."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text.encode("utf-8", "surrogateescape")
        line = NotUtf8(raw.decode("utf-8", "backslashreplace"))
        line.byte = len(text[: exc.start].encode("utf-8", "surrogateescape"))
        return line
    return text


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, text)`` for every non-blank line; gzip by the ``.gz`` suffix.

    A line that is not UTF-8 comes as a :class:`NotUtf8` (quarantined by
    :func:`parse_line`); the lines around it are read as usual.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text:
                yield number, _checked(text)


def read_items(path: Path) -> Iterator[Event | Quarantined]:
    """Every line of one file, validated or quarantined."""
    source = source_of(path)
    for number, text in read_lines(path):
        yield parse_line(text, source=source, where=f"{path.name}:{number}")
