"""What the last gc of a mirror did (paths.GC_FILE beside its cache): written by gc, read by `status`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from registry_cache import paths
from registry_cache.fsutil import number, read_json, text, texts, write_file

KEPT_NAMES = 100  # evicted images named in the file at most


@dataclass
class GcResult:
    """What one gc run did to one mirror, as `status` shows it."""

    mirror: str
    started: float
    duration: float
    bytes_freed: int
    images_evicted: int
    used: int
    evicted: list[str] = field(default_factory=list)
    error: Optional[str] = None

    def save(self, storage: str) -> None:
        """Keep the result beside the mirror's cache for `status`."""
        data = asdict(self)
        data["evicted"] = data["evicted"][:KEPT_NAMES]
        write_file(paths.gc_file(storage), json.dumps(data, indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GcResult:
        """Read a result file's data back (what is missing or of the wrong type: its default)."""
        return cls(
            mirror=text(data, "mirror") or "",
            started=float(number(data, "started")),
            duration=float(number(data, "duration")),
            bytes_freed=int(number(data, "bytes_freed")),
            images_evicted=int(number(data, "images_evicted")),
            used=int(number(data, "used")),
            evicted=texts(data, "evicted"),
            error=text(data, "error"),
        )


def last_result(storage: str) -> Optional[GcResult]:
    """The result of the last gc of a mirror; None when it never ran (or the file is unreadable)."""
    data = read_json(paths.gc_file(storage))
    return GcResult.from_dict(data) if data is not None else None
