"""A relayed connection as the loop keeps it: its two sockets, a flow of bytes each way, its timers."""

from __future__ import annotations

import socket
import time
from typing import Optional


class Flow:
    """One direction of a relayed connection: bytes from `source` to `sink` through a pipe."""

    def __init__(self, source: socket.socket, sink: socket.socket) -> None:
        self.source = source
        self.sink = sink
        self.pipe: Optional[tuple[int, int]] = None  # (read end, write end) while bytes are in it
        self.held = 0  # bytes in the pipe (or `copied`), not yet in the sink
        self.copied = b""  # bytes read without a pipe (none was to be had), not yet sent
        self.ended = False  # the source ended and the sink was told so

    @property
    def wants_source(self) -> bool:
        """True while the flow may read more from its source (nothing held, not ended)."""
        return not self.ended and not self.held

    @property
    def wants_sink(self) -> bool:
        """True while bytes wait for the sink to take them."""
        return self.held > 0


class Link:
    """A relayed connection: the client's socket, the registry's, and a flow each way."""

    def __init__(self, client: socket.socket, backend: socket.socket, target: int) -> None:
        self.client = client
        self.backend = backend
        self.target = target
        self.connected = False
        self.started = self.moved = time.monotonic()
        self.clients_turn = True  # the registry answered last (or nobody said anything yet)
        self.up = Flow(client, backend)  # the requests
        self.down = Flow(backend, client)  # the answers
        self.events = {client: 0, backend: 0}

    @property
    def finished(self) -> bool:
        """True once both sides have ended."""
        return self.up.ended and self.down.ended
