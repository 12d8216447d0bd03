"""A network namespace of our own, so every packet of a box test stays inside it.

The test creates the namespace (only its loopback, brought up), runs libvirtd, the VMs'
networks, the upstream registries and every client inside it, and deletes it at the end:
nothing listens on, or sends to, an address of this machine's own network.

`entered()` moves the calling thread into the namespace (setns(2) is per thread): sockets
it opens and processes it starts (vagrant, ssh, skopeo) live in the namespace with no
`ip netns exec` wrapper to forget. Daemons that need more (a private mount namespace too)
are started with `launcher` (`ip netns exec NAME`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from box.run import output, pid_alive, run, stop_pids

log = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
PREFIX = "rctb-"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class NetworkNamespace:
    """One network namespace this run created (name `rctb-<pid>`)."""

    name: str

    @classmethod
    def create(cls, tag: str = "") -> NetworkNamespace:
        """Create the namespace with its loopback up; it has no other link to anything."""
        ns = cls(f"{PREFIX}{tag or os.getpid()}")
        run(["ip", "netns", "add", ns.name], capture=True)
        try:
            run(["ip", "-n", ns.name, "link", "set", "lo", "up"], capture=True)
        except BaseException:
            ns.delete()
            raise
        return ns

    @property
    def launcher(self) -> list[str]:
        """argv prefix that runs a command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    @property
    def path(self) -> str:
        """The namespace's handle under /run/netns."""
        return f"/run/netns/{self.name}"

    def pids(self) -> list[int]:
        """Every process that lives in the namespace right now."""
        text = output(["ip", "netns", "pids", self.name], check=False)
        return [int(p) for p in text.split() if p.isdigit()]

    @contextlib.contextmanager
    def entered(self) -> Iterator[NetworkNamespace]:
        """Run the calling thread (its sockets and the processes it starts) inside the namespace."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield self
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def delete(self) -> None:
        """Stop whatever still runs inside (by pid), then delete the namespace."""
        leftovers = [p for p in self.pids() if p != os.getpid()]
        if leftovers:
            log.warning("namespace %s: stopping leftover processes %s", self.name, leftovers)
            stop_pids(leftovers, 15.0, name=f"namespace {self.name} process")
        run(["ip", "netns", "del", self.name], capture=True, check=False)


def remove_stale() -> list[str]:
    """Delete namespaces that earlier runs left behind (their creating process is gone)."""
    removed = []
    for line in output(["ip", "netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        tag = name[len(PREFIX):]
        if name.startswith(PREFIX) and tag.isdigit() and not pid_alive(int(tag)):
            NetworkNamespace(name).delete()
            removed.append(name)
    return removed
