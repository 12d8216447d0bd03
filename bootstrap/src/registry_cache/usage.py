"""When each manifest and blob of a mirror was last pulled, read from the registry's own log.

The mirror's runner feeds every JSON log line of its registry to `Usage.observe`; a completed
GET or HEAD of a manifest (by tag or digest) or a blob stamps it with the time. The runner keeps
the stamps beside the cache (paths.USAGE_FILE) and `registry-cache gc` reads them to evict the
least recently pulled images first.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from registry_cache import paths
from registry_cache.counters import BLOB_URI
from registry_cache.fsutil import read_json, write_file

_MANIFEST_URI = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")


@dataclass
class Usage:
    """Last pull time (seconds since the epoch) of manifests, by `repo:tag` or `repo@digest`, and blobs."""

    manifests: dict[str, float] = field(default_factory=dict)
    blobs: dict[str, float] = field(default_factory=dict)

    def observe(self, entry: dict[str, Any], now: Optional[float] = None) -> bool:
        """Stamp what one registry log entry served; True when it was a manifest or blob pull."""
        if entry.get("http.request.method") not in ("GET", "HEAD"):
            return False
        if entry.get("http.response.status") != 200:
            return False
        uri = str(entry.get("http.request.uri", "")).split("?", 1)[0]
        stamp = time.time() if now is None else now
        match = _MANIFEST_URI.match(uri)
        if match:
            self.manifests[manifest_key(match.group("repo"), match.group("ref"))] = stamp
            return True
        match = BLOB_URI.match(uri)
        if match:
            self.blobs[match.group("digest")] = stamp
            return True
        return False

    def last_pull(self, repo: str, refs: list[str]) -> Optional[float]:
        """The latest pull of any of `refs` (tags or digests) in `repo`, or None when never seen."""
        stamps = [self.manifests.get(manifest_key(repo, ref)) for ref in refs]
        seen = [s for s in stamps if s is not None]
        return max(seen) if seen else None

    def text(self) -> str:
        """The content of the usage file."""
        return json.dumps({"manifests": self.manifests, "blobs": self.blobs}, sort_keys=True) + "\n"

    def save(self, storage: str) -> None:
        """Write the stamps beside the mirror's cache (atomically)."""
        write_file(paths.usage_file(storage), self.text())

    @classmethod
    def read(cls, storage: str) -> Usage:
        """The stamps kept beside a mirror's cache; empty when there are none (or unreadable)."""
        data = read_json(paths.usage_file(storage))
        if data is None:
            return cls()

        def stamps(key: str) -> dict[str, float]:
            found = data.get(key)
            if not isinstance(found, dict):
                return {}
            return {str(k): float(v) for k, v in found.items() if isinstance(v, (int, float))}

        return cls(manifests=stamps("manifests"), blobs=stamps("blobs"))


def manifest_key(repo: str, ref: str) -> str:
    """How a manifest is named in the usage file: `repo@sha256:...` by digest, `repo:tag` by tag."""
    return f"{repo}@{ref}" if ref.startswith("sha256:") else f"{repo}:{ref}"
