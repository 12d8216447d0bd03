"""The agent's one way to run programs: short commands, and long-running children."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Optional

log = logging.getLogger(__name__)

SETPRIV = "/usr/bin/setpriv"

STDERR_TAIL_LINES = 20  # the end of stderr says why; a whole log would bury it


class CommandError(RuntimeError):
    """A command failed; the message shows the command, its exit code and its stderr.

    Worded exactly as the host's CommandError (box/run.py), so a failure reads the same on
    either side; the box may not import host code, hence the copy.
    """

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-STDERR_TAIL_LINES:]
        detail = ("\n" + "\n".join(tail)) if tail else ""
        super().__init__(f"command failed (exit {returncode}): {shlex.join(self.argv)}{detail}")


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a short command, capturing its output; raise CommandError when it fails."""
    log.debug("running %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False,
            env={k: v for k, v in os.environ.items() if k not in _PANICS_DISTRIBUTION},
        )
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, 124, f"timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def spawn(argv: Sequence[str], extra_env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """Start a long-running child whose stdout and stderr come back as one stream of lines.

    The agent's own REGISTRY_CACHE_* variables are not passed on: Distribution reads every
    REGISTRY_* variable as configuration (`extra_env` is how to hand it one on purpose).
    """
    log.debug("starting %s", shlex.join(argv))
    env = registry_environment(extra_env)
    return subprocess.Popen(
        [*_dies_with_us(), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


# Distribution 2.8.2's s3 driver panics at start when this is set ("LoadCustomCABundleError:
# unsupported transport"); Go's own SSL_CERT_FILE names a private endpoint's CA instead.
_PANICS_DISTRIBUTION = ("AWS_CA_BUNDLE",)


def registry_environment(extra_env: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Distribution's environment: ours less REGISTRY_CACHE_* and AWS_CA_BUNDLE, plus `extra_env`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("REGISTRY_CACHE_") and k not in _PANICS_DISTRIBUTION}
    env.update(extra_env or {})
    return env


def _dies_with_us() -> list[str]:
    """A prefix that ends the child when the thread that started it dies, SIGKILL included.

    systemd ends a unit's whole control group, but `registry-cache serve` has no systemd
    behind it: without this a killed runner leaves its registries holding their ports.
    setpriv (util-linux, in every Debian) sets the flag and execs the program, same pid. It also
    clears the ambient (and inheritable) capabilities the runner's unit gives it: the registry
    gets no CAP_NET_ADMIN (the kernel handover's) and no CAP_NET_BIND_SERVICE.
    """
    if not os.path.exists(SETPRIV):
        return []
    return [SETPRIV, "--pdeathsig", "TERM", "--ambient-caps", "-all", "--inh-caps", "-all", "--"]


def stop(child: subprocess.Popen, *, grace: float = 10.0) -> Optional[int]:
    """Stop a child: SIGTERM, then SIGKILL after `grace` seconds; return its exit code."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s; killing it", child.pid, grace)
            child.kill()
            child.wait(timeout=grace)
    return child.returncode


def exists(pid: int) -> bool:
    """Whether process `pid` exists (another user's counts too: signalling it is refused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
