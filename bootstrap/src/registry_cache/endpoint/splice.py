"""Moves a body from one socket to another in the kernel (splice(2) through a pipe), beside asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import threading
import time
from typing import Any, Callable, Optional

PIPE_SIZE = 1024 * 1024  # bytes a splice pipe holds
SENDFILE_STEP = 8 * 1024 * 1024  # bytes one sendfile(2) call may send


async def flushed(transport: Any, timeout: float) -> None:
    """Wait until everything written to `transport` has left its buffer (the head before the body)."""
    deadline = time.monotonic() + timeout
    while transport.get_write_buffer_size() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    if transport.get_write_buffer_size():
        raise asyncio.TimeoutError("the client reads nothing")


async def splice(source: int, sink: int, count: int, timeout: float) -> None:
    """Move `count` bytes from socket `source` to socket `sink`, in a thread of its own.

    The thread waits on the sockets with poll(2) and moves the bytes with splice(2): the event
    loop and the interpreter take no part per chunk (measured: waiting through the event loop
    for every chunk cost a warm pull a fifth of its time).
    """
    await _in_thread(lambda src, dst: move(src, dst, count, timeout), source, sink)


async def send_file(source: int, sink: int, offset: int, count: int, timeout: float) -> int:
    """Send `count` bytes of file `source` from `offset` to socket `sink` by sendfile(2), in a thread.

    Off the event loop, as the front's spool I/O: a slow or frozen cache disk (a synced folder)
    holds this one answer, never the endpoint's other clients. Returns the bytes sent.
    """
    return await _in_thread(lambda src, dst: send(src, dst, offset, count, timeout), source, sink)


async def _in_thread(work: Callable[[int, int], Any], source: int, sink: int) -> Any:
    """Run `work(source, sink)` on copies of both fds in a thread; its result or error comes back here."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def finish(result: Any, error: Optional[BaseException]) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    # the thread's own copies of the fds: a transport that closes its socket meanwhile (a client
    # gone) leaves them valid, so the thread never touches a number reused by another socket
    mine = (os.dup(source), os.dup(sink))

    def run() -> None:
        result: Any = None
        error: Optional[BaseException] = None
        try:
            result = work(*mine)
        except (OSError, EOFError) as exc:
            error = exc
        finally:
            for fd in mine:
                os.close(fd)
        with contextlib.suppress(RuntimeError):  # the loop is gone: the endpoint stopped
            loop.call_soon_threadsafe(finish, result, error)

    threading.Thread(target=run, name="endpoint-splice", daemon=True).start()
    return await done


def send(source: int, sink: int, offset: int, count: int, timeout: float) -> int:
    """Send `count` bytes of file `source` from `offset` to non-blocking socket `sink`, waiting with poll."""
    poller = select.poll()
    poller.register(sink, select.POLLOUT)
    total = 0
    while count:
        try:
            sent = os.sendfile(sink, source, offset, min(count, SENDFILE_STEP))
        except BlockingIOError:
            if not poller.poll(timeout * 1000):
                raise TimeoutError(f"the client took nothing for {timeout:.0f} s") from None
            continue
        if sent == 0:
            raise EOFError(f"the file ended with {count} bytes unsent")
        offset += sent
        count -= sent
        total += sent
    return total


def move(source: int, sink: int, count: int, timeout: float) -> None:
    """Move `count` bytes from non-blocking socket `source` to `sink` through a pipe, waiting with poll."""
    pipe_out, pipe_in = os.pipe()
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe_in, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    poller = select.poll()
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
            if moved:
                continue
            for fd in (source, sink):
                with contextlib.suppress(KeyError):
                    poller.unregister(fd)
            if count and in_pipe < PIPE_SIZE:
                poller.register(source, select.POLLIN)
            if in_pipe:
                poller.register(sink, select.POLLOUT)
            if not poller.poll(timeout * 1000):
                raise TimeoutError(f"nothing moved for {timeout:.0f} s")
    finally:
        os.close(pipe_out)
        os.close(pipe_in)
