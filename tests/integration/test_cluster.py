"""Several caches on one S3 bucket (a real single-node Ceph RGW): one shared cache, one cap, one gc."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from registry_cache.s3 import Bucket

from box.run import CommandError
from box.sizes import KiB, MiB
from box.wait import wait_until
from lab import images, procs
from lab.agent import ClusterNode as Node
from lab.agent import pull_all
from lab.ceph import start_cluster

pytestmark = pytest.mark.integration


def _blob_gets(upstream, digest: str) -> int:
    return sum(
        1 for e in upstream.json_log()
        if e.get("msg") == "response completed" and e.get("http.request.method") == "GET"
        and e.get("http.request.uri", "").endswith(f"/blobs/{digest}")
    )


def _node(tmp_path: Path, name: str, upstream, s3_bucket, s3_account, **hub) -> Node:
    node = Node(tmp_path / name)
    node.workdir.mkdir()
    storage = node.s3_storage(s3_account.endpoint, s3_bucket.bucket, s3_account.access_key,
                              s3_account.secret_key)
    node.write_config({"hub": {"upstream": upstream.url, **hub}}, storage=storage,
                      metrics_port=procs.free_port())
    return node


def _nodes(tmp_path, upstream, s3_bucket, s3_account, **hub) -> list[Node]:
    return [_node(tmp_path, name, upstream, s3_bucket, s3_account, **hub) for name in ("node-a", "node-b")]


@pytest.fixture
def two_nodes(tmp_path, upstream, s3_bucket, s3_account):
    nodes = _nodes(tmp_path, upstream, s3_bucket, s3_account)
    yield nodes
    for node in nodes:
        node.stop()


CAP = 4_000_000  # five ~1.1 MB images overflow it; two fit under its low mark (80 %)


@pytest.fixture
def capped_nodes(tmp_path, upstream, s3_bucket, s3_account):
    """Two nodes on one bucket with a 4 MB cap, five images pulled through them, img0/img1 again last."""
    imgs = [images.push_oci_image(tmp_path / "layouts", upstream.host, repo=f"test/img{i}", tag="v1",
                                  layer_sizes=(1 * MiB, 64 * KiB)) for i in range(5)]
    nodes = _nodes(tmp_path, upstream, s3_bucket, s3_account, max_size=CAP)
    for node in nodes:
        node.start()
    for number, image in enumerate(imgs):
        _pull(nodes[number % 2], image, tmp_path / "pulls")
    time.sleep(1.0)
    for image in imgs[:2]:
        _pull(nodes[1], image, tmp_path / "pulls")
    time.sleep(2.0)  # both runners share their pull times (at the hold too)
    yield nodes, imgs
    for node in nodes:
        node.stop()


def _pull(node, image, dest: Path) -> str:
    return images.pull(image.ref(node.host("hub")), dest / f"{image.repo}-{time.monotonic_ns()}").digest


def _blob_bytes(bucket) -> int:
    return sum(size for key, size in bucket.list("hub/docker/registry/v2/blobs/") if key.endswith("/data"))


def _stored(bucket, digest: str) -> bool:
    hexdigest = digest.split(":", 1)[1]
    return any(bucket.list(f"hub/docker/registry/v2/blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"))


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

    def counted() -> dict | None:
        seen = {node.workdir.name: node.status()["hub"] for node in (a, b)}
        return seen if seen["node-a"]["bytes_served"] == seen["node-b"]["bytes_served"] else None

    # each runner writes its counters every few seconds: wait until both have counted the pulls
    seen = wait_until(counted, "both nodes' served bytes counted alike", timeout=20, interval=0.5,
                      error=AssertionError)
    assert seen["node-a"]["storage_bytes"] == seen["node-b"]["storage_bytes"] > 0
    assert sorted(seen["node-a"]["shared_nodes"]) == ["node-a proxy", "node-b proxy"]
    # each node's own traffic: what its front fetched upstream, what it served
    assert seen["node-a"]["blob_transfers"] > 0 and seen["node-b"]["blob_transfers"] == 0
    assert seen["node-a"]["bytes_served"] == seen["node-b"]["bytes_served"] > 0
    assert seen["node-a"]["shared"] == seen["node-b"]["shared"]


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


def test_one_gc_evicts_for_both_nodes_while_both_serve_pulls_and_none_fails(
    capped_nodes, s3_bucket, tmp_path
):
    (a, b), imgs = capped_nodes
    assert _blob_bytes(s3_bucket) > CAP * 0.9
    failures: list[str] = []
    served: list[tuple[str, float]] = []
    done = threading.Event()

    def pull_loop(node) -> None:
        while not done.is_set():
            image = imgs[len(served) % 2]
            try:
                assert _pull(node, image, tmp_path / "loop") == image.digest
                served.append((node.workdir.name, time.monotonic()))
            except (CommandError, AssertionError) as exc:
                failures.append(f"{node.workdir.name}: {exc}")

    loops = [threading.Thread(target=pull_loop, args=(node,)) for node in (a, b)]
    for loop in loops:
        loop.start()
    time.sleep(1.0)
    began = time.monotonic()
    result = a.agent("gc", "--keep-recent", "0", timeout=300)
    ended = time.monotonic()
    time.sleep(1.0)
    done.set()
    for loop in loops:
        loop.join(timeout=120)

    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr + a.log()[-3000:]
    assert "read-only on 2 node(s): node-a, node-b" in result.stdout
    during = {name for name, t in served if began <= t <= ended}
    print(f"gc took {ended - began:.1f} s; {len(served)} pulls served, {len(failures)} failed")
    assert failures == []
    assert during == {"node-a", "node-b"}
    for old in imgs[2:]:
        assert not any(_stored(s3_bucket, layer.digest) for layer in old.layers), old.repo
    assert _blob_bytes(s3_bucket) <= CAP * 0.8
    for node in (a, b):
        assert "serving read-only while `registry-cache gc` runs" in node.log()
        node.wait_state("hub", mode="proxy", hold=None)
        for recent in imgs[:2]:
            assert _pull(node, recent, tmp_path / "after") == recent.digest


def test_a_second_gc_leaves_it_to_the_holder_and_a_killed_holders_hold_expires_on_both_nodes(
    capped_nodes, tmp_path
):
    (a, b), imgs = capped_nodes
    gc_run = procs.start("registry-cache gc", [*a_agent(a), "gc", "--keep-recent", "0"],
                         tmp_path / "gc.log", env={**a.env, "REGISTRY_CACHE_HOLD_LEASE": "5"})
    for node in (a, b):
        node.wait_state("hub", mode="read-only", hold="gc", timeout=60)
    second = b.agent("gc", "--keep-recent", "0")
    assert second.returncode == 0, second.stderr
    assert "the shared cache is held by node-a (its gc runs); nothing to do here" in second.stdout
    gc_run.signal(signal.SIGKILL)
    gc_run.wait(10)
    killed = time.monotonic()
    for node in (a, b):
        node.wait_state("hub", mode="proxy", hold=None, timeout=60)
    print(f"both nodes back in proxy mode {time.monotonic() - killed:.1f} s after the gc node died")
    for node in (a, b):
        assert _pull(node, imgs[0], tmp_path / "after") == imgs[0].digest


def a_agent(node) -> list[str]:
    """argv of the agent command line for `node` (its root)."""
    from lab.agent import AGENT

    return [*AGENT, "--root", str(node.root)]


def test_with_the_object_store_down_pulls_fail_status_says_why_and_all_recovers_by_itself(
    tmp_path, upstream, test_images
):
    with start_cluster() as ceph:
        account = ceph.create_account()
        bucket = Bucket(account.endpoint, account.region, "down-test", account.access_key, account.secret_key)
        bucket.create()
        node = _node(tmp_path, "node", upstream, bucket, account)
        try:
            node.start()
            pull_all(node.host("hub"), [test_images.oci], tmp_path / "before")
            ceph.stop_gateway()
            began = time.monotonic()
            with pytest.raises(CommandError) as caught:
                images.pull(test_images.oci.ref(node.host("hub")), tmp_path / "while-down")
            print(f"a pull with the object store down failed after {time.monotonic() - began:.1f} s: "
                  f"{caught.value.stderr.strip().splitlines()[-1]}")
            status = node.status()["hub"]
            assert "the shared cache cannot be read" in status["shared_problem"]
            assert "ConnectionError (Connection refused)" in status["shared_problem"]
            ceph.start_gateway()
            pull_all(node.host("hub"), [test_images.oci], tmp_path / "after")
        finally:
            node.stop()
