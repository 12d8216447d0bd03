"""Benchmark of the one endpoint: pulls through the first mirror's port against the same mirror's own port.

Prints its figures; asserts nothing. Run as root from the repo root:

    .venv/bin/python -m bench.endpoint [--size-mb 64] [--rate 100mbit] [--rounds 3] [--warm 5] [--tls]

The upstream registry sits in a network namespace behind a shaped veth pair (lab/netem.py),
on port 80 of its address, so its registry host is that address alone (a valid image-name
prefix). The cache runs two mirrors as the box does (one `registry-cache run-mirror` process
each): `first` (its port is the endpoint; its own upstream is never asked here) and `other`,
whose upstream is that registry. Each round starts from an empty cache: one cold pull of the
image, through `other`'s own port or through the endpoint (`HOST:FIRST_PORT/UPSTREAM/NAME`),
alternating by round; then `--warm` warm pulls each way, alternating, so that both ways in meet
the same load from the rest of the machine, each followed by one blob GET with curl (loopback
throughput, no client-side work; a redirect followed). Upstream bytes come from the upstream's own access log.

`--memory N` measures instead what N mirrors cost in memory as the box runs them: one
`registry-cache run-mirror NAME` process per mirror (its systemd unit's command, holding the
front and, for the first, the endpoint) plus its `docker-registry`, each proxying a local
upstream, after one pull through each: RSS and PSS (shared pages split) per process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from bench.agent import upstream_bytes
from box.run import start
from lab import images, netem
from lab.agent import AGENT, Cache, TlsCache, rss_kib
from lab.procs import wait_for_http
from lab.registry import Registry, start_registry

MiB = 1024 * 1024


def one_round(cold_via: str, image: images.TestImage, upstream: Registry, upstream_host: str, workdir: Path,
              warm_pulls: int, tls: bool = False) -> dict[str, dict[str, object]]:
    """A fresh cache: a cold pull via `cold_via`, then warm pulls alternating between both ways in."""
    mirrors = {"first": "http://127.0.0.1:9", "other": upstream.url}
    if tls:
        cache: Cache = TlsCache(workdir, mirrors)
    else:
        cache = Cache(workdir)
        workdir.mkdir(parents=True)
        cache.write_config({name: {"upstream": url} for name, url in mirrors.items()})
    trust = None
    runners = run_as_the_box_does(cache, workdir)
    if tls:  # skopeo takes every *.crt of its folder for a CA, and wants a *.cert for each *.key
        trust = workdir / "client-ca"
        trust.mkdir()
        shutil.copy(workdir / "tls" / "ca.crt", trust / "ca.crt")
    hosts = {"own port": cache.host("other"), "endpoint": f"{cache.host('first')}/{upstream_host}"}
    figures: dict[str, dict[str, object]] = {label: {"warm": [], "blob_mib_s": []} for label in hosts}
    try:
        mark = len(upstream.json_log())
        start = time.monotonic()
        images.pull(image.ref(hosts[cold_via]), workdir / "cold", timeout=600, cert_dir=trust)
        figures[cold_via]["cold"] = time.monotonic() - start
        time.sleep(2)  # the registry finishes storing before the warm pulls
        figures[cold_via]["cold_bytes"] = upstream_bytes(upstream, mark)
        blob = max(image.layers, key=lambda b: b.size)
        # alternating, so that both ways in meet the same load from the rest of the machine
        for index in range(warm_pulls):
            for label in (("own port", "endpoint") if index % 2 == 0 else ("endpoint", "own port")):
                start = time.monotonic()
                images.pull(image.ref(hosts[label]), workdir / f"warm-{label}-{index}", timeout=600,
                            cert_dir=trust)
                figures[label]["warm"].append(time.monotonic() - start)  # type: ignore[union-attr]
                address, _, prefix = hosts[label].partition("/")
                path = f"/v2/{prefix + '/' if prefix else ''}{image.repo}/blobs/{blob.digest}"
                url = f"{'https' if tls else 'http'}://{address}{path}"
                figures[label]["blob_mib_s"].append(_curl_rate(url, trust))  # type: ignore[union-attr]
        return figures
    finally:
        for runner in runners:
            runner.stop(timeout=40)


def run_as_the_box_does(cache: Cache, workdir: Path) -> list:
    """Render the cache's mirrors (`serve` once), then run each in its own `run-mirror` process.

    As under systemd: one process per mirror, so the endpoint and another mirror's port relay
    share no interpreter lock, as they do inside a single `serve`.
    """
    cache.start()
    cache.stop()
    tls = isinstance(cache, TlsCache)
    runners = []
    for name in cache.ports:
        argv = [*AGENT, "--root", str(cache.root), "run-mirror", name]
        log_path = workdir / f"run-mirror-{name}.log"
        runners.append(start(f"run-mirror {name}", argv, log_path, env=cache.env))
    for name in cache.ports:
        url = f"{'https' if tls else 'http'}://{cache.host(name)}/v2/"
        wait_for_http(url, timeout=120, ca=cache.workdir / "tls" / "ca.crt" if tls else None)
    return runners


def _curl_rate(url: str, trust: Optional[Path] = None) -> float:
    """MiB/s of one blob GET with curl into /dev/null (with TLS: trusting `trust`/ca.crt)."""
    ca = ["--cacert", str(trust / "ca.crt")] if trust else []
    argv = ["curl", "-sfL", *ca, "-o", "/dev/null", "-w", "%{size_download} %{time_total}", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]) / float(out[1]) / MiB


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (its shared pages split among their users), in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise ValueError(f"no Pss in /proc/{pid}/smaps_rollup")


def children(pid: int) -> list[int]:
    """The direct child processes of `pid`."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def mirrors_memory(count: int, workdir: Path) -> None:
    """Start `count` mirrors as the box does (one run-mirror process each) and print their memory."""
    upstreams = [start_registry(workdir / f"upstream-{n}", f"upstream-{n}") for n in range(count)]
    runners = []
    try:
        image = images.push_oci_image(workdir / "layouts", upstreams[0].host)
        for upstream in upstreams[1:]:
            images.push_oci_image(workdir / "layouts", upstream.host)
        cache = Cache(workdir / "memory")
        cache.workdir.mkdir()
        cache.write_config({f"m{n}": {"upstream": u.url} for n, u in enumerate(upstreams)})
        runners = run_as_the_box_does(cache, workdir)
        for name in cache.ports:
            images.pull(image.ref(cache.host(name)), workdir / f"pull-{name}", timeout=120)
        time.sleep(3)
        print(f"\n{count} mirrors, one run-mirror process each (as under systemd), after one pull each:")
        print(f"{'mirror':<8} {'runner RSS':>11} {'PSS':>8} {'registry RSS':>13} {'PSS':>8}")
        totals = [0, 0, 0, 0]
        for name, runner in zip(cache.ports, runners):
            (child,) = children(runner.pid)
            row = [rss_kib(runner.pid), pss_kib(runner.pid), rss_kib(child), pss_kib(child)]
            totals = [a + b for a, b in zip(totals, row)]
            print(f"{name:<8} " + " ".join(f"{v / 1024:>{w}.1f}" for v, w in zip(row, (8, 8, 10, 8)))
                  + "  MiB")
        print(f"{'total':<8} " + " ".join(f"{v / 1024:>{w}.1f}" for v, w in zip(totals, (8, 8, 10, 8)))
              + f"  MiB; PSS of all: {(totals[1] + totals[3]) / 1024:.0f} MiB")
    finally:
        for runner in runners:
            runner.stop(timeout=40)
        for upstream in upstreams:
            upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="image size (4 equal layers)")
    parser.add_argument("--rate", default="100mbit", help="upstream link rate (tc syntax)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind, alternating")
    parser.add_argument("--warm", type=int, default=5, help="warm pulls per round (their median counts)")
    parser.add_argument("--memory", type=int, metavar="N", help="measure the memory of N mirrors instead")
    parser.add_argument("--tls", action="store_true", help="the cache serves TLS (tls: auto)")
    args = parser.parse_args()
    if args.memory:
        with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
            mirrors_memory(args.memory, Path(tmp))
        return
    if os.geteuid() != 0:
        sys.exit("run as root: the upstream lives in a network namespace")
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        workdir = Path(tmp)
        with netem.create_link(rate=args.rate, delay_ms=40) as link:
            print(f"upstream link: {link.rate} via {link.qdisc}, added RTT {link.delay_ms} ms", flush=True)
            upstream = netem.start_throttled_registry(workdir / "upstream", link, port=80)
            try:
                image = images.push_oci_image(workdir / "layouts", upstream.host, repo="bench/big",
                                              layer_sizes=(args.size_mb * MiB // 4,) * 4)
                results: dict[str, dict[str, list[float]]] = {
                    label: {"cold": [], "cold_bytes": [], "warm": [], "blob_mib_s": []}
                    for label in ("own port", "endpoint")}
                for number in range(args.rounds):
                    ways = ("own port", "endpoint") if number % 2 == 0 else ("endpoint", "own port")
                    for cold_via in ways:
                        workdir_round = workdir / f"{cold_via.replace(' ', '-')}-{number}"
                        figures = one_round(cold_via, image, upstream, link.ns_addr, workdir_round, args.warm,
                                            tls=args.tls)
                        for label, values in figures.items():
                            for key, value in values.items():
                                results[label][key] += value if isinstance(value, list) else [value]
                        cold = figures[cold_via]
                        print(f"round {number + 1}, cold via {cold_via:<9}: {cold['cold']:6.2f} s, "
                              f"upstream {cold['cold_bytes'] / MiB:6.1f} MiB; warm medians: "
                              + ", ".join(f"{label} {statistics.median(v['warm']):.2f} s"
                                          for label, v in figures.items()), flush=True)
            finally:
                upstream.stop()
        print_table(results, image.blob_bytes)


def print_table(results: dict[str, dict[str, list[float]]], image_bytes: int) -> None:
    """Medians side by side: the endpoint against the mirror's own port."""
    def median(label: str, key: str) -> float:
        return statistics.median(results[label][key])

    runs = {key: len(results["endpoint"][key]) for key in ("cold", "warm")}
    print()
    print(f"{'(medians)':<34} {'own port':>10} {'endpoint':>10} {'ratio':>7}  target")
    rows = (("cold", f"cold pull ({runs['cold']} each)"), ("warm", f"warm pull ({runs['warm']} each)"))
    for key, label in rows:
        own, via = median("own port", key), median("endpoint", key)
        print(f"{label:<34} {own:>9.2f}s {via:>9.2f}s {via / own:>6.3f}x  <= 1.05x")
    own, via = (median(label, "cold_bytes") / image_bytes for label in ("own port", "endpoint"))
    print(f"{'cold pull: upstream bytes / image':<34} {own:>9.3f}x {via:>9.3f}x {'':>7}  1.00x, equal")
    own, via = median("own port", "blob_mib_s"), median("endpoint", "blob_mib_s")
    print(f"{'warm blob GET on loopback (curl)':<34} {own:>6.0f}MiB/s {via:>6.0f}MiB/s {via / own:>6.3f}x")


if __name__ == "__main__":
    main()
