"""The front between a mirror and its upstream, proved with real `docker-registry` processes and skopeo.

Each mirror here is a Distribution 2.8 proxy whose `remoteurl` is the front; the front runs
in the test process (as the mirror runner will run it) and talks to a real upstream registry,
or to a relay in front of one that cuts, corrupts or redirects blob GETs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from registry_cache.cachelayout import is_stored
from registry_cache.front import FrontHandle, start_front
from registry_cache.record import Credentials

from box.run import CommandError
from box.sizes import KiB, MiB
from box.wait import wait_until
from lab import images, procs
from lab.agent import front_memory
from lab.fake_upstream import Faults, FaultyRelay, StorageCdn
from lab.images import pull_image
from lab.registry import REGISTRY_BIN, registry_config, write_config

pytestmark = pytest.mark.integration



@pytest.fixture
def front_factory(tmp_path):
    """Start fronts with `factory(upstream_url, credentials=None)`; all stop after the test."""
    started: list[FrontHandle] = []

    def factory(upstream_url: str, credentials: Credentials | None = None, **kwargs) -> FrontHandle:
        n = len(started)
        handle = start_front(upstream_url, credentials, str(tmp_path / f"front-{n}" / "spool"), **kwargs)
        started.append(handle)
        return handle

    yield factory
    for handle in started:
        handle.stop()


def _assert_pulled_intact(image, result) -> None:
    """The pull got the image's manifest, and every blob file matches its digest."""
    assert result.digest == image.digest
    for blob in image.blobs:
        data = (result.dest / blob.digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest


def _stored_blobs_are_intact(storage: Path) -> list[str]:
    """Every blob in a mirror's storage whose bytes do not match its digest (none, we hope)."""
    bad = []
    for data in (storage / "docker/registry/v2/blobs/sha256").glob("*/*/data"):
        if hashlib.sha256(data.read_bytes()).hexdigest() != data.parent.name:
            bad.append(data.parent.name)
    return bad


def _upstream_blob_gets(upstream, digest: str, since: int = 0) -> int:
    return sum(
        1
        for e in upstream.json_log()[since:]
        if e.get("msg") == "response completed"
        and e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
    )


def _wait_until_stored(mirror, image, timeout: float = 30) -> None:
    pending = [b.digest for b in image.blobs]

    def stored() -> bool:
        pending[:] = [d for d in pending if not is_stored(str(mirror.storage), image.repo, d)]
        return not pending

    wait_until(stored, "the mirror storing every blob", timeout=timeout,
               detail=lambda: f"missing {pending}", error=AssertionError)


@pytest.fixture
def herd_image(upstream, tmp_path):
    """A 4-layer image big enough (about 20 MiB) that concurrent pulls overlap."""
    return images.push_oci_image(
        tmp_path / "herd-layouts",
        upstream.host,
        repo="test/herd",
        layer_sizes=(8 * MiB, 4 * MiB, 6 * MiB, 2 * MiB),
    )


def test_eight_concurrent_cold_pulls_fetch_each_blob_once_from_the_upstream(
    registry_factory, upstream, herd_image, front_factory, tmp_path
):
    front = front_factory(upstream.url)
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url})
    log_before = len(upstream.json_log())

    with ThreadPoolExecutor(8) as pool:
        pulls = list(pool.map(lambda i: pull_image(herd_image, mirror.host, tmp_path / f"pull-{i}"),
                              range(8)))

    for result in pulls:
        _assert_pulled_intact(herd_image, result)
    for blob in herd_image.blobs:
        assert _upstream_blob_gets(upstream, blob.digest, log_before) == 1, blob
    counters = front.counters()
    assert counters["blob_transfers"] == len(herd_image.blobs)
    assert counters["blob_joins"] >= len(herd_image.blobs)  # Distribution's own second GET, at least
    _wait_until_stored(mirror, herd_image)
    assert _stored_blobs_are_intact(mirror.storage) == []


def test_front_counts_the_bytes_the_upstream_access_log_shows(
    registry_factory, upstream, test_images, front_factory, tmp_path
):
    log_before = len(upstream.json_log())  # the mirror's start-up probe of `/v2/` counts too
    front = front_factory(upstream.url)
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

    for image in test_images.all():
        pull_image(image, mirror.host, tmp_path / image.kind)

    # a HEAD's `written` counts what Go's server discarded: no byte of it crossed the wire
    sent = sum(
        e.get("http.response.written", 0)
        for e in upstream.json_log()[log_before:]
        if e.get("msg") == "response completed" and e.get("http.request.method") != "HEAD"
    )
    assert front.counters()["upstream_bytes"] == sent
    assert sent >= sum(image.blob_bytes for image in test_images.all())


def test_a_blob_cut_mid_body_is_not_cached_and_the_next_pull_succeeds(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/cut", layer_sizes=(2 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    with FaultyRelay(upstream.url, Faults(cut_times=1, only=layer)) as relay:
        front = front_factory(relay.url)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        # failing is right too: what matters is that nothing broken is kept
        with contextlib.suppress(CommandError):
            _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "first"))
        assert relay.faults.cut == [layer]
        assert front.counters()["blob_failures"] == 1
        assert _stored_blobs_are_intact(mirror.storage) == []

        _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "second"))
        _wait_until_stored(mirror, image)
    assert _stored_blobs_are_intact(mirror.storage) == []
    assert len(relay.gets(layer)) == 2  # the cut transfer and one clean retry


def test_a_blob_with_wrong_bytes_is_refused_and_never_cached(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(tmp_path / "layouts", upstream.host, repo="test/wrong")
    layer = image.layers[2].digest
    with FaultyRelay(upstream.url, Faults(corrupt=True, only=layer)) as relay:
        front = front_factory(relay.url)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        with pytest.raises(CommandError):
            pull_image(image, mirror.host, tmp_path / "p")

        time.sleep(1)  # Distribution's background store of the same blob ends with the same cut
        assert not is_stored(str(mirror.storage), image.repo, layer)
        assert front.counters()["blob_failures"] >= 1
    assert _stored_blobs_are_intact(mirror.storage) == []


def test_front_logs_in_to_a_basic_auth_upstream_that_distribution_cannot(
    registry_factory, htpasswd_upstream, upstream_credentials, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", htpasswd_upstream.host, creds=upstream_credentials.pair()
    )
    front = front_factory(htpasswd_upstream.url, upstream_credentials)
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

    _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "p"))


def test_token_auth_passes_through_the_front_unchanged(
    registry_factory, token_upstream, token_test_images, upstream_credentials, front_factory, tmp_path
):
    front = front_factory(token_upstream.url, upstream_credentials)
    mirror = registry_factory(
        "mirror",
        proxy={
            "remoteurl": front.url,
            "username": upstream_credentials.username,
            "password": upstream_credentials.password,
        },
    )

    for image in token_test_images.all():
        assert pull_image(image, mirror.host, tmp_path / image.kind).digest == image.digest
    assert front.counters()["blob_transfers"] == sum(len(i.blobs) for i in token_test_images.all())


def test_front_follows_a_blob_redirect_to_another_server_without_the_upstream_credentials(
    registry_factory, htpasswd_upstream, upstream_credentials, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", htpasswd_upstream.host, creds=upstream_credentials.pair()
    )
    with (
        StorageCdn(htpasswd_upstream.storage) as cdn,
        FaultyRelay(htpasswd_upstream.url, Faults(redirect_to=cdn.url)) as relay,
    ):
        front = front_factory(relay.url, upstream_credentials)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "p"))

    for blob in image.blobs:
        assert len(cdn.gets(blob.digest)) == 1
    assert all(seen.authorization is None for seen in cdn.seen)
    assert any((seen.authorization or "").startswith("Basic ") for seen in relay.seen)


def test_distribution_takes_the_front_from_REGISTRY_PROXY_REMOTEURL(
    upstream, test_images, front_factory, tmp_path
):
    front = front_factory(upstream.url)
    workdir = tmp_path / "mirror"
    port, debug_port = procs.free_port(), procs.free_port()
    # the config names a port nobody listens on: a proxy that used it would panic at start
    config = registry_config(
        port=port,
        debug_port=debug_port,
        storage=workdir / "storage",
        proxy={"remoteurl": "http://127.0.0.1:9"},
    )
    write_config(workdir / "config.yml", config)
    env = {**os.environ, "REGISTRY_PROXY_REMOTEURL": front.url}
    process = procs.start(
        "mirror", [REGISTRY_BIN, "serve", str(workdir / "config.yml")], workdir / "log", env=env
    )
    try:
        procs.wait_for_v2(f"http://127.0.0.1:{port}", process=process)
        pulled = pull_image(test_images.oci, f"127.0.0.1:{port}", tmp_path / "p")
        _assert_pulled_intact(test_images.oci, pulled)
    finally:
        process.stop()
    assert front.counters()["blob_transfers"] == len(test_images.oci.blobs)


def test_mirror_behind_the_front_starts_and_serves_its_cache_while_the_upstream_is_down(
    registry_factory, upstream, test_images, front_factory, tmp_path
):
    front = front_factory(upstream.url)
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url})
    image = test_images.docker
    pull_image(image, mirror.host, tmp_path / "warm")
    _wait_until_stored(mirror, image)
    upstream.stop()

    _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "mid-run"))
    mirror.stop()
    mirror.start()  # Distribution alone panics here: its start-up probe of the upstream fails
    _assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "restarted"))


def test_front_memory_stays_small_while_two_clients_read_a_large_blob(tmp_path):
    size = int(os.environ.get("REGISTRY_CACHE_TEST_FRONT_BLOB_MIB", "256")) * MiB
    seen = front_memory(size, tmp_path, readers=2, timeout=120)
    print(f"\nfront peak RSS serving a {size // MiB} MiB blob to 2 readers: {seen.peak_kib / 1024:.1f} MiB")
    assert seen.received == [seen.digest, seen.digest]
    assert seen.upstream_gets == 1
    assert seen.peak_kib < 64 * 1024
