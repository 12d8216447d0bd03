"""The endpoint's blob sender (endpoint/splice.py): a file's bytes to a client socket off the event loop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from registry_cache.endpoint import splice

MiB = 1024 * 1024


def _blob(tmp_path: Path, size: int) -> Path:
    path = tmp_path / "data"
    path.write_bytes(os.urandom(size))
    return path


def _drain(sock: socket.socket, into: list[bytes]) -> None:
    while True:
        chunk = sock.recv(MiB)
        if not chunk:
            return
        into.append(chunk)


def test_send_moves_exactly_the_asked_slice_of_the_file(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 5 * MiB + 123)
    client, server = socket.socketpair()
    server.setblocking(False)
    got: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(client, got))
    reader.start()
    with blob.open("rb") as handle:
        sent = splice.send(handle.fileno(), server.fileno(), 1000, 4 * MiB, timeout=10)
    server.close()
    reader.join(10)
    client.close()
    assert sent == 4 * MiB
    expected = blob.read_bytes()[1000:1000 + 4 * MiB]
    assert hashlib.sha256(b"".join(got)).hexdigest() == hashlib.sha256(expected).hexdigest()


def test_send_gives_up_on_a_client_that_takes_nothing(tmp_path: Path) -> None:
    blob = _blob(tmp_path, 16 * MiB)
    client, server = socket.socketpair()
    server.setblocking(False)
    began = time.monotonic()
    with blob.open("rb") as handle, pytest.raises(TimeoutError, match="took nothing"):
        splice.send(handle.fileno(), server.fileno(), 0, 16 * MiB, timeout=0.5)
    assert time.monotonic() - began < 5
    client.close()
    server.close()


def test_send_says_when_the_file_is_shorter_than_promised(tmp_path: Path) -> None:
    blob = _blob(tmp_path, MiB)
    client, server = socket.socketpair()
    server.setblocking(False)
    reader = threading.Thread(target=_drain, args=(client, []))
    reader.start()
    with blob.open("rb") as handle, pytest.raises(EOFError, match="unsent"):
        splice.send(handle.fileno(), server.fileno(), 0, 2 * MiB, timeout=5)
    server.close()
    reader.join(10)
    client.close()


def test_send_file_runs_beside_the_event_loop_which_keeps_answering(tmp_path: Path) -> None:
    """While a slow client holds a blob's send, the loop still runs other work (no blocking call on it)."""
    blob = _blob(tmp_path, 16 * MiB)
    client, server = socket.socketpair()
    server.setblocking(False)

    async def scenario() -> int:
        ticks = 0
        with blob.open("rb") as handle:
            sent = splice.send_file(handle.fileno(), server.fileno(), 0, 16 * MiB, 1.0)
            sending = asyncio.ensure_future(sent)
            while not sending.done():
                ticks += 1
                await asyncio.sleep(0.01)
            with pytest.raises(TimeoutError):
                await sending
        return ticks

    assert asyncio.run(scenario()) >= 20  # the loop ran on for the second the send waited on the client
    client.close()
    server.close()
