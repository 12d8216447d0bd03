"""gc's pure side: reading a Distribution storage, last-pull stamps, and the LRU plan between watermarks."""

import hashlib
import json
import os

from registry_cache import cachelayout
from registry_cache.gc import eviction, flow, scan
from registry_cache.usage import Usage

MB = 1_000_000


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(storage, data: bytes) -> str:
    digest = _digest(data)
    path = cachelayout.blob_path(str(storage), digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return digest


def _link(path, digest: str, mtime: float) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "link"), "w") as handle:
        handle.write(digest)
    os.utime(os.path.join(path, "link"), (mtime, mtime))


def _image(storage, repo: str, tag: str, layers: list[bytes], mtime: float = 1000.0) -> dict:
    """Store an image as Distribution does: blobs, a manifest, its revision, tag and layer links."""
    repo_dir = storage / "docker/registry/v2/repositories" / repo
    digests = [_put_blob(storage, data) for data in layers]
    manifest = json.dumps({"schemaVersion": 2, "config": {"digest": digests[0]},
                           "layers": [{"digest": d} for d in digests[1:]]}).encode()
    top = _put_blob(storage, manifest)
    _link(repo_dir / "_manifests/revisions/sha256" / top.split(":")[1], top, mtime)
    _link(repo_dir / "_manifests/tags" / tag / "current", top, mtime)
    for d in digests:
        _link(repo_dir / "_layers/sha256" / d.split(":")[1], d, mtime)
    return {"digest": top, "blobs": digests}


def test_scan_finds_each_image_with_its_blobs_and_the_latest_of_its_stamps(tmp_path):
    shared = b"base layer" * 1000
    a = _image(tmp_path, "library/a", "v1", [b"cfg-a", shared, b"a" * 10], mtime=1000)
    _image(tmp_path, "b", "v1", [b"cfg-b", shared], mtime=2000)
    usage = Usage(manifests={"library/a:v1": 5000.0})

    inventory = scan.scan("hub", str(tmp_path), usage)

    found = {i.name: i for i in inventory.images}
    assert set(found) == {"library/a:v1", "b:v1"}
    assert found["library/a:v1"].blobs == {a["digest"], *a["blobs"]}
    assert found["library/a:v1"].last_pull == 5000.0  # from the log, later than the link
    assert found["b:v1"].last_pull == 2000.0  # never seen in the log: when it was stored
    assert inventory.orphan_bytes() == 0


def test_plan_evicts_least_recently_pulled_from_high_to_low_watermark_and_spares_shared_blobs(tmp_path):
    shared = os.urandom(2 * MB)
    _image(tmp_path, "old", "v1", [b"c1", shared, os.urandom(3 * MB)], mtime=1000)
    _image(tmp_path, "older", "v1", [b"c2", os.urandom(3 * MB)], mtime=500)
    _image(tmp_path, "new", "v1", [b"c3", shared, os.urandom(2 * MB)], mtime=3000)
    inventory = scan.scan("hub", str(tmp_path))
    assert 10 * MB < inventory.used < 10.1 * MB

    plan = eviction.plan({"hub": inventory}, {"hub": 8 * MB}, now=10_000, keep_recent=0)

    assert [i.name for i in plan.evict] == ["older:v1", "old:v1"]  # 10 MB > 7.2 MB; down to <= 6.4 MB
    assert plan.mirrors["hub"].after < 5 * MB  # the shared layer stays: "new" uses it
    assert eviction.plan({"hub": inventory}, {"hub": 12 * MB}, now=10_000, keep_recent=0).evict == []


def test_plan_never_evicts_an_image_pulled_within_keep_recent(tmp_path):
    _image(tmp_path, "a", "v1", [b"c1", os.urandom(3 * MB)], mtime=9_900)
    inventory = scan.scan("hub", str(tmp_path))

    plan = eviction.plan({"hub": inventory}, {"hub": 2 * MB}, now=10_000, keep_recent=600)

    assert plan.evict == [] and "pulled within the last 600 s" in plan.notes[0]


def test_the_whole_cache_cap_evicts_across_mirrors_oldest_first(tmp_path):
    _image(tmp_path / "hub", "a", "v1", [b"c1", os.urandom(3 * MB)], mtime=2000)
    _image(tmp_path / "ghcr", "b", "v1", [b"c2", os.urandom(3 * MB)], mtime=1000)
    inventories = {m: scan.scan(m, str(tmp_path / m)) for m in ("hub", "ghcr")}

    plan = eviction.plan(inventories, {"hub": None, "ghcr": None}, total_cap=6 * MB, now=10_000,
                         keep_recent=0)

    assert [(i.mirror, i.name) for i in plan.evict] == [("ghcr", "b:v1")]


def test_unlink_removes_the_evicted_images_links_but_not_a_layer_a_kept_image_uses(tmp_path):
    shared = b"shared"
    gone = _image(tmp_path, "r", "old", [b"c1", shared, b"only-old"])
    kept = _image(tmp_path, "r", "new", [b"c2", shared])
    inventory = scan.scan("hub", str(tmp_path))
    evict = [i for i in inventory.images if i.tags == ("old",)]

    flow.unlink(inventory, evict)

    repo = tmp_path / "docker/registry/v2/repositories/r"
    assert not (repo / "_manifests/tags/old").exists()
    assert not (repo / "_manifests/revisions/sha256" / gone["digest"].split(":")[1]).exists()
    assert not (repo / "_layers/sha256" / _digest(b"only-old").split(":")[1]).exists()
    assert (repo / "_layers/sha256" / _digest(shared).split(":")[1] / "link").exists()
    assert (repo / "_manifests/tags/new/current/link").read_text() == kept["digest"]


def test_usage_stamps_completed_manifest_and_blob_pulls_only():
    usage = Usage()
    blob = "sha256:" + "b" * 64
    assert usage.observe({"http.request.method": "HEAD", "http.response.status": 200,
                          "http.request.uri": "/v2/library/alpine/manifests/3.19"}, now=10)
    assert usage.observe({"http.request.method": "GET", "http.response.status": 200,
                          "http.request.uri": f"/v2/library/alpine/blobs/{blob}?ns=x"}, now=11)
    assert not usage.observe({"http.request.method": "GET", "http.response.status": 404,
                              "http.request.uri": "/v2/x/manifests/latest"}, now=12)
    assert not usage.observe({"http.request.method": "PUT", "http.response.status": 200,
                              "http.request.uri": "/v2/x/manifests/latest"}, now=13)
    assert usage.manifests == {"library/alpine:3.19": 10} and usage.blobs == {blob: 11}
    assert usage.last_pull("library/alpine", ["3.19", "sha256:" + "c" * 64]) == 10
