"""Holds a mirror's ports itself, so its registry can be swapped with no pull ever refused.

Distribution cannot hand a listening socket to a successor, and two processes cannot listen on
one port: restarting the registry in another mode (read-only for gc, proxy again after it)
closes the port for as long as the new process takes to start, and a pull arriving then fails.
So the runner listens on the mirror's port (and its debug port) and relays each connection, as
bytes, to the registry on duty on a private loopback port. A switch starts the next registry on
new private ports, waits until it serves, points new connections at it, and stops the previous
one only once the connections it was serving have ended.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)

BUFFER = 256 * 1024
BIND_RETRY = 30.0  # the previous runner of this mirror may still be releasing the port


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Relay:
    """Listens on one address and relays every connection to the current backend port on 127.0.0.1."""

    def __init__(self, host: str, port: int) -> None:
        self.address = (host, port)
        self._target: Optional[int] = None
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}  # backend port -> connections open to it
        self._listener: Optional[socket.socket] = None
        self._closed = threading.Event()

    def point_to(self, port: int) -> None:
        """Send new connections to 127.0.0.1:`port`; the first call starts listening."""
        with self._lock:
            self._target = port
        if self._listener is None:
            self._listener = self._bind()
            threading.Thread(target=self._accept, name=f"relay-{self.address[1]}", daemon=True).start()

    def open_connections(self, port: int) -> int:
        """How many relayed connections to backend `port` are still open."""
        with self._lock:
            return self._open.get(port, 0)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no connection to backend `port` is open; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.open_connections(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.open_connections(port)

    def close(self) -> None:
        """Stop accepting connections (those open run on until they end)."""
        self._closed.set()
        if self._listener is not None:
            # close() alone leaves a socket that a thread is blocked in accept() on listening
            # (Linux): shutdown wakes that thread and ends the listening for good
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()

    def _bind(self) -> socket.socket:
        host, port = self.address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        deadline = time.monotonic() + BIND_RETRY
        while True:
            try:
                # "::" takes IPv4 clients too, as Distribution's own listener did
                return socket.create_server((host, port), family=family, backlog=256,
                                            dualstack_ipv6=host == "::")
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                target = self._target
                self._open[target] = self._open.get(target, 0) + 1
            threading.Thread(target=self._relay, args=(client, target), daemon=True).start()

    def _relay(self, client: socket.socket, target: int) -> None:
        try:
            backend = socket.create_connection(("127.0.0.1", target), timeout=10)
        except OSError as exc:
            log.warning("relay: registry on port %d refused a connection: %s", target, exc)
            client.close()
            self._done(target)
            return
        backend.settimeout(None)
        for sock in (client, backend):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(backend, client), daemon=True)
        back.start()
        _pump(client, backend)
        back.join()
        client.close()
        backend.close()
        self._done(target)

    def _done(self, target: int) -> None:
        with self._lock:
            self._open[target] -= 1


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until the source ends, then end that direction of the sink."""
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    try:
        while True:
            count = source.recv_into(buffer)
            if not count:
                break
            sink.sendall(view[:count])
    except OSError:
        pass
    for sock, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
        with contextlib.suppress(OSError):
            sock.shutdown(how)
