"""The front never leaves a pull hanging, passes HEADs on as they are, and lets no repository read
another's blob: real `docker-registry` processes, skopeo, and a relay that misbehaves on cue.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
import urllib.error
import urllib.request

import pytest

from box.run import CommandError
from box.sizes import KiB, MiB
from box.wait import wait_until
from lab import images
from lab.fake_upstream import Faults, FaultyRelay
from lab.images import pull_image
from lab.pullcheck import assert_pulled_intact, broken_stored_blobs, wait_until_stored

pytestmark = pytest.mark.integration

HANG_LIMIT = 60.0  # no pull may take longer than this on any upstream misbehaviour


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param({"stall_times": 1}, id="stall"),
        pytest.param({"redirect_to": "http://127.0.0.1:99999"}, id="bad-redirect"),
        pytest.param({"reset_times": 1}, id="reset"),
        pytest.param({"cut_times": 1}, id="short-body"),
    ],
)
def test_no_pull_hangs_on_a_misbehaving_upstream_and_the_next_pull_works(
    registry_factory, upstream, front_factory, tmp_path, faults
):
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/faulty", layer_sizes=(2 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    with FaultyRelay(upstream.url, Faults(**faults, only=layer)) as relay:
        front = front_factory(relay.url)  # the front's own timeouts, as a mirror runs it
        mirror = registry_factory("mirror", proxy={"remoteurl": front.url})

        started = time.monotonic()
        try:
            first = pull_image(image, mirror.host, tmp_path / "first", timeout=HANG_LIMIT + 5)
            assert_pulled_intact(image, first)
        except CommandError as exc:  # failing is fine; hanging is not
            print(f"first pull failed: {str(exc)[-300:]}")
        took = time.monotonic() - started
        print(f"\n{next(iter(faults))}: the first pull ended after {took:.1f} s")
        assert took < HANG_LIMIT

        relay.faults.redirect_to = None  # the fault is gone: the blob is not stuck in flight anywhere
        assert_pulled_intact(image, pull_image(image, mirror.host, tmp_path / "second", timeout=HANG_LIMIT))
        wait_until_stored(mirror.storage, [image])
    assert front.counters()["blobs_in_flight"] == 0
    assert broken_stored_blobs(mirror.storage) == []


def test_a_head_the_upstream_answers_without_length_is_passed_on_without_one(
    upstream, front_factory, tmp_path
):
    image = images.push_oci_image(tmp_path / "layouts", upstream.host, repo="test/head")
    blob = image.layers[0]
    with FaultyRelay(upstream.url, Faults(head_without_length=True)) as relay:
        front = front_factory(relay.url)
        connection = http.client.HTTPConnection(front.host, front.port, timeout=10)
        try:
            connection.request("HEAD", f"/v2/{image.repo}/blobs/{blob.digest}")
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 200
            assert answer.getheader("Content-Length") is None  # not "0": the upstream said nothing
            assert answer.getheader("Docker-Content-Digest") == blob.digest
            # and the connection carries the next request: no stray body bytes were sent
            connection.request("GET", "/v2/")
            assert connection.getresponse().status == 200
        finally:
            connection.close()


def test_a_request_for_another_repository_is_authorized_upstream_before_it_joins_a_transfer(
    upstream, front_factory, tmp_path
):
    # Distribution asks with a HEAD before its GET; the front must not rely on it: every GET
    # gets the upstream's answer for its own repository and credentials
    image = images.push_oci_image(
        tmp_path / "layouts", upstream.host, repo="test/owner", layer_sizes=(4 * MiB, 256 * KiB)
    )
    layer = image.layers[0].digest
    with FaultyRelay(upstream.url, Faults(pause=4.0, only=layer)) as relay:
        front = front_factory(relay.url)
        got: list[str] = []

        def owner() -> None:
            with urllib.request.urlopen(f"{front.url}/v2/test/owner/blobs/{layer}", timeout=30) as answer:
                got.append("sha256:" + hashlib.sha256(answer.read()).hexdigest())

        reader = threading.Thread(target=owner, daemon=True)
        reader.start()
        wait_until(lambda: relay.gets(layer), "the owner's GET reaching the upstream", timeout=20)

        # mid-transfer (the relay holds back the layer's second half), a repository the
        # upstream does not hold it in asks for the same digest
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{front.url}/v2/test/stranger/blobs/{layer}", timeout=30)
        assert refused.value.code == 404
        assert any(s.method == "HEAD" and "/test/stranger/" in s.path for s in relay.seen)

        # the owner's repository asking again joins the transfer without asking the upstream
        with urllib.request.urlopen(f"{front.url}/v2/test/owner/blobs/{layer}", timeout=30) as answer:
            assert "sha256:" + hashlib.sha256(answer.read()).hexdigest() == layer
        reader.join(timeout=30)
    assert got == [layer]
    assert len([s for s in relay.gets(layer) if "/test/owner/" in s.path]) == 1
    counters = front.counters()
    assert (counters["blob_transfers"], counters["blob_joins"]) == (1, 1)
