"""The rules file: its model, and loading it with file:line:field errors.

The file is TOML with three parts, validated together so a file is either wholly valid or
refused:

* ``[[alert]]`` tables: alert rules (:class:`rules.alerts.rule.AlertRule`);
* ``[notify]``: routing tree, receivers and inhibition (:class:`rules.notify.NotifyConfig`);
* ``[fulfillment]``: fulfillment routing (:class:`rules.routing.config.FulfillmentRouting`).

An invalid file raises :class:`RulesFileError` whose problems name the file, the line and
the field (``rules.toml:23: alert[late_orders].threshold: Input should be a valid number``).
Callers keep the last good rules in force (see :mod:`rules.watch`).  Changing the file is
:mod:`rules.editor`'s job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, ConfigDict, ValidationError
from tomlkit.toml_document import TOMLDocument

from rules.alerts.rule import AlertRule
from rules.notify import NotifyConfig, check_notify
from rules.receivers import LogReceiverConfig
from rules.routing.config import (
    LEGACY_SECTION,
    SECTION,
    FulfillmentRouting,
    check_references,
)
from rules.textfile import read_regular
from rules.toml_lines import Loc, error_message, field_text, key_lines, line_of

DEFAULT_RULES_PATH = Path("~/.config/omniops/rules.toml")
"""Where the rules file lives unless the config (or ``$OMNIOPS_RULES``) says otherwise."""


def default_rules_path() -> Path:
    """``$OMNIOPS_RULES`` or :data:`DEFAULT_RULES_PATH`, expanded."""
    return Path(os.environ.get("OMNIOPS_RULES", str(DEFAULT_RULES_PATH))).expanduser()


class RulesFile(BaseModel):
    """The whole rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert: tuple[AlertRule, ...] = ()
    """The ``[[alert]]`` tables, in file order."""
    notify: NotifyConfig = NotifyConfig()
    """The ``[notify]`` section."""
    fulfillment: FulfillmentRouting = FulfillmentRouting()
    """The ``[fulfillment]`` section (fulfillment routing rules); the legacy ``[fulfilment]``
    (British spelling) is read as the same section."""

    def rule(self, rule_id: str) -> AlertRule | None:
        """The alert rule with this id, or None."""
        return next((r for r in self.alert if r.id == rule_id), None)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a rules file, located."""

    path: Path
    line: int | None
    field: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}"
        if self.column is not None and self.line is not None:
            where += f":{self.column}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class RulesFileError(ValueError):
    """A rules file that cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @property
    def first(self) -> Problem:
        """The first problem (the one to show when there is room for one line)."""
        return self.problems[0]

    def operator_line(self) -> str:
        """One line for a status bar: the first problem, then how many more.

        ``rules.toml:5: alert[x].threshold: must be a number (+1 more)``: the file by its
        name and the line (the editor's jump target), the field, the message.
        """
        first = self.first
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        where = first.path.name + (f":{first.line}" if first.line is not None else "")
        said = f"{first.field}: {first.message}" if first.field else first.message
        return f"{where}: {said}{more}"


def digest_of(text: str) -> str:
    """The content hash used for conflict detection."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LoadedRules:
    """A valid rules file as read: the rules, the source, and how to spot a later change."""

    path: Path
    rules: RulesFile
    text: str
    digest: str
    """sha256 of the text: saving refuses if the file's digest is no longer this."""
    mtime_ns: int | None = None

    def document(self) -> TOMLDocument:
        """A fresh tomlkit document of the text (edit it; comments are kept)."""
        return tomlkit.parse(self.text)


def syntax_problem(path: Path, exc: tomlkit.exceptions.ParseError) -> Problem:
    """A TOML syntax error as a located problem (line and column)."""
    message = re.sub(r" at line \d+ col \d+$", "", str(exc))
    if "\x00" in message:
        message = "unexpected end of file (an unclosed [, { or quote?)"
    return Problem(path, exc.line, "", f"TOML syntax: {message}", column=exc.col + 1)


def _defined_again(text: str, key: str) -> int | None:
    """The line of the last table header naming ``key`` (where it is defined again)."""
    header = re.compile(r"^\s*\[\[?\s*(?:[^\]]*\.)?\s*" + re.escape(key) + r"\s*\]\]?")
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if header.match(line)]
    return lines[-1] if len(lines) > 1 else None


def parse_toml(text: str, path: Path) -> tuple[TOMLDocument, dict[str, Any]]:
    """``text`` as a tomlkit document and its plain data, or :class:`RulesFileError`.

    tomlkit raises a :class:`~tomlkit.exceptions.ParseError` (line and column) for most
    mistakes, but a table defined twice around an array of tables comes out as another
    of its errors, with no line, and only when the document is read (unwrapped here):
    that one is located by the key's last header.
    """
    try:
        document = tomlkit.parse(text)
        return document, document.unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise RulesFileError([syntax_problem(path, exc)]) from None
    except tomlkit.exceptions.TOMLKitError as exc:
        found = re.search(r'Key "(.+)" already exists', str(exc))
        line = _defined_again(text, found.group(1)) if found else None
        raise RulesFileError([Problem(path, line, "", f"TOML syntax: {exc}")]) from None


_EMPTY = (
    "the rules file is empty; refused so alerting is not switched off by accident "
    "(write `alert = []` to turn every alert off on purpose)"
)
_NO_ALERTS = (
    "the file has no alert list ([[alert]] tables); refused so alerting is not switched "
    "off by accident (write `alert = []` to turn every alert off on purpose)"
)


def parse_rules(
    text: str,
    path: Path,
    *,
    known_nodes: Collection[str] | None = None,
    known_carriers: Collection[str] | None = None,
) -> RulesFile:
    """Validate rules file ``text`` (read from ``path``, used in messages).

    A file that cannot silently switch alerting off: an empty (or whitespace-only) file,
    or one without an alert list, is refused; ``alert = []`` (or ``enabled = false`` on
    each rule) is how alerts are turned off on purpose.

    Args:
        text: The file's content.
        path: Where it was read from (named in every problem).
        known_nodes: The node (location) ids that exist; ``[fulfillment]`` may name no
            other (None: node ids are not checked).
        known_carriers: The carriers that exist, likewise (None: not checked).

    Raises:
        RulesFileError: TOML syntax errors with line and column; every validation error
            with its line and field.
    """
    if not text.strip():
        raise RulesFileError([Problem(path, None, "", _EMPTY)])
    _, data = parse_toml(text, path)
    index = key_lines(text)
    if LEGACY_SECTION in data:  # [fulfilment], the British spelling: read as [fulfillment]
        if SECTION in data:
            loc: Loc = (LEGACY_SECTION,)
            message = f"both [{SECTION}] and [{LEGACY_SECTION}]: keep one (they are the same)"
            raise RulesFileError([Problem(path, line_of(index, loc), LEGACY_SECTION, message)])
        data[SECTION] = data.pop(LEGACY_SECTION)
        index = {_modern(key): line for key, line in index.items()}
    if "alert" not in data:
        raise RulesFileError([Problem(path, None, "alert", _NO_ALERTS)])
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                path,
                line_of(index, tuple(error["loc"])),
                field_text(tuple(error["loc"]), data),
                error_message(cast(Mapping[str, Any], error)),
            )
            for error in exc.errors()
        ]
        raise RulesFileError(problems) from None
    problems = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.alert):
        if rule.id in seen:
            loc = ("alert", i, "id")
            problems.append(
                Problem(
                    path,
                    line_of(index, loc),
                    field_text(loc, data),
                    f"duplicate alert id {rule.id!r} (first used in alert #{seen[rule.id] + 1})",
                )
            )
        seen.setdefault(rule.id, i)
    for loc, message in check_notify(rules.notify):
        problems.append(Problem(path, line_of(index, loc), field_text(loc, data), message))
    references = check_references(rules.fulfillment, nodes=known_nodes, carriers=known_carriers)
    for loc, message in references:
        problems.append(Problem(path, line_of(index, loc), field_text(loc, data), message))
    if problems:
        raise RulesFileError(problems)
    return _resolve_paths(rules, path)


def _modern(key: Loc) -> Loc:
    """A source key under the legacy ``[fulfilment]`` as the same key under ``[fulfillment]``."""
    return (SECTION, *key[1:]) if key[:1] == (LEGACY_SECTION,) else key


def _resolve_paths(rules: RulesFile, path: Path) -> RulesFile:
    """Relative log receiver paths are relative to the rules file's folder."""
    base = path.parent
    receivers = []
    changed = False
    for r in rules.notify.receivers:
        if isinstance(r, LogReceiverConfig) and not r.path.expanduser().is_absolute():
            r = r.model_copy(update={"path": base / r.path})
            changed = True
        elif isinstance(r, LogReceiverConfig):
            r = r.model_copy(update={"path": r.path.expanduser()})
            changed = True
        receivers.append(r)
    if not changed:
        return rules
    notify = rules.notify.model_copy(update={"receivers": tuple(receivers)})
    return rules.model_copy(update={"notify": notify})


def load_rules(
    path: Path,
    *,
    known_nodes: Collection[str] | None = None,
    known_carriers: Collection[str] | None = None,
) -> LoadedRules:
    """Read and validate the rules file at ``path`` (see :func:`parse_rules`).

    Raises:
        RulesFileError: the file is invalid, unreadable or missing (located problems).
    """
    path = Path(path)
    try:
        raw = read_regular(path)
        stat = path.stat()
    except OSError as exc:
        raise RulesFileError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesFileError([Problem(path, None, "", f"not UTF-8 text: {exc}")]) from None
    rules = parse_rules(text, path, known_nodes=known_nodes, known_carriers=known_carriers)
    return LoadedRules(path, rules, text, digest_of(text), stat.st_mtime_ns)


def default_rules_text() -> str:
    """The shipped default rules file (commented)."""
    return resources.files("rules").joinpath("defaults.toml").read_text(encoding="utf-8")


def ensure_rules_file(path: Path) -> bool:
    """Write the shipped defaults to ``path`` if there is no file yet; True if written."""
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, default_rules_text(), mode=None)
    return True


def load_or_create(path: Path) -> LoadedRules:
    """Load the rules file, writing the shipped defaults first on a first run."""
    ensure_rules_file(path)
    return load_rules(path)


def atomic_write(path: Path, text: str, *, mode: int | None) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where possible
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
