"""The one endpoint: the first mirror's port serves every upstream, to real clients (skopeo, containerd).

Everything runs inside a network namespace of the test's own: the two upstreams listen on
127.0.0.2:80 and 127.0.0.3:80 there, so their registry hosts are `127.0.0.2` and `127.0.0.3`
(valid first components of an image name, as `ghcr.io` is), and containerd's fallback to a
registry's own server (https, port 443) reaches nothing.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from box.run import CommandError, run
from lab import images, procs
from lab.agent import Cache, TlsCache
from lab.containerd import Containerd, write_hosts_dir
from lab.oci_layout import OCI_MANIFEST, sha256_digest
from tests.integration.endpoint_lab import HUB_HOST, OTHER_HOST, UNKNOWN_HOST, Lab, two_mirrors
from tests.integration.endpoint_lab import lab as lab  # the fixture


@pytest.fixture
def cache(lab: Lab) -> Iterator[Cache]:
    """`registry-cache serve` with two mirrors (hub first: its port is the endpoint), in the namespace."""
    c = Cache(lab.workdir / "cache-host")
    c.workdir.mkdir()
    two_mirrors(c)
    c.start()
    yield c
    c.stop()


def _misses(cache: Cache, name: str, at_least: int) -> int:
    """Mirror `name`'s cache misses once they reach `at_least` (its state is written each second)."""
    deadline = time.monotonic() + 10
    misses = 0
    while time.monotonic() < deadline:
        misses = int(cache.state(name).get("misses", 0))
        if misses >= at_least:
            break
        time.sleep(0.2)
    return misses


def test_skopeo_pulls_both_upstreams_through_the_first_port_by_path_prefix(lab: Lab, cache: Cache):
    endpoint = cache.host("hub")
    got = images.pull(f"{endpoint}/{OTHER_HOST}/{lab.other_image.repo}:v1", lab.workdir / "other")
    assert got.digest == lab.other_image.digest
    for img in lab.hub_images.all():  # by prefix, and unprefixed as before: both the hub mirror
        prefixed = images.pull_image(img, f"{endpoint}/{HUB_HOST}", lab.workdir / f"p-{img.kind}")
        unprefixed = images.pull_image(img, endpoint, lab.workdir / f"u-{img.kind}")
        assert prefixed.digest == unprefixed.digest == img.digest
    by_digest = images.pull_image(lab.other_image, f"{endpoint}/{OTHER_HOST}", lab.workdir / "d",
                                  by_digest=True)
    assert by_digest.digest == lab.other_image.digest
    # the other mirror fetched it into its own cache
    assert _misses(cache, "other", len(lab.other_image.layers)) >= len(lab.other_image.layers)
    # the other mirror's own port still serves it, from its cache now
    assert images.pull_image(lab.other_image, cache.host("other"), lab.workdir / "own").digest == \
        lab.other_image.digest


def test_tags_and_head_answer_under_the_prefix(lab: Lab, cache: Cache):
    base = f"http://{cache.host('hub')}/v2/{OTHER_HOST}/{lab.other_image.repo}"
    tags = requests.get(f"{base}/tags/list?n=1", timeout=10)
    assert tags.status_code == 200 and tags.json()["tags"] == ["v1"]
    head = requests.head(f"{base}/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=10)
    assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == lab.other_image.digest
    blob = lab.other_image.layers[0]
    head = requests.head(f"{base}/blobs/{blob.digest}", timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == blob.size


def test_containerd_pulls_both_upstreams_through_one_default_hosts_toml_by_ns(lab: Lab, cache: Cache):
    hosts = write_hosts_dir(lab.workdir / "certs.d", f"http://{cache.host('hub')}")
    with Containerd(lab.workdir / "containerd") as containerd:
        ref = f"{OTHER_HOST}/{lab.other_image.repo}:v1"
        assert containerd.pull(ref, hosts) == lab.other_image.digest
        for img in lab.hub_images.all():
            ref = f"{HUB_HOST}/{img.repo}:{img.tag}"
            assert containerd.pull(ref, hosts, all_platforms=True) == img.digest
    # the fallback to the upstreams' own servers (https on port 443) cannot have answered: the
    # mirrors did, and fetched what containerd pulled
    assert _misses(cache, "other", len(lab.other_image.layers)) >= len(lab.other_image.layers)
    assert _misses(cache, "hub", len(lab.hub_images.oci.layers)) >= len(lab.hub_images.oci.layers)


def test_skopeo_pulls_through_a_registries_conf_mirror_with_a_prefix_location(lab: Lab, cache: Cache):
    conf = lab.workdir / "registries.conf"
    conf.write_text(f'[[registry]]\nprefix = "{OTHER_HOST}"\nlocation = "{OTHER_HOST}"\n\n'
                    f'[[registry.mirror]]\nlocation = "{cache.host("hub")}/{OTHER_HOST}"\ninsecure = true\n')
    dest = lab.workdir / "via-conf"
    dest.mkdir()
    # no --src-tls-verify=false: the upstream itself (plain HTTP) is refused, only the mirror may answer
    run(["skopeo", "--insecure-policy", "--registries-conf", str(conf), "copy", "--quiet",
         f"docker://{OTHER_HOST}/{lab.other_image.repo}:v1", f"dir:{dest}"], capture=True, timeout=120)
    assert sha256_digest((dest / "manifest.json").read_bytes()) == lab.other_image.digest
    assert _misses(cache, "other", len(lab.other_image.layers)) >= len(lab.other_image.layers)


def test_an_unknown_registry_is_refused_by_name_and_never_dialled(lab: Lab, cache: Cache):
    listener = socket.create_server((UNKNOWN_HOST, 80))
    listener.setblocking(False)
    try:
        base = f"http://{cache.host('hub')}"
        for url in (f"{base}/v2/{UNKNOWN_HOST}/team/app/manifests/v1",
                    f"{base}/v2/team/app/manifests/v1?ns={UNKNOWN_HOST}",
                    f"{base}/v2/{UNKNOWN_HOST}:80/team/app/blobs/sha256:{'0' * 64}"):
            answer = requests.get(url, timeout=10)
            assert answer.status_code == 404, url
            error = answer.json()["errors"][0]
            assert error["code"] == "NAME_UNKNOWN"
            assert f"{HUB_HOST} (mirror hub)" in error["message"]
            assert f"{OTHER_HOST} (mirror other)" in error["message"]
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
        with pytest.raises(CommandError):
            images.pull(f"{cache.host('hub')}/{UNKNOWN_HOST}/team/app:v1", lab.workdir / "unknown")
    finally:
        listener.close()


def test_tls_and_client_login_hold_on_the_one_endpoint(lab: Lab):
    cache = TlsCache(lab.workdir / "tls-cache", {"hub": f"http://{HUB_HOST}", "other": f"http://{OTHER_HOST}"},
                     extra="auth: {users: {ci: {password_file: secrets/ci}}}")
    cache.password_file("ci", "s3cret-pass")
    (cache.workdir / "secrets" / "ci").chmod(0o600)
    cache.start()
    try:
        certs = cache.client_files(lab.workdir / "client")
        endpoint = cache.host("hub")
        ref = f"{endpoint}/{OTHER_HOST}/{lab.other_image.repo}:v1"
        with pytest.raises(CommandError):  # no login: refused
            images.pull(ref, lab.workdir / "anon", cert_dir=certs / endpoint)
        with pytest.raises(CommandError):  # a wrong password: refused
            images.pull(ref, lab.workdir / "wrong", cert_dir=certs / endpoint, creds=("ci", "nope"))
        got = images.pull(ref, lab.workdir / "tls", cert_dir=certs / endpoint, creds=("ci", "s3cret-pass"))
        assert got.digest == lab.other_image.digest
        challenge = requests.get(f"https://{endpoint}/v2/{OTHER_HOST}/team/app/manifests/v1",
                                 verify=str(certs / endpoint / "ca.crt"), timeout=10)
        assert challenge.status_code == 401 and challenge.headers["WWW-Authenticate"].startswith("Basic ")
    finally:
        cache.stop()


def test_the_endpoints_routing_table_names_every_mirror_in_config_order(cache: Cache):
    table = json.loads((cache.root / "mirrors" / "hub" / "endpoint.json").read_text())
    assert [r["mirror"] for r in table["routes"]] == ["hub", "other"] and table["home"] == "hub"
    assert not (cache.root / "mirrors" / "other" / "endpoint.json").exists()


def test_status_names_the_one_port_and_the_registries_it_answers_for(cache: Cache):
    shown = cache.agent("status", "--no-rate-limit").stdout
    assert f"hub: port {cache.ports['hub']} is the one endpoint for {HUB_HOST} (mirror hub), " \
           f"{OTHER_HOST} (mirror other)" in shown
    statuses = cache.status()
    assert statuses["hub"]["endpoint_for"] == [f"{HUB_HOST} (mirror hub)", f"{OTHER_HOST} (mirror other)"]
    assert statuses["other"]["endpoint_for"] == []


def test_a_mirror_added_by_reload_is_reached_through_the_endpoint_without_restarting_the_first(lab: Lab):
    cache = Cache(lab.workdir / "reload-cache")
    cache.workdir.mkdir()
    cache.write_config({"hub": {"upstream": f"http://{HUB_HOST}"}})
    cache.start()
    try:
        pid = cache.wait_state("hub", mode="proxy")["pid"]
        ref = f"{cache.host('hub')}/{OTHER_HOST}/{lab.other_image.repo}:v1"
        with pytest.raises(CommandError):  # not configured yet: refused
            images.pull(ref, lab.workdir / "before")
        two_mirrors(cache)
        cache.process.signal(signal.SIGHUP)
        cache.wait_serving("other")
        deadline = time.monotonic() + 10
        while True:  # the endpoint looks for a new routing table once a second
            try:
                got = images.pull(ref, lab.workdir / f"after-{time.monotonic_ns()}")
                break
            except CommandError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert got.digest == lab.other_image.digest
        assert cache.state("hub")["pid"] == pid and cache.state("hub")["restarts"] == 0
    finally:
        cache.stop()


def test_the_endpoint_serves_both_upstreams_when_the_mirrors_listen_on_one_address(lab: Lab):
    # the registry on duty always listens on 127.0.0.1 (a private port), the mirrors' ports on `listen`
    cache = Cache(lab.workdir / "listen-cache")
    cache.workdir.mkdir()
    two_mirrors(cache)
    cache.config.write_text(cache.config.read_text().replace("listen: 127.0.0.1", "listen: 127.0.0.5"))
    cache.start(wait_for=())
    try:
        for name in ("hub", "other"):
            url = f"http://127.0.0.5:{cache.ports[name]}/v2/"
            procs.wait_for_http(url, timeout=60, process=cache.process)
        endpoint = f"127.0.0.5:{cache.ports['hub']}"
        for prefix, img in ((HUB_HOST, lab.hub_images.oci), (OTHER_HOST, lab.other_image)):
            got = images.pull_image(img, f"{endpoint}/{prefix}", lab.workdir / f"listen-{prefix}")
            assert got.digest == img.digest
    finally:
        cache.stop()
