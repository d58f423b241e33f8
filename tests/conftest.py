"""Shared fixtures: a fresh store file per test, and a helper to write events into it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from feeds.runtime.routing import router_hook
from store.apply import Outcome
from store.model import Event, Quarantined
from store.writer import StoreWriter


@pytest.fixture(autouse=True)
def private_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's config, rules or cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("OMNIOPS_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("OMNIOPS_RULES", str(home / "rules.toml"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


async def write(db: Path, items: Sequence[Event | Quarantined], **kw: object) -> list[Outcome]:
    """Write items through a real writer and close it (everything committed).

    Routing is off unless asked for (``routing=...``): tests of the router drive it.
    """
    routing = kw.pop("routing", None)
    if routing is not None:
        kw["after_commit"] = router_hook(routing)  # type: ignore[arg-type]
    async with StoreWriter(db, **kw) as writer:  # type: ignore[arg-type]
        return await writer.write(items)
