"""Puts an upstream registry behind a WAN-like link, for the benchmark (cold vs warm pulls).

How: a network namespace of our own, joined to the host by a veth pair with a /30 from
10.250.0.0/16 that this module adds and deletes (the addresses exist only on the two veth
ends, so traffic never leaves this machine). The upstream registry runs inside the
namespace (`ip netns exec NS docker-registry serve ...`) and listens on the namespace's
address; a mirror on 127.0.0.1 reaches it through the veth pair, whose two ends are shaped:

- `tc qdisc ... netem rate R delay D/2` on each end when the kernel has `sch_netem`
  (rate plus round-trip delay D);
- otherwise `tc qdisc ... tbf rate R` (token bucket): rate only, no added delay. The build
  machines' kernel (6.18, no sch_netem module) is of that kind: measured, `tc qdisc add ...
  netem` answers "Specified qdisc kind is unknown", while tbf works.
  `ThrottledLink.delay_ms` says which delay is really applied.

Why not a Python throttling relay on 127.0.0.1: the kernel shapes every packet at line
rate with no user-space copy, so the figures measure the registry, not the relay; a relay
remains the fallback for machines without root or network namespaces (not needed here: the
build machines and CI run as root with `ip netns` working).

Needs root, `ip` and `tc` (Debian package iproute2). Use as a context manager so the
namespace and veth pair are deleted, also when the benchmark fails.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from box.run import CommandError, output, run
from lab.registry import Registry, start_registry

log = logging.getLogger(__name__)

_SUBNETS = ipaddress.ip_network("10.250.0.0/16")


@dataclass
class ThrottledLink:
    """A namespace reachable from the host over a shaped veth pair."""

    namespace: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    rate: str
    delay_ms: int  # round-trip delay really applied (0 without sch_netem)
    qdisc: str  # "netem" or "tbf"

    @property
    def launcher(self) -> tuple[str, ...]:
        """argv prefix that runs a command inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def close(self) -> None:
        """Delete the namespace; its veth end goes with it and takes the host end along."""
        run(["ip", "netns", "del", self.namespace], capture=True, check=False)
        run(["ip", "link", "del", self.host_if], capture=True, check=False)

    def __enter__(self) -> ThrottledLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pick_subnet() -> ipaddress.IPv4Network:
    """A free /30 of 10.250.0.0/16 that no route of this machine overlaps."""
    routes = output(["ip", "-4", "route", "show", "table", "all"])
    used = []
    for line in routes.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "local", "broadcast", "unreachable"):
            continue
        try:
            used.append(ipaddress.ip_network(first, strict=False))
        except ValueError:
            continue
    start = os.getpid() % 16000
    subnets = list(_SUBNETS.subnets(new_prefix=30))
    for offset in range(len(subnets)):
        candidate = subnets[(start + offset) % len(subnets)]
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise RuntimeError("no free /30 in 10.250.0.0/16 for the benchmark link")


def _shape(dev: str, rate: str, one_way_delay_ms: int, netns: str | None) -> str:
    """Shape one veth end's egress; returns the qdisc used ("netem" or "tbf")."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    netem = [*prefix, "tc", "qdisc", "add", "dev", dev, "root", "netem", "rate", rate]
    if one_way_delay_ms:
        netem += ["delay", f"{one_way_delay_ms}ms"]
    try:
        run(netem, capture=True)
        return "netem"
    except CommandError as exc:
        if "unknown" not in exc.stderr.lower():
            raise
    # burst: at least rate/HZ; 64 KiB suits up to ~1 Gbit/s at HZ=250
    tbf = ["tbf", "rate", rate, "burst", "64kb", "latency", "100ms"]
    run([*prefix, "tc", "qdisc", "add", "dev", dev, "root", *tbf], capture=True)
    return "tbf"


def create_link(rate: str = "50mbit", delay_ms: int = 20, name: str = "") -> ThrottledLink:
    """Make a namespace joined to the host by a veth pair shaped to `rate` (and `delay_ms` RTT)."""
    tag = name or f"rc{os.getpid() % 100000}"
    namespace, host_if, ns_if = f"{tag}-wan", f"{tag}h", f"{tag}n"
    subnet = _pick_subnet()
    host_ip, ns_ip = (str(ip) for ip in subnet.hosts())
    link = ThrottledLink(namespace, host_if, ns_if, host_ip, ns_ip, rate, 0, "")
    try:
        run(["ip", "netns", "add", namespace], capture=True)
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if], capture=True)
        run(["ip", "link", "set", ns_if, "netns", namespace], capture=True)
        run(["ip", "addr", "add", f"{host_ip}/30", "dev", host_if], capture=True)
        run(["ip", "link", "set", host_if, "up"], capture=True)
        in_ns = ["ip", "-n", namespace]
        run([*in_ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if], capture=True)
        run([*in_ns, "link", "set", ns_if, "up"], capture=True)
        run([*in_ns, "link", "set", "lo", "up"], capture=True)
        link.qdisc = _shape(host_if, rate, delay_ms // 2, None)
        _shape(ns_if, rate, delay_ms // 2, namespace)
        link.delay_ms = delay_ms if link.qdisc == "netem" else 0
    except BaseException:
        link.close()
        raise
    log.info("link %s: %s via %s, delay %d ms", namespace, rate, link.qdisc, link.delay_ms)
    return link


def start_throttled_registry(
    workdir: Path, link: ThrottledLink, name: str = "wan-upstream", **kwargs: Any
) -> Registry:
    """Start a registry inside the link's namespace, on its address: reach it at `registry.url`."""
    return start_registry(workdir, name, bind_host=link.ns_addr, launcher=link.launcher, **kwargs)
