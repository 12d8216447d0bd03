"""Benchmark of the disk a cold pull takes: the front's spool kept whole (before) against its window (after).

Prints its figures; asserts nothing. Run from the repo root (as root for `--rate`):

    .venv/bin/python -m bench.disk [--layers 3] [--layer-mb 64] [--rounds 2] [--rate 1gbit]

A real upstream registry on 127.0.0.1 (or in a network namespace behind a link shaped to
`--rate`), a front in this process and a mirror (Distribution 2.8.2 in proxy mode) whose
storage holds the front's spool, as `registry-cache serve` runs them. Side by side, interleaved,
each from an empty cache: one cold pull, then 8 clients pulling the same cold image at once.
Disk use is the allocated blocks (st_blocks) of the whole cache (blobs, Distribution's
`_uploads`, the spool), sampled every 10 ms; "stored" is what the blobs take once committed.
"before" is the front with `spool_window=False` (the spool kept whole until Distribution has
stored the blob, as main had it); "after" the spool window (see registry_cache/front/window.py).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from registry_cache import paths
from registry_cache.front import start_front

from box.sizes import MiB
from lab import images, netem
from lab.diskuse import PeakSampler, allocated
from lab.images import TestImage
from lab.pullcheck import assert_pulled_intact, wait_until_stored
from lab.registry import Registry, start_registry

CASES = {"before": False, "after": True}  # case -> spool_window


def cold_pulls(
    image: TestImage, upstream: Registry, workdir: Path, *, window: bool, clients: int
) -> dict[str, Any]:
    """`clients` cold pulls at once through a new mirror; what the cache took on disk meanwhile."""
    storage = workdir / "storage"
    storage.mkdir(parents=True)
    front = start_front(upstream.url, None, paths.front_spool(str(storage)), storage=str(storage),
                        spool_window=window)
    mirror = start_registry(workdir / "mirror", "mirror", proxy={"remoteurl": front.url}, storage=storage)
    try:
        took: list[float] = []

        def pull(index: int) -> None:
            started = time.monotonic()
            result = images.pull_image(image, mirror.host, workdir / f"pull-{index}", timeout=600)
            took.append(time.monotonic() - started)
            assert_pulled_intact(image, result)

        with PeakSampler(storage) as disk:
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(pull, range(clients)))
            wait_until_stored(storage, [image], timeout=120)
        counters = front.counters()
        return {
            "peak": disk.peak,
            "stored": allocated(storage / "docker/registry/v2/blobs"),
            "slowest": max(took),
            "upstream_bytes": counters["upstream_bytes"],
            "late": counters["blob_late"],
            "late_upstream": counters["blob_late_upstream"],
        }
    finally:
        mirror.stop()
        front.stop()


@contextlib.contextmanager
def upstream_registry(workdir: Path, rate: str | None) -> Iterator[Registry]:
    """A plain upstream registry: on 127.0.0.1, or behind a shaped link with `rate`."""
    if rate is None:
        upstream = start_registry(workdir / "upstream", "upstream")
        try:
            yield upstream
        finally:
            upstream.stop()
        return
    with netem.create_link(rate=rate, delay_ms=10) as link:
        print(f"upstream link: {link.rate} via {link.qdisc}, added RTT {link.delay_ms} ms")
        upstream = netem.start_throttled_registry(workdir / "upstream", link)
        try:
            yield upstream
        finally:
            upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3, help="layers in the image")
    parser.add_argument("--layer-mb", type=int, default=64, help="size of each layer")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each case (interleaved)")
    parser.add_argument("--rate", default=None, help="shape the upstream link (tc syntax; needs root)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        workdir = Path(tmp)
        with upstream_registry(workdir, args.rate) as upstream:
            image = images.push_oci_image(workdir / "layouts", upstream.host, repo="bench/disk",
                                          layer_sizes=(args.layer_mb * MiB,) * args.layers)
            print(f"image: {args.layers} x {args.layer_mb} MiB layers ({image.blob_bytes / MiB:.1f} MiB)")
            figures = interleaved(image, upstream, workdir, args.rounds)
        print_table(image, figures)


def interleaved(
    image: TestImage, upstream: Registry, workdir: Path, rounds: int
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Every case, 1 and 8 clients, `rounds` times over, interleaved; the figures by (case, clients)."""
    figures: dict[tuple[str, int], list[dict[str, Any]]] = {}
    runs = [(case, window, clients) for case, window in CASES.items() for clients in (1, 8)]
    for index, (case, window, clients) in enumerate(runs * rounds):
        seen = cold_pulls(image, upstream, workdir / f"run-{index}", window=window, clients=clients)
        figures.setdefault((case, clients), []).append(seen)
        print(f"  {case:<6} {clients} client(s): peak {seen['peak'] / seen['stored']:.3f}x stored, slowest"
              f" pull {seen['slowest']:.2f} s, late readers {seen['late']}", flush=True)
    return figures


def print_table(image: TestImage, figures: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    """The before/after figures side by side (medians over the rounds), with the target of issue #19."""

    def median(case: str, clients: int, key: str, per: str | None = None) -> float:
        return statistics.median(f[key] / (f[per] if per else 1) for f in figures[(case, clients)])

    rows = [
        ("cold pull: peak disk / stored", lambda c: f"{median(c, 1, 'peak', 'stored'):.3f}x", "<= 1.05x"),
        ("cold pull: time", lambda c: f"{median(c, 1, 'slowest'):.2f} s", ""),
        ("8 cold pulls: peak disk / stored", lambda c: f"{median(c, 8, 'peak', 'stored'):.3f}x", "<= 1.05x"),
        ("8 cold pulls: slowest", lambda c: f"{median(c, 8, 'slowest'):.2f} s", ""),
        ("8 cold pulls: upstream bytes / image",
         lambda c: f"{median(c, 8, 'upstream_bytes') / image.blob_bytes:.3f}x", "1.0x"),
        ("8 cold pulls: late readers (refetched)",
         lambda c: f"{median(c, 8, 'late'):.0f} ({median(c, 8, 'late_upstream'):.0f})", ""),
    ]
    print()
    print(f"{'':<40} {'before':>12} {'after':>12}  target")
    for label, show, target in rows:
        print(f"{label:<40} {show('before'):>12} {show('after'):>12}  {target}")


if __name__ == "__main__":
    main()
