"""The one endpoint's HTTP server: routes each request to its mirror and streams the answer back."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from typing import Any, Optional

import aiohttp
from aiohttp import http_exceptions, web

from registry_cache import apphost, paths, routing
from registry_cache.endpoint import splice
from registry_cache.endpoint.blobs import CachedBlobs
from registry_cache.endpoint.protocol import (
    API_VERSION,
    backend_query,
    cut,
    forward_request_headers,
    forward_response_headers,
    read_table,
    redirect,
    unavailable,
)
from registry_cache.handover.ledger import OpenConnections
from registry_cache.net import connect_host, host_port

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024  # bytes read from a mirror per write to the client
CONNECT_TIMEOUT = 10.0  # a mirror on this machine accepts at once, or is down
READ_TIMEOUT = 300.0  # a mirror silent this long mid-answer (its upstream stalled) counts as broken
KEEPALIVE_TIMEOUT = 75.0  # an idle client connection is closed after this long (nginx's default)
SHUTDOWN_TIMEOUT = 2.0  # how long a stop waits for answers still streaming
STOP_WAIT = 10.0
SPLICE_MIN = 256 * 1024  # bodies at least this big go by splice(2) where both sides are plain HTTP
TABLE_CHECK_INTERVAL = 1.0  # how often a request looks whether apply rewrote the routing table
HOME_HOST = "127.0.0.1"  # where the runner's registry on duty listens (its private port)


class _NotHttp(logging.Filter):
    """Bytes that are no HTTP request (skopeo tries TLS first on a plain port) get a line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, http_exceptions.HttpProcessingError):
            record.msg, record.args, record.exc_info, record.levelno, record.levelname = (
                "endpoint: a client sent no HTTP request: %s", (error.message,), None, logging.DEBUG, "DEBUG")
            return log.isEnabledFor(logging.DEBUG)
        return True


# the HTTP server's own log (bad requests, handler errors): the malformed ones only at debug level
_HTTP_LOG = logging.getLogger(f"{__name__}.http")
_HTTP_LOG.addFilter(_NotHttp())


class Endpoint:
    """Listens on the endpoint's port and routes each request to its mirror (see the module doc)."""

    def __init__(self, table: routing.Table, listen: str, port: int, *, mirror_dir: Optional[str] = None,
                 tls: bool = False, cache: Optional[CachedBlobs] = None, redirects: bool = True) -> None:
        """`cache`: where its own mirror's warm blobs are sent from (endpoint/blobs.py), None forwards
        them; `redirects`: other mirrors' blob GETs get a 307 to their own port (protocol.redirect)."""
        self.table = table
        self.cache = cache
        self.redirects = redirects
        self._ports = {r.mirror: r.port for r in table.routes if r.mirror != table.home}
        # `apply` rewrites the table when mirrors come or go, without restarting this mirror
        self._table_path = os.path.join(mirror_dir, paths.ENDPOINT) if mirror_dir else None
        self._table_stamp = self._stamp()
        self._table_checked = time.monotonic()
        self.address = (listen, port)
        self._mirrors_host = connect_host(listen)  # where the other mirrors' own ports are reached
        self._home_port: Optional[int] = None
        self._connections = OpenConnections()
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
        self._hosted: Optional[apphost.HostedApp] = None
        self._sessions: dict[int, aiohttp.ClientSession] = {}
        self._closing: set[asyncio.Future] = set()

    # -- the handover interface (as handover.Relay) --------------------------------------------

    def point_to(self, port: int) -> None:
        """Send its own mirror's requests to that registry on 127.0.0.1:`port`; the first call listens."""
        with self._lock:
            previous, self._home_port = self._home_port, port
        if self._hosted is None:
            self._start()
        elif previous is not None and previous != port:
            self._call_soon(self._retire_session, previous)

    def open_connections(self, port: int) -> int:
        """How many requests to backend `port` are still being answered."""
        return self._connections.count(port)

    def wait_idle(self, port: int, timeout: float) -> bool:
        """Wait until no request to backend `port` is open; False when `timeout` passed first."""
        return self._connections.wait_idle(port, timeout)

    def close(self) -> None:
        """Stop listening; answers still streaming get a moment to finish."""
        if self._hosted is not None:
            self._hosted.stop(self._cleanup, STOP_WAIT)

    # -- serving ------------------------------------------------------------------------------

    def _start(self) -> None:
        async def serve() -> web.AppRunner:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            host, port = self.address
            return await apphost.listen(app, host, port, ssl_context=self._server_ssl,
                                        shutdown_timeout=SHUTDOWN_TIMEOUT, backlog=256, reuse_address=True,
                                        keepalive_timeout=KEEPALIVE_TIMEOUT, logger=_HTTP_LOG)

        # the loop is known before it serves: the handover may call in as soon as it listens
        self._loop = asyncio.new_event_loop()
        self._hosted = apphost.host(serve, name=f"endpoint-{self.address[1]}", loop=self._loop)
        log.info("endpoint: port %d answers for %s", self.address[1], self.table.describe())

    def _call_soon(self, func: Any, *args: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(func, *args)

    async def _cleanup(self) -> None:
        if self._hosted is not None:
            await self._hosted.runner.cleanup()
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
        if decision.mirror == self.table.home and self.cache is not None:
            served = await self.cache.answer(request, decision.path)
            if served is not None:
                return served
        elif decision.mirror != self.table.home and self.redirects and self.table.redirects:
            moved = redirect(request, decision, self._ports.get(decision.mirror), self._scheme)
            if moved is not None:
                return moved
        port = self._backend_port(decision.mirror)
        if port is None:
            return unavailable(f"mirror {decision.mirror} has no port known to the endpoint")
        kept = backend_query(query)
        host = HOME_HOST if decision.mirror == self.table.home else self._mirrors_host
        url = f"{self._scheme}://{host_port(host, port)}{decision.path}" + (f"?{kept}" if kept else "")
        self._connections.opened(port)
        try:
            return await self._forward(request, decision, port, url)
        finally:
            self._connections.done(port)
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
            return unavailable(f"mirror {decision.mirror} does not answer: {type(exc).__name__}")
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
                cut(request)
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
            await splice.flushed(request.transport, READ_TIMEOUT)
            source = backend.get_extra_info("socket").fileno()
            sink = request.transport.get_extra_info("socket").fileno()
            await splice.splice(source, sink, remaining, READ_TIMEOUT)
            await response.write_eof()
        except (OSError, asyncio.TimeoutError, EOFError) as exc:
            log.warning("endpoint: %s %s: mirror %s broke off: %s", request.method, request.path,
                        decision.mirror, exc)
            cut(request)
        finally:
            answer.close()  # its parser is out of step with the socket: never reused
        return response
