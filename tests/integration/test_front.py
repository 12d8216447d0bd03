"""The front between a mirror and its upstream, proved with real `docker-registry` processes and skopeo.

Each mirror here is a Distribution 2.8 proxy whose `remoteurl` is the front; the front runs
in the test process (as the mirror runner will run it) and talks to a real upstream registry,
or to a relay in front of one that cuts, corrupts or redirects blob GETs.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from registry_cache import paths
from registry_cache.cachelayout import is_stored

from box.run import CommandError
from box.sizes import KiB, MiB
from lab import images, procs
from lab.agent import front_memory
from lab.fake_upstream import Faults, FaultyRelay, StorageCdn
from lab.images import pull_image
from lab.pullcheck import assert_pulled_intact, broken_stored_blobs, wait_until_stored
from lab.registry import REGISTRY_BIN, registry_config, write_config

pytestmark = pytest.mark.integration



def _upstream_blob_gets(upstream, digest: str, since: int = 0) -> int:
    return sum(
        1
        for e in upstream.json_log()[since:]
        if e.get("msg") == "response completed"
        and e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
    )


@pytest.fixture
def herd_image(upstream, tmp_path):
    """A 4-layer image big enough (about 20 MiB) that concurrent pulls overlap."""
    return images.push_oci_image(
        tmp_path / "herd-layouts",
        upstream.host,
        repo="test/herd",
        layer_sizes=(8 * MiB, 4 * MiB, 6 * MiB, 2 * MiB),
    )


@pytest.mark.parametrize("windowed", [False, True], ids=["whole-spool", "spool-window"])
def test_eight_concurrent_cold_pulls_fetch_each_blob_once_from_the_upstream(
    registry_factory, upstream, herd_image, front_factory, tmp_path, windowed
):
    if windowed:  # as a mirror runs it: the front knows the storage, its spools keep what readers need
        storage = tmp_path / "mirror-storage"
        storage.mkdir()
        front = front_factory(upstream.url, spool_dir=paths.front_spool(str(storage)), storage=str(storage))
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url}, storage=storage)
    else:
        front = front_factory(upstream.url)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})
    log_before = len(upstream.json_log())

    with ThreadPoolExecutor(8) as pool:
        pulls = list(pool.map(lambda i: pull_image(herd_image, mirror.host, tmp_path / f"pull-{i}"),
                              range(8)))

    for result in pulls:
        assert_pulled_intact(herd_image, result)
    for blob in herd_image.blobs:
        assert _upstream_blob_gets(upstream, blob.digest, log_before) == 1, blob
    counters = front.counters()
    assert counters["blob_transfers"] == len(herd_image.blobs)
    assert counters["blob_joins"] >= len(herd_image.blobs)  # Distribution's own second GET, at least
    wait_until_stored(mirror.storage, [herd_image])
    assert broken_stored_blobs(mirror.storage) == []


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


@pytest.mark.parametrize("fault", ["cut_times", "reset_times"])
def test_a_blob_whose_connection_drops_twice_is_resumed_with_range_and_stored_intact(
    registry_factory, upstream, front_factory, tmp_path, fault
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/cut", layer_sizes=(2 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    with FaultyRelay(upstream.url, Faults(**{fault: 2}, only=layer)) as relay:
        front = front_factory(relay.url)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "first"))
        wait_until_stored(mirror.storage, [image])
    assert relay.faults.cut == [layer, layer]
    # one whole GET, then two asking for the rest from where each connection dropped (from the
    # start again when a reset came before any byte was read: a reset discards what was in flight)
    ranges = [seen.range for seen in relay.gets(layer)]
    assert ranges[0] is None and len(ranges) == 3
    assert all(r is None or (r.startswith("bytes=") and r.endswith("-")) for r in ranges[1:])
    assert any(ranges[1:]) or fault == "reset_times"
    counters = front.counters()
    assert (counters["blob_resumes"], counters["blob_failures"]) == (2, 0)
    assert counters["blob_transfers"] == len(image.blobs)  # one each: the resumed one was not started over
    assert broken_stored_blobs(mirror.storage) == []


def test_a_blob_that_keeps_dropping_fails_after_a_few_resumptions_and_nothing_broken_is_kept(
    registry_factory, upstream, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/cut", layer_sizes=(2 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    with FaultyRelay(upstream.url, Faults(cut_times=100, only=layer)) as relay:
        front = front_factory(relay.url)
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        with pytest.raises(CommandError):
            pull_image(image, mirror.host, tmp_path / "first")
        time.sleep(1)  # Distribution's background store of the same blob ends with the same cut
        assert not is_stored(str(mirror.storage), image.repo, layer)
        assert front.counters()["blob_failures"] >= 1
        # each transfer: one GET and MAX_RESUMES (3) Range requests, then it gives up
        per_transfer = len(relay.gets(layer)) / front.counters()["blob_failures"]
        assert per_transfer <= 4
        relay.faults.cut_times = 0
        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "second"))
    assert broken_stored_blobs(mirror.storage) == []


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
    assert broken_stored_blobs(mirror.storage) == []


def test_front_logs_in_to_a_basic_auth_upstream_that_distribution_cannot(
    registry_factory, htpasswd_upstream, upstream_credentials, front_factory, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", htpasswd_upstream.host, creds=upstream_credentials.pair()
    )
    front = front_factory(htpasswd_upstream.url, upstream_credentials)
    mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

    assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "p"))


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

        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "p"))

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
        assert_pulled_intact(test_images.oci, pulled)
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
    wait_until_stored(mirror.storage, [image])
    upstream.stop()

    assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "mid-run"))
    mirror.stop()
    mirror.start()  # Distribution alone panics here: its start-up probe of the upstream fails
    assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "restarted"))


def test_front_memory_stays_small_while_two_clients_read_a_large_blob(tmp_path):
    size = int(os.environ.get("REGISTRY_CACHE_TEST_FRONT_BLOB_MIB", "256")) * MiB
    seen = front_memory(size, tmp_path, readers=2, timeout=120)
    print(f"\nfront peak RSS serving a {size // MiB} MiB blob to 2 readers: {seen.peak_kib / 1024:.1f} MiB")
    assert seen.received == [seen.digest, seen.digest]
    assert seen.upstream_gets == 1
    assert seen.peak_kib < 64 * 1024
