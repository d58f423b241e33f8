"""The rules file's audit log: who changed what and when, as a unified diff (JSON lines)."""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)


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
