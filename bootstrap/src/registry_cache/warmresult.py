"""What the last `registry-cache warm` of a mirror did (paths.WARM_FILE beside its cache), for `status`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from registry_cache import paths
from registry_cache.fsutil import number, read_json, text, texts, write_file


@dataclass
class WarmOutcome:
    """What warming one mirror did."""

    mirror: str
    started: float = field(default_factory=time.time)
    duration: float = 0.0
    images: int = 0
    blobs: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)

    def save(self, storage: str) -> None:
        """Keep the outcome beside the mirror's cache for `status`."""
        write_file(paths.warm_file(storage), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WarmOutcome:
        """Read an outcome file's data back (what is missing or of the wrong type: its default)."""
        return cls(
            mirror=text(data, "mirror") or "",
            started=float(number(data, "started")),
            duration=float(number(data, "duration")),
            images=int(number(data, "images")),
            blobs=int(number(data, "blobs")),
            bytes=int(number(data, "bytes")),
            failures=texts(data, "failures"),
        )


def last_outcome(storage: str) -> Optional[WarmOutcome]:
    """The outcome of the last warm of a mirror; None when it never ran (or the file is unreadable)."""
    data = read_json(paths.warm_file(storage))
    return WarmOutcome.from_dict(data) if data is not None else None
