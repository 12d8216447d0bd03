"""The endpoint's own blob answers: which requests it sends from the cache, which ranges, which redirects."""

from __future__ import annotations

import os

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from registry_cache import cachelayout, routing
from registry_cache.endpoint import blobs, protocol

DIGEST = "sha256:" + "ab" * 32
BLOB = f"/v2/library/alpine/blobs/{DIGEST}"


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 100, blobs.Slice(0, 100, False)),
    ("bytes=10-19", 100, blobs.Slice(10, 10, True)),
    ("bytes=90-", 100, blobs.Slice(90, 10, True)),
    ("bytes=90-500", 100, blobs.Slice(90, 10, True)),  # a last byte past the end means the end
    ("bytes=-7", 100, blobs.Slice(93, 7, True)),
    ("bytes=-500", 100, blobs.Slice(0, 100, True)),  # more than all means all
    ("bytes= 1 - 2 ", 100, blobs.Slice(1, 2, True)),
])
def test_a_single_satisfiable_range_is_sent_as_go_serves_it(header, size, expected):
    assert blobs.plan(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=100-", "bytes=5-4", "bytes=-0", "bytes=-",
                                    "items=0-1", "bytes=x-1"])
def test_every_other_range_is_left_to_distribution(header):
    assert blobs.plan(header, 100) is None


def test_a_range_of_an_empty_blob_is_left_to_distribution():
    assert blobs.plan("bytes=0-", 0) is None
    assert blobs.plan(None, 0) == blobs.Slice(0, 0, False)


def test_only_plain_blob_gets_and_heads_are_taken():
    assert blobs.take("GET", BLOB, {}) == ("library/alpine", DIGEST)
    assert blobs.take("HEAD", BLOB, {}) == ("library/alpine", DIGEST)
    assert blobs.take("PUT", BLOB, {}) is None
    assert blobs.take("GET", f"/v2/library/alpine/manifests/{DIGEST}", {}) is None
    assert blobs.take("GET", BLOB, CIMultiDict({"If-None-Match": f'"{DIGEST}"'})) is None


def _link(storage, repo: str, digest: str, text: str) -> None:
    folder = cachelayout.layer_dir(str(storage), repo, digest)
    os.makedirs(folder)
    with open(os.path.join(folder, "link"), "w") as handle:
        handle.write(text)


def test_a_blob_is_found_only_through_a_link_of_its_own_repository(tmp_path):
    _link(tmp_path, "library/alpine", DIGEST, DIGEST)
    assert cachelayout.linked_blob(str(tmp_path), "library/alpine", DIGEST) == \
        cachelayout.blob_path(str(tmp_path), DIGEST)
    assert cachelayout.linked_blob(str(tmp_path), "library/other", DIGEST) is None
    _link(tmp_path, "library/wrong", DIGEST, "sha256:" + "cd" * 32)
    assert cachelayout.linked_blob(str(tmp_path), "library/wrong", DIGEST) is None


@pytest.mark.parametrize("repo", ["../x", "library/../alpine", "a/./b", "Library/a", "a%2fb", "a//b", ""])
def test_a_repository_name_outside_distributions_grammar_never_reaches_the_storage(tmp_path, repo):
    assert not routing.is_repository_name(repo)
    assert cachelayout.linked_blob(str(tmp_path), repo, DIGEST) is None


TABLE = routing.table_for([("hub", "https://registry-1.docker.io", 5000), ("ghcr", "https://ghcr.io", 5001)],
                          home="hub")


def _redirect(path: str, query: str = "", host: str = "cache.example:5000", method: str = "GET"):
    request = make_mocked_request(method, path + (f"?{query}" if query else ""), headers={"Host": host})
    return protocol.redirect(request, routing.route(TABLE, path, query), 5001, "https")


def test_another_mirrors_blob_is_redirected_to_its_own_port_under_the_clients_host_name():
    prefixed = _redirect(f"/v2/ghcr.io/owner/app/blobs/{DIGEST}", "a=1")
    assert prefixed is not None and prefixed.status == 307
    assert prefixed.headers["Location"] == f"https://cache.example:5001/v2/owner/app/blobs/{DIGEST}?a=1"
    by_ns = _redirect(f"/v2/owner/app/blobs/{DIGEST}", "ns=ghcr.io", host="[fd00::5]:5000")
    assert by_ns is not None and by_ns.headers["Location"] == f"https://[fd00::5]:5001/v2/owner/app/blobs/{DIGEST}"


@pytest.mark.parametrize(("path", "method", "host"), [
    (f"/v2/ghcr.io/owner/app/manifests/{DIGEST}", "GET", "cache:5000"),
    (f"/v2/ghcr.io/owner/app/blobs/{DIGEST}", "HEAD", "cache:5000"),
    (f"/v2/ghcr.io/owner/app/blobs/{DIGEST}", "GET", ""),
    (f"/v2/ghcr.io/owner/app/blobs/{DIGEST}", "GET", "evil.example\\@x:5000"),
])
def test_anything_but_a_blob_get_with_a_plain_host_is_forwarded(path, method, host):
    assert _redirect(path, method=method, host=host) is None
