"""What a mirror's runner says of itself beside its cache: its mode, read by `status` and `gc`.

Kept apart from mirror.py so that reading a mirror's state imports nothing of the runner
(PyYAML, the relay, the front): `registry-cache status` and every metrics scrape start fast.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from registry_cache import paths

PROXY = "proxy"
READ_ONLY = "read-only"
WAITING = "waiting-for-storage"
STARTING = "starting"
STOPPED = "stopped"
GC_HOLD = "gc"  # `hold` while the mirror serves read-only for `registry-cache gc`


def read_state(storage: str) -> Optional[dict[str, Any]]:
    """Return the state a mirror last wrote beside its cache, or None."""
    try:
        with open(paths.state_file(storage), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
