"""Single-flight bookkeeping: one upstream transfer per blob digest, what readers may read, counters."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from multidict import CIMultiDict

from registry_cache.front.window import lowest_needed

HOLDBACK = 1  # bytes readers wait for until the digest is verified (any > 0 blocks completion)
# A finished spool is released as soon as Distribution has committed the blob; this long at
# most when it never does (its store failed, or a front with no storage to watch).
KEEP_SECONDS = 60.0


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

    def __init__(self, digest: str, spool_path: str, repo: str = "", *, windowed: bool = False) -> None:
        self.digest = digest
        self.spool_path = spool_path
        self.repo = repo  # the repository whose request started it: its link marks the blob stored
        # repositories the upstream let read this blob: the first requester's, then every one
        # whose own HEAD it answered 200 (a request for another repository asks first)
        self.authorized: set[str] = {repo} if repo else set()
        self.unshared: Optional[str] = None  # why the spool cannot hold it: readers fetch their own
        self.size: Optional[int] = None
        self.written = 0
        self.headers: CIMultiDict = CIMultiDict()
        self.done = False
        self.error: Optional[str] = None
        self.answer: Optional[UpstreamAnswer] = None  # set instead of headers for non-200
        self.finished_at: Optional[float] = None
        self.readers = 0  # requesters served from this transfer so far
        self.started_at = time.monotonic()
        # the spool's window (see `window`): only the part its readers still need is kept
        self.windowed = windowed
        self.released = 0  # bytes from the start of the spool given back to the disk (a hole)
        self.checkpoints: dict[int, Any] = {}  # offset -> digest state of the bytes before it
        self._reading: dict[int, int] = {}  # reader -> offset it has sent on
        self._next_reader = 0
        self.slowest_moved_at = time.monotonic()
        self.ran_ahead = False  # the fill once went on without a reader that had stopped
        self.last_left_at = time.monotonic()
        self.last_join_at = time.monotonic()
        self._headers_ready = asyncio.Event()
        self._progress = asyncio.Event()
        self._consumed = asyncio.Event()

    @property
    def failed(self) -> bool:
        """Whether the transfer broke; its readers must be cut."""
        return self.error is not None

    def readable(self) -> int:
        """Bytes of the spool readers may send: all once verified, else all but the held-back end."""
        return self.written if self.done else max(0, self.written - HOLDBACK)

    def enter(self) -> int:
        """A reader starts reading the spool from its start; its id for `advance` and `leave`."""
        self._next_reader += 1
        self._reading[self._next_reader] = 0
        self.readers += 1
        self.last_join_at = time.monotonic()
        return self._next_reader

    def advance(self, reader: int, offset: int) -> None:
        """A reader has sent the spool on up to `offset`."""
        low = self.lowest_needed()
        self._reading[reader] = offset
        self._moved(low)

    def leave(self, reader: int) -> None:
        """A reader is done with the spool (the whole blob sent, or it went away)."""
        low = self.lowest_needed()
        if self._reading.pop(reader, None) is not None:
            self.last_left_at = time.monotonic()
        self._moved(low)

    def _moved(self, low: int) -> None:
        if self.lowest_needed() != low:  # the slowest reader moved on: the fill may go on
            self.slowest_moved_at = time.monotonic()
            self._consumed.set()
            self._consumed = asyncio.Event()

    def reader_offsets(self) -> list[int]:
        """The offset each reader of the spool has sent on, now."""
        return list(self._reading.values())

    def lowest_needed(self) -> int:
        """The lowest spool offset a reader still needs."""
        return lowest_needed(self._reading.values(), self.written)

    def consumed(self) -> asyncio.Event:
        """An event set when the slowest reader moves on (or one leaves); take it before checking."""
        return self._consumed

    def checkpoint_below(self, offset: int) -> tuple[int, Any]:
        """The kept digest state nearest below `offset` (not released): its offset and a copy of it."""
        start = max(k for k in self.checkpoints if k <= offset)
        return start, self.checkpoints[start].copy()

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

    def go_unshared(self, reason: str) -> None:
        """The spool cannot hold the blob (no room): every reader goes on with its own upstream request."""
        self.unshared = reason
        if self.error is None:
            self.error = reason
        self._headers_ready.set()
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

    def start(self, digest: str, repo: str = "", *, windowed: bool = False) -> BlobTransfer:
        """Register a new transfer of `digest` for `repo` with a fresh spool file name."""
        name = f"{digest.replace(':', '-')}.{uuid.uuid4().hex[:12]}.spool"
        transfer = BlobTransfer(digest, os.path.join(self.spool_dir, name), repo, windowed=windowed)
        self._transfers[digest] = transfer
        return transfer

    def drop(self, transfer: BlobTransfer) -> None:
        """Stop offering a transfer to new requesters (its spool is deleted apart: `delete_spool`)."""
        if self._transfers.get(transfer.digest) is transfer:
            del self._transfers[transfer.digest]

    def forget(self, transfer: BlobTransfer) -> None:
        """Drop a failed or expired transfer and delete its spool (open readers keep their copy)."""
        self.drop(transfer)
        delete_spool(transfer.spool_path)

    def in_flight(self) -> int:
        """How many transfers are still running."""
        return sum(1 for t in self._transfers.values() if not t.done and not t.failed)

    def all(self) -> list[BlobTransfer]:
        """Every transfer known right now."""
        return list(self._transfers.values())


def delete_spool(path: str) -> None:
    """Delete a spool file; readers that have it open go on reading their copy."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


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
    blob_resumes: int = 0  # `Range` requests that carried on a transfer after its connection dropped
    blob_unshared: int = 0  # blob requests streamed straight from the upstream: no room to spool them
    blob_late: int = 0  # blob GETs that came once the start of their spool was released (see `window`)
    blob_late_upstream: int = 0  # of those, the ones fetched again from the upstream: never stored in time

    def as_dict(self) -> dict[str, int]:
        """The counters as plain data."""
        return dataclasses.asdict(self)

