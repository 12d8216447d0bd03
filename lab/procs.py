"""Lab services: free loopback ports, the one "does /v2/ answer" probe, waits until a service answers.

Starting and stopping the services themselves is the host runner's job (`box.run.start`,
`Process.stop`, `stop_all`); they are named here too, so a test reads one module for
"start it, wait until it answers".
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from box.run import Process, run, start, stop_all
from box.wait import wait_until

__all__ = [
    "LOOPBACK",
    "HarnessError",
    "Process",
    "closed_by_peer",
    "free_port",
    "http_status",
    "keepalive_connection",
    "start",
    "stop_all",
    "v2_status",
    "wait_for_http",
    "wait_for_v2",
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


def http_status(url: str, timeout: float = 2.0, *, ca: Path | None = None) -> int | None:
    """The HTTP status `url` answers with (401 included), or None when nothing answers.

    With `ca`, an https:// URL is trusted through that CA file only (a missing file: None).
    """
    try:
        context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def v2_status(base_url: str, timeout: float = 2.0, *, ca: Path | None = None) -> int | None:
    """The status a registry or mirror at `base_url` answers `GET /v2/` with; None: not up."""
    return http_status(f"{base_url}/v2/", timeout, ca=ca)


def wait_for_v2(
    base_url: str,
    *,
    timeout: float = 20.0,
    process: Process | None = None,
    ca: Path | None = None,
) -> int:
    """Wait until the registry or mirror at `base_url` answers `GET /v2/` (any status); return it.

    Fails early with the log's tail if `process` (the one serving it) dies first.
    """
    return wait_for_http(f"{base_url}/v2/", timeout=timeout, process=process, ca=ca)


def wait_for_http(
    url: str,
    *,
    timeout: float = 20.0,
    process: Process | None = None,
    interval: float = 0.1,
    ca: Path | None = None,
) -> int:
    """Wait until `url` answers any HTTP status (fail early if `process` dies); return it."""

    def answered() -> int | None:
        status = http_status(url, timeout=min(2.0, timeout), ca=ca)
        if status is None and process is not None and not process.alive():
            raise HarnessError(
                f"{process.name} exited with status {process.returncode()} before {url} answered; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        return status

    return wait_until(answered, f"{url} answering", timeout=timeout, interval=interval,
                      detail=(lambda: f"log {process.log_path}:\n{process.log_tail()}") if process else None,
                      error=HarnessError)


def wait_until_closed(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until nothing accepts TCP connections on host:port any more."""

    def closed() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return False
        except OSError:
            return True

    wait_until(closed, f"{host}:{port} closing", timeout=timeout, error=HarnessError)


def parallel_get(port: int, urls: list[str], clients: int, work: Path, *, timeout: float) -> int:
    """GET every url from 127.0.0.1:`port` over `clients` parallel keep-alive connections; bytes received."""
    config = work / f"curl-{port}-{clients}-{time.monotonic_ns()}.conf"
    config.write_text("".join(f'url = "http://127.0.0.1:{port}{u}"\noutput = "/dev/null"\n' for u in urls))
    result = run(["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-immediate",
                  "--parallel-max", str(clients), "--write-out", "%{size_download}\\n",
                  "--config", str(config)], capture=True, timeout=timeout)
    return sum(int(line) for line in result.stdout.split())


def keepalive_connection(port: int, timeout: float = 60) -> http.client.HTTPConnection:
    """A client connection to 127.0.0.1:`port` that asked for `/v2/` once and now keeps quiet (kept alive)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", "/v2/")
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and not response.will_close
    return conn


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the other end has closed `sock` (checked without waiting)."""
    sock.settimeout(0)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
