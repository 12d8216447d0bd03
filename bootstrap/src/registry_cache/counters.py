"""Counts true cache hits and misses from the registry's JSON log lines.

Distribution 2.8.2's own /debug/vars proxy counters are wrong (a cold pull of a
4-layer image through an empty cache reported 4 hits and 0 misses), so the agent
counts for itself: a blob served with 200 is a hit when its digest was already in the
mirror's storage, and a miss (fetched from upstream) when it was not.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

# A blob download in the registry API (its path, without the query)
BLOB_URI = re.compile(r"^/v2/(?P<repo>.+)/blobs/(?P<digest>sha256:[0-9a-f]{64})$")


@dataclass
class Counts:
    """Blob requests served by a mirror since its cache was created."""

    hits: int = 0
    misses: int = 0
    bytes_served: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as plain data, for the state file and `status --json`."""
        return asdict(self)


@dataclass(frozen=True)
class BlobServed:
    """One blob GET that completed with 200."""

    repo: str
    digest: str
    size: int


def parse_log_line(line: str) -> Optional[dict[str, Any]]:
    """Return the fields of a JSON log line, or None for anything else."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def blob_served(entry: dict[str, Any]) -> Optional[BlobServed]:
    """Return the blob a completed GET served, or None for any other log entry."""
    if entry.get("http.request.method") != "GET" or entry.get("http.response.status") != 200:
        return None
    uri = str(entry.get("http.request.uri", "")).split("?", 1)[0]
    match = BLOB_URI.match(uri)
    if not match:
        return None
    written = entry.get("http.response.written", 0)
    return BlobServed(
        repo=match.group("repo"),
        digest=match.group("digest"),
        size=written if isinstance(written, int) else 0,
    )


class HitCounter:
    """Counts hits and misses against the set of blobs the mirror's storage holds."""

    def __init__(self, cached: set[str], counts: Optional[Counts] = None) -> None:
        self.cached = set(cached)
        self.counts = counts or Counts()
        # misses whose copy into the cache may still be under way, as (repo, digest)
        self.fetched: list[tuple[str, str]] = []

    def observe(self, entry: dict[str, Any]) -> Optional[str]:
        """Count one log entry; return "hit", "miss" or None when it was no blob download."""
        blob = blob_served(entry)
        if blob is None:
            return None
        self.counts.bytes_served += blob.size
        if blob.digest in self.cached:
            self.counts.hits += 1
            return "hit"
        self.cached.add(blob.digest)
        self.fetched.append((blob.repo, blob.digest))
        self.counts.misses += 1
        return "miss"
