"""The one endpoint: the first mirror's port answers for every configured upstream.

The runner of the mirror that owns the endpoint (the first one in config.yml) listens on its
port with this HTTP router instead of the plain byte relay (handover.Relay), with the same
handover interface (`point_to`, `wait_idle`, `close`). Each request is routed by routing.py —
containerd's `ns` parameter, else a registry prefix in the path, else the endpoint's own
mirror — and sent on to that mirror: its own registry on duty (a private loopback port the
runner points it at) or another mirror's own port on this machine. So every upstream keeps its
own single-flight front, size cap, TLS, client login, counters, status and metrics; the
endpoint adds none of its own and never dials anything but the configured mirrors.

What changes on the way: the registry prefix leaves the path (and `ns` the query) going in,
and comes back into `Location` and `Link` URLs coming out. The client's `Host` and
`Authorization` pass unchanged: a mirror's client login (htpasswd) answers with a `Basic`
challenge, which names a realm but no URL, so a client logs in to the endpoint's address as it
would to the mirror's. With TLS the endpoint serves the mirrors' certificate and reaches them
over TLS, checked against their CA.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import ssl
import threading
import time
from typing import Any, Optional

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from registry_cache import paths, routing
from registry_cache.net import connect_host

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes read from a mirror per write to the client
CONNECT_TIMEOUT = 10.0  # a mirror on this machine accepts at once, or is down
READ_TIMEOUT = 300.0  # a mirror silent this long mid-answer (its upstream stalled) counts as broken
KEEPALIVE_TIMEOUT = 75.0  # an idle client connection is closed after this long (nginx's default)
SHUTDOWN_TIMEOUT = 2.0  # how long a stop waits for answers still streaming
STOP_WAIT = 10.0
SPLICE_MIN = 256 * 1024  # bodies at least this big go by splice(2) where both sides are plain HTTP
SPLICE_PIPE = 1024 * 1024  # bytes a splice pipe holds
TABLE_CHECK_INTERVAL = 1.0  # how often a request looks whether apply rewrote the routing table

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}


def read_table(directory: str) -> Optional[routing.Table]:
    """The endpoint's table rendered into a mirror's folder; None when that mirror is no endpoint."""
    try:
        with open(os.path.join(directory, paths.ENDPOINT), encoding="utf-8") as handle:
            return routing.Table.from_json(handle.read())
    except FileNotFoundError:
        return None


def forward_request_headers(headers: Any) -> CIMultiDict:
    """A client's request headers as sent to a mirror: hop-by-hop ones dropped, Host kept."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
            out.add(key, value)
    return out


def forward_response_headers(headers: Any, decision: routing.Decision) -> CIMultiDict:
    """A mirror's answer headers as the client gets them: `Location` and `Link` under the client's name."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower == "content-length":
            continue
        if lower == "location":
            value = routing.client_url(value, decision)
        elif lower == "link":
            value = routing.client_link(value, decision)
        out.add(key, value)
    return out


def backend_query(query: str) -> str:
    """The query string a mirror gets: containerd's `ns` is the endpoint's, not the mirror's."""
    kept = [part for part in query.split("&") if part and part.split("=", 1)[0] != routing.NS_PARAMETER]
    return "&".join(kept)


class Endpoint:
    """Listens on the endpoint's port and routes each request to its mirror (see the module doc)."""

    def __init__(self, table: routing.Table, listen: str, port: int, *, mirror_dir: Optional[str] = None,
                 tls: bool = False) -> None:
        self.table = table
        self._ports = {r.mirror: r.port for r in table.routes if r.mirror != table.home}
        # `apply` rewrites the table when mirrors come or go, without restarting this mirror
        self._table_path = os.path.join(mirror_dir, paths.ENDPOINT) if mirror_dir else None
        self._table_stamp = self._stamp()
        self._table_checked = time.monotonic()
        self.address = (listen, port)
        self._backend_host = connect_host(listen)
        self._home_port: Optional[int] = None
        self._open: dict[int, int] = {}
        self._lock = threading.Lock()
        self._server_ssl: Optional[ssl.SSLContext] = None
        self._client_ssl: Optional[ssl.SSLContext] = None
        if tls:
            if mirror_dir is None:
                raise ValueError("an endpoint with TLS needs its mirror's folder (certificate, CA)")
            self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._server_ssl.load_cert_chain(os.path.join(mirror_dir, paths.MIRROR_TLS_CERT),
                                             os.path.join(mirror_dir, paths.MIRROR_TLS_KEY))
            # the mirrors are on this machine, behind ports only the runners hold: their
            # certificate is checked against the CA, its name is not (it may not cover 127.0.0.1)
            self._client_ssl = ssl.create_default_context(cafile=os.path.join(mirror_dir, paths.MIRROR_CA))
            self._client_ssl.check_hostname = False
        self._scheme = "https" if tls else "http"
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._runner: Optional[web.AppRunner] = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Future] = set()

    # -- the handover interface (as handover.Relay) --------------------------------------------

    def point_to(self, port: int) -> None:
        """Send its own mirror's requests to that registry on 127.0.0.1:`port`; the first call listens."""
        with self._lock:
            previous, self._home_port = self._home_port, port
        if self._thread is None:
            self._start()
        elif previous is not None and previous != port:
            self._call_soon(self._retire_session, previous)

    def open_connections(self, port: int) -> int:
        """How many requests to backend `port` are still being answered."""
        with self._lock:
            return self._open.get(port, 0)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no request to backend `port` is open; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while self.open_connections(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.open_connections(port)

    def close(self) -> None:
        """Stop listening; answers still streaming get a moment to finish."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=STOP_WAIT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=STOP_WAIT)

    # -- serving ------------------------------------------------------------------------------

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        outcome: dict[str, Any] = {}

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                   keepalive_timeout=KEEPALIVE_TIMEOUT)
            await runner.setup()
            host, port = self.address
            site = web.TCPSite(runner, host, port, ssl_context=self._server_ssl,
                               shutdown_timeout=SHUTDOWN_TIMEOUT, backlog=256, reuse_address=True)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            self._runner = runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # handed to the caller's thread
                outcome["error"] = exc
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=f"endpoint-{self.address[1]}", daemon=True)
        self._thread.start()
        ready.wait()
        if "error" in outcome:
            self._thread.join()
            self._thread = None
            raise outcome["error"]
        log.info("endpoint: port %d answers for %s", self.address[1], self.table.describe())

    def _call_soon(self, func: Any, *args: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(func, *args)

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()

    def _session(self, port: int) -> aiohttp.ClientSession:
        session = self._sessions.get(port)
        if session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
            connector = aiohttp.TCPConnector(limit=0, ssl=self._client_ssl if self._client_ssl else False)
            # bytes pass as the mirror sent them: no decompression, no cookies
            session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",))
            self._sessions[port] = session
        return session

    def _retire_session(self, port: int) -> None:
        """Close the kept connections to a retired registry once nothing reads from it any more."""
        if self.open_connections(port) or port == self._home_port or port in self._ports.values():
            return
        session = self._sessions.pop(port, None)
        if session is not None:
            task = asyncio.ensure_future(session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _stamp(self) -> Optional[tuple[int, int]]:
        if self._table_path is None:
            return None
        try:
            stat = os.stat(self._table_path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino

    def _reread_table(self) -> None:
        """Take up a table `apply` rewrote (checked at most every TABLE_CHECK_INTERVAL seconds)."""
        now = time.monotonic()
        if self._table_path is None or now - self._table_checked < TABLE_CHECK_INTERVAL:
            return
        self._table_checked = now
        stamp = self._stamp()
        if stamp is None or stamp == self._table_stamp:
            return
        try:
            table = read_table(os.path.dirname(self._table_path))
        except (OSError, ValueError) as exc:
            log.warning("endpoint: cannot read its new routing table, keeping the old one: %s", exc)
            return
        self._table_stamp = stamp
        if table is None or table.home != self.table.home:
            return  # no longer (or another mirror's) endpoint: apply restarts this mirror
        self.table = table
        self._ports = {r.mirror: r.port for r in table.routes if r.mirror != table.home}
        log.info("endpoint: port %d now answers for %s", self.address[1], table.describe())

    def _backend_port(self, mirror: str) -> Optional[int]:
        if mirror == self.table.home:
            return self._home_port
        return self._ports.get(mirror)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request to its mirror and stream the answer back."""
        self._reread_table()
        raw_path, _, query = request.raw_path.partition("?")
        decision = routing.route(self.table, raw_path, query)
        if decision.mirror is None:
            log.info("endpoint: refused %s %s: no mirror for registry %r", request.method, raw_path,
                     decision.registry)
            return web.Response(status=404, body=routing.refusal_body(decision),
                                content_type="application/json", headers=API_VERSION)
        port = self._backend_port(decision.mirror)
        if port is None:
            return _unavailable(f"mirror {decision.mirror} has no port known to the endpoint")
        kept = backend_query(query)
        url = f"{self._scheme}://{self._backend_host}:{port}{decision.path}" + (f"?{kept}" if kept else "")
        with self._lock:
            self._open[port] = self._open.get(port, 0) + 1
        try:
            return await self._forward(request, decision, port, url)
        finally:
            with self._lock:
                self._open[port] -= 1
            if port != self._home_port and port not in self._ports.values():
                self._retire_session(port)

    async def _forward(self, request: web.Request, decision: routing.Decision, port: int,
                       url: str) -> web.StreamResponse:
        headers = forward_request_headers(request.headers)
        data = request.content if request.body_exists else None
        try:
            answer = await self._session(port).request(
                request.method, aiohttp.client.URL(url, encoded=True), headers=headers, data=data,
                allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("endpoint: %s %s: mirror %s does not answer: %s", request.method, request.path,
                        decision.mirror, exc)
            return _unavailable(f"mirror {decision.mirror} does not answer: {type(exc).__name__}")
        try:
            response = web.StreamResponse(status=answer.status, reason=answer.reason,
                                          headers=forward_response_headers(answer.headers, decision))
            length = answer.headers.get("Content-Length")
            bodiless = request.method == "HEAD" or answer.status in (204, 304)
            if length is not None and length.isdigit():
                response.content_length = int(length)
            elif bodiless:
                response.content_length = 0
            await response.prepare(request)
            if bodiless:
                return response
            if self._can_splice(request, answer):
                return await self._splice_body(request, response, answer, decision)
            try:
                while True:
                    chunk = await answer.content.read(CHUNK)
                    if not chunk:
                        break
                    await response.write(chunk)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("endpoint: %s %s: mirror %s broke off: %s", request.method, request.path,
                            decision.mirror, exc)
                _cut(request)
            except ConnectionResetError:
                log.debug("endpoint: %s %s: the client left", request.method, request.path)
            return response
        finally:
            answer.release()


    def _can_splice(self, request: web.Request, answer: aiohttp.ClientResponse) -> bool:
        """Whether a body goes from the mirror to the client by splice(2): a big one, plain HTTP both ways."""
        length = answer.content_length
        return (self._server_ssl is None and request.method == "GET" and answer.status == 200
                and length is not None and length >= SPLICE_MIN and answer.connection is not None
                and request.transport is not None)

    async def _splice_body(self, request: web.Request, response: web.StreamResponse,
                           answer: aiohttp.ClientResponse, decision: routing.Decision) -> web.StreamResponse:
        """Move a blob's body from the mirror's socket to the client's in the kernel (no copy through Python).

        The mirror's connection stops being read by aiohttp; what it had read already is sent
        first, the rest spliced; that connection is then closed (its parser never saw the body).
        """
        assert answer.connection is not None and answer.connection.transport is not None
        assert request.transport is not None and answer.content_length is not None
        backend = answer.connection.transport
        # in this order, with no await between: draining aiohttp's buffer may resume reading
        # the socket (its flow control), which must stay paused for every byte left
        head = answer.content.read_nowait(-1)
        backend.pause_reading()
        try:
            if head:
                await response.write(head)
            remaining = answer.content_length - len(head)
            await _flushed(request.transport)
            source = backend.get_extra_info("socket").fileno()
            sink = request.transport.get_extra_info("socket").fileno()
            await _splice(source, sink, remaining)
            await response.write_eof()
        except (OSError, asyncio.TimeoutError, EOFError) as exc:
            log.warning("endpoint: %s %s: mirror %s broke off: %s", request.method, request.path,
                        decision.mirror, exc)
            _cut(request)
        finally:
            answer.close()  # its parser is out of step with the socket: never reused
        return response


async def _flushed(transport: Any) -> None:
    """Wait until everything written to `transport` has left its buffer (the head before the body)."""
    deadline = time.monotonic() + READ_TIMEOUT
    while transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    if transport.get_write_buffer_size():
        raise asyncio.TimeoutError("the client reads nothing")


async def _splice(source: int, sink: int, count: int) -> None:
    """Move `count` bytes from socket `source` to socket `sink` through a pipe, waiting on both."""
    loop = asyncio.get_running_loop()
    # the sockets belong to transports, which asyncio will not share: wait on copies of the fds
    watch_in, watch_out = os.dup(source), os.dup(sink)
    pipe_out, pipe_in = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, SPLICE_PIPE)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    in_pipe = 0
    try:
        while count or in_pipe:
            moved = False
            if count and in_pipe < SPLICE_PIPE:
                with contextlib.suppress(BlockingIOError):
                    got = os.splice(source, pipe_in, min(count, SPLICE_PIPE - in_pipe), flags=flags)
                    if got == 0:
                        raise EOFError(f"the mirror closed with {count} bytes of the body unsent")
                    count -= got
                    in_pipe += got
                    moved = True
            if in_pipe:
                with contextlib.suppress(BlockingIOError):
                    sent = os.splice(pipe_out, sink, in_pipe, flags=flags)
                    in_pipe -= sent
                    moved = moved or sent > 0
            if not moved:
                await _ready(loop, watch_in if count and in_pipe < SPLICE_PIPE else None,
                             watch_out if in_pipe else None)
    finally:
        for fd in (watch_in, watch_out, pipe_out, pipe_in):
            os.close(fd)


async def _ready(loop: asyncio.AbstractEventLoop, readable: Optional[int], writable: Optional[int]) -> None:
    """Wait until `readable` can be read or `writable` written (READ_TIMEOUT at most)."""
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    if readable is not None:
        loop.add_reader(readable, wake)
    if writable is not None:
        loop.add_writer(writable, wake)
    try:
        await asyncio.wait_for(woken, READ_TIMEOUT)
    finally:
        if readable is not None:
            loop.remove_reader(readable)
        if writable is not None:
            loop.remove_writer(writable)


def _cut(request: web.Request) -> None:
    """Abort the client's connection mid-body, so it cannot take a part for the whole."""
    if request.transport is not None:
        request.transport.abort()


def _unavailable(message: str) -> web.Response:
    body = {"errors": [{"code": "UNAVAILABLE", "message": message}]}
    return web.Response(status=503, body=json.dumps(body).encode(), content_type="application/json",
                        headers=API_VERSION)
