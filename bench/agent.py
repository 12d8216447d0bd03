"""Benchmark of the agent: pulls through a mirror before and after its front, `apply` latency, memory.

Prints its figures; asserts nothing. Run as root from the repo root:

    .venv/bin/python -m bench.agent [--size-mb 64] [--rate 100mbit] [--huge-mb 1024]

The upstream registry sits in a network namespace behind a veth pair shaped to a WAN-like
rate (lab/netem.py: netem where the kernel has it, else a token bucket). Side by side in one
run: "before" is Distribution 2.8.2's proxy pointed straight at the upstream (what a mirror
ran before it had a front), "after" a mirror under `registry-cache serve`, exactly as in the
integration tests. Each case starts from an empty cache: one cold pull then a warm one, and
8 clients pulling the same cold image at once. Upstream bytes are read from the upstream's
own access log. Last, the front's peak memory while two readers stream one huge blob.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from box.run import CommandError, run
from box.sizes import MiB, format_size
from lab import images, netem
from lab.agent import AGENT, Cache, front_memory, rss_kib
from lab.registry import Registry, start_registry


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


def upstream_bytes(upstream: Registry, since: int) -> int:
    """Body bytes the upstream sent since log entry `since`, by its own access log (HEADs send none)."""
    return sum(
        e.get("http.response.written", 0)
        for e in upstream.json_log()[since:]
        if e.get("msg") == "response completed" and e.get("http.request.method") != "HEAD"
    )


def pull_once(image: images.TestImage, host: str, dest: Path) -> tuple[float, int]:
    """Pull `image` from `host`; return (seconds, retries). One retry, as `docker pull` retries a layer."""
    start = time.monotonic()
    try:
        images.pull(image.ref(host), dest, timeout=600)
        return time.monotonic() - start, 0
    except CommandError:
        images.pull(image.ref(host), dest.with_name(dest.name + "-retry"), timeout=600)
        return time.monotonic() - start, 1


def measure_mirror(label: str, image: images.TestImage, upstream: Registry,
                   hosts: tuple[str, str], workdir: Path) -> dict[str, float]:
    """Cold and warm pull through the first mirror, 8 concurrent cold pulls through the second."""
    mark = len(upstream.json_log())
    cold, _ = pull_once(image, hosts[0], workdir / f"{label}-cold")
    cold_bytes = upstream_bytes(upstream, mark)
    time.sleep(2)  # let the registry finish storing before the warm pull
    warm, _ = pull_once(image, hosts[0], workdir / f"{label}-warm")
    mark = len(upstream.json_log())
    with ThreadPoolExecutor(8) as pool:
        herd = list(pool.map(lambda i: pull_once(image, hosts[1], workdir / f"{label}-herd-{i}"), range(8)))
    time.sleep(2)  # Distribution's background stores finish after the clients
    figures = {
        "cold": cold, "warm": warm, "cold_bytes": cold_bytes,
        "herd_slowest": max(t for t, _ in herd), "herd_bytes": upstream_bytes(upstream, mark),
        "herd_retries": sum(r for _, r in herd),
    }
    print(f"{label}: cold {cold:.2f} s, warm {warm:.2f} s, 8 cold at once: slowest "
          f"{figures['herd_slowest']:.2f} s ({figures['herd_retries']} retried)", flush=True)
    return figures


def before_front(image: images.TestImage, upstream: Registry, workdir: Path) -> dict[str, float]:
    """Distribution 2.8.2's proxy straight to the upstream: the mirror as it was without a front."""
    mirrors = [start_registry(workdir / f"before-{n}", f"before-{n}", proxy={"remoteurl": upstream.url})
               for n in ("single", "herd")]
    try:
        return measure_mirror("before", image, upstream, (mirrors[0].host, mirrors[1].host), workdir)
    finally:
        for mirror in mirrors:
            mirror.stop()


def after_front(image: images.TestImage, upstream: Registry, workdir: Path) -> dict[str, float]:
    """Two mirrors of the upstream, each with its front, each under a `registry-cache serve` of its own.

    (Two caches: one config holds one mirror per registry.)
    """
    cache, herd = Cache(workdir / "single"), Cache(workdir / "herd")
    for each, name in ((cache, "single"), (herd, "herd")):
        each.workdir.mkdir(parents=True, exist_ok=True)
        each.write_config({name: {"upstream": upstream.url}})
        each.start()
    try:
        hosts = (cache.host("single"), herd.host("herd"))
        figures = measure_mirror("after", image, upstream, hosts, workdir)
        time.sleep(2)
        state = cache.state("single")
        figures["status_bytes"] = state["bytes_from_upstream"]
        print(f"after: status of the single mirror: hits {state['hits']}, misses {state['misses']}, "
              f"bytes_from_upstream {format_size(state['bytes_from_upstream'])}", flush=True)
        time.sleep(3)
        serve_pid = cache.process.pid if cache.process else 0
        for label, pid in (("docker-registry", state["pid"]), ("serve, 1 mirror", serve_pid)):
            print(f"{'idle memory: ' + label + ' (RSS)':<44} {format_size(rss_kib(pid) * 1024, 'MiB'):>12}")
        return figures
    finally:
        herd.stop()
        cache.stop()


def front_peak_rss(size_mb: int, workdir: Path) -> int:
    """Peak RSS (bytes) of a front while two clients read one `size_mb` MiB blob from it."""
    seen = front_memory(size_mb * MiB, workdir, readers=2)
    if seen.received != [seen.digest, seen.digest]:
        print("WARNING: the huge blob did not arrive intact at both readers")
    return seen.peak_kib * 1024


def print_table(image_bytes: int, direct: float, before: dict[str, float], after: dict[str, float],
                rss: int, huge_mb: int) -> None:
    """The before/after figures side by side, with the targets of issue #11."""
    rows: list[tuple[str, Callable[[dict[str, float]], str], str]] = [
        ("cold pull / direct pull", lambda f: f"{f['cold'] / direct:.2f}x", "<= 1.1x"),
        ("cold pull: upstream bytes / image", lambda f: f"{f['cold_bytes'] / image_bytes:.2f}x", "1.0x"),
        ("8 cold pulls: upstream bytes / image",
         lambda f: f"{f['herd_bytes'] / image_bytes:.2f}x", "<= 1.05x"),
        ("8 cold pulls: slowest / direct pull", lambda f: f"{f['herd_slowest'] / direct:.2f}x", "<= 1.3x"),
        ("warm pull: speed-up over direct", lambda f: f"{direct / f['warm']:.1f}x", ">= 10x"),
    ]
    print()
    print(f"{'':<38} {'before':>10} {'after':>10}  target")
    for label, show, target in rows:
        print(f"{label:<38} {show(before):>10} {show(after):>10}  {target}")
    print(f"{'direct pull (no cache)':<38} {direct:>9.2f}s")
    print(f"{'status bytes_from_upstream / log':<38} {'':>10} "
          f"{after['status_bytes'] / after['cold_bytes']:>9.3f}x  1.000x (the single mirror's cold pull)")
    print(f"{f'front peak RSS, {huge_mb} MiB blob, 2 readers':<38} {'':>10} "
          f"{format_size(rss, 'MiB'):>10}  < 64 MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="image size (4 equal layers)")
    parser.add_argument("--rate", default="100mbit", help="upstream link rate (tc syntax)")
    parser.add_argument("--huge-mb", type=int, default=1024, help="blob size for the front's memory figure")
    parser.add_argument("--skip-apply", action="store_true", help="leave out the `apply` latency figures")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the upstream lives in a network namespace")

    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        workdir = Path(tmp)
        if not args.skip_apply:
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
                direct = timed("pull straight from the upstream (no cache)",
                               lambda: images.pull(image.ref(upstream.host), workdir / "direct", timeout=600))
                before = before_front(image, upstream, workdir)
                after = after_front(image, upstream, workdir)
            finally:
                upstream.stop()
        rss = front_peak_rss(args.huge_mb, workdir)
        print_table(image.blob_bytes, direct, before, after, rss, args.huge_mb)


if __name__ == "__main__":
    main()
