"""The mirror's port as the runner sees it: listen, point at the registry on duty, count, drain."""

from __future__ import annotations

import logging
import resource
import socket
import time
from typing import Optional

from registry_cache.handover.ledger import Ledger
from registry_cache.handover.loop import IDLE_TIMEOUT, Loop

log = logging.getLogger(__name__)

BIND_RETRY = 30.0  # the previous runner of this mirror may still be releasing the port
BACKLOG = 1024  # connections the kernel completes while the loop is busy or backing off


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the soft limit.

    systemd gives a service 1,024 by default, about 500 relayed connections. Go programs
    (Distribution) raise it themselves at start; Python does not.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:  # the kernel's own cap
            wanted = int(handle.read())
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, wanted, exc)
    return soft


class Relay:
    """Listens on one address and relays every connection to the current backend port on 127.0.0.1."""

    def __init__(self, host: str, port: int, *, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.address = (host, port)
        self.idle_timeout = idle_timeout
        self._ledger = Ledger()
        self._loop: Optional[Loop] = None

    def point_to(self, port: int) -> None:
        """Send new connections to 127.0.0.1:`port`; the first call starts listening."""
        self._ledger.point_to(port)
        if self._loop is None:
            self._loop = Loop(self.address[1], self._ledger, self._bind(), self.idle_timeout)
            self._loop.start()

    def open_connections(self, port: int) -> int:
        """How many relayed connections to backend `port` are still open."""
        return self._ledger.open_connections(port)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no connection to backend `port` is open; False when `timeout` passed first.

        Connections to a backend no longer on duty that only wait for their client's next
        request are closed after RETIRED_IDLE s; those still moving bytes finish.
        """
        return self._ledger.wait_idle(port, timeout)

    def close(self) -> None:
        """Stop accepting connections (those open run on until they end)."""
        self._ledger.close()
        if self._loop is not None:
            self._loop.stop_listening()

    def _bind(self) -> socket.socket:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        deadline = time.monotonic() + BIND_RETRY
        while True:
            try:
                # "::" takes IPv4 clients too, as Distribution's own listener did
                return socket.create_server((host, port), family=family, backlog=BACKLOG,
                                            dualstack_ipv6=host == "::")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
