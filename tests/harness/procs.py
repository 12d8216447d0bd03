"""Starts and stops test processes with their output in a log file, and waits for them to answer."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


# Every child the harness started and has not seen end: `stop_all` is the last-resort cleanup.
_STARTED: dict[int, Process] = {}


class HarnessError(RuntimeError):
    """A test service did not start or answer in time; the message carries its log's tail."""


@dataclass
class Process:
    """A child process started by the harness; its stdout and stderr go to `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.popen.poll() is None

    def returncode(self) -> int | None:
        """The exit status once the child has ended, else None."""
        return self.popen.poll()

    def log_text(self) -> str:
        """Everything the child has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the child wrote, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` s for the child to end by itself; return its exit status."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(
                f"{self.name} (pid {self.pid}) still runs after {timeout} s"
            ) from exc

    def signal(self, signum: int) -> None:
        """Send one signal to the child (by its pid only)."""
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the child: SIGTERM, then SIGKILL after `timeout` s; return its exit status."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0f s: killing", self.name, self.pid, timeout
                )
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=timeout)
        _STARTED.pop(self.pid, None)
        return self.popen.returncode


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Process:
    """Start a child process whose output (stdout and stderr) is appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
        )
    log.debug("started %s pid %d: %s", name, popen.pid, argv)
    process = Process(name=name, argv=list(argv), log_path=log_path, popen=popen)
    _STARTED[popen.pid] = process
    return process


def stop_all(timeout: float = 10.0) -> list[str]:
    """Stop every child the harness started that still runs; return their names."""
    stopped = []
    for process in list(_STARTED.values()):
        if process.alive():
            stopped.append(f"{process.name} (pid {process.pid})")
        process.stop(timeout=timeout)
    return stopped


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
