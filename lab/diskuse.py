"""What a folder takes on disk while something runs: allocated blocks (st_blocks), sampled often.

Apparent sizes would not see a hole punched in a spool (the file keeps its length), nor count
what a sparse file does not hold: allocated blocks are what fills a disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from types import TracebackType
from typing import Optional


def allocated(path: str | os.PathLike) -> int:
    """The bytes of disk the files below `path` take (their allocated blocks; 0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file renamed or deleted meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


class PeakSampler:
    """Samples `allocated(path)` every `interval` s in a thread while in its `with` block; keeps the peak."""

    def __init__(self, path: str | os.PathLike, interval: float = 0.01) -> None:
        self.path = path
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, allocated(self.path))
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, allocated(self.path))
