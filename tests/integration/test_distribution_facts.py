"""Pins what Debian's Distribution 2.8.2 does in proxy mode, the facts the agent is built on.

If one of these fails after a `docker-registry` upgrade, the agent's workaround for it
(offline start, basic-auth warning, own hit/miss counting) needs another look.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from registry_cache.cachelayout import is_stored

from box.run import CommandError
from box.wait import wait_until
from lab import images
from lab.images import pull_image

pytestmark = pytest.mark.integration


def _debug_vars(registry) -> dict:
    with urllib.request.urlopen(f"{registry.debug_url}/debug/vars", timeout=5) as resp:
        return json.loads(resp.read())["registry"]


@pytest.fixture
def warm_proxy(registry_factory, upstream, test_images, tmp_path):
    """A proxy of `upstream` that has pulled all three test images once."""
    proxy = registry_factory("proxy", proxy={"remoteurl": upstream.url})
    for image in test_images.all():
        pull_image(image, proxy.host, tmp_path / f"cold-{image.kind}")
    # the proxy stores what it streamed in the background: let it finish before a test stops it
    _wait_until_stored(proxy, test_images.all())
    return proxy


def _wait_until_stored(proxy, imgs, timeout: float = 30) -> None:
    pending = [(img.repo, b.digest) for img in imgs for b in img.blobs]

    def stored() -> bool:
        pending[:] = [b for b in pending if not is_stored(str(proxy.storage), *b)]
        return not pending

    wait_until(stored, "the proxy storing every blob", timeout=timeout,
               detail=lambda: f"missing {pending}", error=AssertionError)


def test_proxy_serves_cached_images_by_tag_and_digest_while_upstream_is_down(
    warm_proxy, upstream, test_images, tmp_path
):
    upstream.stop()

    for image in test_images.all():
        assert pull_image(image, warm_proxy.host, tmp_path / f"t-{image.kind}").digest == image.digest
        by_digest = pull_image(image, warm_proxy.host, tmp_path / f"d-{image.kind}", by_digest=True)
        assert by_digest.digest == image.digest


def test_proxy_panics_at_start_when_upstream_is_unreachable(warm_proxy, upstream):
    upstream.stop()
    warm_proxy.stop()

    warm_proxy.start(wait=False)
    status = warm_proxy.process.wait(timeout=20)

    assert status == 2
    assert f'panic: Get "{upstream.url}/v2/": dial tcp' in warm_proxy.log_text()


def test_readonly_registry_serves_what_the_proxy_cached(
    warm_proxy, registry_factory, upstream, test_images, tmp_path
):
    upstream.stop()
    warm_proxy.stop()

    readonly = registry_factory("readonly", storage=warm_proxy.storage, readonly=True)

    for image in test_images.all():
        assert pull_image(image, readonly.host, tmp_path / f"t-{image.kind}").digest == image.digest
        by_digest = pull_image(image, readonly.host, tmp_path / f"d-{image.kind}", by_digest=True)
        assert by_digest.digest == image.digest


def test_proxy_debug_counters_call_a_cold_pull_all_hits(
    registry_factory, upstream, test_images, tmp_path
):
    proxy = registry_factory("proxy", proxy={"remoteurl": upstream.url})
    image = test_images.oci

    pull_image(image, proxy.host, tmp_path / "cold")

    blobs = _debug_vars(proxy)["proxy"]["blobs"]
    assert blobs["Misses"] == 0
    assert blobs["Hits"] == blobs["Requests"] > 0
    assert blobs["BytesPulled"] == 0


def test_proxy_logs_one_scheduler_entry_per_blob_and_manifest_it_fetches(
    registry_factory, upstream, test_images, tmp_path
):
    proxy = registry_factory("proxy", proxy={"remoteurl": upstream.url})
    image = test_images.index

    def scheduled() -> set[str]:
        prefix = "Adding new scheduler entry for "
        return {
            e["msg"][len(prefix) :].split(" ", 1)[0]
            for e in proxy.json_log()
            if e.get("msg", "").startswith(prefix)
        }

    pull_image(image, proxy.host, tmp_path / "cold")
    _wait_until_stored(proxy, [image])
    time.sleep(0.5)  # the scheduler entry is logged just after the blob is committed
    after_cold = scheduled()
    pull_image(image, proxy.host, tmp_path / "warm")

    expected = {f"{image.repo}@{d.digest}" for d in (*image.blobs, *image.manifests)}
    assert after_cold == expected
    assert scheduled() == after_cold


def test_proxy_fetches_each_blob_twice_from_upstream_on_a_cold_pull(
    registry_factory, upstream, test_images, tmp_path
):
    proxy = registry_factory("proxy", proxy={"remoteurl": upstream.url})
    image = test_images.oci
    layer = image.layers[0].digest

    pull_image(image, proxy.host, tmp_path / "cold")

    upstream_gets = [
        e
        for e in upstream.json_log()
        if e.get("msg") == "response completed"
        and e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{layer}")
    ]
    assert len(upstream_gets) == 2


def test_response_completed_log_line_names_method_uri_status_and_bytes(warm_proxy, test_images):
    layer = test_images.oci.layers[0]

    lines = [
        e
        for e in warm_proxy.json_log()
        if e.get("msg") == "response completed"
        and e.get("http.request.uri") == f"/v2/{test_images.oci.repo}/blobs/{layer.digest}"
    ]

    assert lines
    assert lines[0]["http.request.method"] == "GET"
    assert lines[0]["http.response.status"] == 200
    assert lines[0]["http.response.written"] == layer.size


def test_proxy_with_credentials_pulls_from_a_token_auth_upstream(
    registry_factory, token_upstream, token_test_images, upstream_credentials, tmp_path
):
    proxy = registry_factory(
        "proxy",
        proxy={
            "remoteurl": token_upstream.url,
            "username": upstream_credentials.username,
            "password": upstream_credentials.password,
        },
    )

    for image in token_test_images.all():
        assert pull_image(image, proxy.host, tmp_path / image.kind).digest == image.digest


def test_proxy_of_a_basic_auth_upstream_answers_manifest_unknown(
    registry_factory, htpasswd_upstream, upstream_credentials, tmp_path
):
    image = images.push_oci_image(
        tmp_path / "layouts", htpasswd_upstream.host, creds=upstream_credentials.pair()
    )
    proxy = registry_factory(
        "proxy",
        proxy={
            "remoteurl": htpasswd_upstream.url,
            "username": upstream_credentials.username,
            "password": upstream_credentials.password,
        },
    )

    with pytest.raises(CommandError) as failed:
        pull_image(image, proxy.host, tmp_path / "p")

    assert "manifest unknown" in failed.value.stderr


@pytest.mark.parametrize("disabled", [False, True])
def test_accesslog_disabled_drops_the_apache_style_lines_only(
    registry_factory, upstream, test_images, tmp_path, disabled
):
    extra = {"log": {"accesslog": {"disabled": True}}} if disabled else None
    proxy = registry_factory("proxy", proxy={"remoteurl": upstream.url}, extra=extra)

    pull_image(test_images.oci, proxy.host, tmp_path / "p")

    access_lines = [
        line for line in proxy.log_text().splitlines() if line.startswith("127.0.0.1 - -")
    ]
    completed = [e for e in proxy.json_log() if e.get("msg") == "response completed"]
    assert bool(access_lines) is not disabled
    assert completed
