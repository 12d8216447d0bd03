"""The front and its disk: a full disk still pulls, a spool goes once its blob is stored, a cold pull
takes no more disk than it stores, a frozen disk stalls no other request. Real `docker-registry`
processes and skopeo; the small and the frozen disks are file systems each test mounts (as root)
and unmounts.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_cache import paths
from registry_cache.cachelayout import is_stored
from registry_cache.fsutil import tree_size

from box.sizes import KiB, MiB
from box.wait import WaitTimeout, wait_until
from lab import images
from lab.diskuse import PeakSampler, allocated
from lab.fake_upstream import Faults, FaultyRelay
from lab.images import pull_image
from lab.pullcheck import assert_pulled_intact, broken_stored_blobs, wait_until_stored

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting the test's own file systems needs root"),
]


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB file system of the test's own (tmpfs), unmounted afterwards."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    _mount("-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount))
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def freezable_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB ext4 on a loop device (tmpfs cannot be frozen), thawed and unmounted afterwards."""
    image, mount = tmp_path / "disk.img", tmp_path / "freezable"
    mount.mkdir()
    with image.open("wb") as handle:
        handle.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    _mount("-o", "loop", str(image), str(mount))
    yield mount
    subprocess.run(["fsfreeze", "-u", str(mount)], check=False, capture_output=True)
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill_leaving(disk: Path, free: int) -> Path:
    """Fill `disk` until only `free` bytes are left."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with filler.open("wb") as handle:
        left = stats.f_bavail * stats.f_frsize - free
        while left > 0:
            left -= handle.write(b"\0" * min(MiB, left))
    return filler


@pytest.mark.parametrize("chunked", [False, True], ids=["length-known", "chunked"])
def test_with_the_disk_full_an_uncached_image_still_pulls_and_is_not_stored(
    registry_factory, upstream, front_factory, tmp_path, small_disk, chunked
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/big", layer_sizes=(12 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    storage = small_disk / "storage"
    storage.mkdir()
    with FaultyRelay(upstream.url, Faults(chunked=chunked, only=layer)) as relay:
        # as a mirror runs it: the spool beside the cache, on the same (full) disk
        front = front_factory(
            relay.url if chunked else upstream.url,
            spool_dir=paths.front_spool(str(storage)),
            storage=str(storage),
        )
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url}, storage=storage)
        filler = _fill_leaving(small_disk, 8 * MiB)  # room for neither a spool nor a copy of the layer

        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "full"))
        counters = front.counters()
        assert counters["blob_unshared"] >= 1
        assert "no room" in (counters["disk_problem"] or "") or "no space" in (counters["disk_problem"] or "")
        assert counters["blob_failures"] == 0
        time.sleep(1)
        assert not is_stored(str(storage), image.repo, layer)

        filler.unlink()  # space is back: the next pull is stored, and the front says all is well
        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "room"))
        wait_until_stored(storage, [image])
        assert front.counters()["disk_problem"] is None
    assert broken_stored_blobs(storage) == []


def test_a_spool_is_released_once_its_blob_is_stored_so_a_cold_pull_costs_its_size_on_disk(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/disk", layer_sizes=(8 * MiB, 4 * MiB, 6 * MiB)
    )
    storage = tmp_path / "mirror-storage"
    storage.mkdir()
    front = front_factory(upstream.url, spool_dir=paths.front_spool(str(storage)), storage=str(storage))
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url}, storage=storage)
    peak = 0
    pulling = True

    def sample() -> None:
        nonlocal peak
        while pulling:
            peak = max(peak, tree_size(str(storage)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "cold"))
        wait_until_stored(storage, [image])
    finally:
        pulling = False
        sampler.join()
    stored = tree_size(str(storage / "docker/registry/v2/blobs"))
    with contextlib.suppress(WaitTimeout):  # the front looks for the stored blob every 0.2 s
        wait_until(lambda: tree_size(str(storage)) <= 1.05 * stored, "the spools going", timeout=2)
    after = tree_size(str(storage))
    print(f"\ncold pull of {image.blob_bytes / MiB:.1f} MiB: on disk at most {peak / stored:.2f}x "
          f"what is stored while pulling, {after / stored:.3f}x once stored")
    assert after <= 1.05 * stored
    spool = Path(paths.front_spool(str(storage)))
    wait_until(lambda: not list(spool.iterdir()), "every spool gone (small ones too)", timeout=2)
    assert front.counters()["blob_transfers"] == len(image.blobs)  # none fetched again meanwhile


def test_a_cold_pull_of_a_big_layer_takes_at_most_1_05x_what_it_stores_on_disk_while_it_runs(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/big", layer_sizes=(64 * MiB, 256 * KiB)
    )
    storage = tmp_path / "mirror-storage"
    storage.mkdir()
    # as a mirror runs it: the spool inside the cache, on the same disk as Distribution's upload
    front = front_factory(upstream.url, spool_dir=paths.front_spool(str(storage)), storage=str(storage))
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url}, storage=storage)

    with PeakSampler(storage) as disk:  # allocated blocks: a punched hole is free space
        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "cold"))
        wait_until_stored(storage, [image])
    stored = allocated(storage / "docker/registry/v2/blobs")
    print(f"\ncold pull of {image.blob_bytes / MiB:.1f} MiB: at most {disk.peak / stored:.3f}x what is stored"
          f" on disk while pulling ({disk.samples} samples)")
    assert disk.peak <= 1.05 * stored
    assert front.counters()["blob_transfers"] == len(image.blobs)
    assert broken_stored_blobs(storage) == []


def test_a_pull_that_comes_once_a_spool_is_partly_released_gets_the_stored_blob_intact(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/late", layer_sizes=(64 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    storage = tmp_path / "mirror-storage"
    storage.mkdir()
    # the upstream sends half the layer, then waits: the second pull comes meanwhile, once the
    # first half is released (the start of a spool is kept for half the layer at most)
    with FaultyRelay(upstream.url, Faults(pause=4.0, only=layer)) as relay:
        front = front_factory(relay.url, spool_dir=paths.front_spool(str(storage)), storage=str(storage))
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url}, storage=storage)
        first: list = []
        puller = threading.Thread(
            target=lambda: first.append(pull_image(image, mirror.host, tmp_path / "first")), daemon=True
        )
        puller.start()
        wait_until(lambda: front.counters()["upstream_bytes"] >= 32 * MiB, "half the layer in", timeout=30)
        time.sleep(0.5)
        second = pull_image(image, mirror.host, tmp_path / "second")
        puller.join(timeout=60)
    assert_pulled_intact(image, first[0])
    assert_pulled_intact(image, second)  # every blob file checked against its digest
    counters = front.counters()
    assert counters["blob_late"] >= 1
    assert counters["blob_late_upstream"] == 0
    assert len(relay.gets(layer)) == 1  # the late one did not fetch the layer again
    wait_until_stored(storage, [image])
    assert broken_stored_blobs(storage) == []


def test_a_frozen_spool_disk_stalls_only_the_transfer_that_writes_to_it(
    upstream, test_images, front_factory, freezable_disk
):
    image = test_images.oci
    front = front_factory(upstream.url, spool_dir=str(freezable_disk / "spool"))
    blob = f"{front.url}/v2/{image.repo}/blobs/{image.layers[0].digest}"
    subprocess.run(["fsfreeze", "-f", str(freezable_disk)], check=True)
    try:
        stuck = threading.Thread(target=lambda: _read_quietly(blob), daemon=True)
        stuck.start()
        time.sleep(1)  # the blob's spool waits for the disk now

        started = time.monotonic()
        with urllib.request.urlopen(f"{front.url}/v2/", timeout=10) as answer:
            assert answer.status == 200
        manifest = f"{front.url}/v2/{image.repo}/manifests/{image.digest}"
        request = urllib.request.Request(manifest, headers={"Accept": image.media_type})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200
        took = time.monotonic() - started
    finally:
        subprocess.run(["fsfreeze", "-u", str(freezable_disk)], check=True)
    stuck.join(timeout=60)
    print(f"\nwith the spool's disk frozen, /v2/ and a manifest answered in {took:.2f} s")
    assert took < 5  # a blocked loop would answer only after the thaw, which comes after this


def _read_quietly(url: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            answer.read()
    except OSError:
        pass
