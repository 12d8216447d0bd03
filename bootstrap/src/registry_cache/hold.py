"""gc's request that a mirror serve its cache read-only (paths.READONLY_REQUEST), and its reader.

`registry-cache gc` writes the request beside the cache while it needs nothing written there;
the mirror's runner obeys it for as long as it stands, and says so in its state (`hold`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Optional

from registry_cache import paths, proc
from registry_cache.fsutil import load_json, write_file

REQUEST_WRITE_GRACE = 10.0  # how long an unreadable request counts as one being written


@dataclass(frozen=True)
class HoldRequest:
    """Who asks for read-only mode (their process id) and until when (seconds since the epoch)."""

    by: str
    pid: int
    until: float


def ask(storage: str, request: HoldRequest) -> None:
    """Ask the runner of the mirror cached in `storage` to serve read-only."""
    data = {"by": request.by, "pid": request.pid, "until": request.until}
    write_file(paths.readonly_request(storage), json.dumps(data) + "\n")


def withdraw(storage: str) -> None:
    """Let the mirror go back to its usual mode."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.readonly_request(storage))


def requested(storage: str, now: Optional[float] = None) -> bool:
    """True while a request stands: it has not expired and the process that wrote it lives."""
    path = paths.readonly_request(storage)
    now = time.time() if now is None else now
    try:
        request = load_json(path)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        # being written: obey it; a file that stays unreadable is no request
        with contextlib.suppress(OSError):
            return now - os.stat(path).st_mtime < REQUEST_WRITE_GRACE
        return False
    if not isinstance(request, dict):
        return False
    until, pid = request.get("until"), request.get("pid")
    if isinstance(pid, int) and not proc.exists(pid):
        return False  # left by a gc that was killed (a stop or halt mid-run): stale
    return not isinstance(until, (int, float)) or until > now
