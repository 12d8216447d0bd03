"""Atomic file writes on the host side: a reader sees the old file or the complete new one, never a half.

Each write goes to a temporary file in the same folder, is fsynced, chmodded (0644 unless
told) and renamed over the target; the folder is fsynced so the rename survives a crash.
The build (dist/build.json, the boxes), the catalog and the lab's configs all write here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_copy(source: Path, dest: Path) -> None:
    """Copy a file so that `dest` is either absent, the old file or the complete new one."""
    with open(source, "rb") as src:
        atomic_write(dest, lambda out: shutil.copyfileobj(src, out, 4 * 1024 * 1024))


def atomic_link_or_copy(source: Path, dest: Path) -> None:
    """Make `dest` a hard link to `source` (no second copy on disk), or copy it across devices.

    Atomic as atomic_copy: the link is made under a temporary name and renamed over `dest`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.link"
    try:
        os.link(source, tmp)
    except OSError:
        atomic_copy(source, dest)
        return
    try:
        os.replace(tmp, dest)
    finally:
        # rename() between two links of one file does nothing and leaves the temporary name
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)


def atomic_write_text(dest: Path, text: str, *, mode: int = 0o644) -> None:
    """Write a text file atomically: temp file in the same folder, fsync, rename."""
    atomic_write(dest, lambda out: out.write(text.encode("utf-8")), mode=mode)


def atomic_write(dest: Path, fill: Callable[[BinaryIO], object], *, mode: int = 0o644) -> None:
    """Write `dest` atomically with what `fill` writes to the open (binary) temporary file.

    The temporary file has `mode` before anything is written to it, so a secret is never
    readable by others, not even for a moment; if `fill` raises, `dest` is left as it was.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            fill(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)
