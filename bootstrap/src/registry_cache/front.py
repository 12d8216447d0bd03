"""A loopback HTTP front between a mirror's Distribution and its upstream: one upstream transfer per blob.

Distribution 2.8 in proxy mode fetches every missed blob twice (one GET to store it, one to
stream to the client) and N clients pulling one cold image make N+1 upstream transfers. With
its `remoteurl` pointing here, every GET of one blob digest joins a single upstream transfer:
the body is spooled to a file and checked against the digest while it streams, every requester
reads the growing spool at link speed, and the last byte is held back until the digest is
verified. A failed, short or wrong transfer cuts every reader mid-body, so Distribution stores
nothing and the next pull starts afresh. The front also follows the upstream's redirects (Docker
Hub sends blobs to a CDN), answers a blob HEAD with the upstream's HEAD, does HTTP basic auth
for upstreams that want it (Distribution only speaks token auth) and passes everything else
(manifests, tags, `/v2/`, token challenges) through unchanged, streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from registry_cache.fsutil import write_file
from registry_cache.record import Credentials

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes per read/write: memory stays a few chunks per request
HOLDBACK = 1  # bytes readers wait for until the digest is verified (any > 0 blocks completion)
KEEP_SECONDS = 60.0  # a finished spool serves Distribution's late second GET this long
STATS_INTERVAL = 1.0
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0  # an upstream silent this long mid-body counts as failed
MAX_REDIRECTS = 10
ERROR_BODY_LIMIT = 64 * 1024  # a non-200 blob answer is small (JSON error); more is cut

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 9110 7.6.1: meaningful for one connection only, never forwarded
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# an auth scheme: a token at the start or after a comma, followed by a space, a comma or the end
# (never by `=`, which makes it an auth parameter such as `realm="..."`)
_CHALLENGE_SCHEME = re.compile(r"(?:^|,)\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?=\s+[^=,\s]|\s*$|\s*,)")
DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
# Distribution's repository name grammar (reference/regexp.go), then the digest
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_BLOB_PATH = re.compile(
    rf"^/v2/(?P<name>{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)"
    r"/blobs/(?P<digest>(?P<algorithm>sha256|sha384|sha512):(?P<hex>[a-f0-9]+))$"
)


# ---------------------------------------------------------------- pure decisions


@dataclass(frozen=True)
class BlobRef:
    """A blob request: repository name and content digest (`sha256:<hex>`)."""

    name: str
    digest: str
    algorithm: str
    hex: str


def parse_blob_path(path: str) -> Optional[BlobRef]:
    """The blob a `/v2/<name>/blobs/<digest>` path names, or None for any other path."""
    match = _BLOB_PATH.match(path)
    if match is None:
        return None
    if len(match["hex"]) != DIGEST_HEX_LENGTH[match["algorithm"]]:
        return None
    return BlobRef(match["name"], match["digest"], match["algorithm"], match["hex"])


def same_origin(a: URL, b: URL) -> bool:
    """Whether two URLs reach the same server (scheme, host and port)."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def upstream_url(upstream: URL, raw_path_qs: str) -> URL:
    """The upstream URL for a request path (with query) the front received."""
    base = str(upstream).rstrip("/")
    return URL(base + raw_path_qs, encoded=True)


def forward_request_headers(headers: Mapping[str, str], *, blob: bool = False) -> CIMultiDict:
    """The requester's headers as sent upstream: hop-by-hop ones and Host dropped.

    A blob GET asks for the bytes as stored (`Accept-Encoding: identity`): the digest is
    over those, and a re-encoded body would never verify.
    """
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() in HOP_BY_HOP or key.lower() in ("host", "content-length"):
            continue
        out.add(key, value)
    if blob:
        out["Accept-Encoding"] = "identity"
    return out


def forward_response_headers(headers: Mapping[str, str]) -> CIMultiDict:
    """The upstream's answer headers as sent to the requester (length set by the front)."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() in HOP_BY_HOP or key.lower() == "content-length":
            continue
        out.add(key, value)
    return out


def headers_for_hop(headers: CIMultiDict, upstream: URL, target: URL) -> CIMultiDict:
    """The headers to send to `target`: no `Authorization` once a redirect leaves the upstream."""
    if same_origin(upstream, target):
        return headers
    out = CIMultiDict(headers)
    out.popall("Authorization", None)
    return out


def challenge_schemes(values: Iterable[str]) -> set[str]:
    """The auth schemes (lower case) named by `WWW-Authenticate` header values."""
    # several challenges may share one header (`Basic realm="a", Bearer realm="b"`)
    return {m.group(1).lower() for value in values for m in _CHALLENGE_SCHEME.finditer(value)}


def should_answer_basic(
    status: int, challenges: Iterable[str], *, credentials: Optional[Credentials], sent_authorization: bool
) -> bool:
    """Whether the front retries a request with basic auth: a Basic challenge it can answer.

    A requester's own `Authorization` (Distribution's bearer token) is never replaced.
    """
    return (
        status == 401
        and credentials is not None
        and not sent_authorization
        and "basic" in challenge_schemes(challenges)
    )


def redirect_target(current: URL, status: int, location: Optional[str], method: str) -> Optional[URL]:
    """Where a redirect answer sends a GET or HEAD, or None when the front should pass it on."""
    if status not in REDIRECT_STATUSES or not location or method not in ("GET", "HEAD"):
        return None
    return current.join(URL(location, encoded=True))


# ---------------------------------------------------------------- single-flight bookkeeping


class TransferFailed(Exception):
    """An upstream blob transfer broke (error, short body or wrong digest): readers are cut."""


@dataclass
class UpstreamAnswer:
    """A non-200 upstream answer to a blob GET, passed back as it is and not cached."""

    status: int
    reason: str
    headers: CIMultiDict
    body: bytes


class BlobTransfer:
    """One upstream transfer of a blob into a spool file, and what its readers may read."""

    def __init__(self, digest: str, spool_path: str) -> None:
        self.digest = digest
        self.spool_path = spool_path
        self.size: Optional[int] = None
        self.written = 0
        self.headers: CIMultiDict = CIMultiDict()
        self.done = False
        self.error: Optional[str] = None
        self.answer: Optional[UpstreamAnswer] = None  # set instead of headers for non-200
        self.finished_at: Optional[float] = None
        self.readers = 0  # requesters served from this transfer so far
        self._headers_ready = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def failed(self) -> bool:
        """Whether the transfer broke; its readers must be cut."""
        return self.error is not None

    def readable(self) -> int:
        """Bytes of the spool readers may send: all once verified, else all but the held-back end."""
        return self.written if self.done else max(0, self.written - HOLDBACK)

    def started(self, size: Optional[int], headers: CIMultiDict) -> None:
        """The upstream answered 200: readers may start streaming."""
        self.size, self.headers = size, headers
        self._headers_ready.set()

    def rejected(self, answer: UpstreamAnswer) -> None:
        """The upstream answered something else than 200: nothing to stream."""
        self.answer = answer
        self.error = f"upstream answered {answer.status}"
        self._headers_ready.set()
        self._notify()

    def wrote(self, count: int) -> None:
        """`count` more bytes are in the spool."""
        self.written += count
        self._notify()

    def finish(self) -> None:
        """The whole body is in the spool and matched its digest."""
        self.done = True
        self.finished_at = time.monotonic()
        self._notify()

    def fail(self, reason: str) -> None:
        """The transfer broke: wake every reader so it cuts its requester."""
        if self.error is None:
            self.error = reason
        self._headers_ready.set()
        self._notify()

    async def wait_started(self) -> None:
        """Wait until the upstream answered (or the transfer failed)."""
        await self._headers_ready.wait()

    def progress(self) -> asyncio.Event:
        """An event set at the next change (more bytes, done, failed); take it before checking."""
        return self._progress

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()


class TransferBoard:
    """The blob transfers in flight or kept finished, one per digest: who joins, who starts."""

    def __init__(self, spool_dir: str, keep_seconds: float = KEEP_SECONDS) -> None:
        self.spool_dir = spool_dir
        self.keep_seconds = keep_seconds
        self._transfers: dict[str, BlobTransfer] = {}

    def join(self, digest: str) -> Optional[BlobTransfer]:
        """The usable transfer of `digest` (running, or finished and still kept), if any."""
        transfer = self._transfers.get(digest)
        if transfer is None or transfer.failed:
            return None
        if transfer.finished_at is not None and time.monotonic() - transfer.finished_at > self.keep_seconds:
            return None
        return transfer

    def start(self, digest: str) -> BlobTransfer:
        """Register a new transfer of `digest` with a fresh spool file name."""
        name = f"{digest.replace(':', '-')}.{uuid.uuid4().hex[:12]}.spool"
        transfer = BlobTransfer(digest, os.path.join(self.spool_dir, name))
        self._transfers[digest] = transfer
        return transfer

    def forget(self, transfer: BlobTransfer) -> None:
        """Drop a failed or expired transfer and delete its spool (open readers keep their copy)."""
        if self._transfers.get(transfer.digest) is transfer:
            del self._transfers[transfer.digest]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(transfer.spool_path)

    def in_flight(self) -> int:
        """How many transfers are still running."""
        return sum(1 for t in self._transfers.values() if not t.done and not t.failed)

    def all(self) -> list[BlobTransfer]:
        """Every transfer known right now."""
        return list(self._transfers.values())


def empty_spool_dir(spool_dir: str) -> int:
    """Create `spool_dir`, or delete what a crashed run left in it; return how many entries went."""
    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    removed = 0
    for entry in os.scandir(spool_dir):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        removed += 1
    return removed


@dataclass
class FrontCounters:
    """What the front did since it started, for `status`."""

    upstream_bytes: int = 0  # body bytes received from the upstream (and its redirect targets)
    upstream_requests: int = 0  # HTTP requests sent upstream, redirect hops and auth retries included
    blob_transfers: int = 0  # blob bodies fetched from the upstream
    blob_joins: int = 0  # blob GETs served by a transfer in flight or a kept spool (no upstream GET)
    blob_failures: int = 0  # transfers cut for an upstream error, a short body or a wrong digest

    def as_dict(self) -> dict[str, int]:
        """The counters as plain data."""
        return dataclasses.asdict(self)


def _describe(exc: BaseException) -> str:
    """An error for the log, without query strings (CDN redirect URLs carry signatures)."""
    text = re.sub(r"\?\S*", "?…", str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------- the server


class Front:
    """The front's aiohttp application: blob GETs single-flight, everything else passed through."""

    def __init__(
        self,
        upstream: str,
        spool_dir: str,
        *,
        credentials: Optional[Credentials] = None,
        stats_path: Optional[str] = None,
        keep_seconds: float = KEEP_SECONDS,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.upstream = URL(upstream.rstrip("/"))
        self.credentials = credentials
        self.stats_path = stats_path
        # Writes run in executor threads: a sequence number keeps a late, older snapshot from
        # replacing a newer one (the last write on stop must be the one that stays).
        self._stats_lock = threading.Lock()
        self._stats_taken = 0
        self._stats_written = 0
        self.read_timeout = read_timeout
        self.board = TransferBoard(spool_dir, keep_seconds)
        self.counters = FrontCounters()
        self._basic_known = False  # the upstream challenged Basic once: send it up front after that
        self._session: Optional[aiohttp.ClientSession] = None
        self._tasks: set[asyncio.Task] = set()

    def app(self) -> web.Application:
        """The aiohttp application (its startup empties the spool folder)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        removed = empty_spool_dir(self.board.spool_dir)
        if removed:
            log.info("front: removed %d leftover spool file(s) from %s", removed, self.board.spool_dir)
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=self.read_timeout)
        # auto_decompress off: bytes pass as the upstream sent them (the digest is over those);
        # trust_env: HTTPS_PROXY/NO_PROXY apply as they did to Distribution itself
        self._session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), trust_env=True
        )
        if self.stats_path:
            self._spawn(self._write_stats_forever())

    async def _on_cleanup(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        for transfer in self.board.all():
            self.board.forget(transfer)
        self.write_stats()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        """The counters plus the transfers in flight, as `status` shows them."""
        return {**self.counters.as_dict(), "blobs_in_flight": self.board.in_flight(), "updated": time.time()}

    def write_stats(self) -> None:
        """Write the stats file atomically (only the counters decide whether it changes)."""
        self._write_stats_file(*self._stats_snapshot())

    def _stats_snapshot(self) -> tuple[int, str]:
        """The counters as the stats file holds them, numbered (called on the front's loop only)."""
        self._stats_taken += 1
        data = {k: v for k, v in self.stats().items() if k != "updated"}
        return self._stats_taken, json.dumps(data, sort_keys=True) + "\n"

    def _write_stats_file(self, number: int, text: str) -> None:
        if not self.stats_path:
            return
        with self._stats_lock:
            if number <= self._stats_written:
                return  # a newer snapshot is already on disk
            try:
                write_file(self.stats_path, text)
            except OSError as exc:
                log.warning("front: cannot write %s: %s", self.stats_path, exc)
                return
            self._stats_written = number

    async def _write_stats_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # the write fsyncs: off the loop, so a slow disk never stalls a transfer
            await loop.run_in_executor(None, self._write_stats_file, *self._stats_snapshot())
            await asyncio.sleep(STATS_INTERVAL)

    # ------------------------------------------------------------ upstream requests

    async def send_upstream(
        self, method: str, raw_path_qs: str, headers: CIMultiDict, data: Any = None
    ) -> aiohttp.ClientResponse:
        """Send one request upstream, following redirects and answering a Basic challenge.

        Returns the final answer, unread: the caller streams its body and releases it.
        """
        assert self._session is not None
        url = upstream_url(self.upstream, raw_path_qs)
        sent_authorization = "Authorization" in headers
        use_basic = self.credentials is not None and self._basic_known and not sent_authorization
        for _hop in range(MAX_REDIRECTS + 2):
            hop_headers = headers_for_hop(headers, self.upstream, url)
            if use_basic and same_origin(self.upstream, url):
                assert self.credentials is not None
                hop_headers = CIMultiDict(hop_headers)
                hop_headers["Authorization"] = self.credentials.authorization()
            self.counters.upstream_requests += 1
            response = await self._session.request(
                method, url, headers=hop_headers, data=data, allow_redirects=False
            )
            if (
                not use_basic
                and data is None
                and same_origin(self.upstream, url)
                and should_answer_basic(
                    response.status,
                    response.headers.getall("WWW-Authenticate", []),
                    credentials=self.credentials,
                    sent_authorization=sent_authorization,
                )
            ):
                await self._discard(response)
                self._basic_known = use_basic = True
                continue
            target = redirect_target(url, response.status, response.headers.get("Location"), method)
            if target is None:
                return response
            log.debug("front: %s %s redirected to %s", method, url.path, target.host)
            await self._discard(response)
            url = target
        raise aiohttp.TooManyRedirects(response.request_info, response.history)

    async def _discard(self, response: aiohttp.ClientResponse) -> None:
        """Read away a small answer (a redirect, a challenge) so its connection is reused."""
        try:
            body = await response.content.read(ERROR_BODY_LIMIT)
            self.counters.upstream_bytes += len(body)
        finally:
            response.release()

    # ------------------------------------------------------------ requests from Distribution

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request from Distribution."""
        blob = parse_blob_path(request.path)
        if blob is not None and request.method == "GET" and "Range" not in request.headers:
            return await self._blob_get(request, blob)
        return await self._pass_through(request)

    async def _pass_through(self, request: web.Request) -> web.StreamResponse:
        """Forward a request upstream and stream the answer back as it comes."""
        data = request.content if request.body_exists else None
        blob = parse_blob_path(request.path) is not None
        headers = forward_request_headers(request.headers, blob=blob)
        try:
            upstream = await self.send_upstream(request.method, request.raw_path, headers, data)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning(
                "front: %s %s: upstream unreachable: %s", request.method, request.path, _describe(exc)
            )
            return _bad_gateway(exc)
        try:
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=forward_response_headers(upstream.headers),
            )
            length = upstream.headers.get("Content-Length")
            bodiless = request.method == "HEAD" or upstream.status in (204, 304)
            if length is not None and length.isdigit():
                response.content_length = int(length)
            elif bodiless:
                response.content_length = 0  # no chunked terminator where no body may follow
            await response.prepare(request)
            if bodiless:
                return response
            try:
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    self.counters.upstream_bytes += len(chunk)
                    await response.write(chunk)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning(
                    "front: %s %s: upstream broke off: %s", request.method, request.path, _describe(exc)
                )
                _cut(request)
            except ConnectionResetError:  # Distribution often closes before reading a small body
                log.debug("front: %s %s: the requester left", request.method, request.path)
            return response
        finally:
            upstream.release()

    async def _blob_get(self, request: web.Request, blob: BlobRef) -> web.StreamResponse:
        """Serve a blob GET from the one transfer of its digest, starting it if none runs."""
        for _attempt in range(2):
            transfer = self.board.join(blob.digest)
            if transfer is None:
                transfer = self._start_transfer(request, blob)
                await transfer.wait_started()
                return await self._serve_transfer(request, transfer)
            await transfer.wait_started()
            if transfer.answer is None:
                self.counters.blob_joins += 1
                return await self._serve_transfer(request, transfer)
            # the upstream's 401 or 404 answered the leader's request (its auth): ask for ours
        return await self._pass_through(request)

    def _start_transfer(self, request: web.Request, blob: BlobRef) -> BlobTransfer:
        transfer = self.board.start(blob.digest)
        headers = forward_request_headers(request.headers, blob=True)
        self.counters.blob_transfers += 1
        # its own task: the transfer goes on when the requester that started it goes away
        self._spawn(self._fill(transfer, blob, request.raw_path, headers))
        return transfer

    async def _fill(self, transfer: BlobTransfer, blob: BlobRef, raw_path: str, headers: CIMultiDict) -> None:
        """Fetch the blob once into its spool, checking size and digest while it streams."""
        started = time.monotonic()
        fd: Optional[int] = None
        upstream: Optional[aiohttp.ClientResponse] = None
        try:
            # inside the try: a spool that cannot be opened (disk, permissions, no file handle
            # left) fails the transfer, so its requesters get an error instead of waiting forever
            fd = os.open(transfer.spool_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            upstream = await self.send_upstream("GET", raw_path, headers)
            if upstream.status != 200:
                body = await upstream.content.read(ERROR_BODY_LIMIT)
                self.counters.upstream_bytes += len(body)
                transfer.rejected(
                    UpstreamAnswer(
                        upstream.status,
                        upstream.reason or "",
                        forward_response_headers(upstream.headers),
                        body,
                    )
                )
                return
            size = upstream.content_length
            response_headers = forward_response_headers(upstream.headers)
            response_headers["Docker-Content-Digest"] = blob.digest
            transfer.started(size, response_headers)
            hasher = hashlib.new(blob.algorithm)
            async for chunk in upstream.content.iter_chunked(CHUNK):
                _write_all(fd, chunk)
                hasher.update(chunk)
                self.counters.upstream_bytes += len(chunk)
                transfer.wrote(len(chunk))
            if size is not None and transfer.written != size:
                raise TransferFailed(f"got {transfer.written} of {size} bytes")
            if hasher.hexdigest() != blob.hex:
                raise TransferFailed(f"content does not match its digest (got {hasher.hexdigest()})")
            transfer.finish()
            log.info(
                "front: blob %s: %d bytes from upstream in %.1f s, %d reader(s) so far",
                blob.digest,
                transfer.written,
                time.monotonic() - started,
                transfer.readers,
            )
        except asyncio.CancelledError:
            transfer.fail("front stopping")
            raise
        except (TransferFailed, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.counters.blob_failures += 1
            log.warning("front: blob %s: transfer failed, readers cut: %s", blob.digest, _describe(exc))
            transfer.fail(_describe(exc))
        finally:
            if fd is not None:
                os.close(fd)
            if upstream is not None:
                upstream.release()
            if transfer.done:
                asyncio.get_running_loop().call_later(self.board.keep_seconds, self._expire, transfer)
            else:
                self.board.forget(transfer)

    def _expire(self, transfer: BlobTransfer) -> None:
        self.board.forget(transfer)

    async def _serve_transfer(self, request: web.Request, transfer: BlobTransfer) -> web.StreamResponse:
        """Stream a transfer's spool to one requester as it grows; cut it if the transfer breaks."""
        if transfer.answer is not None:
            answer = transfer.answer
            return web.Response(
                status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
            )
        if transfer.failed:
            # broke before a byte came: an error answer, not a cut connection
            return _bad_gateway(TransferFailed(transfer.error or "transfer failed"))
        # open before any await: the spool may be deleted later, this reader keeps its copy
        fd = os.open(transfer.spool_path, os.O_RDONLY)
        transfer.readers += 1
        try:
            response = web.StreamResponse(status=200, headers=transfer.headers)
            if transfer.size is not None:
                response.content_length = transfer.size
            await response.prepare(request)
            offset = 0
            while True:
                progress = transfer.progress()
                if transfer.failed:
                    _cut(request)
                    return response
                limit = transfer.readable()
                if offset < limit:
                    chunk = os.pread(fd, min(CHUNK, limit - offset), offset)
                    offset += len(chunk)
                    try:
                        await response.write(chunk)
                    except ConnectionResetError:
                        log.debug("front: blob %s: a reader left at byte %d", transfer.digest, offset)
                        return response
                    continue
                if transfer.done:
                    return response
                await progress.wait()
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _cut(request: web.Request) -> None:
    """Abort the requester's connection mid-body, so it cannot mistake a part for the whole."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _bad_gateway(exc: BaseException) -> web.Response:
    body = {"errors": [{"code": "UNAVAILABLE", "message": f"upstream: {_describe(exc)}"}]}
    return web.json_response(body, status=502)


# ---------------------------------------------------------------- embedding in the mirror runner


class FrontHandle:
    """A front running on its own event loop in a daemon thread; `stop()` ends it."""

    def __init__(
        self,
        front: Front,
        loop: asyncio.AbstractEventLoop,
        runner: web.AppRunner,
        host: str,
        port: int,
        thread: threading.Thread,
    ) -> None:
        self.front = front
        self.host = host
        self.port = port
        self._loop = loop
        self._runner = runner
        self._thread = thread

    @property
    def url(self) -> str:
        """The front's root URL, for Distribution's `proxy.remoteurl` (`REGISTRY_PROXY_REMOTEURL`)."""
        return f"http://{self.host}:{self.port}"

    def counters(self) -> dict[str, Any]:
        """The front's counters right now (see `FrontCounters`) plus `blobs_in_flight`."""
        if not self._thread.is_alive():
            return self.front.stats()
        # read on the front's own loop: the transfers table changes there
        future = asyncio.run_coroutine_threadsafe(_call(self.front.stats), self._loop)
        return future.result(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, delete the spools and write the stats one last time."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)


async def _call(func: Any) -> Any:
    return func()


def start_front(
    upstream_url: str,
    credentials: Optional[Credentials],
    spool_dir: str,
    stats_path: Optional[str] = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    keep_seconds: float = KEEP_SECONDS,
    read_timeout: float = READ_TIMEOUT,
) -> FrontHandle:
    """Start a front for `upstream_url` in a daemon thread; return once it listens.

    `port` 0 picks a free one (`handle.port`). Raises the startup error (port taken,
    spool folder not writable) in the caller's thread.
    """
    front = Front(
        upstream_url,
        spool_dir,
        credentials=credentials,
        stats_path=stats_path,
        keep_seconds=keep_seconds,
        read_timeout=read_timeout,
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(front.app(), access_log=None, handle_signals=False)
        await runner.setup()
        # a stop must not wait a minute for readers of a long blob: they are cut
        site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        outcome["runner"] = runner
        outcome["port"] = runner.addresses[0][1]

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

    thread = threading.Thread(target=run, name=f"front-{URL(upstream_url).host}", daemon=True)
    thread.start()
    ready.wait()
    if "error" in outcome:
        thread.join()
        raise outcome["error"]
    log.info("front: %s listens on %s:%d, spool %s", front.upstream.host, host, outcome["port"], spool_dir)
    return FrontHandle(front, loop, outcome["runner"], host, outcome["port"], thread)


# ---------------------------------------------------------------- manual runs


PASSWORD_ENV = "REGISTRY_CACHE_UPSTREAM_PASSWORD"


def read_credentials(username: Optional[str], password_file: Optional[str]) -> Optional[Credentials]:
    """Credentials from a username and a password file (or the password in `PASSWORD_ENV`)."""
    if not username:
        return None
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
    else:
        password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise SystemExit(f"a username needs a password: --password-file or ${PASSWORD_ENV}")
    return Credentials(username, password)


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m registry_cache.front`: run a front in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m registry_cache.front", description=main.__doc__)
    parser.add_argument(
        "--upstream", required=True, help="the real upstream, e.g. https://registry-1.docker.io"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--spool", required=True, help="folder for blobs in transfer (emptied at start)")
    parser.add_argument("--stats", help="JSON file the counters are written to every second")
    parser.add_argument("--username", help="for upstreams that want basic auth")
    parser.add_argument("--password-file", help=f"file holding the password (or set ${PASSWORD_ENV})")
    parser.add_argument("--keep", type=float, default=KEEP_SECONDS, help="seconds a finished spool is kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    handle = start_front(
        args.upstream,
        read_credentials(args.username, args.password_file),
        args.spool,
        args.stats,
        host=args.host,
        port=args.port,
        keep_seconds=args.keep,
    )
    print(handle.url, flush=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    handle.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
