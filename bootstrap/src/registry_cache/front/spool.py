"""The spool files on the cache's disk, read, written and released (holes punched) off the event loop.

The cache may live on a synced folder (9p, vboxsf) where one write takes a network round trip:
every open, write, read and unlink of a spool runs in the front's own small thread pool, so a
slow disk slows the transfer that waits for it, never the others.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

from registry_cache.front.transfer import delete_spool
from registry_cache.front.window import most_on_disk

T = TypeVar("T")

DISK_THREADS = 8  # spool reads and writes at once (more wait their turn; the loop never does)
# Spool a blob only when, with it and Distribution's own copy in place, this much stays free:
# a blob that does not fit is streamed to its requesters unshared instead of failing them.
SPOOL_RESERVE = 16 * 1024 * 1024
# fallocate(2) modes: give the blocks of a range back, the file keeps its length (reads give zeros)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02


class NoRoom(Exception):
    """The spool's disk has no room for the blob (checked beforehand, or ENOSPC/EDQUOT while writing)."""


def no_room_errno(exc: OSError) -> bool:
    """Whether an OS error says the disk (or the quota) is full."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def fits(free: int, size: int, reserve: int = SPOOL_RESERVE, *, windowed: bool = False) -> bool:
    """Whether a blob of `size` bytes may be spooled with `free` bytes free: spool + stored copy + reserve.

    A spool with its window (see `window`) takes a few MiB beside the stored copy, not the blob.
    """
    need = most_on_disk(size) if windowed else 2 * size
    return free >= need + reserve


class SpoolDisk:
    """The spool folder's file operations, each run in a thread of the front's own pool."""

    def __init__(self, spool_dir: str, threads: int = DISK_THREADS) -> None:
        self.spool_dir = spool_dir
        # whether its file system punches holes: a synced folder (9p, vboxsf) may not, and then
        # every spool is kept whole
        self.releases = True
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="front-disk")

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, func, *args)

    async def create(self, path: str) -> int:
        """Create a new spool file for writing; return its descriptor."""
        return await self._run(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    async def open_read(self, path: str) -> int:
        """Open a spool for reading (FileNotFoundError once it was released)."""
        return await self._run(os.open, path, os.O_RDONLY)

    async def write(self, fd: int, data: bytes, offset: int) -> None:
        """Write `data` at `offset`; NoRoom when the disk is full."""
        try:
            await self._run(_pwrite_all, fd, data, offset)
        except OSError as exc:
            if no_room_errno(exc):
                raise NoRoom(f"no space left on the spool's disk ({self.spool_dir})") from exc
            raise

    async def read(self, fd: int, size: int, offset: int) -> bytes:
        """Up to `size` bytes of a spool from `offset`."""
        return await self._run(os.pread, fd, size, offset)

    async def release(self, path: str, start: int, end: int) -> None:
        """Give the spool's bytes from `start` to `end` back to the disk (a hole; no-op once it is deleted).

        OSError (EOPNOTSUPP) on a file system that cannot punch holes (a synced folder, say).
        """
        await self._run(punch_hole, path, start, end - start)

    async def hash_range(self, fd: int, start: int, end: int, hasher: Any) -> None:
        """Feed the spool's bytes from `start` to `end` to `hasher`."""
        await self._run(_hash_range, fd, start, end, hasher)

    async def close(self, fd: int) -> None:
        """Close a spool descriptor."""
        await self._run(os.close, fd)

    async def delete(self, path: str) -> None:
        """Delete a spool file (readers that have it open keep their copy)."""
        await self._run(delete_spool, path)

    async def free(self) -> Optional[int]:
        """Bytes free to unprivileged users on the spool's disk (None when it cannot be read)."""
        try:
            stats = await self._run(os.statvfs, self.spool_dir)
        except OSError:
            return None
        return stats.f_bavail * stats.f_frsize

    async def exists(self, path: str) -> bool:
        """Whether a file exists (Distribution's committed blob, say)."""
        return await self._run(os.path.exists, path)

    def shutdown(self) -> None:
        """Let the threads end once their last operation is done (a frozen disk holds one forever)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _hash_range(fd: int, offset: int, end: int, hasher: Any, chunk: int = 1024 * 1024) -> None:
    while offset < end:
        data = os.pread(fd, min(chunk, end - offset), offset)
        if not data:
            raise OSError(errno.EIO, f"the spool ends at {offset} of {end} bytes")
        hasher.update(data)
        offset += len(data)


_libc: Optional[ctypes.CDLL] = None


def punch_hole(path: str, offset: int, length: int) -> None:
    """Deallocate `length` bytes of the file at `path` from `offset`, keeping its size (Linux fallocate)."""
    global _libc
    if length <= 0:
        return
    if _libc is None:  # Python's os has posix_fallocate only, which allocates and cannot punch
        _libc = ctypes.CDLL(None, use_errno=True)  # the C library Python itself runs on
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:  # deleted meanwhile: all of it is back already
        return
    try:
        if _libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot release spool bytes: {os.strerror(code)}", path)
    finally:
        os.close(fd)
