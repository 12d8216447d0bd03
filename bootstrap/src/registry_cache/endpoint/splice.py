"""Moves a body from one socket to another in the kernel (splice(2) through a pipe), inside asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from typing import Any, Optional

PIPE_SIZE = 1024 * 1024  # bytes a splice pipe holds


async def flushed(transport: Any, timeout: float) -> None:
    """Wait until everything written to `transport` has left its buffer (the head before the body)."""
    deadline = time.monotonic() + timeout
    while transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    if transport.get_write_buffer_size():
        raise asyncio.TimeoutError("the client reads nothing")


async def splice(source: int, sink: int, count: int, timeout: float) -> None:
    """Move `count` bytes from socket `source` to socket `sink` through a pipe, waiting on both."""
    loop = asyncio.get_running_loop()
    # the sockets belong to transports, which asyncio will not share: wait on copies of the fds
    watch_in, watch_out = os.dup(source), os.dup(sink)
    pipe_out, pipe_in = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    in_pipe = 0
    try:
        while count or in_pipe:
            moved = False
            if count and in_pipe < PIPE_SIZE:
                with contextlib.suppress(BlockingIOError):
                    got = os.splice(source, pipe_in, min(count, PIPE_SIZE - in_pipe), flags=flags)
                    if got == 0:
                        raise EOFError(f"the mirror closed with {count} bytes of the body unsent")
                    count -= got
                    in_pipe += got
                    moved = True
            if in_pipe:
                with contextlib.suppress(BlockingIOError):
                    sent = os.splice(pipe_out, sink, in_pipe, flags=flags)
                    in_pipe -= sent
                    moved = moved or sent > 0
            if not moved:
                await _ready(loop, watch_in if count and in_pipe < PIPE_SIZE else None,
                             watch_out if in_pipe else None, timeout)
    finally:
        for fd in (watch_in, watch_out, pipe_out, pipe_in):
            os.close(fd)


async def _ready(loop: asyncio.AbstractEventLoop, readable: Optional[int], writable: Optional[int],
                 timeout: float) -> None:
    """Wait until `readable` can be read or `writable` written (`timeout` seconds at most)."""
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    if readable is not None:
        loop.add_reader(readable, wake)
    if writable is not None:
        loop.add_writer(writable, wake)
    try:
        await asyncio.wait_for(woken, timeout)
    finally:
        if readable is not None:
            loop.remove_reader(readable)
        if writable is not None:
            loop.remove_writer(writable)
