"""Proves the lab's Ceph: a single-node cluster whose S3 gateway takes writes, and leaves nothing behind."""

from __future__ import annotations

import pytest
from registry_cache.s3 import Bucket, S3Error

from box.run import pid_alive
from lab.ceph import start_cluster

pytestmark = pytest.mark.integration


def test_the_ceph_gateway_stores_and_lists_objects_in_a_bucket(s3_bucket):
    s3_bucket.put("docker/registry/v2/blobs/x/data", b"layer bytes")
    assert s3_bucket.get("docker/registry/v2/blobs/x/data") == b"layer bytes"
    assert list(s3_bucket.list("docker/")) == [("docker/registry/v2/blobs/x/data", 11)]
    s3_bucket.probe_write("docker")


def test_the_ceph_gateway_refuses_a_wrong_secret_with_s3s_error_code(s3_account, s3_bucket):
    wrong = Bucket(s3_account.endpoint, s3_account.region, s3_bucket.bucket,
                   s3_account.access_key, "not-the-secret")
    with pytest.raises(S3Error) as caught:
        wrong.probe_write()
    assert caught.value.code == "SignatureDoesNotMatch"
    assert "not-the-secret" not in str(caught.value)


def test_a_stopped_ceph_cluster_leaves_no_process_and_no_folder():
    cluster = start_cluster()
    pids = [process.pid for process in cluster.processes]
    assert len(pids) == 3
    assert cluster.started_in < 15
    cluster.stop()
    assert not any(pid_alive(pid) for pid in pids)
    assert not cluster.root.exists()
