"""A blob's one upstream transfer into its spool: checked, resumed when the connection drops, never hung.

Whatever goes wrong ends the transfer and wakes its readers: an upstream silent for
`STALL_TIMEOUT` (the stall clock), a redirect to nowhere, a reset, a short body, a wrong digest,
a disk error. A connection that drops mid-body is carried on with a `Range` request from the
last byte spooled, `MAX_RESUMES` times at most; the digest is checked over the whole body. A
spool with no room for the blob (checked against `Content-Length` first, or ENOSPC while
writing) does not fail the readers: each goes on with its own upstream request, unshared.
With the spool's window (`window`) the fill runs at most `FILL_AHEAD` past its slowest reader
(the upstream waits meanwhile, which is not a stall), and keeps the digest's state at every
release step so a reader gone unshared can still check the whole blob.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import aiohttp
from multidict import CIMultiDict

from registry_cache.disk import NOT_STORED
from registry_cache.front.answers import CHUNK
from registry_cache.front.client import UpstreamClient
from registry_cache.front.protocol import BlobRef, describe, forward_response_headers
from registry_cache.front.spool import NoRoom, SpoolDisk, fits
from registry_cache.front.transfer import BlobTransfer, TransferFailed, UpstreamAnswer
from registry_cache.front.window import READER_PATIENCE, checkpoints, may_fill
from registry_cache.sizes import format_size

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCEL_GRACE = 2.0  # how long a stalled transfer's work may take to wind down before readers are told
MAX_RESUMES = 3  # `Range` requests one transfer may make after its connection dropped
# what a dropped connection raises mid-body (a stall, ServerTimeoutError, is not resumed: it fails)
_DROPPED = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class UpstreamStalled(Exception):
    """No byte came from the upstream for the stall timeout."""


class StallClock:
    """Fails the work it guards when the upstream sends nothing for `limit` seconds."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.last = time.monotonic()

    def tick(self) -> None:
        """The upstream sent something (an answer, a chunk)."""
        self.last = time.monotonic()

    async def guard(self, work: Awaitable[T]) -> T:
        """Run `work`; cancel it and raise UpstreamStalled once the upstream is silent too long."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                wait = max(0.05, self.last + self.limit - time.monotonic())
                done, _ = await asyncio.wait({task}, timeout=wait)
                if done:
                    return task.result()
                if time.monotonic() - self.last >= self.limit:
                    raise UpstreamStalled(f"the upstream sent nothing for {self.limit:.0f} s")
        finally:
            if not task.done():  # stalled, or we were cancelled (the front stops): so is the work
                task.cancel()
                # bounded: work stuck in a disk thread (a frozen disk) must not hold the readers
                await asyncio.wait({task}, timeout=CANCEL_GRACE)


@dataclass
class Filler:
    """What a transfer needs from its front: the upstream, the spool disk, the counters."""

    client: UpstreamClient
    disk: SpoolDisk
    stall_timeout: float
    no_room: Optional[str] = None  # the last time a blob found no room, in words; None once one did

    async def fill(self, transfer: BlobTransfer, blob: BlobRef, raw_path: str, headers: CIMultiDict) -> None:
        """Fetch the blob once into its spool, checking size and digest while it streams."""
        counters = self.client.counters
        started = time.monotonic()
        clock = StallClock(self.stall_timeout)
        try:
            await clock.guard(self._fetch(transfer, blob, raw_path, headers, clock))
            if transfer.done:
                self.no_room = None
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
        except NoRoom as exc:
            self.no_room = f"{exc}: cached images are still served, {NOT_STORED}"
            log.warning("front: blob %s: %s; its readers fetch it unshared", blob.digest, exc)
            transfer.go_unshared(str(exc))
        except Exception as exc:  # every failure ends the transfer: no reader may wait forever
            counters.blob_failures += 1
            log.warning("front: blob %s: transfer failed, readers cut: %s", blob.digest, describe(exc))
            transfer.fail(describe(exc))
        finally:
            if not transfer.done:
                transfer.fail("transfer ended")  # a no-op when already failed or unshared

    async def _fetch(
        self, transfer: BlobTransfer, blob: BlobRef, raw_path: str, headers: CIMultiDict, clock: StallClock
    ) -> None:
        counters = self.client.counters
        fd = await self.disk.create(transfer.spool_path)
        upstream: Optional[aiohttp.ClientResponse] = None
        try:
            upstream = await self.client.send("GET", raw_path, headers, on_answer=clock.tick)
            if upstream.status != 200:
                body = await self.client.read_small(upstream)
                reason, answer_headers = upstream.reason or "", forward_response_headers(upstream.headers)
                transfer.rejected(UpstreamAnswer(upstream.status, reason, answer_headers, body))
                return
            size = upstream.content_length
            if size is not None:
                free = await self.disk.free()
                if free is not None and not fits(free, size, windowed=transfer.windowed):
                    raise NoRoom(
                        f"no room to spool a {format_size(size)} blob ({format_size(free)} free"
                        f" under {self.disk.spool_dir})"
                    )
            response_headers = forward_response_headers(upstream.headers)
            response_headers["Docker-Content-Digest"] = blob.digest
            transfer.started(size, response_headers)
            hasher = hashlib.new(blob.algorithm)
            transfer.checkpoints[0] = hasher.copy()
            resumes = 0
            skip = 0
            while True:
                try:
                    async for chunk in upstream.content.iter_chunked(CHUNK):
                        clock.tick()
                        counters.upstream_bytes += len(chunk)
                        if skip:  # an upstream that ignored `Range` sends what we have again
                            chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                            if not chunk:
                                continue
                        if transfer.windowed:
                            await _wait_for_readers(transfer, clock)
                        await self.disk.write(fd, chunk, transfer.written)
                        _hash(transfer, hasher, chunk)
                        transfer.wrote(len(chunk))
                    if size is None or transfer.written >= size:
                        break
                    dropped: BaseException = TransferFailed(f"got {transfer.written} of {size} bytes")
                except _DROPPED as exc:
                    dropped = exc
                if resumes >= MAX_RESUMES:
                    raise TransferFailed(f"{describe(dropped)}, after {resumes} resumption(s)")
                resumes += 1
                counters.blob_resumes += 1
                log.info(
                    "front: blob %s: the upstream broke off at byte %d (%s); resuming with Range (%d of %d)",
                    blob.digest, transfer.written, describe(dropped), resumes, MAX_RESUMES,
                )
                await self.client.abandon(upstream)
                upstream = None
                upstream, skip = await self.client.get_from(
                    raw_path, headers, transfer.written, on_answer=clock.tick
                )
            if size is not None and transfer.written != size:
                raise TransferFailed(f"got {transfer.written} of {size} bytes")
            if hasher.hexdigest() != blob.hex:
                raise TransferFailed(f"content does not match its digest (got {hasher.hexdigest()})")
            transfer.finish()
        finally:
            if upstream is not None:
                await self.client.abandon(upstream)
            await self.disk.close(fd)


async def _wait_for_readers(transfer: BlobTransfer, clock: StallClock) -> None:
    """Hold the fill while it is `FILL_AHEAD` past its slowest reader, unless that reader has stopped."""
    while True:
        consumed = transfer.consumed()
        idle = time.monotonic() - transfer.slowest_moved_at
        if may_fill(transfer.written, transfer.reader_offsets(), slowest_idle=idle):
            if idle >= READER_PATIENCE and not transfer.ran_ahead and transfer.reader_offsets():
                transfer.ran_ahead = True  # said once per transfer: the spool grows from here
                log.info(
                    "front: blob %s: its slowest reader has not moved for %.0f s at byte %d; the fill"
                    " goes on without waiting for it", transfer.digest, idle, transfer.lowest_needed(),
                )
            return
        # the upstream waits for us meanwhile (TCP): its silence is not a stall
        wait = max(0.01, min(READER_PATIENCE - idle, clock.limit / 2))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(consumed.wait(), timeout=wait)
        clock.tick()


def _hash(transfer: BlobTransfer, hasher: Any, chunk: bytes) -> None:
    """Feed a chunk to the digest, keeping its state at every release step (for a reader gone unshared)."""
    if not transfer.windowed:
        hasher.update(chunk)
        return
    start, done = transfer.written, 0
    for boundary in checkpoints(start, start + len(chunk)):
        hasher.update(chunk[done : boundary - start])
        done = boundary - start
        transfer.checkpoints[boundary] = hasher.copy()
    hasher.update(chunk[done:])
