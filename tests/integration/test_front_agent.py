"""The front as users run it: `registry-cache serve` mirrors whose upstream traffic goes through it.

The front's own behaviour (cuts, wrong bytes, memory) is proved in test_front.py against a
front the test starts itself; here the agent starts it, and the upstream's own access log is
the judge of what crossed the upstream link.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from box.run import CommandError
from box.sizes import MiB
from box.wait import wait_until
from lab import images
from lab.agent import Cache
from lab.fake_upstream import Faults, FaultyRelay, StorageCdn
from lab.images import pull_image
from lab.pullcheck import assert_pulled_intact

pytestmark = pytest.mark.integration



def _pull_as_docker_does(image, host, dest):
    """Pull, retrying once after a 500 as `docker pull` retries a failed layer download.

    Distribution 2.8.2 answers 500 "invalid checksum digest format" when a request reads a
    blob's repository link while the registry is still writing it (its filesystem driver
    truncates, then writes): a race inside the registry, rare, with or without the front.
    """
    try:
        return pull_image(image, host, dest)
    except CommandError as exc:
        if "500" not in str(exc):
            raise
        return pull_image(image, host, dest.with_name(dest.name + "-retry"))


def _completed(upstream, since: int = 0) -> list[dict]:
    return [e for e in upstream.json_log()[since:] if e.get("msg") == "response completed"]


def _blob_gets(upstream, digest: str, since: int = 0) -> int:
    return sum(
        1 for e in _completed(upstream, since)
        if e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
    )


def _wait_settled(cache: Cache, name: str, **at_least: int) -> dict:
    """The mirror's state once every given counter reached its value and no transfer is in flight."""
    state: dict = {}

    def settled() -> bool:
        nonlocal state
        state = cache.state(name)
        return state.get("blobs_in_flight") == 0 and all(state.get(k, 0) >= v for k, v in at_least.items())

    wait_until(settled, f"mirror {name} counting {at_least}", timeout=30, interval=0.2,
               detail=lambda: f"last state {state}", error=AssertionError)
    time.sleep(1.5)  # one more state write: nothing else may still be counted
    return cache.state(name)


def test_eight_concurrent_cold_pulls_through_a_mirror_fetch_each_blob_once_from_the_upstream(
    cache, upstream, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "herd-layouts", upstream.host, repo="test/herd",
        layer_sizes=(8 * MiB, 4 * MiB, 6 * MiB, 2 * MiB),
    )
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    log_before = len(upstream.json_log())

    with ThreadPoolExecutor(8) as pool:
        pulls = list(pool.map(
            lambda i: _pull_as_docker_does(image, cache.host("hub"), tmp_path / f"pull-{i}"), range(8)
        ))

    for result in pulls:
        assert_pulled_intact(image, result)
    for blob in image.blobs:
        assert _blob_gets(upstream, blob.digest, log_before) == 1, blob
    state = _wait_settled(cache, "hub", blob_transfers=len(image.blobs))
    assert state["blob_transfers"] == len(image.blobs)
    # the registry's own second GET at least; clients that come late are served from the cache
    assert state["blob_joins"] >= len(image.blobs)
    assert state["blob_failures"] == 0


def test_status_bytes_from_upstream_equal_the_upstream_access_log_for_a_cold_pull(
    cache, upstream, test_images, tmp_path
):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    before = _wait_settled(cache, "hub")["bytes_from_upstream"]  # the registry's start-up probe
    log_before = len(upstream.json_log())

    for image in test_images.all():
        pull_image(image, cache.host("hub"), tmp_path / image.kind)

    blobs = sum(len(image.blobs) for image in test_images.all())
    _wait_settled(cache, "hub", blob_transfers=len({b.digest for i in test_images.all() for b in i.blobs}))
    status = cache.status()["hub"]
    # a HEAD's `written` counts what Go's server discarded: no byte of it crossed the wire
    sent = sum(e.get("http.response.written", 0) for e in _completed(upstream, log_before)
               if e.get("http.request.method") != "HEAD")
    assert status["bytes_from_upstream"] - before == sent
    assert sent < 1.05 * sum(image.blob_bytes for image in test_images.all()) + 64 * 1024
    assert status["misses"] == len({b.digest for i in test_images.all() for b in i.blobs}) <= blobs
    cache.stop()
    assert list((cache.workdir / "cache" / "hub" / ".registry-cache-spool").iterdir()) == []


def test_basic_auth_upstream_pulls_with_password_file_credentials(
    cache, htpasswd_upstream, upstream_credentials, tmp_path
):
    pushed = images.push_test_images(tmp_path / "layouts", htpasswd_upstream.host,
                                     creds=upstream_credentials.pair())
    cache.write_config({"private": {
        "upstream": htpasswd_upstream.url,
        "username": upstream_credentials.username,
        "password_file": cache.password_file("registry.password", upstream_credentials.password),
    }})
    cache.start()

    for image in pushed.all():  # the client itself is anonymous: the mirror logs in
        assert_pulled_intact(image, pull_image(image, cache.host("private"), tmp_path / image.kind))
    state = cache.wait_state("private", mode="proxy")
    assert state["upstream_problem"] is None
    assert upstream_credentials.password not in cache.log() + json.dumps(cache.status())


def test_upstream_that_redirects_blobs_to_another_server_pulls(cache, upstream, test_images, tmp_path):
    with (
        StorageCdn(upstream.storage) as cdn,
        FaultyRelay(upstream.url, Faults(redirect_to=cdn.url)) as relay,
    ):
        cache.write_config({"hub": {"upstream": relay.url}})
        cache.start()
        for image in test_images.all():
            assert_pulled_intact(image, pull_image(image, cache.host("hub"), tmp_path / image.kind))
    for digest in {b.digest for image in test_images.all() for b in image.blobs}:
        assert len(cdn.gets(digest)) == 1, digest


def test_a_mirror_whose_front_cannot_start_serves_its_cache_read_only(cache, upstream):
    spool = cache.workdir / "cache" / "hub" / ".registry-cache-spool"
    spool.parent.mkdir(parents=True)
    spool.write_text("a file where the spool folder belongs\n")
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    state = cache.wait_state("hub", mode="read-only")
    assert "front cannot start" in state["upstream_problem"]
    assert "its front cannot start" in cache.log()
