"""The rules file: its model, loading with file:line:field errors, and safe saving.

The file is TOML with three parts, validated together so a file is either wholly valid or
refused:

* ``[[alert]]`` tables: alert rules (:class:`rules.alerts.AlertRule`);
* ``[notify]``: routing tree, receivers and inhibition (:class:`rules.notify.NotifyConfig`);
* ``[fulfilment]``: fulfilment routing (:class:`rules.routing.FulfilmentRouting`).

An invalid file raises :class:`RulesFileError` whose problems name the file, the line and
the field (``rules.toml:23: alert[late_orders].threshold: Input should be a valid number``).
Callers keep the last good rules in force (see :mod:`rules.watch`).

:class:`RulesEditor` is how the console changes the file: every change edits the parsed
tomlkit document (so comments and layout stay), is validated as a whole before anything is
written, refuses to overwrite a file that changed on disk since it was read
(:class:`ConflictError`, by content hash), is written atomically (temporary file, fsync,
rename), and is appended to the audit log (who, when, the change as a unified diff).
Every mutating method checks the user's role.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, cast

import tomlkit
import tomlkit.exceptions
from pydantic import BaseModel, ConfigDict, ValidationError
from tomlkit.items import AoT, Table
from tomlkit.toml_document import TOMLDocument

from rules.alerts import AlertRule, Permissions
from rules.labels import format_duration, parse_duration, parse_matcher_field
from rules.matchers import format_matchers
from rules.notify import NotifyConfig, check_notify
from rules.receivers import LogReceiverConfig
from rules.routing import FulfilmentRouting, update_fulfilment_document
from store.clock import Clock, SystemClock

try:  # advisory locking where the platform has it (not on Windows)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

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
    fulfilment: FulfilmentRouting = FulfilmentRouting()
    """The ``[fulfilment]`` section (fulfilment routing rules)."""

    def rule(self, rule_id: str) -> AlertRule | None:
        """The alert rule with this id, or None."""
        return next((r for r in self.alert if r.id == rule_id), None)


# -- problems ----------------------------------------------------------------------------------


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


class ConflictError(RuntimeError):
    """The file changed on disk since it was read; nothing was written."""


# -- locating keys in the source ---------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'[^']*'"
_KEY = re.compile(rf"^\s*((?:{_BARE}|{_QUOTED})(?:\s*\.\s*(?:{_BARE}|{_QUOTED}))*)\s*=")
_STRINGS = re.compile(_QUOTED)

Loc = tuple[str | int, ...]


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(rf"{_BARE}|{_QUOTED}", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def _bracket_delta(text: str) -> int:
    code = _STRINGS.sub("", text).split("#", 1)[0]
    return code.count("[") + code.count("{") - code.count("]") - code.count("}")


def key_lines(text: str) -> dict[Loc, int]:
    """The line of every table header and key, by its path (array-of-tables indexed).

    ``[[alert]]`` number 4's ``threshold`` is ``("alert", 3, "threshold")``, the same path
    pydantic reports in a validation error.  Lines inside multi-line strings and arrays
    are skipped; the first occurrence wins.
    """
    found: dict[Loc, int] = {}
    aot_paths: set[tuple[str, ...]] = set()
    aot_counts: dict[Loc, int] = {}
    current: Loc = ()
    in_string: str | None = None
    depth = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if in_string in line:
                in_string = None
            continue
        if depth > 0:
            depth = max(0, depth + _bracket_delta(line))
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            header = _HEADER.match(line)
            if header is None:
                continue
            names = _split_dotted(header.group(2))
            is_aot = header.group(1) == "[["
            concrete: list[str | int] = []
            for i, name in enumerate(names):
                concrete.append(name)
                abstract = tuple(names[: i + 1])
                if i == len(names) - 1 and is_aot:
                    aot_paths.add(abstract)
                    key = tuple(concrete)
                    index = aot_counts.get(key, 0)
                    aot_counts[key] = index + 1
                    concrete.append(index)
                elif abstract in aot_paths:
                    concrete.append(max(0, aot_counts.get(tuple(concrete), 1) - 1))
            current = tuple(concrete)
            found.setdefault(current, lineno)
            continue
        key_match = _KEY.match(line)
        if key_match is None:
            continue
        path = (*current, *_split_dotted(key_match.group(1)))
        found.setdefault(path, lineno)
        rest = line[key_match.end() :].strip()
        for quote in ('"""', "'''"):
            if rest.startswith(quote) and rest.count(quote) == 1:
                in_string = quote
        if in_string is None:
            depth = max(0, _bracket_delta(rest))
    return found


def line_of(index: Mapping[Loc, int], loc: Sequence[str | int]) -> int | None:
    """The line of the deepest key of ``loc`` found in the source (None: not found).

    Path elements the source cannot have (pydantic's union tags, list positions inside an
    inline array) are skipped, so the answer is the nearest key the operator wrote.
    """
    prefixes: set[Loc] = set()
    for key in index:
        for n in range(1, len(key) + 1):
            prefixes.add(key[:n])
    path: Loc = ()
    best = index.get((), None)
    for element in loc:
        candidate = (*path, element)
        if candidate in prefixes:
            path = candidate
            best = index.get(path, best)
    return best


def field_text(loc: Sequence[str | int], data: Any) -> str:
    """``alert[late_orders].threshold`` (the rule's id when it has one), ``notify.route``."""
    out = ""
    node = data
    for position, element in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(element, int):
            label = f"#{element + 1}"
            if isinstance(node, list) and 0 <= element < len(node):
                item = node[element]
                if isinstance(item, dict) and isinstance(item.get("id") or item.get("name"), str):
                    label = str(item.get("id") or item.get("name"))
                node = item
            else:
                node = None
            out += f"[{label}]"
            continue
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif isinstance(node, dict) and not last:
            continue  # a pydantic tag (union member, validator): not a key of the file
        else:
            node = None
        out += f".{element}" if out else element
    return out


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if error.get("type") == "missing":
        return "missing: this field is required"
    if error.get("type") == "extra_forbidden":
        return "unknown field (check the spelling; see the shipped defaults for every field)"
    value = error.get("input")
    if isinstance(value, (str, int, float, bool)) and not isinstance(value, dict):
        shown = repr(value)
        if len(shown) <= 60 and shown not in msg:
            msg += f" (got {shown})"
    return msg


# -- loading -----------------------------------------------------------------------------------


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


def _syntax_problem(path: Path, exc: tomlkit.exceptions.ParseError) -> Problem:
    message = re.sub(r" at line \d+ col \d+$", "", str(exc))
    if "\x00" in message:
        message = "unexpected end of file (an unclosed [, { or quote?)"
    return Problem(path, exc.line, "", f"TOML syntax: {message}", column=exc.col + 1)


def parse_rules(text: str, path: Path) -> RulesFile:
    """Validate rules file ``text`` (read from ``path``, used in messages).

    Raises:
        RulesFileError: TOML syntax errors with line and column; every validation error
            with its line and field.
    """
    try:
        document = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise RulesFileError([_syntax_problem(path, exc)]) from None
    data: dict[str, Any] = document.unwrap()
    index = key_lines(text)
    try:
        rules = RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = [
            Problem(
                path,
                line_of(index, tuple(error["loc"])),
                field_text(tuple(error["loc"]), data),
                _message(cast(Mapping[str, Any], error)),
            )
            for error in exc.errors()
        ]
        raise RulesFileError(problems) from None
    problems = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules.alert):
        if rule.id in seen:
            loc: Loc = ("alert", i, "id")
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
    if problems:
        raise RulesFileError(problems)
    return _resolve_paths(rules, path)


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


def load_rules(path: Path) -> LoadedRules:
    """Read and validate the rules file at ``path``.

    Raises:
        RulesFileError: the file is invalid, unreadable or missing (located problems).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        stat = path.stat()
    except OSError as exc:
        raise RulesFileError([Problem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesFileError([Problem(path, None, "", f"not UTF-8 text: {exc}")]) from None
    rules = parse_rules(text, path)
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
    _atomic_write(path, default_rules_text(), mode=None)
    return True


def load_or_create(path: Path) -> LoadedRules:
    """Load the rules file, writing the shipped defaults first on a first run."""
    ensure_rules_file(path)
    return load_rules(path)


# -- writing -----------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str, *, mode: int | None) -> None:
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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the current file while checking and replacing it.

    A second saver that opened the old file waits, then re-reads the path (the new file)
    and sees the conflict; one that opens after the rename sees the new text at once.
    """
    if fcntl is None or not path.exists():
        yield
        return
    with path.open("rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded change to the rules file."""

    at: datetime
    user: str
    file: str
    action: str
    diff: str


def default_audit_path(rules_path: Path) -> Path:
    """``rules.toml.audit.jsonl`` next to the rules file."""
    return rules_path.with_name(rules_path.name + ".audit.jsonl")


def append_audit(path: Path, entry: AuditEntry) -> None:
    """Append one entry (a JSON line) to the audit log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "at": entry.at.isoformat(),
        "user": entry.user,
        "file": entry.file,
        "action": entry.action,
        "diff": entry.diff,
    }
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_audit(path: Path, limit: int = 100) -> list[AuditEntry]:
    """The last ``limit`` audit entries, newest first (an unreadable line is skipped)."""
    if not path.exists():
        return []
    entries: list[AuditEntry] = []
    for line in path.read_text(encoding="utf-8").splitlines()[-limit:]:
        try:
            raw = json.loads(line)
            entries.append(
                AuditEntry(
                    datetime.fromisoformat(raw["at"]),
                    raw["user"],
                    raw["file"],
                    raw["action"],
                    raw["diff"],
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    entries.reverse()
    return entries


def unified_diff(before: str, after: str, name: str) -> str:
    """The change as a unified diff."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"{name} (before)",
            tofile=f"{name} (after)",
        )
    )


# -- form values -------------------------------------------------------------------------------

FORM_FIELDS = (
    "id",
    "metric",
    "matchers",
    "op",
    "threshold",
    "clear",
    "for",
    "severity",
    "no_data",
    "labels",
    "description",
    "enabled",
)
"""The fields of an alert rule the console's form edits (``only_when`` is kept as is)."""


class FormError(ValueError):
    """A form field that cannot be turned into a value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _number(field: str, text: str) -> float | int:
    try:
        value = float(text.strip())
    except ValueError:
        raise FormError(field, f"not a number: {text.strip()!r}") from None
    return (
        int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
    )


def form_values(fields: Mapping[str, str]) -> dict[str, Any]:
    """Turn the form's text fields into rule-file values (the TOML types).

    ``clear`` left empty means "no clear level" (the key is removed); ``labels`` is
    ``key=value, key=value``; ``enabled`` is yes/no/true/false.

    Raises:
        FormError: naming the field that cannot be read.
    """
    values: dict[str, Any] = {}
    for name in FORM_FIELDS:
        if name not in fields:
            continue
        text = fields[name].strip()
        if name in ("threshold", "clear"):
            values[name] = _number(name, text) if text else None
        elif name == "for":
            try:
                parse_duration(text or "0")
            except ValueError as exc:
                raise FormError(name, str(exc)) from None
            values[name] = text or "0s"
        elif name == "matchers":
            try:
                parse_matcher_field(text)
            except ValueError as exc:
                raise FormError(name, str(exc)) from None
            values[name] = text
        elif name == "labels":
            labels: dict[str, str] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, value = part.partition("=")
                if not sep or not key.strip():
                    raise FormError(name, f"expected key=value, got {part!r}")
                labels[key.strip()] = value.strip()
            values[name] = labels
        elif name == "enabled":
            if text.lower() in ("", "yes", "true", "on", "1"):
                values[name] = True
            elif text.lower() in ("no", "false", "off", "0"):
                values[name] = False
            else:
                raise FormError(name, "yes or no")
        else:
            values[name] = text
    return values


def rule_form_fields(rule: AlertRule) -> dict[str, str]:
    """The text of each form field for an existing rule."""
    return {
        "id": rule.id,
        "metric": rule.metric,
        "matchers": format_matchers(rule.matchers),
        "op": rule.op,
        "threshold": f"{rule.threshold:g}",
        "clear": "" if rule.clear is None else f"{rule.clear:g}",
        "for": format_duration(rule.for_),
        "severity": rule.severity,
        "no_data": rule.no_data,
        "labels": ", ".join(f"{k}={v}" for k, v in rule.labels.items()),
        "description": rule.description,
        "enabled": "yes" if rule.enabled else "no",
    }


# -- the editor --------------------------------------------------------------------------------


def _set_key(table: Table, key: str, value: Any) -> None:
    """Set ``key`` in ``table`` keeping comments; a new key goes after the last one."""
    if value is None:
        if key in table:
            del table[key]
        return
    if key in table:
        if table[key] == value:
            return
        table[key] = value
        return
    body = table.value.body
    keys = [k.key for k, _ in body if k is not None]
    if keys:
        table.value._insert_after(keys[-1], key, tomlkit.item(value))
    else:
        table[key] = value


def _alert_aot(document: TOMLDocument) -> AoT:
    if "alert" not in document:
        document.append("alert", tomlkit.aot())
    return cast(AoT, document["alert"])


class RulesEditor:
    """Changes the rules file on behalf of one user: validated, atomic, audited, role-checked.

    Every mutating method takes the :class:`LoadedRules` the change was based on and
    raises :class:`ConflictError` if the file changed on disk since then.  File I/O is
    blocking: the console calls these from thread workers.
    """

    def __init__(
        self,
        path: Path,
        *,
        permissions: Permissions,
        clock: Clock | None = None,
        audit_path: Path | None = None,
    ) -> None:
        """Create the editor.

        Args:
            path: The rules file.
            permissions: The user's role; every mutating method checks ``edit``.
            clock: Time of audit entries.
            audit_path: The audit log (default: ``<rules file>.audit.jsonl``).
        """
        self.path = Path(path)
        self.permissions = permissions
        self.clock: Clock = clock or SystemClock()
        self.audit_path = audit_path or default_audit_path(self.path)

    def load(self) -> LoadedRules:
        """The file as it is now (raises :class:`RulesFileError` if invalid)."""
        return load_rules(self.path)

    def changed_on_disk(self, base: LoadedRules) -> bool:
        """Whether the file no longer holds ``base``'s text."""
        try:
            return digest_of(self.path.read_text(encoding="utf-8")) != base.digest
        except OSError:
            return True

    # -- validation without saving -------------------------------------------------------------

    def check_alert(
        self, base: LoadedRules, index: int | None, values: Mapping[str, Any]
    ) -> AlertRule:
        """The rule the form describes, validated in the whole file (nothing is written).

        Raises:
            RulesFileError: located problems, e.g. a duplicate id or an unknown metric.
        """
        document = base.document()
        position = self._apply_alert(document, index, values)
        rules = parse_rules(tomlkit.dumps(document), self.path)
        return rules.alert[position]

    # -- mutations -----------------------------------------------------------------------------

    def save_alert(
        self, base: LoadedRules, index: int | None, values: Mapping[str, Any]
    ) -> LoadedRules:
        """Change the alert at ``index`` (None: add a new one at the end) and save."""
        self.permissions.require("edit")
        document = base.document()
        position = self._apply_alert(document, index, values)
        rule_id = values.get("id") or base.rules.alert[position].id
        action = f"{'added' if index is None else 'edited'} alert {rule_id}"
        return self._save(base, tomlkit.dumps(document), action)

    def duplicate_alert(self, base: LoadedRules, index: int) -> LoadedRules:
        """Append a copy of the alert at ``index`` with a new id (``<id>_copy``) and save."""
        self.permissions.require("edit")
        document = base.document()
        aot = _alert_aot(document)
        original = aot[index]
        copied = copy.deepcopy(original)
        ids = {r.id for r in base.rules.alert}
        new_id = f"{original['id']}_copy"
        n = 2
        while new_id in ids:
            new_id = f"{original['id']}_copy{n}"
            n += 1
        copied["id"] = new_id
        self._append_table(aot, copied)
        return self._save(
            base, tomlkit.dumps(document), f"duplicated alert {original['id']} as {new_id}"
        )

    def delete_alert(self, base: LoadedRules, index: int) -> LoadedRules:
        """Remove the alert at ``index`` and save."""
        self.permissions.require("edit")
        document = base.document()
        aot = _alert_aot(document)
        rule_id = aot[index].get("id", f"#{index + 1}")
        del aot[index]
        if len(aot) == 0:
            del document["alert"]
        return self._save(base, tomlkit.dumps(document), f"deleted alert {rule_id}")

    def set_enabled(self, base: LoadedRules, index: int, enabled: bool) -> LoadedRules:
        """Enable or disable the alert at ``index`` and save."""
        self.permissions.require("edit")
        document = base.document()
        table = _alert_aot(document)[index]
        _set_key(table, "enabled", None if enabled else False)
        verb = "enabled" if enabled else "disabled"
        return self._save(base, tomlkit.dumps(document), f"{verb} alert {table.get('id')}")

    def notify_text(self, base: LoadedRules) -> str:
        """The ``[notify]`` section as TOML text, comments included (for a text editor)."""
        document = base.document()
        part = tomlkit.document()
        if "notify" in document:
            part["notify"] = document["notify"]
        return tomlkit.dumps(part)

    def replace_notify(self, base: LoadedRules, text: str, *, save: bool = True) -> LoadedRules:
        """Replace the ``[notify]`` section with ``text`` (a TOML fragment) and save.

        With ``save=False`` only validates (raises :class:`RulesFileError`) and returns
        ``base``.
        """
        if save:
            self.permissions.require("edit")
        try:
            fragment = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise RulesFileError([_syntax_problem(Path("[notify]"), exc)]) from None
        extra = [k for k in fragment if k != "notify"]
        if extra:
            raise RulesFileError(
                [Problem(Path("[notify]"), None, extra[0], "only the [notify] section goes here")]
            )
        document = base.document()
        if "notify" in fragment:
            document["notify"] = fragment["notify"]
        elif "notify" in document:
            del document["notify"]
        new_text = tomlkit.dumps(document)
        parse_rules(new_text, self.path)
        if not save:
            return base
        return self._save(base, new_text, "edited notification routing [notify]")

    def save_fulfilment(self, base: LoadedRules, routing: FulfilmentRouting) -> LoadedRules:
        """Write ``routing`` as the ``[fulfilment]`` section (comments kept, audited)."""
        document = base.document()
        update_fulfilment_document(document, routing)
        return self._save(base, tomlkit.dumps(document), "edited fulfilment routing")

    def audit(self, limit: int = 100) -> list[AuditEntry]:
        """The latest audit entries, newest first."""
        return read_audit(self.audit_path, limit)

    # -- internals -----------------------------------------------------------------------------

    def _apply_alert(
        self, document: TOMLDocument, index: int | None, values: Mapping[str, Any]
    ) -> int:
        aot = _alert_aot(document)
        if index is None:
            table = tomlkit.table()
            for key in FORM_FIELDS:
                value = values.get(key)
                if value is None or value == {} or (key == "enabled" and value is True):
                    continue
                if key in ("description", "matchers") and value == "":
                    continue
                table[key] = value
            self._append_table(aot, table)
            return len(aot) - 1
        table = aot[index]
        for key, value in values.items():
            if key == "labels" and not value:
                value = None
            if key == "enabled" and value is True:
                value = None
            if key in ("description", "matchers") and value == "":
                value = None
            if key == "labels" and value is not None:
                inline = tomlkit.inline_table()
                inline.update(value)
                if table.get("labels") == value:
                    continue
                value = inline
            _set_key(table, key, value)
        return index

    @staticmethod
    def _append_table(aot: AoT, table: Table) -> None:
        if len(aot) and not aot[-1].as_string().endswith("\n\n"):
            aot[-1].add(tomlkit.nl())  # a blank line between tables, as people write them
        aot.append(table)

    def _save(self, base: LoadedRules, text: str, action: str) -> LoadedRules:
        rules = parse_rules(text, self.path)  # never write a file that would be refused
        with _locked(self.path):
            if self.changed_on_disk(base):
                raise ConflictError(
                    f"{self.path} changed on disk since you opened it (an editor or another "
                    "console saved it); your change was not saved. Reload to see the new "
                    "file, then make your change again."
                )
            mode = None
            with contextlib.suppress(OSError):
                mode = self.path.stat().st_mode & 0o7777
            _atomic_write(self.path, text, mode=mode)
            stat = self.path.stat()
        try:
            append_audit(
                self.audit_path,
                AuditEntry(
                    self.clock.now(),
                    self.permissions.user,
                    str(self.path),
                    action,
                    unified_diff(base.text, text, self.path.name),
                ),
            )
        except OSError:
            # The rules are saved; a lost audit line must not undo that, but it is reported.
            log.exception("could not append to %s", self.audit_path)
        return LoadedRules(self.path, rules, text, digest_of(text), stat.st_mtime_ns)
