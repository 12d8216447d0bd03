"""Several caches on one S3 bucket (a real single-node Ceph RGW): one shared cache, one cap, one gc."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import procs
from lab.agent import Cache, pull_all

pytestmark = pytest.mark.integration


def _blob_gets(upstream, digest: str) -> int:
    return sum(
        1 for e in upstream.json_log()
        if e.get("msg") == "response completed" and e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
    )


def _node(tmp_path: Path, name: str, upstream, s3_bucket, s3_account, **top) -> Cache:
    node = Cache(tmp_path / name)
    node.workdir.mkdir()
    storage = node.s3_storage(s3_account.endpoint, s3_bucket.bucket, s3_account.access_key,
                              s3_account.secret_key)
    node.write_config({"hub": {"upstream": upstream.url}}, storage=storage,
                      metrics_port=procs.free_port(), **top)
    return node


@pytest.fixture
def two_nodes(tmp_path, upstream, s3_bucket, s3_account):
    nodes = [_node(tmp_path, name, upstream, s3_bucket, s3_account) for name in ("node-a", "node-b")]
    yield nodes
    for node in nodes:
        node.stop()


def test_a_blob_pulled_through_one_node_is_a_hit_on_the_other_with_one_upstream_transfer(
    two_nodes, upstream, test_images, tmp_path
):
    a, b = two_nodes
    a.start()
    b.start()
    pull_all(a.host("hub"), test_images.all(), tmp_path / "cold-via-a")
    pull_all(b.host("hub"), test_images.all(), tmp_path / "warm-via-b")
    for blob in {blob.digest for img in test_images.all() for blob in img.blobs}:
        assert _blob_gets(upstream, blob) == 1, blob


def test_a_node_keeps_serving_the_shared_cache_when_the_other_stops(
    two_nodes, upstream, test_images, tmp_path
):
    a, b = two_nodes
    a.start()
    b.start()
    pull_all(a.host("hub"), test_images.all(), tmp_path / "cold-via-a")
    a.stop()
    upstream.stop()
    pull_all(b.host("hub"), test_images.all(), tmp_path / "via-b-alone")


def test_check_refuses_a_wrong_secret_naming_the_endpoint_and_s3s_code_and_changes_nothing(
    tmp_path, upstream, s3_bucket, s3_account
):
    node = _node(tmp_path, "node", upstream, s3_bucket, s3_account)
    node.password_file("s3.secret", "not-the-secret")
    for command in ("check", "apply"):
        result = node.agent(command, "--config", str(node.config))
        assert result.returncode != 0
        assert (f"{node.config}:2: storage.s3.secret_file: the bucket cannot be used: S3 endpoint "
                f"{s3_account.endpoint}, bucket {s3_bucket.bucket}: SignatureDoesNotMatch") in result.stderr
        assert "not-the-secret" not in result.stderr + result.stdout
    assert not (node.root / "mirrors").exists()


def test_apply_refuses_an_unreachable_endpoint_and_keeps_the_running_config(
    tmp_path, upstream, s3_bucket, s3_account, test_images
):
    node = _node(tmp_path, "node", upstream, s3_bucket, s3_account)
    assert node.agent("apply", "--config", str(node.config)).returncode == 0, "apply"
    applied = (node.root / "mirrors" / "hub" / "proxy.yml").read_text()
    dead = f"http://127.0.0.1:{procs.free_port()}"
    node.config.write_text(node.config.read_text().replace(s3_account.endpoint, dead))
    result = node.agent("apply", "--config", str(node.config))
    assert result.returncode != 0
    assert f"storage.s3.endpoint: the bucket cannot be used: S3 endpoint {dead}" in result.stderr
    assert "ConnectionError (Connection refused)" in result.stderr
    assert (node.root / "mirrors" / "hub" / "proxy.yml").read_text() == applied
