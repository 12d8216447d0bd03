"""`warm:` images pulled through a real mirror (`registry-cache serve`) before any client asks."""

from __future__ import annotations

import time

import pytest

from box.wait import wait_until
from lab import images
from lab.agent import TlsCache

pytestmark = pytest.mark.integration


def _upstream_blob_gets(upstream) -> int:
    return sum(1 for e in upstream.json_log()
               if e.get("http.request.method") == "GET" and "/blobs/" in str(e.get("http.request.uri", "")))


def _wait_warm(cache, name: str, timeout: float = 60) -> dict:
    def warmed() -> dict | None:
        status = cache.status()[name]
        return status if status["warm_last_run"] else None

    return wait_until(warmed, f"a warm outcome for {name}", timeout=timeout, interval=0.5,
                      detail=lambda: cache.log()[-3000:], error=AssertionError)


def test_warm_images_are_cached_after_start_so_the_first_client_pull_is_a_hit(
    cache, upstream, test_images, tmp_path
):
    oci, index = test_images.oci, test_images.index
    cache.write_config({"hub": {"upstream": upstream.url, "warm": (
        f'["{oci.repo}:{oci.tag}", {{image: "{index.repo}@{index.digest}", '
        'platforms: [linux/amd64]}, "test/missing:v1"]'
    )}})
    cache.start()
    status = _wait_warm(cache, "hub")
    assert status["warm_images"] == 2
    assert len(status["warm_failures"]) == 1 and "test/missing:v1" in status["warm_failures"][0]
    assert status["healthy"]  # a failed warm is reported, nothing more
    time.sleep(1.0)  # the mirror stores what it fetched in the background
    before = _upstream_blob_gets(upstream)
    hits = cache.status()["hub"]["hits"]

    assert images.pull(oci.ref(cache.host("hub")), tmp_path / "oci").digest == oci.digest
    amd64 = images.pull(index.ref(cache.host("hub"), by_digest=True), tmp_path / "index")

    assert amd64.digest == index.platforms[0].manifest.digest
    assert _upstream_blob_gets(upstream) == before  # no blob came from the upstream
    pulled = len(oci.blobs) + 1 + len(index.platforms[0].layers)
    cache.wait_state("hub", hits=hits + pulled)  # every blob a hit


def test_warm_command_shows_progress_and_fails_when_an_image_cannot_be_warmed(cache, upstream, test_images):
    docker = test_images.docker
    other_name = upstream.url.replace("127.0.0.1", "localhost")  # one mirror per registry (name)
    cache.write_config({"hub": {"upstream": upstream.url, "warm": f'["{docker.repo}:{docker.tag}"]'},
                        "other": {"upstream": other_name, "warm": '["test/missing:v1"]'}})
    cache.start()

    ok = cache.agent("warm", "hub", timeout=120)
    bad = cache.agent("warm", timeout=120)

    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"blob {len(docker.blobs)}/{len(docker.blobs)}" in ok.stdout
    assert "1 image(s) warm, 0 failed" in ok.stdout
    assert bad.returncode == 1
    assert "other: 0 image(s) warm, 1 failed" in bad.stdout


def test_warm_pulls_through_a_tls_mirror_with_client_login_using_a_login_of_its_own(
    tmp_path, upstream, test_images
):
    oci = test_images.oci
    secrets = tmp_path / "cache-host" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "alice.password").write_text("alice-pa55word\n")
    cache = TlsCache(tmp_path / "cache-host", {"one": upstream.url},
                     extra="auth:\n  users:\n    alice:\n      password_file: secrets/alice.password",
                     warm={"one": [f"{oci.repo}:{oci.tag}"]})
    try:
        cache.start()
        warmed = cache.agent("warm")
        assert warmed.returncode == 0, warmed.stdout + warmed.stderr
        assert "1 image(s) warm, 0 failed" in warmed.stdout
        assert f"through https://{cache.host('one')}" in warmed.stdout
        time.sleep(1.0)  # the mirror stores what it fetched in the background
        before = _upstream_blob_gets(upstream)
        certs = cache.client_files(tmp_path / "client")
        pulled = images.pull(oci.ref(cache.host("one")), tmp_path / "pull",
                             cert_dir=certs / cache.host("one"), creds=("alice", "alice-pa55word"))
        assert pulled.digest == oci.digest
        assert _upstream_blob_gets(upstream) == before  # every blob was warm
    finally:
        cache.stop()
