"""Benchmark of the agent: cold vs warm pull through a mirror, `apply` with nothing changed, idle memory.

Prints its figures; asserts nothing. Run as root from the repo root:

    .venv/bin/python -m bench.agent [--size-mb 100] [--rate 50mbit]

The upstream registry sits in a network namespace behind a veth pair shaped to a WAN-like
rate (lab/netem.py: netem where the kernel has it, else a token bucket); the
mirror runs on 127.0.0.1 under `registry-cache serve`, exactly as in the integration tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from box.run import run
from lab import images, netem, procs

AGENT = [sys.executable, "-m", "registry_cache"]
MiB = 1024 * 1024


def rss_kib(pid: int) -> int:
    """Resident memory of one process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed(label: str, func) -> float:
    start = time.monotonic()
    func()
    took = time.monotonic() - start
    print(f"{label:<44} {took:8.2f} s", flush=True)
    return took


def bench_apply(workdir: Path) -> None:
    """`apply` on a config that is already applied (the `vagrant provision` path), in both formats."""
    formats = {
        "registry-cache format": (
            "listen: 127.0.0.1\nstorage: apply-cache\nmirrors:\n"
            "  hub: {upstream: 'http://127.0.0.1:9', port: 5000}\n"
            "  ghcr: {upstream: 'http://127.0.0.1:9', port: 5001}\n"
        ),
        # a plain Distribution config, as the project's first version took it
        "seed format": (
            "version: 0.1\nstorage: {filesystem: {rootdirectory: apply-seed-cache/default}}\n"
            "http: {addr: '127.0.0.1:5000'}\nproxy: {remoteurl: 'http://127.0.0.1:9'}\n"
        ),
    }
    for index, (label, text) in enumerate(formats.items()):
        config = workdir / f"apply-{index}.yml"
        config.write_text(text)
        argv = [*AGENT, "--root", str(workdir / f"apply-root-{index}"), "apply", "--config", str(config)]
        run(argv, capture=True)
        runs = []
        for _ in range(7):
            start = time.monotonic()
            said = run(argv, capture=True).stdout
            runs.append(time.monotonic() - start)
        # the no-op fast path prints the plan and nothing else: no render, no upstream probe
        fast = all(line.startswith("keep ") for line in said.splitlines())
        print(f"{'apply, nothing changed, ' + label:<44} {statistics.median(runs) * 1000:8.0f} ms "
              f"(median of 7; target < 300 ms; min {min(runs) * 1000:.0f}, max {max(runs) * 1000:.0f}; "
              f"fast path: {'yes' if fast else 'NO'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100, help="image size (4 equal layers)")
    parser.add_argument("--rate", default="50mbit", help="upstream link rate (tc syntax)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the upstream lives in a network namespace")

    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = Path(tmp)
        bench_apply(workdir)
        layer = args.size_mb * MiB // 4
        with netem.create_link(rate=args.rate, delay_ms=40) as link:
            print(f"upstream link: {link.rate} via {link.qdisc}, added RTT {link.delay_ms} ms")
            upstream = netem.start_throttled_registry(workdir / "upstream", link)
            try:
                image = None

                def push() -> None:
                    nonlocal image
                    image = images.push_oci_image(
                        workdir / "layouts", upstream.host, repo="bench/big", layer_sizes=(layer,) * 4
                    )

                timed(f"push {args.size_mb} MiB image to the upstream", push)
                port = procs.free_port()
                config = workdir / "config.yml"
                config.write_text(
                    f"listen: 127.0.0.1\nstorage: cache\nmirrors:\n"
                    f"  hub: {{upstream: '{upstream.url}', port: {port}, debug_port: {procs.free_port()}}}\n"
                )
                env = {**os.environ, "REGISTRY_CACHE_ROOT": str(workdir / "root")}
                serve = procs.start("serve", [*AGENT, "serve", "--config", str(config)],
                                    workdir / "serve.log", env=env)
                try:
                    procs.wait_for_http(f"http://127.0.0.1:{port}/v2/", timeout=60, process=serve)
                    ref = image.ref(f"127.0.0.1:{port}")
                    direct = timed("pull straight from the upstream (no cache)",
                                   lambda: images.pull(image.ref(upstream.host), workdir / "direct"))
                    cold = timed("cold pull through the mirror (cache miss)",
                                 lambda: images.pull(ref, workdir / "cold"))
                    warm = timed("warm pull through the mirror (cache hit)",
                                 lambda: images.pull(ref, workdir / "warm"))
                    print(f"{'speed-up of a warm pull over the upstream':<44} {direct / warm:8.1f} x"
                          f"  (cold/direct {cold / direct:.2f})")
                    time.sleep(3)
                    state = json.loads((workdir / "cache" / "hub" / ".registry-cache-state.json").read_text())
                    print(f"counted by the agent: hits {state['hits']}, misses {state['misses']}, "
                          f"served {state['bytes_served'] / MiB:.1f} MiB")
                    registry_pid = state["pid"]
                    time.sleep(5)
                    processes = (("docker-registry", registry_pid), ("registry-cache serve", serve.pid))
                    for label, pid in processes:
                        print(f"{'idle memory: ' + label + ' (RSS)':<44} {rss_kib(pid) / 1024:8.1f} MiB")
                finally:
                    serve.stop(timeout=40)
            finally:
                upstream.stop()


if __name__ == "__main__":
    main()
