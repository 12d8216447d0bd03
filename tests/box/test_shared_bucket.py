"""The box keeps its cache in an S3 bucket: a real single-node Ceph RGW inside the test's namespace.

The gateway listens on the namespace's loopback, which the box booted in QEMU (the VirtualBox
box's disk, see conftest.py) reaches through user-mode NAT at 10.0.2.2, as a VirtualBox VM
reaches its host. The box is re-applied with `storage:` naming a bucket on it (access key
and secret file), an image is pulled through it with skopeo, the bucket is listed from the
namespace side, and the box's original config is applied again afterwards.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_cache.s3 import Bucket

from lab import boot, images
from lab.ceph import CephCluster, start_cluster
from lab.machines import Machine

pytestmark = [pytest.mark.box, pytest.mark.destructive]

CONFIG_FOLDER = "/srv/cache-config"  # where conftest.py applies the QEMU-booted box's config
UPSTREAM_SECRET = "secrets/upstream.password"
S3_SECRET = "secrets/s3.secret"


@pytest.fixture(scope="module")
def rgw(machine: Machine, lab) -> Iterator[CephCluster]:
    """A single-node Ceph cluster with its S3 gateway on the namespace's 127.0.0.1."""
    if machine.provider != "virtualbox":
        pytest.skip("the gateway is on the namespace's loopback: only QEMU's NAT (the VirtualBox "
                    "box's disk) reaches it")
    with lab.namespace.entered():
        cluster = start_cluster()
        try:
            yield cluster
        finally:
            cluster.stop()


def _blob_digests(bucket: Bucket, mirror: str) -> set[str]:
    """The digests of the blobs Distribution stored under one mirror's prefix in the bucket."""
    found = set()
    for key, _size in bucket.list(f"{mirror}/docker/registry/v2/blobs/"):
        parts = key.split("/")
        if parts[-1] == "data":
            found.add(f"{parts[-4]}:{parts[-2]}")
    return found


def test_a_box_with_storage_in_a_ceph_bucket_stores_pulled_blobs_there_and_shows_the_shared_cache(
    machine: Machine, lab, rgw: CephCluster, tmp_path: Path
):
    account = rgw.create_account("box")
    bucket = Bucket(account.endpoint, account.region, f"box-{secrets.token_hex(4)}",
                    account.access_key, account.secret_key)
    bucket.create()
    port = account.endpoint.rsplit(":", 1)[1]
    config: dict[str, Any] = {
        **machine.config,
        "storage": {"path": "/var/lib/registry-cache-shared",
                    "s3": {"endpoint": f"http://{boot.QEMU_NAT_HOST}:{port}", "bucket": bucket.bucket,
                           "access_key": account.access_key, "secret_file": S3_SECRET}},
    }
    original = machine.config
    try:
        applied = boot.apply_config(machine, CONFIG_FOLDER, config, {
            UPSTREAM_SECRET: machine.secret + "\n", S3_SECRET: account.secret_key + "\n"},
            timeout=300)
        assert account.secret_key not in applied, "apply printed the S3 secret"
        machine.config = config
        machine.wait_all_serving()

        pulled = images.pull(lab.image.ref(machine.mirror_host("team")), tmp_path / "pull", timeout=300)
        assert pulled.digest == lab.image.digest
        stored = _blob_digests(bucket, "team")
        for layer in lab.image.layers:
            assert layer.digest in stored, f"{layer.digest} not in the bucket: {sorted(stored)}"

        layer_bytes = sum(layer.size for layer in lab.image.layers)
        status = machine.wait_until(
            lambda s: next(m for m in s if m["name"] == "team")["storage_bytes"] >= layer_bytes,
            "the shared cache's size counts the pulled layers")
        team = next(m for m in status if m["name"] == "team")
        assert team["shared"] and bucket.bucket in team["shared"], team
        assert team["shared_problem"] is None, team
        assert team["shared_nodes"], team
        text = machine.host.check_output("registry-cache status --no-rate-limit")
        assert f"team: shared cache s3://{bucket.bucket}/" in text, text
        assert "node(s) serve it" in text, text
        assert account.secret_key not in text
    finally:
        machine.config = original
        boot.apply_config(machine, CONFIG_FOLDER, original, {UPSTREAM_SECRET: machine.secret + "\n"},
                          timeout=300)
