"""Proves the test lab itself: test images round-trip, and the auth upstreams behave
like the real registries the mirrors will face."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from box.run import CommandError, output
from lab import images, netem, oci_layout, procs
from lab.registry import start_registry

pytestmark = pytest.mark.integration


def _get(url: str):
    """(status, headers looked up case-insensitively, body) of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.mark.parametrize("kind", ["oci", "docker", "index"])
def test_each_kind_of_test_image_pulls_back_with_the_pushed_digest(
    kind, upstream, test_images, tmp_path
):
    image = getattr(test_images, kind)

    by_tag = images.pull(image.ref(upstream.host), tmp_path / "tag", all_images=kind == "index")
    by_digest = images.pull(
        image.ref(upstream.host, by_digest=True), tmp_path / "digest", all_images=kind == "index"
    )

    assert by_tag.digest == image.digest
    assert by_digest.digest == image.digest
    for blob in image.blobs:
        stored = by_tag.dest / blob.digest.split(":", 1)[1]
        assert stored.stat().st_size == blob.size


def test_test_images_have_the_manifest_formats_and_platforms_asked_for(test_images):
    assert test_images.oci.media_type == oci_layout.OCI_MANIFEST
    assert len(test_images.oci.layers) == 4
    assert test_images.docker.media_type == oci_layout.DOCKER_MANIFEST
    assert all(
        layer.media_type.startswith("application/vnd.docker.")
        for layer in test_images.docker.layers
    )
    assert test_images.index.media_type == oci_layout.OCI_INDEX
    assert [p.architecture for p in test_images.index.platforms] == ["amd64", "arm64"]
    every_layer = [layer.digest for image in test_images.all() for layer in image.layers]
    assert len(every_layer) == len(set(every_layer)), "layers must not be shared between images"


def test_test_image_layers_are_the_same_bytes_every_run(tmp_path):
    first = oci_layout.write_image_layout(tmp_path / "a", "test/oci", "v1", [4096, 1000])
    second = oci_layout.write_image_layout(tmp_path / "b", "test/oci", "v1", [4096, 1000])

    assert (first / "index.json").read_text() == (second / "index.json").read_text()


def test_token_upstream_refuses_an_anonymous_pull(token_upstream, token_test_images, tmp_path):
    status, headers, _ = _get(f"{token_upstream.url}/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer realm=")

    with pytest.raises(CommandError) as refused:
        images.pull(token_test_images.oci.ref(token_upstream.host), tmp_path / "anon")
    assert "authentication required" in refused.value.stderr


def test_token_upstream_serves_a_pull_with_the_right_credentials(
    token_upstream, token_test_images, upstream_credentials, token_server, tmp_path
):
    image = token_test_images.index

    pulled = images.pull(
        image.ref(token_upstream.host),
        tmp_path / "pulled",
        all_images=True,
        creds=upstream_credentials.pair(),
    )

    assert pulled.digest == image.digest
    granted = [r for r in token_server.requests if r.account == upstream_credentials.username]
    assert any(f"repository:{image.repo}:pull" in r.scopes for r in granted)


def test_token_upstream_refuses_a_wrong_password(
    token_upstream, token_test_images, upstream_credentials, tmp_path
):
    wrong = (upstream_credentials.username, upstream_credentials.password + "x")

    with pytest.raises(CommandError) as refused:
        images.pull(token_test_images.oci.ref(token_upstream.host), tmp_path / "x", creds=wrong)

    assert "incorrect username or password" in refused.value.stderr
    assert upstream_credentials.password not in str(refused.value)


def test_htpasswd_upstream_asks_for_basic_auth(htpasswd_upstream, upstream_credentials, tmp_path):
    status, headers, _ = _get(f"{htpasswd_upstream.url}/v2/")

    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    image = images.push_oci_image(
        tmp_path / "layouts", htpasswd_upstream.host, creds=upstream_credentials.pair()
    )
    pulled = images.pull(
        image.ref(htpasswd_upstream.host), tmp_path / "p", creds=upstream_credentials.pair()
    )
    assert pulled.digest == image.digest


def test_registry_debug_endpoint_answers_on_its_own_loopback_port(upstream):
    status, _, body = _get(f"{upstream.debug_url}/debug/vars")

    assert status == 200
    assert "registry" in json.loads(body)
    assert upstream.debug_port != upstream.port


def test_stopped_registry_frees_its_port_and_restarts_on_it(upstream):
    upstream.stop()
    procs.wait_until_closed("127.0.0.1", upstream.port)

    upstream.start()

    assert _get(f"{upstream.url}/v2/")[0] == 200


def test_a_registry_that_cannot_start_fails_with_its_log(tmp_path):
    with pytest.raises(procs.HarnessError) as failed:
        start_registry(tmp_path / "bad", extra={"storage": {"nosuchdriver": {}}})

    assert "exited" in str(failed.value)
    assert not procs.stop_all()


def test_throttled_link_reaches_a_registry_in_its_namespace_and_leaves_nothing(tmp_path):
    with netem.create_link(rate="200mbit", delay_ms=10) as link:
        try:
            inside = netem.start_throttled_registry(tmp_path / "wan", link)
            assert inside.host.startswith(link.ns_addr + ":")
            image = images.push_oci_image(tmp_path / "layouts", inside.host)
            assert images.pull(image.ref(inside.host), tmp_path / "p").digest == image.digest
        finally:
            procs.stop_all()

    assert link.namespace not in output(["ip", "netns", "list"])
    assert link.host_if not in output(["ip", "-br", "link"])
