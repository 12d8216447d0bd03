"""Misbehaving upstreams on 127.0.0.1 for the front's tests: a relay to a real registry that
cuts, resets, stalls, slows, corrupts or redirects blob GETs (or drops a HEAD's length), a CDN
it redirects to, and a generator of one huge blob.

Everything else the relay forwards to the real registry as it is (method, path, `Authorization`,
`Accept`), so Distribution behind the front sees a normal registry apart from the injected fault.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

_BLOB = re.compile(r"^/v2/.+/blobs/(sha256:[a-f0-9]{64})$")
_FORWARDED = ("Authorization", "Accept", "Range")


@dataclass
class Seen:
    """One request as a fake server received it."""

    method: str
    path: str
    authorization: Optional[str]
    range: Optional[str] = None


class _Server:
    """A threading HTTP/1.1 server on 127.0.0.1 whose handler calls `self.answer`."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._record(self)
                owner.answer(self)

            do_HEAD = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _record(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.seen.append(Seen(handler.command, handler.path, handler.headers.get("Authorization"),
                                  handler.headers.get("Range")))

    def gets(self, suffix: str) -> list[Seen]:
        """The GETs whose path ends with `suffix`."""
        with self.lock:
            return [s for s in self.seen if s.method == "GET" and s.path.split("?")[0].endswith(suffix)]

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()  # a stalled answer gives up
        self._server.shutdown()
        self._server.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _send_chunked(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes) -> None:
    handler.send_response(status)
    for key, value in headers.items():
        if key != "Content-Length":
            handler.send_header(key, value)
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    for start in range(0, len(body), 64 * 1024):
        piece = body[start : start + 64 * 1024]
        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    handler.wfile.write(b"0\r\n\r\n")


@dataclass
class Faults:
    """What the relay does to blob GETs; `cut_times` counts down as cuts happen."""

    cut_times: int = 0  # send half the body, then close the connection (a short body)
    reset_times: int = 0  # send half the body, then reset the connection (TCP RST)
    stall_times: int = 0  # send half the body, then nothing until the relay closes
    pause: float = 0.0  # send half the body, wait this long, then send the rest
    corrupt: bool = False  # send the right length of wrong bytes
    redirect_to: Optional[str] = None  # 307 to `<redirect_to>/<digest>?signature=...`
    head_without_length: bool = False  # answer blob HEADs without `Content-Length`
    chunked: bool = False  # send blob bodies chunked, without `Content-Length`
    only: Optional[str] = None  # the one digest to misbehave on (None: every blob)
    cut: list[str] = field(default_factory=list)  # digests cut, reset or stalled so far


class FaultyRelay(_Server):
    """Forwards requests to a real registry; injects `faults` into blob GETs."""

    def __init__(self, target_url: str, faults: Optional[Faults] = None) -> None:
        super().__init__()
        self.target_url = target_url
        self.faults = faults or Faults()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        match = _BLOB.match(handler.path)
        faults = self.faults
        if match and handler.command == "HEAD" and faults.head_without_length:
            status, headers, body = self._forward(handler)
            headers.pop("Content-Length", None)
            _send(handler, status, headers, b"")
            handler.close_connection = True  # no length: the end of the answer is the end of the connection
            return
        hit = match and handler.command == "GET" and faults.only in (None, match[1])
        if hit and faults.redirect_to:
            location = f"{faults.redirect_to}/{match[1]}?signature=s3cr3t"
            _send(handler, 307, {"Location": location, "Content-Length": "0"}, b"")
            return
        status, headers, body = self._forward(handler)
        if not hit or status not in (200, 206):  # a `Range` request's 206 misbehaves as well
            _send(handler, status, headers, body)
            return
        with self.lock:
            fault = next((name for name in ("cut_times", "reset_times", "stall_times")
                          if getattr(faults, name) > 0), None)
            if fault:
                setattr(faults, fault, getattr(faults, fault) - 1)
                faults.cut.append(match[1])
        if fault or faults.pause:
            handler.send_response(status)
            for key, value in headers.items():
                if key != "Content-Length":
                    handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            if fault == "stall_times":
                self.closing.wait()
            elif fault == "reset_times":  # linger 0 and closed at once: RST, no FIN before it
                handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                os.close(handler.connection.detach())
            elif not fault:
                self.closing.wait(faults.pause)
                handler.wfile.write(body[len(body) // 2 :])
                handler.wfile.flush()
                return
            handler.close_connection = True
            return
        if faults.corrupt:
            body = bytes(b ^ 0xFF for b in body)
        if faults.chunked:
            _send_chunked(handler, status, headers, body)
            return
        _send(handler, status, headers, body)

    def _forward(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.target_url + handler.path, method=handler.command)
        for key in _FORWARDED:
            values = handler.headers.get_all(key)
            if values:  # Go sends one `Accept` line per media type
                request.add_header(key, ", ".join(values))
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                status, raw_headers, body = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw_headers, body = exc.code, exc.headers, exc.read()
        keep = (
            "Content-Type",
            "Docker-Content-Digest",
            "WWW-Authenticate",
            "Docker-Distribution-Api-Version",
            "Location",
            "Content-Length",
            "Content-Range",
        )
        headers = {k: v for k in keep for v in raw_headers.get_all(k) or []}
        if handler.command != "HEAD":
            headers["Content-Length"] = str(len(body))
        return status, headers, body


class StorageCdn(_Server):
    """Serves `/<digest>` straight from a registry's filesystem storage, as a CDN would."""

    def __init__(self, storage: Path) -> None:
        super().__init__()
        self.storage = storage

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        digest = handler.path.split("?")[0].lstrip("/")
        hexd = digest.split(":", 1)[-1]
        path = self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
        if not path.exists():
            _send(handler, 404, {"Content-Length": "0"}, b"")
            return
        body = path.read_bytes()
        _send(
            handler, 200, {"Content-Length": str(len(body)), "Content-Type": "application/octet-stream"}, body
        )


def pattern_bytes(size: int, chunk: int = 1024 * 1024) -> tuple[str, int]:
    """The digest of `size` bytes of the generator's repeating pattern, and the size."""
    block = hashlib.sha256(b"front-rss").digest() * (chunk // 32)
    hasher = hashlib.sha256()
    left = size
    while left:
        piece = block[: min(chunk, left)]
        hasher.update(piece)
        left -= len(piece)
    return "sha256:" + hasher.hexdigest(), size


class HugeBlobUpstream(_Server):
    """Answers any blob GET or HEAD with `size` bytes of a pattern, generated as it streams."""

    def __init__(self, size: int, chunk: int = 1024 * 1024) -> None:
        super().__init__()
        self.size = size
        self.chunk = chunk
        self.block = hashlib.sha256(b"front-rss").digest() * (chunk // 32)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        if not _BLOB.match(handler.path):
            _send(handler, 200, {"Content-Length": "2", "Content-Type": "application/json"}, b"{}")
            return
        handler.send_response(200)
        handler.send_header("Content-Length", str(self.size))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if handler.command == "HEAD":
            return
        left = self.size
        while left:
            piece = self.block[: min(self.chunk, left)]
            handler.wfile.write(piece)
            left -= len(piece)
