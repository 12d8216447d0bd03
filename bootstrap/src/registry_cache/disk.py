"""Whether the disk under a mirror's cache is full, said the same way by the runner and `status`."""

from __future__ import annotations

import os
from typing import Optional

from registry_cache.sizes import format_size

FULL_FLOOR = 32 * 1024 * 1024  # below this much free space a cold pull cannot be stored
FULL_SHARE = 0.05  # ... or below 5 % of a small file system
# What a full disk means for pulls, said the same way by the runner, the front and `status`.
NOT_STORED = ("new ones still pull (straight from the upstream) but are not stored; free space or "
              "lower max_size and run `registry-cache gc` (the mirror recovers by itself)")


def full_problem(path: str, *, seen_enospc: bool = False) -> Optional[str]:
    """Say that the disk under `path` is full (or was, when the registry hit ENOSPC), else None."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    free = stats.f_bavail * stats.f_frsize
    floor = min(FULL_FLOOR, stats.f_blocks * stats.f_frsize * FULL_SHARE)
    if free >= floor * (2 if seen_enospc else 1):
        return None
    return f"disk full ({format_size(free)} free under {path}): cached images are still served, {NOT_STORED}"
