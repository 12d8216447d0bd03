"""Blob bodies: the upstream's body into a spool file once, checked; the growing spool to every reader."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from typing import Optional

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from registry_cache.front.client import UpstreamClient
from registry_cache.front.protocol import BlobRef, describe, forward_response_headers
from registry_cache.front.transfer import BlobTransfer, TransferBoard, TransferFailed, UpstreamAnswer

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes per read/write: memory stays a few chunks per request


async def fill(
    client: UpstreamClient,
    board: TransferBoard,
    transfer: BlobTransfer,
    blob: BlobRef,
    raw_path: str,
    headers: CIMultiDict,
) -> None:
    """Fetch the blob once into its spool, checking size and digest while it streams."""
    counters = client.counters
    started = time.monotonic()
    fd: Optional[int] = None
    upstream: Optional[aiohttp.ClientResponse] = None
    try:
        # inside the try: a spool that cannot be opened (disk, permissions, no file handle
        # left) fails the transfer, so its requesters get an error instead of waiting forever
        fd = os.open(transfer.spool_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        upstream = await client.send("GET", raw_path, headers)
        if upstream.status != 200:
            body = await client.read_small(upstream)
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
            counters.upstream_bytes += len(chunk)
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
        counters.blob_failures += 1
        log.warning("front: blob %s: transfer failed, readers cut: %s", blob.digest, describe(exc))
        transfer.fail(describe(exc))
    finally:
        if fd is not None:
            os.close(fd)
        if upstream is not None:
            upstream.release()
        if transfer.done:
            asyncio.get_running_loop().call_later(board.keep_seconds, board.forget, transfer)
        else:
            board.forget(transfer)


async def serve(request: web.Request, transfer: BlobTransfer) -> web.StreamResponse:
    """Stream a transfer's spool to one requester as it grows; cut it if the transfer breaks."""
    if transfer.answer is not None:
        answer = transfer.answer
        return web.Response(
            status=answer.status, reason=answer.reason, headers=answer.headers, body=answer.body
        )
    if transfer.failed:
        # broke before a byte came: an error answer, not a cut connection
        return bad_gateway(TransferFailed(transfer.error or "transfer failed"))
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
                cut(request)
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


def cut(request: web.Request) -> None:
    """Abort the requester's connection mid-body, so it cannot mistake a part for the whole."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def bad_gateway(exc: BaseException) -> web.Response:
    """A 502 answer in the registry's error format, naming what went wrong upstream."""
    body = {"errors": [{"code": "UNAVAILABLE", "message": f"upstream: {describe(exc)}"}]}
    return web.json_response(body, status=502)
