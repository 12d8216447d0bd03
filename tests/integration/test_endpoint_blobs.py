"""The endpoint keeps blob bytes off its hop: its own mirror's warm blobs from the cache, others' redirected.

The lab of endpoint_lab.py (two real upstreams in the test's network namespace, the
agent's `serve` with two mirrors, `hub` first: its port is the endpoint), real clients (skopeo,
containerd's `ctr`). The registry on duty's log lines reach `serve`'s log prefixed `[hub]`: a
blob the endpoint sent from the cache leaves none there.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator

import pytest
import requests

from box.run import CommandError
from lab import images
from lab.agent import Cache, TlsCache
from lab.containerd import Containerd, write_hosts_dir
from tests.integration.endpoint_lab import HUB_HOST, OTHER_HOST, Lab, two_mirrors
from tests.integration.endpoint_lab import lab as lab  # the fixture

# the headers Distribution 2.8.2 answers a blob with, Date aside
BLOB_HEADERS = ("Accept-Ranges", "Cache-Control", "Content-Length", "Content-Range", "Content-Type",
                "Docker-Content-Digest", "Docker-Distribution-Api-Version", "Etag")
USER, PASSWORD = "ci", "s3cret-pass"


@pytest.fixture
def cache(lab: Lab) -> Iterator[Cache]:
    """`serve` with two mirrors, hub first, after one pull of hub's image through the endpoint."""
    c = Cache(lab.workdir / "cache-host")
    c.workdir.mkdir()
    two_mirrors(c)
    c.start()
    images.pull_image(lab.hub_images.oci, c.host("hub"), lab.workdir / "cold")
    _wait_for(lambda: _counts(c)["misses"] >= len(lab.hub_images.oci.blobs), "the cold pull's misses")
    yield c
    c.stop()


def _wait_for(check, what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _counts(cache: Cache, name: str = "hub") -> dict:
    return cache.status()[name]


def _registry_saw(cache: Cache, uri: str, mark: int = 0) -> list[dict]:
    """The requests for `uri` (no query) hub's registries logged after `mark` characters of log."""
    seen = []
    for line in cache.log()[mark:].splitlines():
        if not line.startswith("[hub] {"):
            continue
        entry = json.loads(line.split(" ", 1)[1])
        if str(entry.get("http.request.uri", "")).split("?", 1)[0] == uri:
            seen.append(entry)
    return seen


def _same_headers(ours: requests.Response, theirs: requests.Response) -> None:
    assert ours.status_code == theirs.status_code
    for name in BLOB_HEADERS:
        assert ours.headers.get(name) == theirs.headers.get(name), name


def test_a_warm_blob_of_the_endpoints_own_mirror_is_sent_from_the_cache_as_the_registry_would(
        lab: Lab, cache: Cache):
    image = lab.hub_images.oci
    blob = max(image.layers, key=lambda b: b.size)
    path = f"/v2/{image.repo}/blobs/{blob.digest}"
    before = _counts(cache)
    mark = len(cache.log())
    got = requests.get(f"http://{cache.host('hub')}{path}", timeout=30)
    upstream = requests.get(f"{lab.hub.url}{path}", timeout=30)
    _same_headers(got, upstream)
    assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob.digest
    for asked in ("bytes=10-19", "bytes=100-", "bytes=-7"):
        part = requests.get(f"http://{cache.host('hub')}{path}", headers={"Range": asked}, timeout=30)
        theirs = requests.get(f"{lab.hub.url}{path}", headers={"Range": asked}, timeout=30)
        _same_headers(part, theirs)
        assert part.status_code == 206 and part.content == theirs.content, asked
    head = requests.head(f"http://{cache.host('hub')}{path}", timeout=30)
    _same_headers(head, requests.head(f"{lab.hub.url}{path}", timeout=30))
    # the whole image again, warm, with a real client
    assert images.pull_image(image, cache.host("hub"), lab.workdir / "warm").digest == image.digest
    time.sleep(1.5)  # anything the registry on duty served is in the log by now
    assert _registry_saw(cache, path, mark) == []
    # counted as the registry's log lines would have been: hits, bytes, pull times for gc
    _wait_for(lambda: _counts(cache)["hits"] >= before["hits"] + 1 + len(image.blobs), "the hits")
    after = _counts(cache)
    assert after["hits"] == before["hits"] + 1 + len(image.blobs) and after["misses"] == before["misses"]
    assert after["bytes_served"] - before["bytes_served"] == blob.size + image.blob_bytes
    usage = json.loads((cache.workdir / "cache" / "hub" / ".registry-cache-usage.json").read_text())
    assert usage["blobs"][blob.digest] > time.time() - 60


def test_a_blob_another_repository_holds_is_still_asked_of_the_registry(lab: Lab, cache: Cache):
    blob = lab.hub_images.oci.layers[0]
    path = f"/v2/someone/else/blobs/{blob.digest}"  # in the cache, but not linked into this repository
    mark = len(cache.log())
    answer = requests.get(f"http://{cache.host('hub')}{path}", timeout=30)
    assert answer.status_code == 404  # the upstream has no such repository: no leak from the cache
    time.sleep(1.5)
    assert {e["http.request.method"] for e in _registry_saw(cache, path, mark)} == {"GET"}


def test_other_mirrors_blobs_are_redirected_to_their_own_port_and_clients_follow(lab: Lab, cache: Cache):
    image = lab.other_image
    blob = image.layers[0]
    url = f"http://{cache.host('hub')}/v2/{OTHER_HOST}/{image.repo}/blobs/{blob.digest}"
    moved = requests.get(url + "?x=1", allow_redirects=False, timeout=30)
    assert moved.status_code == 307
    assert moved.headers["Location"] == \
        f"http://{cache.host('other')}/v2/{image.repo}/blobs/{blob.digest}?x=1"
    by_ns = requests.get(f"http://{cache.host('hub')}/v2/{image.repo}/blobs/{blob.digest}?ns={OTHER_HOST}",
                         allow_redirects=False, timeout=30)
    assert by_ns.headers["Location"] == f"http://{cache.host('other')}/v2/{image.repo}/blobs/{blob.digest}"
    assert images.pull(f"{cache.host('hub')}/{OTHER_HOST}/{image.repo}:v1", lab.workdir / "sk").digest == \
        image.digest
    hosts = write_hosts_dir(lab.workdir / "certs.d", f"http://{cache.host('hub')}")
    with Containerd(lab.workdir / "containerd") as containerd:
        assert containerd.pull(f"{OTHER_HOST}/{image.repo}:v1", hosts) == image.digest


@pytest.fixture
def tls_cache(lab: Lab, request: pytest.FixtureRequest) -> Iterator[TlsCache]:
    """`serve` with `tls: auto` (and a client login when the test is parametrized with one)."""
    login = getattr(request, "param", False)
    c = TlsCache(lab.workdir / "tls-cache", {"hub": f"http://{HUB_HOST}", "other": f"http://{OTHER_HOST}"},
                 extra="auth: {users: {ci: {password_file: secrets/ci}}}" if login else "")
    if login:
        c.password_file(USER, PASSWORD)
        (c.workdir / "secrets" / USER).chmod(0o600)
    c.start()
    yield c
    c.stop()


def test_with_tls_warm_blobs_come_from_the_cache_and_other_mirrors_blobs_by_https_redirect(
        lab: Lab, tls_cache: TlsCache):
    image = lab.hub_images.oci
    certs = tls_cache.client_files(lab.workdir / "client")
    endpoint = tls_cache.host("hub")
    images.pull_image(image, endpoint, lab.workdir / "cold", cert_dir=certs / endpoint)
    time.sleep(1.5)  # the cold pull's blobs are stored and linked
    blob = max(image.layers, key=lambda b: b.size)
    path = f"/v2/{image.repo}/blobs/{blob.digest}"
    mark = len(tls_cache.log())
    got = requests.get(f"https://{endpoint}{path}", verify=str(certs / endpoint / "ca.crt"), timeout=30)
    _same_headers(got, requests.get(f"{lab.hub.url}{path}", timeout=30))
    assert "sha256:" + hashlib.sha256(got.content).hexdigest() == blob.digest
    assert images.pull_image(image, endpoint, lab.workdir / "warm", cert_dir=certs / endpoint).digest == \
        image.digest
    time.sleep(1.5)
    assert _registry_saw(tls_cache, path, mark) == []
    other = lab.other_image
    moved = requests.get(f"https://{endpoint}/v2/{OTHER_HOST}/{other.repo}/blobs/{other.layers[0].digest}",
                         verify=str(certs / endpoint / "ca.crt"), allow_redirects=False, timeout=30)
    assert moved.status_code == 307
    assert moved.headers["Location"] == \
        f"https://{tls_cache.host('other')}/v2/{other.repo}/blobs/{other.layers[0].digest}"
    got = images.pull(f"{endpoint}/{OTHER_HOST}/{other.repo}:v1", lab.workdir / "other",
                      cert_dir=certs / endpoint)
    assert got.digest == other.digest


@pytest.mark.parametrize("tls_cache", [True], indirect=True, ids=["client-login"])
def test_with_a_client_login_blobs_need_the_password_and_are_not_redirected(lab: Lab, tls_cache: TlsCache):
    # skopeo drops the password on a redirect to another port: the endpoint forwards them instead
    certs = tls_cache.client_files(lab.workdir / "client")
    endpoint = tls_cache.host("hub")
    ca = certs / endpoint / "ca.crt"
    hub_image = lab.hub_images.oci
    images.pull_image(hub_image, endpoint, lab.workdir / "cold", cert_dir=certs / endpoint,
                      creds=(USER, PASSWORD))
    time.sleep(1.5)
    warm = f"https://{endpoint}/v2/{hub_image.repo}/blobs/{hub_image.layers[0].digest}"
    assert requests.get(warm, verify=str(ca), timeout=30).status_code == 401
    assert requests.get(warm, verify=str(ca), auth=(USER, PASSWORD), timeout=30).status_code == 200
    other = lab.other_image
    other_blob = f"https://{endpoint}/v2/{OTHER_HOST}/{other.repo}/blobs/{other.layers[0].digest}"
    forwarded = requests.get(other_blob, verify=str(ca), auth=(USER, PASSWORD), allow_redirects=False,
                             timeout=30)
    assert forwarded.status_code == 200
    with pytest.raises(CommandError):
        images.pull(f"{endpoint}/{OTHER_HOST}/{other.repo}:v1", lab.workdir / "anon",
                    cert_dir=certs / endpoint)
    got = images.pull(f"{endpoint}/{OTHER_HOST}/{other.repo}:v1", lab.workdir / "skopeo",
                      cert_dir=certs / endpoint, creds=(USER, PASSWORD))
    assert got.digest == other.digest
    hosts = write_hosts_dir(lab.workdir / "certs.d", f"https://{endpoint}", ca_file=ca)
    with Containerd(lab.workdir / "containerd") as containerd:
        assert containerd.pull(f"{OTHER_HOST}/{other.repo}:v1", hosts, creds=(USER, PASSWORD)) == other.digest


def test_with_endpoint_redirects_off_other_mirrors_blobs_are_relayed(lab: Lab):
    c = Cache(lab.workdir / "no-redirects")
    c.workdir.mkdir()
    two_mirrors(c, endpoint_redirects="false")
    c.start()
    try:
        image = lab.other_image
        url = f"http://{c.host('hub')}/v2/{OTHER_HOST}/{image.repo}/blobs/{image.layers[0].digest}"
        answer = requests.get(url, allow_redirects=False, timeout=30)
        assert answer.status_code == 200
        assert "sha256:" + hashlib.sha256(answer.content).hexdigest() == image.layers[0].digest
    finally:
        c.stop()
