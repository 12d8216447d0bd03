"""Which registry new connections go to, and how many are still open to each one: what a drain waits on."""

from __future__ import annotations

import threading
import time
from typing import Optional


class OpenConnections:
    """How many connections are open to each backend port, and a wait for one to have none (thread-safe).

    The relay's ledger and the endpoint count with it: what a drain of a retired registry waits on.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open: dict[int, int] = {}  # backend port -> connections open to it

    def opened(self, port: int) -> None:
        """A connection to backend `port` has begun."""
        with self._changed:
            self._open[port] = self._open.get(port, 0) + 1

    def done(self, port: int) -> None:
        """A connection to backend `port` has ended."""
        with self._changed:
            self._open[port] -= 1
            if not self._open[port]:
                del self._open[port]
                self._changed.notify_all()

    def count(self, port: int) -> int:
        """How many connections to backend `port` are still open."""
        with self._changed:
            return self._open.get(port, 0)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no connection to backend `port` is open; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._open.get(port, 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True


class Ledger:
    """The backend port on duty, the retired ones, and the connections open to each (thread-safe)."""

    def __init__(self) -> None:
        self._target: Optional[int] = None
        self._lock = threading.Lock()
        self._connections = OpenConnections()
        self._retired: set[int] = set()  # backend ports that take no new connection
        self._closed = False

    def point_to(self, port: int) -> None:
        """New connections go to `port`; the one on duty before is retired."""
        with self._lock:
            if self._target is not None and self._target != port:
                self._retired.add(self._target)
            self._retired.discard(port)
            self._target = port

    def close(self) -> None:
        """No new connection is taken; the backend on duty is retired too."""
        with self._lock:
            self._closed = True
            if self._target is not None:
                self._retired.add(self._target)

    def take(self) -> Optional[int]:
        """The backend port for a new connection, counted as open (None once closed)."""
        with self._lock:
            if self._closed or self._target is None:
                return None
            # counted before the lock is let go: a drain of this port cannot miss it
            self._connections.opened(self._target)
            return self._target

    def done(self, port: int) -> None:
        """A connection to backend `port` has ended."""
        self._connections.done(port)

    def is_retired(self, port: int) -> bool:
        """True once backend `port` takes no new connection."""
        with self._lock:
            return port in self._retired

    def open_connections(self, port: int) -> int:
        """How many connections to backend `port` are still open."""
        return self._connections.count(port)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no connection to backend `port` is open; False when `timeout` passed first."""
        return self._connections.wait_idle(port, timeout)
