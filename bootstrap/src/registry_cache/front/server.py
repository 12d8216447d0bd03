"""The front's aiohttp application: blob GETs single-flight, everything else passed through."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Optional

from aiohttp import web
from yarl import URL

from registry_cache import cachelayout
from registry_cache.front.answers import pass_through
from registry_cache.front.client import STALL_TIMEOUT, UpstreamClient
from registry_cache.front.fill import Filler
from registry_cache.front.protocol import BlobRef, forward_request_headers, parse_blob_path
from registry_cache.front.readers import Readers
from registry_cache.front.spool import SpoolDisk
from registry_cache.front.transfer import (
    KEEP_SECONDS,
    BlobTransfer,
    FrontCounters,
    TransferBoard,
    empty_spool_dir,
)
from registry_cache.record import Credentials

log = logging.getLogger(__name__)

COMMIT_POLL = 0.2  # how often a finished spool looks for its blob in Distribution's storage
COMMIT_SETTLE = 0.5  # kept this long after the blob is committed, for GETs already on their way


class Front:
    """The front's aiohttp application: blob GETs single-flight, everything else passed through."""

    def __init__(
        self,
        upstream: str,
        spool_dir: str,
        *,
        credentials: Optional[Credentials] = None,
        storage: Optional[str] = None,
        keep_seconds: float = KEEP_SECONDS,
        stall_timeout: float = STALL_TIMEOUT,
        spool_window: bool = True,
    ) -> None:
        """A front for `upstream`; with `storage` (the mirror's cache) a spool goes once it is stored.

        With `storage` and `spool_window` a spool keeps only the part of its blob its readers
        still need (see `window`); a reader that comes later is served from the stored blob.
        """
        self.upstream = URL(upstream.rstrip("/"))
        self.storage = storage
        self.windowed = spool_window and storage is not None
        self.board = TransferBoard(spool_dir, keep_seconds)
        self.counters = FrontCounters()
        self.client = UpstreamClient(
            self.upstream, self.counters, credentials=credentials, stall_timeout=stall_timeout
        )
        self.disk = SpoolDisk(spool_dir)
        self.filler = Filler(self.client, self.disk, stall_timeout)
        self.readers = Readers(self.client, self.disk, storage, keep_seconds)
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
        self.disk.shutdown()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def stats(self) -> dict[str, Any]:
        """The counters, the transfers in flight and the spool's disk problem, as `status` shows them."""
        return {
            **self.counters.as_dict(),
            "blobs_in_flight": self.board.in_flight(),
            "disk_problem": self.filler.no_room,
            "updated": time.time(),
        }

    # ------------------------------------------------------------ requests from Distribution

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request from Distribution."""
        blob = parse_blob_path(request.path)
        if blob is not None and request.method == "GET" and "Range" not in request.headers:
            return await self._blob_get(request, blob)
        return await pass_through(self.client, request)

    async def _blob_get(self, request: web.Request, blob: BlobRef) -> web.StreamResponse:
        """Serve a blob GET from the one transfer of its digest, starting it if none runs."""
        for _attempt in range(2):
            transfer = self.board.join(blob.digest)
            if transfer is None:
                transfer = self._start_transfer(request, blob)
                await transfer.wait_started()
                return await self._serve(request, transfer, blob)
            await transfer.wait_started()
            if transfer.answer is None:
                if blob.name not in transfer.authorized and not await self._authorized(request, blob):
                    # the upstream has not let this repository read the blob: its own answer
                    return await pass_through(self.client, request)
                transfer.authorized.add(blob.name)
                self.counters.blob_joins += 1
                return await self._serve(request, transfer, blob)
            # the upstream's 401 or 404 answered the leader's request (its auth): ask for ours
        return await pass_through(self.client, request)

    async def _serve(self, request: web.Request, transfer: BlobTransfer, blob: BlobRef) -> web.StreamResponse:
        """Serve a blob GET from `transfer`; a late one whose blob was never stored, from a new transfer."""
        response = await self.readers.serve(request, transfer, blob)
        if response is not None:
            return response
        # the spool's start is gone and Distribution did not store the blob (a full disk, say):
        # fetch it again, once for every requester that comes now
        self.board.drop(transfer)
        fresh = self.board.join(blob.digest)
        if fresh is None:
            # kept whole: the late one may be Distribution's own store, which every other waits for
            fresh = self._start_transfer(request, blob, windowed=False)
        elif blob.name not in fresh.authorized:
            return await pass_through(self.client, request)
        await fresh.wait_started()
        response = await self.readers.serve(request, fresh, blob)
        return response if response is not None else await pass_through(self.client, request)

    async def _authorized(self, request: web.Request, blob: BlobRef) -> bool:
        """Whether the upstream answers 200 to a HEAD of the blob with this request's repository and auth."""
        headers = forward_request_headers(request.headers, blob=True)
        try:
            answer = await self.client.send("HEAD", request.raw_path, headers)
        except Exception:  # unreachable now: the GET passed through says so in its own words
            return False
        answer.release()
        return answer.status == 200

    def _start_transfer(self, request: web.Request, blob: BlobRef, windowed: bool = True) -> BlobTransfer:
        windowed = windowed and self.windowed and self.disk.releases
        transfer = self.board.start(blob.digest, blob.name, windowed=windowed)
        headers = forward_request_headers(request.headers, blob=True)
        self.counters.blob_transfers += 1
        # its own task: the transfer goes on when the requester that started it goes away
        self._spawn(self._transfer(transfer, blob, request.raw_path, headers))
        return transfer

    async def _transfer(self, transfer: BlobTransfer, blob: BlobRef, raw_path: str, headers: Any) -> None:
        """Fill the spool once, keep it until Distribution has stored the blob, then delete it."""
        try:
            await self.filler.fill(transfer, blob, raw_path, headers)
            if transfer.done:
                await self._wait_until_stored(transfer)
        finally:
            self.board.drop(transfer)
            await self.disk.delete(transfer.spool_path)

    async def _wait_until_stored(self, transfer: BlobTransfer) -> None:
        """Wait until Distribution committed the blob (no later GET can need the spool), or `keep_seconds`.

        Committed means the blob's data and its link into the requesting repository: until the
        link is written Distribution still sends that repository's GETs upstream (here), and a
        spool released on the data file alone made them start a second transfer. The short
        settle after it covers GETs Distribution routed here just before it wrote the link.
        """
        deadline = time.monotonic() + self.board.keep_seconds
        data = cachelayout.blob_path(self.storage, transfer.digest) if self.storage else None
        link = (os.path.join(cachelayout.layer_dir(self.storage, transfer.repo, transfer.digest), "link")
                if self.storage and transfer.repo else None)
        while time.monotonic() < deadline:
            if data and await self.disk.exists(data) and (link is None or await self.disk.exists(link)):
                await asyncio.sleep(min(COMMIT_SETTLE, max(0.0, deadline - time.monotonic())))
                return
            await asyncio.sleep(COMMIT_POLL if data else max(0.0, deadline - time.monotonic()))
