"""Lets one publish at a time write to a catalog folder."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if needed) while the block runs.

    Two publishes to one catalog at once would each merge into the JSON they read and
    the last rename would drop the other's version: they take turns. The lock is a
    flock on the folder itself, so no lock file shows up in what the web server serves.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
