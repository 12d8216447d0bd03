"""Benchmark of gc and warm: eviction over a big cache while pulls go on; warm vs pulling by hand.

Prints its figures; asserts nothing. Run as root from the repo root:

    .venv/bin/python -m bench.gc [--blobs 2000] [--gb 5]

The cache is generated straight into a mirror's filesystem storage (images of a config and
layers whose bytes are allocated with fallocate, their links dated over the last weeks), served
by `registry-cache serve` on 127.0.0.1 with a real upstream for the images a pull loop fetches
while `registry-cache gc` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from registry_cache.warmresult import last_outcome

from box.run import CommandError, run, start
from box.sizes import MiB, format_size
from box.wait import wait_until
from lab import images, oci_layout, procs
from lab.registry import start_registry

AGENT = [sys.executable, "-m", "registry_cache"]
BLOBS_PER_IMAGE = 5  # manifest, config, 3 layers


def _blob(storage: Path, digest: str) -> Path:
    hexdigest = digest.split(":", 1)[1]
    path = storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _link(path: Path, digest: str, when: float) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)
    os.utime(path / "link", (when, when))


def generate(storage: Path, blobs: int, total_bytes: int) -> int:
    """Write `blobs` blobs (whole images) of `total_bytes` into a Distribution storage; return images."""
    count = blobs // BLOBS_PER_IMAGE
    layer_size = total_bytes // (count * 3)
    now = time.time()
    rng = random.Random(12)
    for index in range(count):
        repo = storage / f"docker/registry/v2/repositories/bench/img{index:04d}"
        layers = []
        for part in range(4):
            digest = "sha256:" + hashlib.sha256(f"bench-{index}-{part}".encode()).hexdigest()
            with _blob(storage, digest).open("wb") as handle:
                size = 200 if part == 0 else layer_size
                os.posix_fallocate(handle.fileno(), 0, size)  # real blocks on disk, no bytes written
            layers.append(digest)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": oci_layout.DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": layers[0], "size": 200},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d,
                        "size": layer_size} for d in layers[1:]],
        }).encode()
        top = "sha256:" + hashlib.sha256(manifest).hexdigest()
        _blob(storage, top).write_bytes(manifest)
        when = now - rng.uniform(3600, 30 * 86400)
        _link(repo / "_manifests/revisions/sha256" / top.split(":")[1], top, when)
        _link(repo / "_manifests/tags/v1/current", top, when)
        _link(repo / "_manifests/tags/v1/index/sha256" / top.split(":")[1], top, when)
        for digest in layers:
            _link(repo / "_layers/sha256" / digest.split(":")[1], digest, when)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=2000)
    parser.add_argument("--gb", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    upstream = start_registry(work / "upstream")
    real = [images.push_oci_image(work / "layouts", upstream.host, repo=f"real/img{i}",
                                  layer_sizes=(4 * MiB, 1 * MiB)) for i in range(2)]
    warm_set = [images.push_oci_image(work / "layouts", upstream.host, repo=f"warm/img{i}",
                                      layer_sizes=(8 * MiB, 8 * MiB, 4 * MiB)) for i in range(4)]
    ports = {name: procs.free_port() for name in ("big", "w", "h")}
    cap = int(args.gb * 1e9 * 0.8)
    warm_list = json.dumps([f"{i.repo}:{i.tag}" for i in warm_set])
    (work / "config.yml").write_text(
        "listen: 127.0.0.1\nstorage: cache\nmirrors:\n"
        f"  big: {{upstream: '{upstream.url}', port: {ports['big']}, max_size: {cap}}}\n"
        f"  w: {{upstream: '{upstream.url}', port: {ports['w']}, warm: {warm_list}}}\n"
        f"  h: {{upstream: '{upstream.url}', port: {ports['h']}}}\n"
    )
    (work / "cache/big").mkdir(parents=True)
    began = time.monotonic()
    images_made = generate(work / "cache/big", args.blobs, int(args.gb * 1e9))
    print(f"generated {images_made} images, {images_made * BLOBS_PER_IMAGE} blobs, {args.gb:.1f} GB "
          f"in {time.monotonic() - began:.1f} s", flush=True)
    env = {**os.environ, "REGISTRY_CACHE_ROOT": str(work / "root")}
    serve = start("registry-cache serve", [*AGENT, "serve", "--config", str(work / "config.yml")],
                  work / "serve.log", env=env)
    try:
        for port in ports.values():
            procs.wait_for_v2(f"http://127.0.0.1:{port}", timeout=60, process=serve)
        host = f"127.0.0.1:{ports['big']}"
        for image in real:
            images.pull(image.ref(host), work / "pulls" / image.repo)
        served, failed = [], []
        done = threading.Event()

        def loop() -> None:
            while not done.is_set():
                image = real[len(served) % 2]
                try:
                    images.pull(image.ref(host), work / "loop" / f"{time.monotonic_ns()}")
                    served.append(time.monotonic())
                except CommandError as exc:
                    failed.append(str(exc))

        puller = threading.Thread(target=loop)
        puller.start()
        gc_argv = [*AGENT, "--root", str(work / "root"), "gc", "--keep-recent", "300", "big"]
        began = time.monotonic()
        try:
            result = run(gc_argv, capture=True, timeout=3600, env=env)
        finally:
            done.set()  # a failed gc must not leave the pull loop running forever
            puller.join()
        took = time.monotonic() - began
        during = sum(1 for t in served if began <= t <= began + took)
        print("\n".join(line for line in result.stdout.splitlines() if not line.startswith("  evict")))
        print(f"gc over {args.blobs} blobs / {args.gb:.1f} GB: {took:.1f} s; pulls during it: "
              f"{during} served, {len(failed)} failed", flush=True)
        began = time.monotonic()
        run(gc_argv, capture=True, timeout=3600, env=env)
        print(f"gc again, below the cap (measures only): {time.monotonic() - began:.1f} s", flush=True)

        outcome = wait_until(lambda: last_outcome(str(work / "cache/w")), "the first warm's result",
                             timeout=300, interval=0.5)
        print(f"warm of {len(warm_set)} images (cold, after start): {outcome.duration:.2f} s, "
              f"{format_size(outcome.bytes)}, failures {outcome.failures}")
        began = time.monotonic()
        for image in warm_set:
            images.pull(image.ref(f"127.0.0.1:{ports['h']}"), work / "hand" / image.repo)
        print(f"pulling the same {len(warm_set)} images by hand (skopeo, cold): "
              f"{time.monotonic() - began:.2f} s")
        began = time.monotonic()
        run([*AGENT, "--root", str(work / "root"), "warm", "w"], capture=True, timeout=600, env=env)
        print(f"warm again (refresh, all cached): {time.monotonic() - began:.2f} s")
    finally:
        serve.stop(timeout=60)
        upstream.stop()
        run(["rm", "-rf", str(work)], capture=True)


if __name__ == "__main__":
    main()
