"""Reading an operator's file (rules, mapping, configuration) without trusting what it is.

A path an operator edits can end up naming a named pipe (``mkfifo``, a shell's process
substitution), a device (a symlink to ``/dev/zero``) or a file far larger than any real
one: a plain ``read_bytes()`` would block forever on the pipe (and keep ``serve`` from
exiting), or read until memory runs out.  :func:`read_regular` opens without blocking,
refuses anything but a regular file, and reads at most ``limit`` bytes; every refusal is
an :class:`OSError` whose ``strerror`` says why, so callers word it as they word any
unreadable file (``rules.toml: cannot read: not a regular file (a pipe or a device)``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

FILE_LIMIT = 4 * 1024 * 1024
"""The largest rules, mapping or configuration file read (the shipped rules are ~20 KB)."""


def read_regular(path: Path | str, limit: int = FILE_LIMIT) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    Raises:
        OSError: it cannot be opened, is a folder, is not a regular file, or is larger
            than ``limit`` (``strerror`` words each case).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe or a device)", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, _too_large(info.st_size, limit), str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise OSError(errno.EFBIG, _too_large(size, limit), str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _too_large(size: int, limit: int) -> str:
    return f"too large ({size:,} bytes; at most {limit:,})"
