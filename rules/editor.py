""":class:`RulesEditor`: how the console changes the rules file, safely.

Every change edits the parsed tomlkit document (so comments and layout stay), is
validated as a whole before anything is written, refuses to overwrite a file that changed
on disk since it was read (:class:`ConflictError`, by content hash), is written atomically
(temporary file, fsync, rename), and is appended to the audit log (who, when, the change
as a unified diff).  Every mutating method checks the user's role.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import tomlkit
from tomlkit.items import AoT, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from rules.alerts.rule import AlertRule
from rules.audit import AuditEntry, append_audit, default_audit_path, read_audit, unified_diff
from rules.file import (
    LoadedRules,
    Problem,
    RulesFileError,
    atomic_write,
    digest_of,
    load_rules,
    parse_rules,
    parse_toml,
)
from rules.roles import Permissions
from rules.routing.config import FulfillmentRouting
from rules.routing.document import update_fulfillment_document
from rules.rule_form import FORM_FIELDS
from store.clock import Clock, SystemClock

log = logging.getLogger(__name__)


try:  # advisory locking where the platform has it (not on Windows)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class ConflictError(RuntimeError):
    """The file changed on disk since it was read; nothing was written."""


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


def _set_key(aot: AoT, index: int, key: str, value: Any) -> None:
    """Set ``key`` in the table ``aot[index]`` keeping comments; a new key goes after the last one.

    Comments and blank lines after a table's last key belong, as people read the file, to
    the table that follows; tomlkit's ``add`` would put a new key after them.  So a new key
    rebuilds the table (tomlkit's public ``Table.add`` and ``AoT`` item assignment) with the
    key before that trailing trivia, and the header line's own comment kept.
    """
    table = aot[index]
    if value is None:
        if key in table:
            del table[key]
        return
    if key in table:
        if table[key] != value:
            table[key] = value
        return
    body = table.value.body
    end = len(body)
    while end > 0 and body[end - 1][0] is None:
        end -= 1
    if end == 0:  # no keys yet: nothing to go after
        table[key] = value
        return
    rebuilt = tomlkit.table()
    for name, item in body[:end]:
        if name is None:
            rebuilt.add(cast("Comment | Whitespace", item))  # a key-less body item is trivia
        else:
            rebuilt.add(name, item)
    rebuilt.add(key, tomlkit.item(value))
    for _, item in body[end:]:
        rebuilt.add(cast("Comment | Whitespace", item))
    rebuilt.trivia.indent = table.trivia.indent
    rebuilt.trivia.comment_ws = table.trivia.comment_ws
    rebuilt.trivia.comment = table.trivia.comment
    aot[index] = rebuilt


def _alert_aot(document: TOMLDocument) -> AoT:
    existing = document.get("alert")
    if existing is not None and not isinstance(existing, AoT) and len(existing) == 0:
        del document["alert"]  # `alert = []`: the first rule replaces the explicit empty list
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
            # An explicit empty list: a file without one is refused (alerting switched off
            # by accident), so deleting the last rule says "no alerts" on purpose.
            del document["alert"]
            document["alert"] = tomlkit.array()  # tomlkit puts it before the tables
        return self._save(base, tomlkit.dumps(document), f"deleted alert {rule_id}")

    def set_enabled(self, base: LoadedRules, index: int, enabled: bool) -> LoadedRules:
        """Enable or disable the alert at ``index`` and save."""
        self.permissions.require("edit")
        document = base.document()
        aot = _alert_aot(document)
        _set_key(aot, index, "enabled", None if enabled else False)
        verb = "enabled" if enabled else "disabled"
        return self._save(base, tomlkit.dumps(document), f"{verb} alert {aot[index].get('id')}")

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
        fragment, _ = parse_toml(text, Path("[notify]"))
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

    def save_fulfillment(self, base: LoadedRules, routing: FulfillmentRouting) -> LoadedRules:
        """Write ``routing`` as the ``[fulfillment]`` section (comments kept, audited)."""
        self.permissions.require("edit")
        document = base.document()
        update_fulfillment_document(document, routing)
        return self._save(base, tomlkit.dumps(document), "edited fulfillment routing")

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
                if aot[index].get("labels") == value:
                    continue
                value = inline
            _set_key(aot, index, key, value)
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
            atomic_write(self.path, text, mode=mode)
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
