"""gc's handshake with a mirror's runner: ask for read-only mode, wait until it holds, let it go."""

from __future__ import annotations

import os
import time

from registry_cache import hold, proc
from registry_cache.gc import GcError
from registry_cache.record import MirrorRecord
from registry_cache.state import GC_HOLD, STOPPED, UNKNOWN, read_state

READ_ONLY_WAIT = 120.0  # the runner lets stores in flight finish and drains connections first
GC_TIMEOUT = 6 * 3600  # how long a request stands at most (a gc killed mid-run leaves it behind)


def runner_alive(storage: str) -> bool:
    """True when a runner serves this mirror now (its state names a live registry process)."""
    state = read_state(storage)
    if state is None or state.mode in (UNKNOWN, STOPPED) or state.pid is None:
        return False
    return proc.exists(state.pid)


class ReadOnlyHold:
    """Asks a mirror's runner to serve read-only while the cache is collected, then to go back."""

    def __init__(self, record: MirrorRecord, timeout: float = READ_ONLY_WAIT) -> None:
        """The hold of `record`'s mirror, not asked for yet."""
        self.record = record
        self.timeout = timeout
        self.requested = False

    def __enter__(self) -> ReadOnlyHold:
        """Ask, and wait until the runner says it holds (GcError when it does not in time)."""
        if not runner_alive(self.record.storage):
            return self  # nothing serves, so nothing writes: collect as it is
        hold.ask(self.record.storage,
                 hold.HoldRequest(by="registry-cache gc", pid=os.getpid(), until=time.time() + GC_TIMEOUT))
        self.requested = True
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = read_state(self.record.storage)
            if state is not None and state.hold == GC_HOLD:
                return self
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise GcError(f"mirror {self.record.name} did not switch to read-only within "
                      f"{self.timeout:.0f} s; nothing was deleted (see its log)")

    def __exit__(self, *exc: object) -> None:
        """Let the mirror go back to its usual mode."""
        if self.requested:
            hold.withdraw(self.record.storage)
            self.requested = False
