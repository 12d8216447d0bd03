"""Runs host commands and times the long steps, so every build prints what it does and how long."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Optional

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
