"""The mapping file is watched like the rules file: every atomic-rename save is seen."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from feeds.runtime.serve import Server
from feeds.settings import ServeConfig
from feeds.webhooks.mapping import Mapping, MappingError, load_mapping, mapping_watcher

TIMEOUT = 15.0


def save_atomically(path: Path, text: str) -> None:
    """Save the way editors do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def channel(name: str) -> str:
    return f'[shopify]\nchannel = "{name}"\n'


async def test_two_atomic_saves_both_reload(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(channel("first"), encoding="utf-8")
    seen: asyncio.Queue[Mapping] = asyncio.Queue()
    errors: list[MappingError] = []
    watcher = mapping_watcher(
        path, on_reload=seen.put_nowait, on_error=errors.append, current=load_mapping(path)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    await asyncio.wait_for(watcher.watching.wait(), TIMEOUT)
    try:
        for name in ("second", "third", "fourth"):
            save_atomically(path, channel(name))
            mapping = await asyncio.wait_for(seen.get(), TIMEOUT)
            assert mapping.shopify.channel == name
        save_atomically(path, "[shopify]\ninventory_as = 'sometimes'\n")
        async with asyncio.timeout(TIMEOUT):
            while not errors:
                await asyncio.sleep(0.02)
        assert "shopify.inventory_as" in str(errors[0])
        assert watcher.current is not None and watcher.current.shopify.channel == "fourth"
        save_atomically(path, channel("fifth"))  # after a refused save, still watching
        assert (await asyncio.wait_for(seen.get(), TIMEOUT)).shopify.channel == "fifth"
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_an_edit_saved_before_the_watch_started_is_applied(tmp_path: Path) -> None:
    """A caller's load, then a save, then the watch: the save is not missed."""
    path = tmp_path / "mapping.toml"
    path.write_text(channel("loaded"), encoding="utf-8")
    loaded = load_mapping(path)
    path.write_text(channel("saved-after"), encoding="utf-8")  # before any watch is on
    seen: asyncio.Queue[Mapping] = asyncio.Queue()
    watcher = mapping_watcher(path, on_reload=seen.put_nowait, current=loaded)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        assert (await asyncio.wait_for(seen.get(), TIMEOUT)).shopify.channel == "saved-after"
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


@pytest.mark.asyncio
async def test_serve_reloads_every_atomic_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMNIOPS_CONFIG", str(tmp_path / "absent.toml"))
    path = tmp_path / "mapping.toml"
    path.write_text(channel("first"), encoding="utf-8")
    config = ServeConfig(db=tmp_path / "s.db", port=0, mapping_file=path)
    async with Server(config, feeds=[]) as server:
        state = server.state
        assert state is not None and state.mapping.shopify.channel == "first"
        for name in ("second", "third"):
            # Until the watch is up a save could go unseen: save again until it is read.
            async with asyncio.timeout(TIMEOUT):
                while state.mapping.shopify.channel != name:
                    save_atomically(path, channel(name))
                    await asyncio.sleep(0.3)
        assert state.mapping_error == ""
