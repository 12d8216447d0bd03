"""A blob's requesters: each streams the growing spool, or, when the spool has no room, its own upstream GET.

Every reader holds the last byte back until the whole blob matched its digest, and is cut
mid-body when the transfer breaks, so Distribution never stores a part for the whole. Each
reader says how far it has read, and the part of the spool no reader needs any more is released
(`window`). A requester that comes once the start is released is late: it waits for the blob
Distribution stores from the transfer and is served from that file, or, when that does not come,
fetches its own from the upstream (`blob_late`, `blob_late_upstream`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Optional

from aiohttp import web

from registry_cache.cachelayout import blob_path
from registry_cache.front.answers import CHUNK, bad_gateway, cut, pass_through
from registry_cache.front.client import UpstreamClient
from registry_cache.front.protocol import BlobRef, describe, forward_request_headers
from registry_cache.front.spool import SpoolDisk
from registry_cache.front.transfer import HOLDBACK, KEEP_SECONDS, BlobTransfer, TransferFailed
from registry_cache.front.window import keeps_start, keeps_waiting_for_store, release_point
from registry_cache.sizes import format_size

log = logging.getLogger(__name__)

STORE_POLL = 0.2  # how often a late reader looks for the blob in Distribution's storage


class Readers:
    """Serves blob requests from their transfer's spool, or unshared when it has no room."""

    def __init__(
        self,
        client: UpstreamClient,
        disk: SpoolDisk,
        storage: Optional[str] = None,
        keep_seconds: float = KEEP_SECONDS,
    ) -> None:
        self.client = client
        self.disk = disk
        self.storage = storage  # the mirror's cache: where a late reader finds the stored blob
        self.keep_seconds = keep_seconds

    async def serve(
        self, request: web.Request, transfer: BlobTransfer, blob: BlobRef
    ) -> Optional[web.StreamResponse]:
        """Stream a transfer's spool to one requester as it grows; cut it if the transfer breaks.

        None for a late requester whose blob Distribution never stored: it needs a new transfer.
        """
        if transfer.answer is not None:
            answer = transfer.answer
            return web.Response(
                status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
            )
        if transfer.unshared is not None:
            return await self.unshared(request, blob, None, 0, None, transfer)
        if transfer.failed:
            # broke before a byte came: an error answer, not a cut connection
            return bad_gateway(TransferFailed(transfer.error or "transfer failed"))
        if transfer.released:  # the start of the spool is gone: this reader cannot join it
            return await self.late(request, transfer, blob)
        reader = transfer.enter()  # from here on nothing this reader still needs is released
        try:
            try:
                fd = await self.disk.open_read(transfer.spool_path)
            except FileNotFoundError:  # released meanwhile (stored, or out of room): the upstream serves it
                return await self.unshared(request, blob, None, 0, None, transfer)
            try:
                return await self._stream(request, transfer, blob, reader, fd)
            finally:
                await self.disk.close(fd)
        finally:
            transfer.leave(reader)
            await self._release(transfer)

    async def _stream(
        self, request: web.Request, transfer: BlobTransfer, blob: BlobRef, reader: int, fd: int
    ) -> web.StreamResponse:
        response = await _answer(request, transfer)
        offset = 0
        while True:
            progress = transfer.progress()
            if transfer.unshared is not None:
                return await self.unshared(request, blob, response, offset, fd, transfer)
            if transfer.failed:
                cut(request)
                return response
            limit = transfer.readable()
            if offset < limit:
                chunk = await self.disk.read(fd, min(CHUNK, limit - offset), offset)
                offset += len(chunk)
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    log.debug("front: blob %s: a reader left at byte %d", transfer.digest, offset)
                    return response
                transfer.advance(reader, offset)
                await self._release(transfer)
                continue
            if transfer.done:
                return response
            await progress.wait()

    async def _release(self, transfer: BlobTransfer) -> None:
        """Give back the part of the spool no reader needs any more (see `window`)."""
        if not transfer.windowed:
            return
        start = transfer.released
        now = time.monotonic()
        keep = keeps_start(
            joined=transfer.readers,
            age=now - transfer.started_at,
            since_join=now - transfer.last_join_at,
            written=transfer.written,
            size=transfer.size,
        )
        end = release_point(transfer.reader_offsets(), transfer.written, start, keep_start=keep)
        if end <= start:
            return
        transfer.released = end  # first: a reader arriving from now on is late
        for offset in [k for k in transfer.checkpoints if k < end]:
            del transfer.checkpoints[offset]
        try:
            await self.disk.release(transfer.spool_path, start, end)
        except OSError as exc:
            # the spool's file system cannot punch holes: spools stay whole, as much as their blob
            transfer.windowed = False
            if self.disk.releases:
                self.disk.releases = False
                log.warning("front: spools under %s are kept whole: %s", self.disk.spool_dir, describe(exc))

    async def late(
        self, request: web.Request, transfer: BlobTransfer, blob: BlobRef
    ) -> Optional[web.StreamResponse]:
        """Serve a requester that came once the start of the spool was released.

        It waits for the blob Distribution stores from the transfer and is served from there;
        None when that does not come (Distribution's store failed, or the late one is its own
        store): it is fetched again. Both are counted and logged: the first costs time, the
        second bytes.
        """
        counters = self.client.counters
        counters.blob_late += 1
        waited = time.monotonic()
        stored = await self._stored_blob(transfer)
        waited = time.monotonic() - waited
        if stored is None:
            counters.blob_late_upstream += 1
            log.info(
                "front: blob %s: a reader came after %s of the spool were released; not stored after"
                " %.1f s: the blob is fetched from the upstream again",
                blob.digest, format_size(transfer.released), waited,
            )
            return None
        log.info(
            "front: blob %s: a reader came after %s of the spool were released; served from the"
            " stored blob after %.1f s",
            blob.digest, format_size(transfer.released), waited,
        )
        return await self._send_file(request, transfer, stored)

    async def _stored_blob(self, transfer: BlobTransfer) -> Optional[str]:
        """The blob's file in Distribution's storage once it is there, or None when it will not be."""
        if self.storage is None:
            return None
        path = blob_path(self.storage, transfer.digest)
        while True:
            if await self.disk.exists(path):
                return path
            now = time.monotonic()
            if not keeps_waiting_for_store(
                failed=transfer.failed,
                done=transfer.done,
                reading=len(transfer.reader_offsets()),
                idle=now - transfer.last_left_at,
                since_done=now - (transfer.finished_at or now),
                keep_seconds=self.keep_seconds,
            ):
                return None
            await asyncio.sleep(STORE_POLL)

    async def _send_file(self, request: web.Request, transfer: BlobTransfer, path: str) -> web.StreamResponse:
        try:
            fd = await self.disk.open_read(path)
        except FileNotFoundError:  # gone again (gc): the upstream serves it
            self.client.counters.blob_late_upstream += 1
            return await pass_through(self.client, request)
        try:
            response = await _answer(request, transfer)
            offset = 0
            while True:
                chunk = await self.disk.read(fd, CHUNK, offset)
                if not chunk:
                    return response
                offset += len(chunk)
                try:
                    await response.write(chunk)
                except ConnectionResetError:
                    log.debug("front: blob %s: a late reader left at byte %d", transfer.digest, offset)
                    return response
        finally:
            await self.disk.close(fd)

    async def unshared(
        self,
        request: web.Request,
        blob: BlobRef,
        response: Optional[web.StreamResponse],
        offset: int,
        fd: Optional[int],
        transfer: BlobTransfer,
    ) -> web.StreamResponse:
        """Go on with this requester's own upstream GET from `offset`: the spool has no room for the blob.

        Before a byte was sent it is a plain pass-through (the upstream's answer as it is);
        mid-body a `Range` request, and the digest is still checked over the whole blob (the
        part already sent is read back from this reader's copy of the spool).
        """
        self.client.counters.blob_unshared += 1
        if response is None:
            return await pass_through(self.client, request)
        try:
            assert fd is not None
            # the digest over what this reader already sent: from the nearest state kept below it
            start, hasher = transfer.checkpoint_below(offset)
            await self.disk.hash_range(fd, start, offset, hasher)
            headers = forward_request_headers(request.headers, blob=True)
            upstream, skip = await self.client.get_from(request.raw_path, headers, offset)
            try:
                held = b""
                async for chunk in upstream.content.iter_chunked(CHUNK):
                    self.client.counters.upstream_bytes += len(chunk)
                    if skip:
                        chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                    data = held + chunk
                    held = data[-HOLDBACK:]
                    offset += len(data) - len(held)
                    hasher.update(data[: len(data) - len(held)])
                    await response.write(data[: len(data) - len(held)])
                hasher.update(held)
                if hasher.hexdigest() != blob.hex:
                    raise TransferFailed(f"content does not match its digest (got {hasher.hexdigest()})")
                await response.write(held)
            finally:
                await self.client.abandon(upstream)
        except ConnectionResetError:
            log.debug("front: blob %s: a reader left at byte %d", blob.digest, offset)
        except Exception as exc:  # anything: the reader is cut, never left waiting
            log.warning("front: blob %s: unshared stream broke off at byte %d: %s", blob.digest, offset,
                        describe(exc))
            cut(request)
        return response


async def _answer(request: web.Request, transfer: BlobTransfer) -> web.StreamResponse:
    """Start a reader's 200 answer with the upstream's headers (and the blob's length when known)."""
    response = web.StreamResponse(status=200, headers=transfer.headers)
    if transfer.size is not None:
        response.content_length = transfer.size
    await response.prepare(request)
    return response
