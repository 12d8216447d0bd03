"""The runner's two files beside the cache, kept current at a bounded rate: the state and the pull times."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from registry_cache.record import MirrorRecord
from registry_cache.state import MirrorState, read_state, write_state
from registry_cache.usage import Usage

log = logging.getLogger(__name__)

STATE_WRITE_INTERVAL = 1.0
USAGE_WRITE_INTERVAL = 5.0


class StateKeeper:
    """The mirror's state as the runner changes it; written beside the cache at most once a second.

    `lock` guards the state and everything counted into it (the hit counter of the registry
    on duty shares its counts).
    """

    def __init__(self, record: MirrorRecord) -> None:
        """Carry on the totals the mirror's previous run left."""
        self.record = record
        self.state = MirrorState.resumed(record.name, read_state(record.storage))
        self.lock = threading.Lock()
        self.dirty = False
        self._last_write = 0.0

    def set(self, **changes: Any) -> None:
        """Change the state and write it at once."""
        with self.lock:
            for key, value in changes.items():
                setattr(self.state, key, value)
            self.dirty = True
        self.write(force=True)

    def write(self, *, force: bool = False) -> None:
        """Write the state when it changed (at most once a second unless `force`)."""
        now = time.monotonic()
        with self.lock:
            if not force and (not self.dirty or now - self._last_write < STATE_WRITE_INTERVAL):
                return
            snapshot = self.state.snapshot()
            self.dirty = False
            self._last_write = now
        if not self.record.storage_ready:
            return  # never write into a storage that is not there (an unmounted synced folder)
        try:
            write_state(self.record.storage, snapshot)
        except OSError as exc:
            log.warning("mirror %s: cannot write its state file: %s", self.record.name, exc)


class UsageKeeper:
    """When each manifest and blob was last pulled, for gc's LRU; written at most every 5 s."""

    def __init__(self, record: MirrorRecord) -> None:
        """Carry on the pull times kept beside the cache."""
        self.record = record
        self.usage = Usage.read(record.storage)
        self._lock = threading.Lock()
        self._dirty = False
        self._written = 0.0

    def observe(self, entry: dict[str, Any]) -> None:
        """Stamp what one registry log entry served."""
        with self._lock:
            if self.usage.observe(entry):
                self._dirty = True

    def save(self, *, force: bool = False) -> None:
        """Write the pull times when they changed (at most every 5 s unless `force`)."""
        now = time.monotonic()
        with self._lock:
            if not self._dirty or (not force and now - self._written < USAGE_WRITE_INTERVAL):
                return
            snapshot = Usage(dict(self.usage.manifests), dict(self.usage.blobs))
            self._dirty = False
            self._written = now
        if not self.record.storage_ready:
            return
        try:
            snapshot.save(self.record.storage)
        except OSError as exc:
            log.warning("mirror %s: cannot keep the pull times for gc: %s", self.record.name, exc)
