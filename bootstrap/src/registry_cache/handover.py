"""Holds a mirror's ports itself, so its registry can be swapped with no pull ever refused.

Distribution cannot hand a listening socket to a successor, and two processes cannot listen on
one port: restarting the registry in another mode (read-only for gc, proxy again after it)
closes the port for as long as the new process takes to start, and a pull arriving then fails.
So the runner listens on the mirror's port (and its debug port) and relays each connection, as
bytes, to the registry on duty on a private loopback port. A switch starts the next registry on
new private ports, waits until it serves, points new connections at it, and stops the previous
one only once the connections it was serving have ended.

The relay costs next to nothing and never stops taking connections, the way nginx's workers
work: one event loop per port (no thread per connection); the bytes go socket -> pipe ->
socket with splice(2), never through Python; an idle keep-alive connection costs two file
descriptors and no pipe. When the process runs out of file descriptors (or the kernel of
memory) the loop says so, stops accepting for a moment and accepts again: connections wait in
the listen backlog meanwhile. Client connections carry TCP keepalive, and one where nothing
moves for too long is closed, so a CI machine destroyed mid-connection holds nothing for ever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import resource
import selectors
import socket
import threading
import time
from typing import Optional

log = logging.getLogger(__name__)

BIND_RETRY = 30.0  # the previous runner of this mirror may still be releasing the port
BACKLOG = 1024  # connections the kernel completes while the loop is busy or backing off
CONNECT_TIMEOUT = 10.0  # for the registry on duty to take a relayed connection
# A connection where nothing moved either way for this long is closed, as nginx's
# keepalive_timeout (75 s) does: the client's turn (the registry has answered; an idle
# keep-alive between pulls, or a client that vanished) ...
IDLE_TIMEOUT = 75.0
# ... and the registry's turn (it prepares an answer, e.g. a manifest it asks the upstream for,
# whose own stalls the front cuts sooner).
ANSWER_TIMEOUT = 300.0
# A retired registry's connection in the client's turn, quiet this long, is closed at once
# rather than after IDLE_TIMEOUT: the client's next request opens a new connection, to the
# registry on duty, and a gc switch need not wait for keep-alives it would cut anyway.
RETIRED_IDLE = 5.0
# TCP keepalive on client connections: a peer gone without a word is found within
# KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_COUNT s; USER_TIMEOUT bounds unacknowledged data.
KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3
USER_TIMEOUT = 60.0
ACCEPT_BACKOFF = (0.05, 2.0)  # first and longest pause after accept() fails for lack of resources
ERROR_LOG_INTERVAL = 10.0  # while accept() keeps failing, one log line per this many seconds
SWEEP_INTERVAL = 1.0  # how often the timeouts are checked
PIPE_SIZE = 256 * 1024  # bytes one splice moves at most (the pipe's capacity)
COPY_SIZE = 64 * 1024  # bytes one read moves when no pipe can be had
SPARE_PIPES = 32  # pipes kept for the next transfers; the rest are closed once drained
ROUNDS_PER_EVENT = 16  # splices one direction may do before other connections get their turn
ACCEPTS_PER_EVENT = 256  # connections taken at once before the open ones get their turn

# accept() errors that say the process or the kernel is out of something: back off, try again
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# accept() errors about one connection only (gone before it was taken, a network error)
_PER_CONNECTION = {errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.EINTR, errno.ENETDOWN,
                   errno.ENOPROTOOPT, errno.EHOSTDOWN, errno.ENONET, errno.EHOSTUNREACH,
                   errno.EOPNOTSUPP, errno.ENETUNREACH, errno.ETIMEDOUT}
_SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK


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
        self._target: Optional[int] = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._open: dict[int, int] = {}  # backend port -> connections open to it
        self._retired: set[int] = set()  # backend ports that take no new connection
        self._closed = False
        self._loop: Optional[_Loop] = None

    def point_to(self, port: int) -> None:
        """Send new connections to 127.0.0.1:`port`; the first call starts listening."""
        with self._lock:
            if self._target is not None and self._target != port:
                self._retired.add(self._target)
            self._retired.discard(port)
            self._target = port
        if self._loop is None:
            self._loop = _Loop(self, self._bind())
            self._loop.start()

    def open_connections(self, port: int) -> int:
        """How many relayed connections to backend `port` are still open."""
        with self._lock:
            return self._open.get(port, 0)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no connection to backend `port` is open; False when `timeout` passed first.

        Connections to a backend no longer on duty that only wait for their client's next
        request are closed after RETIRED_IDLE s; those still moving bytes finish.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._open.get(port, 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
            return True

    def close(self) -> None:
        """Stop accepting connections (those open run on until they end)."""
        with self._lock:
            self._closed = True
            if self._target is not None:
                self._retired.add(self._target)
        if self._loop is not None:
            self._loop.stop_listening()

    # -- called by the loop -------------------------------------------------------------

    def _take(self) -> Optional[int]:
        """The backend port for a new connection, counted as open (None once closed)."""
        with self._lock:
            if self._closed or self._target is None:
                return None
            self._open[self._target] = self._open.get(self._target, 0) + 1
            return self._target

    def _done(self, target: int) -> None:
        with self._changed:
            self._open[target] -= 1
            if not self._open[target]:
                del self._open[target]
                self._changed.notify_all()

    def _is_retired(self, target: int) -> bool:
        with self._lock:
            return target in self._retired

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


class _Flow:
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
        return not self.ended and not self.held

    @property
    def wants_sink(self) -> bool:
        return self.held > 0


class _Link:
    """A relayed connection: the client's socket, the registry's, and a flow each way."""

    def __init__(self, client: socket.socket, backend: socket.socket, target: int) -> None:
        self.client = client
        self.backend = backend
        self.target = target
        self.connected = False
        self.started = self.moved = time.monotonic()
        self.clients_turn = True  # the registry answered last (or nobody said anything yet)
        self.up = _Flow(client, backend)  # the requests
        self.down = _Flow(backend, client)  # the answers
        self.events = {client: 0, backend: 0}

    @property
    def finished(self) -> bool:
        return self.up.ended and self.down.ended


class _Loop(threading.Thread):
    """The event loop of one relay: accepts, connects, splices and times connections out."""

    def __init__(self, relay: Relay, listener: socket.socket) -> None:
        super().__init__(name=f"relay-{relay.address[1]}", daemon=True)
        self.relay = relay
        self.listener: Optional[socket.socket] = listener
        listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)
        self.links: set[_Link] = set()
        self.spare: list[tuple[int, int]] = []
        self.stopping = False
        self.paused_until = 0.0  # accept() failed for lack of resources: retry then
        self.backoff = ACCEPT_BACKOFF[0]
        self.trouble_since: Optional[float] = None
        self.trouble_logged = 0.0
        self.failed_accepts = 0
        self.next_sweep = time.monotonic() + SWEEP_INTERVAL

    def stop_listening(self) -> None:
        """Ask the loop to close the listening socket (from any thread); wait until it has."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self.wake_write, b"x")
        if self.is_alive() and threading.current_thread() is not self:
            for _ in range(100):
                if self.listener is None:
                    break
                time.sleep(0.01)

    def run(self) -> None:
        try:
            while self.listener is not None or self.links:
                try:
                    self._turn()
                except Exception:  # a bug must not take the mirror's port down with it
                    log.exception("port %d: relay error (the port keeps serving)", self.relay.address[1])
                    time.sleep(0.1)
        finally:
            for link in list(self.links):
                self._close(link)
            for pipe in self.spare:
                _close_pipe(pipe)
            self.selector.close()
            os.close(self.wake_read)
            os.close(self.wake_write)

    def _turn(self) -> None:
        now = time.monotonic()
        if self.stopping and self.listener is not None:
            self._close_listener()
        if self.listener is not None and self.paused_until and now >= self.paused_until:
            self.paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ, None)
        wait = max(0.0, self.next_sweep - now)
        if self.paused_until:
            wait = min(wait, max(0.0, self.paused_until - now))
        for key, mask in self.selector.select(wait):
            if key.fileobj is self.listener:
                self._accept()
            elif key.fileobj == self.wake_read:
                with contextlib.suppress(OSError):
                    os.read(self.wake_read, 4096)
            else:
                self._serve(key.data, key.fileobj, mask)
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + SWEEP_INTERVAL
            self._sweep()

    # -- accepting ----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                client, _ = self.listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _PER_CONNECTION:
                    continue
                self._pause(exc)
                return
            target = self.relay._take()
            if target is None:
                client.close()
                continue
            try:
                link = self._connect(client, target)
            except OSError as exc:
                client.close()
                self.relay._done(target)
                self._pause(exc)
                return
            self.links.add(link)
            if link.finished:
                self._close(link)
            else:
                self._update(link)
        if self.trouble_since is not None:
            log.warning("port %d: taking connections again after %.1f s (%d accept attempts failed)",
                        self.relay.address[1], time.monotonic() - self.trouble_since, self.failed_accepts)
            self.trouble_since = None
            self.failed_accepts = 0
            self.backoff = ACCEPT_BACKOFF[0]

    def _pause(self, exc: OSError) -> None:
        """accept() (or what follows) failed: say so, stop accepting for a while, then try again."""
        now = time.monotonic()
        self.failed_accepts += 1
        if self.trouble_since is None or now - self.trouble_logged >= ERROR_LOG_INTERVAL:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            what = ("out of file descriptors" if exc.errno in (errno.EMFILE, errno.ENFILE)
                    else "out of resources" if exc.errno in _EXHAUSTED else "accept failed")
            log.error("port %d: cannot take new connections, %s: %s (%d connections open, file "
                      "limit %d); they wait in the backlog, retrying every %.2f-%.0f s",
                      self.relay.address[1], what, exc, len(self.links), soft,
                      ACCEPT_BACKOFF[0], ACCEPT_BACKOFF[1])
            self.trouble_logged = now
        if self.trouble_since is None:
            self.trouble_since = now
        self.paused_until = now + self.backoff
        self.backoff = min(self.backoff * 2, ACCEPT_BACKOFF[1])
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)

    def _close_listener(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None

    def _connect(self, client: socket.socket, target: int) -> _Link:
        backend = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for sock in (client, backend):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _keepalive(client)
            code = backend.connect_ex(("127.0.0.1", target))
        except OSError:
            backend.close()
            raise
        link = _Link(client, backend, target)
        if code == 0:
            link.connected = True
        elif code != errno.EINPROGRESS:
            log.warning("port %d: the registry on port %d refused a connection: %s",
                        self.relay.address[1], target, os.strerror(code))
            link.up.ended = link.down.ended = True
        return link

    # -- relaying -----------------------------------------------------------------------

    def _serve(self, link: _Link, sock: socket.socket, mask: int) -> None:
        if link not in self.links:
            return  # closed earlier in this round
        try:
            if not link.connected:
                code = link.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    log.warning("port %d: the registry on port %d refused a connection: %s",
                                self.relay.address[1], link.target, os.strerror(code))
                    self._close(link)
                    return
                link.connected = True
            self._pump(link, link.up)
            self._pump(link, link.down)
        except OSError:
            self._close(link)  # reset by either side
            return
        if link.finished:
            self._close(link)
        else:
            self._update(link)

    def _pump(self, link: _Link, flow: _Flow) -> None:
        """Move what can move now from source to sink without blocking."""
        for _ in range(ROUNDS_PER_EVENT):
            if flow.held:
                try:
                    if flow.pipe is not None:
                        sent = os.splice(flow.pipe[0], flow.sink.fileno(), flow.held, flags=_SPLICE)
                    else:
                        sent = flow.sink.send(flow.copied)
                        flow.copied = flow.copied[sent:]
                except BlockingIOError:
                    return
                flow.held -= sent
                link.moved = time.monotonic()
                if not flow.held:
                    self._release(flow)
                continue
            if flow.ended:
                return
            if flow.pipe is None:
                flow.pipe = self._pipe()
            try:
                if flow.pipe is not None:
                    got = os.splice(flow.source.fileno(), flow.pipe[1], PIPE_SIZE, flags=_SPLICE)
                else:
                    flow.copied = flow.source.recv(COPY_SIZE)
                    got = len(flow.copied)
            except BlockingIOError:
                self._release(flow)
                return
            if not got:
                self._release(flow)
                flow.ended = True
                with contextlib.suppress(OSError):
                    flow.sink.shutdown(socket.SHUT_WR)
                return
            flow.held = got
            link.moved = time.monotonic()
            link.clients_turn = flow is link.down

    def _pipe(self) -> Optional[tuple[int, int]]:
        """An empty pipe for the next transfer; None when the process has no fd left for one
        (the bytes are then copied through Python instead of cutting the connection)."""
        if self.spare:
            return self.spare.pop()
        try:
            pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        with contextlib.suppress(OSError):  # a bigger pipe moves more per splice, when allowed
            fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        return pipe

    def _release(self, flow: _Flow) -> None:
        """Give an empty pipe back for the next transfer."""
        if flow.pipe is None or flow.held:
            return
        if len(self.spare) < SPARE_PIPES:
            self.spare.append(flow.pipe)
        else:
            _close_pipe(flow.pipe)
        flow.pipe = None

    def _update(self, link: _Link) -> None:
        """Watch each socket of `link` for what its flows wait on now."""
        if not link.connected:
            wanted = {link.client: 0, link.backend: selectors.EVENT_WRITE}
        else:
            wanted = {link.client: 0, link.backend: 0}
            for flow in (link.up, link.down):
                if flow.wants_source:
                    wanted[flow.source] |= selectors.EVENT_READ
                if flow.wants_sink:
                    wanted[flow.sink] |= selectors.EVENT_WRITE
        for sock, events in wanted.items():
            before = link.events[sock]
            if events == before:
                continue
            if not before:
                self.selector.register(sock, events, link)
            elif not events:
                self.selector.unregister(sock)
            else:
                self.selector.modify(sock, events, link)
            link.events[sock] = events

    def _close(self, link: _Link) -> None:
        if link not in self.links:
            return
        self.links.discard(link)
        for sock in (link.client, link.backend):
            if link.events[sock]:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(sock)
            sock.close()
        for flow in (link.up, link.down):
            if flow.pipe is not None:
                _close_pipe(flow.pipe)  # may hold bytes nobody will read
                flow.pipe = None
        self.relay._done(link.target)

    def _sweep(self) -> None:
        """Close connections where nothing has moved for longer than their turn allows."""
        now = time.monotonic()
        for link in list(self.links):
            quiet = now - link.moved
            if not link.connected:
                too_long = quiet > CONNECT_TIMEOUT
            elif link.clients_turn:
                limit = RETIRED_IDLE if self.relay._is_retired(link.target) else self.relay.idle_timeout
                too_long = quiet > limit
            else:
                too_long = quiet > ANSWER_TIMEOUT
            if too_long:
                log.debug("port %d: closing a connection quiet for %.0f s", self.relay.address[1], quiet)
                self._close(link)


def _keepalive(sock: socket.socket) -> None:
    """Have the kernel find a client that went away without a word (a destroyed CI machine)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(USER_TIMEOUT * 1000))


def _close_pipe(pipe: tuple[int, int]) -> None:
    for fd in pipe:
        with contextlib.suppress(OSError):
            os.close(fd)
