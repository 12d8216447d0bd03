"""Benchmark of caches sharing one bucket (a real single-node Ceph RGW) against caches on a folder.

Prints its figures; asserts nothing. Run as root from the repo root:

    .venv/bin/python -m bench.cluster [--layer-mb 16] [--clients 16]

Side by side in one run, on 127.0.0.1 (the Ceph cluster, the upstream and every node share
this machine's cores, so "two nodes" measures the protocol, not two machines' NICs):

1. Warm throughput: every blob of a warm image fetched over `--clients` keep-alive connections
   from one node, then from two nodes on the same bucket at once (half the clients each).
2. Cold pull: one image pulled through a fresh node on a folder and a fresh node on a bucket.
3. Cross-node transfers in flight: the same cold image pulled through two fresh nodes at once;
   the upstream's log says how many times each blob crossed the upstream link.
4. The gc hold: two nodes over their cap, both serving a pull loop while `gc` on one of them
   evicts for both: pulls served and failed meanwhile, and how long until every node served
   read-only and back in proxy mode.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from registry_cache.s3 import Bucket

from box.run import CommandError
from box.sizes import KiB, MiB
from lab import images, procs
from lab.agent import AGENT, ClusterNode
from lab.ceph import CephCluster, S3Account, start_cluster
from lab.registry import Registry, start_registry

CLIENT_TIMEOUT = 300.0


def node(work: Path, name: str, upstream: Registry, account: S3Account | None, bucket: str = "",
         **hub: object) -> ClusterNode:
    """A `registry-cache serve` with one mirror `hub` of `upstream`: on `bucket` when an account is given."""
    cache = ClusterNode(work / name)
    cache.workdir.mkdir(parents=True)
    storage: object = "cache"
    if account is not None:
        storage = cache.s3_storage(account.endpoint, bucket, account.access_key, account.secret_key)
    cache.write_config({"hub": {"upstream": upstream.url, **hub}}, storage=storage,
                       metrics_port=procs.free_port())
    cache.start()
    return cache


def new_bucket(account: S3Account, name: str) -> Bucket:
    """Create an empty bucket `name` for `account`."""
    bucket = Bucket(account.endpoint, account.region, name, account.access_key, account.secret_key)
    bucket.create()
    return bucket


def warm_rate(nodes: list[ClusterNode], image: images.TestImage, clients: int, rounds: int,
              work: Path) -> float:
    """MiB/s of warm blobs fetched through `nodes` at once, `clients` connections in all."""
    urls = [f"/v2/{image.repo}/blobs/{b.digest}" for b in image.layers] * rounds
    got: list[int] = []
    began = time.monotonic()
    threads = [threading.Thread(target=lambda n=n: got.append(
        procs.parallel_get(n.ports["hub"], urls, max(1, clients // len(nodes)), work,
                           timeout=CLIENT_TIMEOUT))) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(got) / MiB / (time.monotonic() - began)


def cold_pull(cache: ClusterNode, image: images.TestImage, work: Path) -> float:
    """Seconds a cold pull of `image` through `cache` takes."""
    began = time.monotonic()
    images.pull(image.ref(cache.host("hub")), work / f"cold-{time.monotonic_ns()}")
    return time.monotonic() - began


def upstream_gets(upstream: Registry, digest: str) -> int:
    """Blob GETs of `digest` the upstream answered so far."""
    return sum(1 for e in upstream.json_log()
               if e.get("msg") == "response completed" and e.get("http.request.method") == "GET"
               and e.get("http.request.uri", "").endswith(f"/blobs/{digest}"))


def gc_hold(work: Path, ceph: CephCluster, account: S3Account, upstream: Registry) -> dict[str, float]:
    """Two capped nodes, a pull loop on each, one gc: pulls served/failed, switch times."""
    cap = 4_000_000
    new_bucket(account, "bench-gc")
    imgs = [images.push_oci_image(work / "gc-layouts", upstream.host, repo=f"gc/img{i}", tag="v1",
                                  layer_sizes=(1 * MiB, 64 * KiB)) for i in range(5)]
    nodes = [node(work, f"gc-{n}", upstream, account, "bench-gc", max_size=cap) for n in ("a", "b")]
    try:
        for number, image in enumerate(imgs):
            images.pull(image.ref(nodes[number % 2].host("hub")), work / f"gc-fill-{number}")
        time.sleep(1.0)
        for image in imgs[:2]:
            images.pull(image.ref(nodes[1].host("hub")), work / f"gc-again-{time.monotonic_ns()}")
        time.sleep(2.0)
        served: list[float] = []
        failed: list[str] = []
        done = threading.Event()

        def loop(cache: ClusterNode) -> None:
            while not done.is_set():
                image = imgs[len(served) % 2]
                try:
                    images.pull(image.ref(cache.host("hub")), work / f"gc-loop-{time.monotonic_ns()}")
                    served.append(time.monotonic())
                except CommandError as exc:
                    failed.append(str(exc))

        loops = [threading.Thread(target=loop, args=(n,)) for n in nodes]
        for thread in loops:
            thread.start()
        time.sleep(1.0)
        began = time.monotonic()
        gc = procs.start("gc", [*AGENT, "--root", str(nodes[0].root), "gc", "--keep-recent", "0"],
                         work / "gc.log", env=nodes[0].env)
        switched = {}
        while gc.alive():
            for cache in nodes:
                if cache.workdir.name not in switched and cache.state("hub").get("hold") == "gc":
                    switched[cache.workdir.name] = time.monotonic() - began
            time.sleep(0.05)
        ended = time.monotonic()
        for cache in nodes:
            cache.wait_state("hub", mode="proxy", hold=None, timeout=60)
        back = time.monotonic() - ended
        time.sleep(1.0)
        done.set()
        for thread in loops:
            thread.join(timeout=120)
        print(gc.log_text().strip(), flush=True)
        return {"gc_s": ended - began, "pulls_during": sum(began <= t <= ended for t in served),
                "failed": len(failed), "switch_all_s": max(switched.values(), default=float("nan")),
                "back_all_s": back}
    finally:
        for cache in nodes:
            cache.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer-mb", type=int, default=16, help="size of each of the image's 4 layers")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections, warm throughput")
    parser.add_argument("--rounds", type=int, default=8, help="times each layer is fetched, warm throughput")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ceph = start_cluster()
    print(f"Ceph (mon, memstore OSD, radosgw) answered S3 {ceph.started_in:.2f} s after start", flush=True)
    upstream = start_registry(work / "upstream", "upstream")
    started: list[ClusterNode] = []
    try:
        account = ceph.create_account("bench")
        size = args.layer_mb * MiB
        image = images.push_oci_image(work / "layouts", upstream.host, repo="bench/big", tag="v1",
                                      layer_sizes=(size, size, size, size))
        new_bucket(account, "bench-warm")
        a, b = (node(work, n, upstream, account, "bench-warm") for n in ("warm-a", "warm-b"))
        started += [a, b]
        cold_s3 = cold_pull(a, image, work)
        images.pull(image.ref(b.host("hub")), work / "pull-through-b")  # its registry knows the manifest
        disk = node(work, "disk", upstream, None)
        started.append(disk)
        cold_disk = cold_pull(disk, image, work)
        one = warm_rate([a], image, args.clients, args.rounds, work)
        two = warm_rate([a, b], image, args.clients, args.rounds, work)
        one_disk = warm_rate([disk], image, args.clients, args.rounds, work)

        other = images.push_oci_image(work / "layouts2", upstream.host, repo="bench/race", tag="v1",
                                      layer_sizes=(size, size, size, size))
        new_bucket(account, "bench-race")
        c, d = (node(work, n, upstream, account, "bench-race") for n in ("race-c", "race-d"))
        started += [c, d]
        racers = [threading.Thread(target=cold_pull, args=(n, other, work)) for n in (c, d)]
        for thread in racers:
            thread.start()
        for thread in racers:
            thread.join()
        transfers = [upstream_gets(upstream, layer.digest) for layer in other.layers]
        for cache in started:
            cache.stop()
        started.clear()
        hold = gc_hold(work, ceph, account, upstream)
    finally:
        for cache in started:
            cache.stop()
        upstream.stop()
        ceph.stop()
        shutil.rmtree(work, ignore_errors=True)

    image_mb = 4 * args.layer_mb
    print()
    print(f"| measure ({image_mb} MiB image, {args.clients} clients) | value |")
    print("| --- | --- |")
    print(f"| warm, one node on a folder | {one_disk:.0f} MiB/s |")
    print(f"| warm, one node on the bucket | {one:.0f} MiB/s |")
    print(f"| warm, two nodes on the bucket | {two:.0f} MiB/s ({two / one:.2f}x one node) |")
    print(f"| cold pull, node on a folder | {cold_disk:.2f} s |")
    print(f"| cold pull, node on the bucket | {cold_s3:.2f} s ({cold_s3 / cold_disk:.2f}x) |")
    print(f"| same cold image through two nodes at once: upstream GETs per layer | {transfers} |")
    print(f"| gc of two nodes: duration | {hold['gc_s']:.1f} s |")
    print(f"| gc: every node read-only after | {hold['switch_all_s']:.1f} s |")
    print(f"| gc: every node back in proxy mode after gc ended | {hold['back_all_s']:.1f} s |")
    print(f"| gc: pulls served during it / failed | {hold['pulls_during']:.0f} / {hold['failed']:.0f} |")


if __name__ == "__main__":
    main()
