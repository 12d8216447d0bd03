"""Notices a full disk under a mirror's cache, and that space is back: said in the mirror's state."""

from __future__ import annotations

import logging

from registry_cache import disk
from registry_cache.runner.keepers import StateKeeper

log = logging.getLogger(__name__)


class DiskWatch:
    """Checks the disk every few seconds, and at once when the registry logs that it is full."""

    def __init__(self, keeper: StateKeeper) -> None:
        """Watch the disk under the cache of `keeper`'s mirror."""
        self.keeper = keeper
        self.name = keeper.record.name
        self.storage = keeper.record.storage
        self.seen_enospc = False

    def check(self) -> None:
        """Measure the free space; say so when the disk fills up or has room again."""
        state = self.keeper.state
        # the front finds a full disk first when a blob it spools does not fit: said the same way
        problem = disk.full_problem(self.storage, seen_enospc=self.seen_enospc) or state.front_disk_problem()
        if problem and not state.disk_problem:
            log.error("mirror %s: %s", self.name, problem)
        elif not problem and state.disk_problem:
            log.info("mirror %s: disk space is back; new images are stored again", self.name)
            self.seen_enospc = False
        if problem != state.disk_problem:
            self.keeper.set(disk_problem=problem)

    def saw_line(self, line: str) -> None:
        """Take note of a registry log line that says it could not store a blob."""
        if self.seen_enospc or "no space left on device" not in line.lower():
            return
        self.seen_enospc = True
        problem = disk.full_problem(self.storage, seen_enospc=True) or (
            "disk full: the registry could not store a blob (no space left on device)")
        log.error("mirror %s: %s", self.name, problem)
        self.keeper.set(disk_problem=problem)
