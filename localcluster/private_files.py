"""Files only their owner can read: created with mode 0600, never widened then narrowed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _temporary(path: Path) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a crash of an earlier process with this pid
    return tmp


def create_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """What ``path`` holds; when it does not exist yet, ``make()``'s bytes, written to it first.

    The content appears whole or not at all, and a file once written is never replaced.
    """
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = _temporary(path)
        try:
            _write_new(tmp, make())
            # link(2) refuses an existing name, where rename(2) would replace it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


def replace(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = _temporary(path)
    _write_new(tmp, data)
    tmp.replace(path)
