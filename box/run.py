"""Runs host programs: one command, a long command with its output streamed, a background process.

Also stops processes by their ids (SIGTERM, a grace period, then SIGKILL) and times the long
steps, so every build prints what it does and how long each step took. The one subprocess
wrapper of the host side: tasks, the build, the test lab and the benchmarks all run programs here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from box.wait import WaitTimeout, wait_until

log = logging.getLogger(__name__)


class CommandError(RuntimeError):
    """A host command failed; the message shows the command, its exit code and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-20:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        super().__init__(f"command failed (exit {returncode}): {shlex.join(self.argv)}{detail}")


def run(
    argv: Sequence[str],
    *,
    capture: bool = False,
    check: bool = True,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    input: Optional[str] = None,
    timeout: Optional[float] = None,
) -> subprocess.CompletedProcess:
    """Run one command (argv list, never a shell string); output streams through unless captured."""
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            input=input,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, 124, f"timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "")
    return proc


def stream(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    timeout: Optional[float] = None,
) -> subprocess.CompletedProcess:
    """Run a long command, echoing each output line as it comes with the seconds since its start.

    stdout and stderr come back together, in order, as `stdout`; nothing raises on a
    non-zero exit (look at `returncode`); after `timeout` seconds the command is killed and
    CommandError(124) raised.
    """
    log.debug("stream: %s", shlex.join(argv))
    start = time.monotonic()
    try:
        child = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1)
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    timer = threading.Timer(timeout, child.kill) if timeout else None
    if timer:
        timer.start()
    lines = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            sys.stderr.write(f"[{time.monotonic() - start:6.1f} s] {line}")
            sys.stderr.flush()
        returncode = child.wait()
    finally:
        if timer:
            timer.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    text = "".join(lines)
    if timeout and returncode < 0 and time.monotonic() - start >= timeout:
        raise CommandError(argv, 124, f"timed out after {timeout} s\n{text}")
    return subprocess.CompletedProcess(list(argv), returncode, text, "")


def output(argv: Sequence[str], **kwargs: object) -> str:
    """Run a command and return its standard output, stripped."""
    return run(argv, capture=True, **kwargs).stdout.strip()  # type: ignore[arg-type]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` still runs; a child of ours that ended is reaped (no zombie left)."""
    with contextlib.suppress(ChildProcessError):  # not our child: ask the kernel below
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _wait_ended(pids: Sequence[int], timeout: float, alive: Callable[[int], bool]) -> list[int]:
    """Wait until every pid has ended or `timeout` s passed; return those still running."""
    with contextlib.suppress(WaitTimeout):
        # most processes end within milliseconds of SIGTERM: poll fast, then back off
        wait_until(lambda: not any(alive(pid) for pid in pids), "processes to end",
                   timeout=timeout, interval=0.005, max_interval=0.2)
    return [pid for pid in pids if alive(pid)]


def stop_pids(
    pids: Sequence[int],
    timeout: float = 10.0,
    *,
    alive: Callable[[int], bool] = pid_alive,
    name: str = "",
) -> list[int]:
    """Stop processes by id: SIGTERM, up to `timeout` s to end, then SIGKILL; return the killed ones.

    By id only, never by name: nothing else on the machine that happens to run the same
    program is touched. `alive` tells whether a pid still runs (default: `pid_alive`).
    """
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    stubborn = _wait_ended(pids, timeout, alive)
    for pid in stubborn:
        log.warning("%s (pid %d) ignored SIGTERM for %g s: killing", name or "process", pid, timeout)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _wait_ended(stubborn, timeout, alive)
    return stubborn


# Every background process `start` began and `stop` has not seen end: `stop_all` is the last-resort cleanup.
_STARTED: dict[int, Process] = {}


@dataclass
class Process:
    """A background process begun by `start`; its stdout and stderr go to `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def returncode(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.popen.poll()

    def log_text(self) -> str:
        """Everything the process has written so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote, for error messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait(self, timeout: float) -> int:
        """Wait up to `timeout` s for the process to end by itself; return its exit status.

        Raises TimeoutError, naming the process, when it still runs then.
        """
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"{self.name} (pid {self.pid}) still runs after {timeout} s") from exc

    def signal(self, signum: int) -> None:
        """Send one signal to the process (by its pid only)."""
        if self.alive():
            os.kill(self.pid, signum)

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process: SIGTERM, then SIGKILL after `timeout` s; return its exit status."""
        if self.alive():
            stop_pids([self.pid], timeout, alive=lambda _pid: self.alive(), name=self.name)
        _STARTED.pop(self.pid, None)
        return self.popen.returncode


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
) -> Process:
    """Start a background process whose output (stdout and stderr) is appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=str(cwd) if cwd else None,
            )
        except FileNotFoundError as exc:
            raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    log.debug("started %s pid %d: %s", name, popen.pid, shlex.join(argv))
    process = Process(name=name, argv=list(argv), log_path=log_path, popen=popen)
    _STARTED[popen.pid] = process
    return process


def stop_all(timeout: float = 10.0) -> list[str]:
    """Stop every background process `start` began that still runs; return their names."""
    stopped = []
    for process in list(_STARTED.values()):
        if process.alive():
            stopped.append(f"{process.name} (pid {process.pid})")
        process.stop(timeout=timeout)
    return stopped


@contextmanager
def step(name: str) -> Iterator[None]:
    """Print the step's name, then how long it took (also when it fails)."""
    print(f"==> {name}", file=sys.stderr, flush=True)
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        took = time.monotonic() - start
        verdict = "done" if ok else "FAILED"
        print(f"<== {name}: {verdict} in {took:.1f} s", file=sys.stderr, flush=True)
