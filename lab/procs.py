"""Lab services: free loopback ports, and waits until a service answers (or its port closes).

Starting and stopping the services themselves is the host runner's job (`box.run.start`,
`Process.stop`, `stop_all`); they are named here too, so a test reads one module for
"start it, wait until it answers".
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request

from box.run import Process, start, stop_all

__all__ = [
    "LOOPBACK",
    "HarnessError",
    "Process",
    "free_port",
    "http_status",
    "start",
    "stop_all",
    "wait_for_http",
    "wait_until_closed",
]

LOOPBACK = "127.0.0.1"


class HarnessError(RuntimeError):
    """A lab service did not start or answer in time; the message carries its log's tail."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that nothing listens on right now on `host` (127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with (401 included), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def wait_for_http(
    url: str,
    *,
    timeout: float = 20.0,
    process: Process | None = None,
    interval: float = 0.1,
) -> int:
    """Wait until `url` answers any HTTP status (fail early if `process` dies); return it."""
    deadline = time.monotonic() + timeout
    while True:
        status = http_status(url, timeout=min(2.0, timeout))
        if status is not None:
            return status
        if process is not None and not process.alive():
            raise HarnessError(
                f"{process.name} exited with status {process.returncode()} before {url} answered; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() >= deadline:
            tail = f"; log {process.log_path}:\n{process.log_tail()}" if process else ""
            raise HarnessError(f"{url} did not answer within {timeout} s{tail}")
        time.sleep(interval)


def wait_until_closed(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until nothing accepts TCP connections on host:port any more."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except OSError:
            return
        time.sleep(0.1)
    raise HarnessError(f"{host}:{port} still accepts connections after {timeout} s")
