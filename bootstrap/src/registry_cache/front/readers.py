"""A blob's requesters: each streams the growing spool, or, when the spool has no room, its own upstream GET.

Every reader holds the last byte back until the whole blob matched its digest, and is cut
mid-body when the transfer breaks, so Distribution never stores a part for the whole.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Optional

from aiohttp import web

from registry_cache.front.answers import CHUNK, bad_gateway, cut, pass_through
from registry_cache.front.client import UpstreamClient
from registry_cache.front.protocol import BlobRef, describe, forward_request_headers
from registry_cache.front.spool import SpoolDisk
from registry_cache.front.transfer import HOLDBACK, BlobTransfer, TransferFailed

log = logging.getLogger(__name__)


class Readers:
    """Serves blob requests from their transfer's spool, or unshared when it has no room."""

    def __init__(self, client: UpstreamClient, disk: SpoolDisk) -> None:
        self.client = client
        self.disk = disk

    async def serve(self, request: web.Request, transfer: BlobTransfer, blob: BlobRef) -> web.StreamResponse:
        """Stream a transfer's spool to one requester as it grows; cut it if the transfer breaks."""
        if transfer.answer is not None:
            answer = transfer.answer
            return web.Response(
                status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
            )
        if transfer.unshared is not None:
            return await self.unshared(request, blob, None, 0, None)
        if transfer.failed:
            # broke before a byte came: an error answer, not a cut connection
            return bad_gateway(TransferFailed(transfer.error or "transfer failed"))
        try:
            fd = await self.disk.open_read(transfer.spool_path)
        except FileNotFoundError:  # released meanwhile (stored, or out of room): the upstream serves it
            return await self.unshared(request, blob, None, 0, None)
        transfer.readers += 1
        try:
            response = web.StreamResponse(status=200, headers=transfer.headers)
            if transfer.size is not None:
                response.content_length = transfer.size
            await response.prepare(request)
            offset = 0
            while True:
                progress = transfer.progress()
                if transfer.unshared is not None:
                    return await self.unshared(request, blob, response, offset, fd)
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
                    continue
                if transfer.done:
                    return response
                await progress.wait()
        finally:
            await self.disk.close(fd)

    async def unshared(
        self,
        request: web.Request,
        blob: BlobRef,
        response: Optional[web.StreamResponse],
        offset: int,
        fd: Optional[int],
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
            hasher = hashlib.new(blob.algorithm)
            assert fd is not None
            await self.disk.hash_prefix(fd, offset, hasher)
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
