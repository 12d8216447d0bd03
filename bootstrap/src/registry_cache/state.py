"""A mirror's state beside its cache (paths.STATE_FILE): its mode and true counters, for `status` and `gc`.

The runner (runner/) writes it; `status`, `metrics` and `gc` read it. Kept apart from the
runner so that reading a mirror's state imports nothing of it (PyYAML, the relay, the front):
`registry-cache status` and every metrics scrape start fast.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from registry_cache import paths
from registry_cache.counters import Counts
from registry_cache.fsutil import number, read_json, text, write_file

# The modes a mirror's state names.
PROXY = "proxy"
READ_ONLY = "read-only"
WAITING = "waiting-for-storage"
STARTING = "starting"
STOPPED = "stopped"
GC_HOLD = "gc"  # `hold` while the mirror serves read-only for `registry-cache gc`
# ... and what `status` says of a mirror beyond its state: it does not answer, or has no state yet.
DOWN = "down"
UNKNOWN = "unknown"
MODES = (PROXY, READ_ONLY, WAITING, STARTING, STOPPED, DOWN, UNKNOWN)

# The front's counters kept in the state file, as (front counter, state key); totals since
# the cache was created, like the hit/miss counts.
FRONT_TOTALS = (
    ("upstream_bytes", "bytes_from_upstream"),
    ("upstream_requests", "upstream_requests"),
    ("blob_transfers", "blob_transfers"),
    ("blob_joins", "blob_joins"),
    ("blob_failures", "blob_failures"),
    ("blob_resumes", "blob_resumes"),
    ("blob_unshared", "blob_unshared"),
    ("blob_late", "blob_late"),
    ("blob_late_upstream", "blob_late_upstream"),
)


@dataclass
class MirrorState:
    """What `status` reads: the mode a mirror runs in, why, and its true counters."""

    name: str
    mode: str = STARTING
    since: float = field(default_factory=time.time)
    upstream_reachable: Optional[bool] = None
    upstream_problem: Optional[str] = None
    restarts: int = 0
    pid: Optional[int] = None
    hold: Optional[str] = None
    disk_problem: Optional[str] = None
    handover: Optional[str] = None  # what holds the mirror's port: kernel, relay or endpoint (handover/)
    counts: Counts = field(default_factory=Counts)
    front_before: dict[str, int] = field(default_factory=dict)  # totals of earlier runs, by state key
    front_now: dict[str, Any] = field(default_factory=dict)  # the running front's counters
    updated: Optional[float] = None  # when it was written

    @classmethod
    def resumed(cls, name: str, previous: Optional[MirrorState]) -> MirrorState:
        """A fresh state that carries on the totals of the state a previous run left."""
        if previous is None:
            return cls(name=name)
        totals = previous.front_totals()
        return cls(
            name=name,
            counts=dataclasses.replace(previous.counts),
            front_before={key: totals[key] for _, key in FRONT_TOTALS},
        )

    def front_totals(self) -> dict[str, int]:
        """The front's totals by state key: earlier runs plus the running front."""
        totals = {key: self.front_before.get(key, 0) + int(self.front_now.get(name, 0))
                  for name, key in FRONT_TOTALS}
        totals["blobs_in_flight"] = int(self.front_now.get("blobs_in_flight", 0))
        return totals

    def front_disk_problem(self) -> Optional[str]:
        """What the running front says of its spool's disk (no room for a blob), or None."""
        problem = self.front_now.get("disk_problem")
        return str(problem) if problem else None

    def front_stopped(self, final: dict[str, Any]) -> None:
        """Keep a stopped front's final counters in the totals of earlier runs."""
        for name, key in FRONT_TOTALS:
            self.front_before[key] = self.front_before.get(key, 0) + int(final.get(name, 0))
        self.front_now = {}

    def snapshot(self) -> MirrorState:
        """A copy to write while the runner goes on changing this one; stamped with the time now."""
        return dataclasses.replace(self, counts=dataclasses.replace(self.counts),
                                   front_before=dict(self.front_before), front_now=dict(self.front_now),
                                   updated=time.time())

    def as_dict(self) -> dict[str, Any]:
        """The state as plain data, as the state file holds it."""
        return {
            "name": self.name,
            "mode": self.mode,
            "since": self.since,
            "updated": self.updated,
            "upstream_reachable": self.upstream_reachable,
            "upstream_problem": self.upstream_problem,
            "restarts": self.restarts,
            "pid": self.pid,
            "hold": self.hold,
            "disk_problem": self.disk_problem,
            "handover": self.handover,
            **self.counts.as_dict(),
            **self.front_totals(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MirrorState:
        """Read the plain data of a state file back (what is missing or of the wrong type: its default)."""
        pid, reachable = data.get("pid"), data.get("upstream_reachable")
        return cls(
            name=text(data, "name") or "",
            mode=text(data, "mode") or UNKNOWN,
            since=float(number(data, "since")),
            updated=float(number(data, "updated")) or None,
            upstream_reachable=reachable if isinstance(reachable, bool) else None,
            upstream_problem=text(data, "upstream_problem"),
            restarts=int(number(data, "restarts")),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            hold=text(data, "hold"),
            disk_problem=text(data, "disk_problem"),
            handover=text(data, "handover"),
            counts=Counts(**{k: int(number(data, k)) for k in Counts.__dataclass_fields__}),
            front_before={key: int(number(data, key)) for _, key in FRONT_TOTALS},
            front_now={"blobs_in_flight": int(number(data, "blobs_in_flight"))},
        )


def read_state(storage: str) -> Optional[MirrorState]:
    """The state a mirror last wrote beside its cache; None when there is none (or it is unreadable)."""
    data = read_json(paths.state_file(storage))
    return MirrorState.from_dict(data) if data is not None else None


def write_state(storage: str, state: MirrorState) -> None:
    """Write a mirror's state (a snapshot) beside its cache, atomically."""
    write_file(paths.state_file(storage), json.dumps(state.as_dict(), indent=2) + "\n")
