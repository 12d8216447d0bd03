"""The front's aiohttp application: blob GETs single-flight, everything else passed through."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

import aiohttp
from aiohttp import web
from yarl import URL

from registry_cache.front import spool
from registry_cache.front.client import READ_TIMEOUT, UpstreamClient
from registry_cache.front.protocol import (
    BlobRef,
    describe,
    forward_request_headers,
    forward_response_headers,
    parse_blob_path,
)
from registry_cache.front.spool import CHUNK, bad_gateway
from registry_cache.front.transfer import (
    KEEP_SECONDS,
    BlobTransfer,
    FrontCounters,
    TransferBoard,
    empty_spool_dir,
)
from registry_cache.record import Credentials

log = logging.getLogger(__name__)


class Front:
    """The front's aiohttp application: blob GETs single-flight, everything else passed through."""

    def __init__(
        self,
        upstream: str,
        spool_dir: str,
        *,
        credentials: Optional[Credentials] = None,
        keep_seconds: float = KEEP_SECONDS,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.upstream = URL(upstream.rstrip("/"))
        self.board = TransferBoard(spool_dir, keep_seconds)
        self.counters = FrontCounters()
        self.client = UpstreamClient(
            self.upstream, self.counters, credentials=credentials, read_timeout=read_timeout
        )
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
        self.client.open()

    async def _on_cleanup(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()
        for transfer in self.board.all():
            self.board.forget(transfer)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> dict[str, Any]:
        """The counters plus the transfers in flight, as `status` shows them."""
        return {**self.counters.as_dict(), "blobs_in_flight": self.board.in_flight(), "updated": time.time()}

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
            upstream = await self.client.send(request.method, request.raw_path, headers, data)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("front: %s %s: upstream unreachable: %s", request.method, request.path, describe(exc))
            return bad_gateway(exc)
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
                    "front: %s %s: upstream broke off: %s", request.method, request.path, describe(exc)
                )
                spool.cut(request)
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
                return await spool.serve(request, transfer)
            await transfer.wait_started()
            if transfer.answer is None:
                self.counters.blob_joins += 1
                return await spool.serve(request, transfer)
            # the upstream's 401 or 404 answered the leader's request (its auth): ask for ours
        return await self._pass_through(request)

    def _start_transfer(self, request: web.Request, blob: BlobRef) -> BlobTransfer:
        transfer = self.board.start(blob.digest)
        headers = forward_request_headers(request.headers, blob=True)
        self.counters.blob_transfers += 1
        # its own task: the transfer goes on when the requester that started it goes away
        self._spawn(spool.fill(self.client, self.board, transfer, blob, request.raw_path, headers))
        return transfer
