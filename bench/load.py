"""Benchmark of a mirror's port under a CI fleet's load, against a plain Distribution on the same storage.

Prints its figures; asserts nothing. Run as root from the repo root (section 4 needs it):

    .venv/bin/python -m bench.load [--before /path/to/old/bootstrap/src] [--reps 3]

Side by side in one run, on 127.0.0.1: a plain read-only Distribution serving a warm cache's
storage, and a `registry-cache serve` of two mirrors per agent tree measured ("after" is this
tree; `--before` adds another, e.g. `git archive <commit> bootstrap/src | tar -x -C /tmp/old`):
a mirror's own port (the kernel handover: an nftables redirect, as root; this tree is run a
second time with REGISTRY_CACHE_HANDOVER=relay for the byte relay it falls back to) and the
first mirror's port (the one endpoint, where the tree has it), each mirror on its own warm
storage so no two registries share one. Every runner starts with the open file limits a
systemd unit without LimitNOFILE= gets (soft 1,024; hard 524,288, or the bench's own hard
limit when lower), set with prlimit as systemd does.

1. Throughput of warm blobs: 32 and 128 concurrent keep-alive clients (one curl with
   --parallel), the targets interleaved round by round; the median of each, and the ratio to
   the plain Distribution of the same rounds (and, under the kernel handover, the mirror's
   registry on its private port: the registry's own cost, apart from the port's). CPU-seconds
   per GiB of the runner (the relay or the endpoint; next to none under the kernel handover)
   and of the registry behind it, from /proc.
2. Threads and memory per connection: the runner's thread count and RSS with 400 idle
   connections open, against none.
3. Thousands of idle connections plus a pull: a blob fetched while 3,000 idle connections are
   open, and again after they have closed (a port that stopped accepting times out).
4. The kernel redirect alone: the plain Distribution in a network namespace of the bench's
   own, reached on its port and through an nftables redirect (iptables-nft, nat OUTPUT
   REDIRECT) from another port, interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from box.run import CommandError, run
from lab import images, netns, procs
from lab.agent import AGENT
from lab.registry import Registry, start_registry

MiB = images.MiB
GiB = 1024 * MiB
UNIT_LIMITS = (1024, 524288)  # systemd's DefaultLimitNOFILE on Debian 12
CLIENT_TIMEOUT = 120.0
_BEFORE = {"own": "relay", "first": "endpoint"}  # what holds each port in a tree whose status says nothing


@dataclass
class Target:
    """One server the clients fetch warm blobs from: a mirror's port or the plain registry."""

    label: str
    port: int
    pid: int  # the process serving the port (the runner, or the plain registry)
    registry_pid: int  # the registry process behind it (the same for the plain one)
    mib_s: dict[int, list[float]] = field(default_factory=dict)  # clients -> per round
    cpu_s: float = 0.0  # the port's process, over every round
    registry_cpu_s: float = 0.0
    bytes: int = 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _start_mirrors(work: Path, label: str, src: Path | None, upstream: Registry,
                   handover: str | None = None) -> tuple[procs.Process, dict[str, int]]:
    """`registry-cache serve` from agent tree `src` (this one when None) with two mirrors of `upstream`:
    `first` (the one endpoint, where the tree has one) and `own` (a port of its own: the kernel
    handover where the tree has one and runs as root, else the relay; `handover` =
    REGISTRY_CACHE_HANDOVER, e.g. "relay")."""
    folder = work / label
    folder.mkdir()
    ports = {"first": procs.free_port(), "own": procs.free_port()}
    # one mirror per registry: the second reaches the same upstream by another name
    upstreams = {"first": upstream.url, "own": upstream.url.replace("127.0.0.1", "localhost")}
    (folder / "config.yml").write_text(
        "listen: 127.0.0.1\nstorage: cache\nmirrors:\n" + "".join(
            f"  {name}: {{upstream: '{upstreams[name]}', port: {port}}}\n" for name, port in ports.items()))
    env = {**os.environ, "REGISTRY_CACHE_ROOT": str(folder / "root")}
    if handover is not None:
        env["REGISTRY_CACHE_HANDOVER"] = handover
    if src is not None:
        env["PYTHONPATH"] = str(src)
    probe = run([sys.executable, "-c", "import registry_cache; print(registry_cache.__file__)"],
                capture=True, env=env).stdout.strip()
    soft, hard = UNIT_LIMITS
    hard = min(hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # no CAP_SYS_RESOURCE: ours at most
    process = procs.start(f"serve {label}", ["prlimit", f"--nofile={soft}:{hard}", *AGENT, "serve",
                                             "--config", str(folder / "config.yml")],
                          folder / "serve.log", env=env)
    for port in ports.values():
        procs.wait_for_http(f"http://127.0.0.1:{port}/v2/", timeout=60, process=process)
    print(f"{label}: registry_cache from {probe}, ports {ports}, open files {soft}:{hard}", flush=True)
    return process, ports


def _registry_behind(runner: int, mirror: str) -> int:
    """The pid of the registry child of `runner` that serves `mirror` (its rendered config's folder)."""
    for pid in _children(runner):
        if f"/{mirror}/".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise LookupError(f"no registry child of {runner} serves mirror {mirror}")


def _handovers(folder: Path, process: procs.Process) -> dict[str, str]:
    """What holds each mirror's port, as `status --json` says (trees before it say nothing: the relay)."""
    try:
        out = run([*AGENT, "--root", str(folder / "root"), "status", "--json", "--no-rate-limit"],
                  capture=True, env={**os.environ, "REGISTRY_CACHE_ROOT": str(folder / "root")}).stdout
    except CommandError:
        return {}
    return {m["name"]: m["handover"] for m in json.loads(out) if m.get("handover")}


def _redirected_to(port: int) -> int:
    """The private port of the registry on duty that the kernel handover of `port` redirects to."""
    table = run(["nft", "list", "table", "inet", f"registry_cache_{port}"], capture=True).stdout
    return int(table.split("redirect to :", 1)[1].split()[0])


def _round(target: Target, urls: list[str], clients: int, work: Path) -> None:
    cpu0, reg0 = _cpu_seconds(target.pid), _cpu_seconds(target.registry_pid)
    began = time.monotonic()
    got = procs.parallel_get(target.port, urls, clients, work, timeout=CLIENT_TIMEOUT)
    took = time.monotonic() - began
    if target.registry_pid != target.pid:
        target.cpu_s += _cpu_seconds(target.pid) - cpu0
    target.registry_cpu_s += _cpu_seconds(target.registry_pid) - reg0
    target.bytes += got
    target.mib_s.setdefault(clients, []).append(got / MiB / took)


def _idle(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        held.append(sock)
    return held


def _per_connection(target: Target, count: int) -> tuple[float, float]:
    """(threads, KiB of RSS) the runner spends per idle connection."""
    threads0, rss0 = _status(target.pid, "Threads:"), _status(target.pid, "VmRSS:")
    held = _idle(target.port, count)
    time.sleep(2)
    threads1, rss1 = _status(target.pid, "Threads:"), _status(target.pid, "VmRSS:")
    for sock in held:
        sock.close()
    time.sleep(2)
    return (threads1 - threads0) / count, (rss1 - rss0) / count


def _kernel_redirect(storage: Path, urls: dict[int, list[str]], reps: int, work: Path) -> None:
    """Section 4: a registry on its port against the same through an nftables redirect."""
    namespace = netns.NetworkNamespace.create("load")
    try:
        with namespace.entered():
            registry = start_registry(work / "redirected", "redirected", storage=storage, readonly=True)
            try:
                pid = registry.process.popen.pid
                port = procs.free_port()
                run(["iptables-nft", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.1",
                     "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(registry.port)], capture=True)
                targets = [Target("its own port", registry.port, pid, pid),
                           Target("an nftables redirect", port, pid, pid)]
                for clients, wanted in urls.items():
                    for rep in range(reps):
                        for target in targets[rep % 2:] + targets[:rep % 2]:
                            _round(target, wanted, clients, work)
            finally:
                registry.stop()
    finally:
        namespace.delete()
    print("\n4. the plain Distribution in a namespace, MiB/s (ratio to its own port)")
    for target in targets:
        cells = [f"{statistics.median(target.mib_s[c]):8.0f} "
                 f"({statistics.median(target.mib_s[c]) / statistics.median(targets[0].mib_s[c]):.2f}x)"
                 for c in urls]
        print(f"  {target.label:<36}{cells[0]:>20}{cells[1]:>20}"
              f"{target.registry_cpu_s / (target.bytes / GiB):>20.3f} CPU-s/GiB")


def _timed_get(port: int, url: str) -> str:
    began = time.monotonic()
    try:
        run(["curl", "--silent", "--show-error", "--fail", "--max-time", "30", "--output", "/dev/null",
             f"http://127.0.0.1:{port}{url}"], capture=True, timeout=60)
    except CommandError as exc:
        return f"FAILED after {time.monotonic() - began:.1f} s ({str(exc).splitlines()[-1]})"
    return f"{time.monotonic() - began:.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="another agent tree's bootstrap/src to measure too")
    parser.add_argument("--reps", type=int, default=3, help="rounds per target and client count")
    parser.add_argument("--blob-mib", type=int, default=16, help="size of each warm blob")
    parser.add_argument("--mib-per-client", type=int, default=64, help="bytes each client fetches per round")
    parser.add_argument("--idle", type=int, default=3000, help="idle connections held during a pull")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the bench holds thousands of sockets
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    upstream = start_registry(work / "upstream")
    started: list[procs.Process] = []
    plain = None
    try:
        image = images.push_oci_image(work / "layouts", upstream.host, repo="bench/load",
                                      layer_sizes=(args.blob_mib * MiB,) * 4)
        layers = [f"/v2/{image.repo}/blobs/{b.digest}" for b in image.layers]
        mirrors: list[Target] = []
        direct: list[Target] = []
        # this tree twice: the kernel handover (as root), and the relay it falls back to
        trees = [("after", None, None), ("after, relay", None, "relay")]
        trees += [("before", args.before.resolve(), None)] if args.before else []
        for label, src, handover in trees:
            process, ports = _start_mirrors(work, label.replace(", ", "-"), src, upstream, handover)
            started.append(process)
            for name, port in ports.items():
                images.pull(image.ref(f"127.0.0.1:{port}"), work / "pulls" / label / name, timeout=300)
            handovers = _handovers(work / label.replace(", ", "-"), process)
            time.sleep(3)  # Distribution stores a proxied blob after serving it
            runner = process.popen.pid
            for name, what in (("own", "own port"), ("first", "first mirror's port")):
                if label == "after, relay" and name == "first":
                    continue  # the same endpoint as measured in "after"
                registry_pid = _registry_behind(runner, name)
                mirrors.append(Target(f"{what}: {handovers.get(name, _BEFORE[name])} ({label})", ports[name],
                                      runner, registry_pid))
                if handovers.get(name) == "kernel":  # what the port costs, apart from the registry behind it
                    direct.append(Target(f"its registry's private port ({label})",
                                         _redirected_to(ports[name]), registry_pid, registry_pid))
        storage = work / "after" / "cache" / "own"
        print("  " + "\n  ".join(f"{t.label}: port {t.port}" for t in mirrors), flush=True)
        plain = start_registry(work / "plain", "plain", storage=storage, readonly=True)
        plain_pid = plain.process.popen.pid
        targets = [Target("plain Distribution", plain.port, plain_pid, plain_pid), *mirrors, *direct]
        print(f"warm blobs: {len(layers)} x {image.layers[0].size / MiB:.1f} MiB; "
              f"{os.cpu_count()} CPUs; {args.reps} interleaved rounds per client count", flush=True)
        per_client = args.mib_per_client // args.blob_mib  # blobs each client fetches per round
        urls = {c: [layers[i % len(layers)] for i in range(c * per_client)] for c in (32, 128)}
        for clients in (32, 128):
            for rep in range(args.reps):
                for target in targets[rep % len(targets):] + targets[:rep % len(targets)]:
                    _round(target, urls[clients], clients, work)
        print("\n1. warm blobs, MiB/s (median of the rounds; ratio to the plain Distribution)")
        print(f"  {'target':<36}{'32 clients':>20}{'128 clients':>20}{'port CPU-s/GiB':>16}"
              f"{'registry CPU-s/GiB':>20}")
        base = {c: statistics.median(targets[0].mib_s[c]) for c in (32, 128)}
        for target in targets:
            cells = []
            for c in (32, 128):
                median = statistics.median(target.mib_s[c])
                cells.append(f"{median:8.0f} ({median / base[c]:.2f}x)")
            gib = target.bytes / GiB
            port_cpu = f"{target.cpu_s / gib:.3f}" if target.pid != target.registry_pid else "-"
            print(f"  {target.label:<36}{cells[0]:>20}{cells[1]:>20}{port_cpu:>16}"
                  f"{target.registry_cpu_s / gib:>20.3f}")
        print("\n2. per idle connection (400 open), in the runner")
        for target in mirrors:
            threads, kib = _per_connection(target, 400)
            print(f"  {target.label:<36}{threads:6.2f} threads {kib:8.1f} KiB")
        print(f"\n3. one blob fetched while {args.idle} idle connections are open, then after they closed")
        for target in mirrors:
            held = _idle(target.port, args.idle)
            time.sleep(2)
            during = _timed_get(target.port, layers[0])
            for sock in held:
                sock.close()
            time.sleep(2)
            after = _timed_get(target.port, layers[0])
            print(f"  {target.label:<36} during: {during}; after: {after}")
        if os.geteuid() == 0:
            _kernel_redirect(storage, urls, args.reps, work)
        else:
            print("\n4. kernel redirect: skipped (it needs root for its network namespace)")
    finally:
        for process in started:
            process.stop(timeout=40)
        if plain is not None:
            plain.stop()
        upstream.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
