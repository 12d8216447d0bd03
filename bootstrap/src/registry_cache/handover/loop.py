"""The event loop behind a mirror's port: accept, connect to the registry, splice both ways, time out.

One thread per port, never one per connection; the bytes go socket -> pipe -> socket with
splice(2), never through Python (a pipe is held only while bytes are in it); accept() failing
for lack of file descriptors or memory pauses accepting, it never ends the loop.
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

from registry_cache.handover.ledger import Ledger
from registry_cache.handover.link import Flow, Link

log = logging.getLogger(__name__)

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


class Loop(threading.Thread):
    """The event loop of one relay: accepts, connects, splices and times connections out."""

    def __init__(self, port: int, ledger: Ledger, listener: socket.socket, idle_timeout: float) -> None:
        """Serve `listener` (the mirror's `port`), sending connections where `ledger` says."""
        super().__init__(name=f"relay-{port}", daemon=True)
        self.port = port
        self.ledger = ledger
        self.idle_timeout = idle_timeout
        self.listener: Optional[socket.socket] = listener
        listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.wake_read, self.wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.selector.register(self.wake_read, selectors.EVENT_READ, None)
        self.links: set[Link] = set()
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
        """Serve until the listener is closed and the last connection has ended."""
        try:
            while self.listener is not None or self.links:
                try:
                    self._turn()
                except Exception:  # a bug must not take the mirror's port down with it
                    log.exception("port %d: relay error (the port keeps serving)", self.port)
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
            target = self.ledger.take()
            if target is None:
                client.close()
                continue
            try:
                link = self._connect(client, target)
            except OSError as exc:
                client.close()
                self.ledger.done(target)
                self._pause(exc)
                return
            self.links.add(link)
            if link.finished:
                self._close(link)
            else:
                self._update(link)
        if self.trouble_since is not None:
            log.warning("port %d: taking connections again after %.1f s (%d accept attempts failed)",
                        self.port, time.monotonic() - self.trouble_since, self.failed_accepts)
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
                      self.port, what, exc, len(self.links), soft,
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

    def _connect(self, client: socket.socket, target: int) -> Link:
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
        link = Link(client, backend, target)
        if code == 0:
            link.connected = True
        elif code != errno.EINPROGRESS:
            log.warning("port %d: the registry on port %d refused a connection: %s",
                        self.port, target, os.strerror(code))
            link.up.ended = link.down.ended = True
        return link

    # -- relaying -----------------------------------------------------------------------

    def _serve(self, link: Link, sock: socket.socket, mask: int) -> None:
        if link not in self.links:
            return  # closed earlier in this round
        try:
            if not link.connected:
                code = link.backend.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    log.warning("port %d: the registry on port %d refused a connection: %s",
                                self.port, link.target, os.strerror(code))
                    self._close(link)
                    return
                link.connected = True
            self._pump(link, link.up)
            self._pump(link, link.down)
            if link.finished:
                self._close(link)
            else:
                self._update(link)
        except OSError:
            self._close(link)  # reset by either side
        except Exception:  # a bug costs this one connection, never the port
            log.exception("port %d: relay error; one connection closed", self.port)
            self._close(link)

    def _pump(self, link: Link, flow: Flow) -> None:
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

    def _release(self, flow: Flow) -> None:
        """Give an empty pipe back for the next transfer."""
        if flow.pipe is None or flow.held:
            return
        if len(self.spare) < SPARE_PIPES:
            self.spare.append(flow.pipe)
        else:
            _close_pipe(flow.pipe)
        flow.pipe = None

    def _update(self, link: Link) -> None:
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

    def _close(self, link: Link) -> None:
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
        self.ledger.done(link.target)

    def _sweep(self) -> None:
        """Close connections where nothing has moved for longer than their turn allows."""
        now = time.monotonic()
        for link in list(self.links):
            quiet = now - link.moved
            if not link.connected:
                too_long = quiet > CONNECT_TIMEOUT
            elif link.clients_turn:
                limit = RETIRED_IDLE if self.ledger.is_retired(link.target) else self.idle_timeout
                too_long = quiet > limit
            else:
                too_long = quiet > ANSWER_TIMEOUT
            if too_long:
                log.debug("port %d: closing a connection quiet for %.0f s", self.port, quiet)
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
