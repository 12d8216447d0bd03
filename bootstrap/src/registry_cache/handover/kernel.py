"""The kernel hands a mirror's port over: an nftables redirect to the registry on duty, switched atomically.

The userspace relay (relay.py) moves every byte of every pull through the runner: measured,
0.53-0.72x a plain Distribution at 128 clients. A `redirect` rule costs nothing measurable
(1.03x): new connections for the mirror's public port go straight to the registry on duty's
private port, and conntrack keeps each established connection with the registry it started
on, so a switch (proxy <-> read-only) is one `nft -f -` transaction and no pull is cut or
refused. The retired registry drains its own connections (Distribution's graceful shutdown).

Each public port has one table of its own, `inet registry_cache_<port>`:
- nat `output`: clients on this machine (the one endpoint reaching other mirrors' ports too);
- nat `prerouting`: clients from outside (the VM's private network);
- filter `input`: a registry's private port is reached only from lo or through the redirect
  (`redirect` maps an outside client to the incoming interface's address, so the registry
  listens on every address; this rule keeps that listener private).

Replacing the table in one transaction (declare, delete, declare anew) also replaces a stale
table left by a runner that was killed. The relay stays on the public port behind the rules:
it takes a connection only when the table is gone.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from typing import Optional

log = logging.getLogger(__name__)

NFT_TIMEOUT = 10.0
NFT_ATTEMPTS = 3  # nft killed by a signal (the stop of the whole unit) is run again
TABLE_PREFIX = "registry_cache_"
# REGISTRY_CACHE_HANDOVER=relay keeps every mirror on the userspace relay (tests, or a
# machine whose firewall tooling flushes foreign tables); the default tries the kernel first.
HANDOVER_ENV = "REGISTRY_CACHE_HANDOVER"
KERNEL = "kernel"
RELAY = "relay"


class KernelHandoverError(RuntimeError):
    """nft is missing or refused the table (no CAP_NET_ADMIN, no nat in the kernel)."""


def table_name(public_port: int) -> str:
    """The nftables table (family inet) that holds `public_port`."""
    return f"{TABLE_PREFIX}{public_port}"


def _to_this_host(listen: str) -> str:
    """The nft match for packets to the mirror's listen address (every local one for a wildcard)."""
    if listen in ("", "0.0.0.0"):
        return "meta nfproto ipv4 fib daddr type local"
    if listen == "::":
        return "fib daddr type local"
    address = ipaddress.ip_address(listen)
    return f"{'ip' if address.version == 4 else 'ip6'} daddr {address}"


def plan(public_port: int, listen: str, on_duty: int, private_ports: Iterable[int]) -> str:
    """The nft script that sends new connections for `listen`:`public_port` to port `on_duty`.

    `private_ports` are every live registry's private port (on duty and retiring): only lo and
    redirected connections reach them. The script replaces the port's table in one transaction.
    """
    table = f"inet {table_name(public_port)}"
    to_mirror = f"{_to_this_host(listen)} tcp dport {public_port}"
    guarded = ", ".join(str(p) for p in sorted({on_duty, *private_ports}))
    return "\n".join((
        f"table {table}",  # so the delete below never fails: the first start has no table yet
        f"delete table {table}",
        f"table {table} {{",
        "    chain prerouting {",
        "        type nat hook prerouting priority dstnat; policy accept;",
        f"        {to_mirror} redirect to :{on_duty}",
        "    }",
        "    chain output {",
        "        type nat hook output priority -100; policy accept;",
        f"        {to_mirror} redirect to :{on_duty}",
        "    }",
        "    chain input {",
        "        type filter hook input priority filter; policy accept;",
        f"        tcp dport {{ {guarded} }} iif lo accept",
        f"        tcp dport {{ {guarded} }} ct status dnat accept",
        f"        tcp dport {{ {guarded} }} drop",
        "    }",
        "}",
        "",
    ))


def plan_removal(public_port: int) -> str:
    """The nft script that deletes the port's table (and succeeds when there is none)."""
    table = f"inet {table_name(public_port)}"
    return f"table {table}\ndelete table {table}\n"


def wanted() -> bool:
    """False when the environment keeps mirrors on the relay (REGISTRY_CACHE_HANDOVER=relay)."""
    return os.environ.get(HANDOVER_ENV, KERNEL) != RELAY


def apply(script: str) -> None:
    """Run an nft script as one transaction; KernelHandoverError says why it failed."""
    nft = shutil.which("nft")  # systemd's PATH has /usr/sbin
    if nft is None:
        raise KernelHandoverError("nft is not installed (Debian package nftables)")
    for attempt in range(NFT_ATTEMPTS):
        try:
            done = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True,
                                  timeout=NFT_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KernelHandoverError(f"nft failed: {exc}") from exc
        if done.returncode >= 0:
            break
        # killed by a signal meant for the whole unit (its stop); the script replaces the table whole,
        # so running it again is harmless
        log.warning("nft was killed by signal %d; running it again", -done.returncode)
        time.sleep(0.2 * (attempt + 1))
    if done.returncode != 0:
        raise KernelHandoverError(f"nft refused the ruleset (exit {done.returncode}): "
                                  f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}")


def _local_sockets() -> Iterator[tuple[int, str]]:
    """(local port, state) of each TCP socket in this network namespace (/proc/net/tcp and tcp6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()  # local address "ADDR:PORT" (hex), then the state
                    if len(fields) > 3:
                        yield int(fields[1].rsplit(":", 1)[1], 16), fields[3]
        except FileNotFoundError:
            continue


def established(port: int) -> int:
    """How many TCP connections to local port `port` are established."""
    return sum(1 for local, state in _local_sockets() if local == port and state == "01")


def listening_ports() -> set[int]:
    """The local ports something listens on (a runner's relay keeps its mirror's port listened on)."""
    return {local for local, state in _local_sockets() if state == "0A"}


class KernelHandover:
    """One public port held by the kernel: point it at a registry, forget a retired one, remove it."""

    def __init__(self, listen: str, public_port: int) -> None:
        self.listen = listen
        self.public_port = public_port
        self.on_duty: Optional[int] = None
        self.live: set[int] = set()
        self.held = False

    def claim(self) -> None:
        """Create the port's table before any registry serves, replacing a stale one (KernelHandoverError).

        Until the first `point_to` the port redirects to itself: refused, as before a first start.
        """
        apply(plan(self.public_port, self.listen, self.public_port, ()))
        self.held = True

    def point_to(self, port: int) -> None:
        """Send new connections to registry port `port`; raises KernelHandoverError."""
        self.live.add(port)
        apply(plan(self.public_port, self.listen, port, self.live))
        self.on_duty = port
        self.held = True

    def forget(self, port: int) -> None:
        """A registry has stopped: its private port leaves the guarded set."""
        self.live.discard(port)  # a registry that died on duty too: its successor's port replaces it
        if self.on_duty is not None and port != self.on_duty:
            try:
                apply(plan(self.public_port, self.listen, self.on_duty, self.live))
            except KernelHandoverError as exc:
                log.warning("port %d: %s", self.public_port, exc)

    def close(self) -> None:
        """Delete the port's table: new connections reach the relay (or nothing) from now on."""
        if not self.held:
            return
        self.held = False
        self.on_duty = None
        self.live.clear()
        try:
            apply(plan_removal(self.public_port))
        except KernelHandoverError as exc:
            log.warning("port %d: cannot delete table %s: %s", self.public_port,
                        table_name(self.public_port), exc)
