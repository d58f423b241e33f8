"""The watcher follows the file however it is replaced: a Kubernetes ConfigMap's ``..data``
symlink swap, an editor's rename-over save, a delete and re-create, a file that only appears
after the start; and changes to other files in the same folder do not make it re-read.

Real files, real watchfiles; every wait polls with a deadline, nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from rules.watch import FileWatcher, watch_targets

TIMEOUT = 15.0


class BadFile(Exception):
    """A refused file (unreadable, or its text starts with ``bad``)."""


class Loads:
    """The loader of the watched file: its text, or :class:`BadFile`; counts the reads."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, path: Path) -> str:
        self.calls += 1
        try:
            text = path.read_text()
        except OSError as exc:
            raise BadFile(f"{path}: cannot read ({exc})") from exc
        if text.startswith("bad"):
            raise BadFile(f"{path}: refused")
        return text


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (or fail after :data:`TIMEOUT`)."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.02)


Started = tuple[FileWatcher[str, BadFile], Loads, list[str]]


@pytest.fixture
async def start() -> AsyncIterator[Callable[[Path], Awaitable[Started]]]:
    """Start a watcher on a path; returns it, its loader and the values it reloaded."""
    tasks: list[asyncio.Task[None]] = []

    async def starting(path: Path) -> Started:
        loads = Loads()
        reloaded: list[str] = []
        watcher: FileWatcher[str, BadFile] = FileWatcher(
            path, loads, BadFile, on_reload=reloaded.append, debounce_ms=50
        )
        tasks.append(watcher.start())
        await asyncio.wait_for(watcher.watching.wait(), TIMEOUT)
        return watcher, loads, reloaded

    yield starting
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def configmap(folder: Path, version: int, text: str) -> Path:
    """Lay out (or update) a ConfigMap volume the way the kubelet does.

    ``rules.toml -> ..data/rules.toml`` and ``..data -> ..<version>``; an update writes a new
    ``..<version>`` folder and renames a fresh symlink over ``..data`` (atomic).
    """
    real = folder / f"..2026_12_02_10_00_0{version}.{version:06d}"
    real.mkdir()
    (real / "rules.toml").write_text(text)
    tmp = folder / "..data_tmp"
    os.symlink(real.name, tmp)
    os.replace(tmp, folder / "..data")
    link = folder / "rules.toml"
    if not link.is_symlink():
        os.symlink("..data/rules.toml", link)
    return link


def rename_over(path: Path, text: str) -> None:
    """Save like vim: write a new file beside it and rename it over the old one."""
    tmp = path.with_name(f".{path.name}.swp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.mark.parametrize("remove_old", [True, False], ids=["old-removed", "old-kept"])
async def test_a_configmap_data_swap_reloads(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]], remove_old: bool
) -> None:
    link = configmap(tmp_path, 1, "one")
    watcher, _, reloaded = await start(link)
    await until(lambda: watcher.current == "one", "first load")

    for version, text in ((2, "two"), (3, "three")):
        old = (tmp_path / "..data").resolve()
        configmap(tmp_path, version, text)
        if remove_old:
            shutil.rmtree(old)
        await until(lambda text=text: watcher.current == text, f"swap to {text}")
    assert reloaded == ["one", "two", "three"]

    # an invalid version swapped in is refused; the last good stays, and the next good applies
    configmap(tmp_path, 4, "bad one")
    await until(lambda: watcher.error is not None, "refusal")
    assert watcher.current == "three"
    configmap(tmp_path, 5, "five")
    await until(lambda: watcher.current == "five", "swap to five")


async def test_rename_over_saves_reload_every_time(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("v0")
    watcher, _, _ = await start(path)
    await until(lambda: watcher.current == "v0", "first load")
    for n in range(1, 5):
        rename_over(path, f"v{n}")
        await until(lambda n=n: watcher.current == f"v{n}", f"save {n}")
    path.write_text("in place")  # and still a write in place after the renames
    await until(lambda: watcher.current == "in place", "in-place write")


async def test_vim_style_backup_rename_then_write(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    """vim (backupcopy=no): rename the file to a backup, write a new one, delete the backup."""
    path = tmp_path / "rules.toml"
    path.write_text("before")
    watcher, _, _ = await start(path)
    await until(lambda: watcher.current == "before", "first load")
    for n in range(2):
        backup = path.with_name(path.name + "~")
        os.rename(path, backup)
        path.write_text(f"after {n}")
        backup.unlink()
        await until(lambda n=n: watcher.current == f"after {n}", f"save {n}")


async def test_deleted_then_recreated_is_picked_up(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("first")
    watcher, _, _ = await start(path)
    await until(lambda: watcher.current == "first", "first load")
    for n in range(2):
        path.unlink()
        await until(lambda: watcher.error is not None, "deletion refused")
        assert watcher.current is not None  # the last good stays
        path.write_text(f"again {n}")
        await until(lambda n=n: watcher.current == f"again {n}", f"re-created {n}")
        assert watcher.error is None


async def test_a_file_missing_at_start_is_loaded_when_it_appears(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    path = tmp_path / "conf" / "deeper" / "rules.toml"  # neither folder exists yet
    watcher, _, _ = await start(path)
    assert watcher.current is None and watcher.error is not None
    path.parent.mkdir(parents=True)
    path.write_text("arrived")
    await until(lambda: watcher.current == "arrived", "file created")
    path.write_text("edited")  # watched as a file from then on
    await until(lambda: watcher.current == "edited", "in-place write")


async def test_other_files_changing_in_the_folder_do_not_reread_it(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("quiet")
    other = tmp_path / "store.db-wal"
    watcher, loads, _ = await start(path)
    await until(lambda: watcher.current == "quiet", "first load")
    assert loads.calls == 1
    # far longer than the debounce, so a watcher that reacted would have re-read by the end
    for n in range(25):
        other.write_text(f"churn {n}")
        rename_over(tmp_path / "other.toml", f"other {n}")
        await asyncio.sleep(0.02)
    path.write_text("changed")
    await until(lambda: watcher.current == "changed", "real change")
    assert loads.calls == 2


def test_a_plain_file_is_watched_alone(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("x")
    targets = watch_targets(path)
    assert targets.paths == (str(path),)


def test_a_configmap_is_watched_through_its_symlinks(tmp_path: Path) -> None:
    link = configmap(tmp_path, 1, "x")
    targets = watch_targets(link)
    real = (tmp_path / "..data").resolve() / "rules.toml"
    assert set(targets.paths) == {str(tmp_path), str(real)}
    assert targets.relevant == frozenset({str(link), str(tmp_path / "..data"), str(real)})


def test_a_missing_file_is_watched_from_its_nearest_folder(tmp_path: Path) -> None:
    targets = watch_targets(tmp_path / "a" / "b" / "rules.toml")
    assert targets.paths == (str(tmp_path),)
    assert targets.relevant == frozenset({str(tmp_path / "a")})


async def test_its_folder_removed_and_made_again_is_followed(
    tmp_path: Path, start: Callable[[Path], Awaitable[Started]]
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "rules.toml"
    path.write_text("one")
    watcher, _, _ = await start(path)
    await until(lambda: watcher.current == "one", "first load")
    shutil.rmtree(folder)
    await until(lambda: watcher.error is not None, "deletion refused")
    folder.mkdir()
    path.write_text("two")
    await until(lambda: watcher.current == "two", "made again")
    rename_over(path, "three")
    await until(lambda: watcher.current == "three", "saved by rename")
