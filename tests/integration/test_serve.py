"""`registry-cache serve` with real docker-registry mirrors and upstreams on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from box.run import CommandError
from box.wait import wait_until
from lab import images
from lab.agent import AGENT, blob_requests, pull_all
from lab.images import push_test_images

pytestmark = pytest.mark.integration

def test_images_pull_through_two_mirrors_and_the_warm_pull_counts_as_hits(
    cache, upstream, registry_factory, test_images, tmp_path
):
    second = registry_factory("second-upstream")
    other = push_test_images(tmp_path / "second-layouts", second.host)
    cache.write_config({
        "one": {"upstream": upstream.url},
        "two": {"upstream": second.url},
    })
    cache.start()
    gets, distinct = blob_requests(test_images.all())

    pull_all(cache.host("one"), test_images.all(), tmp_path / "cold")
    cold = cache.wait_state("one", misses=distinct)
    assert (cold["hits"], cold["misses"]) == (gets - distinct, distinct)
    assert cold["bytes_served"] == sum(b.size for img in test_images.all() for b in img.blobs)

    pull_all(cache.host("one"), test_images.all(), tmp_path / "warm")
    warm = cache.wait_state("one", hits=2 * gets - distinct)
    assert warm["misses"] == distinct  # nothing fetched from upstream again

    images.pull(other.oci.ref(cache.host("two")), tmp_path / "two")
    cache.wait_state("two", misses=len(other.oci.blobs), hits=0)
    status = cache.status()
    assert (status["two"]["misses"], status["one"]["misses"]) == (len(other.oci.blobs), distinct)
    assert status["one"]["healthy"] and status["two"]["healthy"]
    assert status["one"]["mode"] == "proxy"
    assert status["one"]["storage_bytes"] > 0


def test_images_pulled_by_digest_match_the_upstream(cache, upstream, test_images, tmp_path):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    for img in test_images.all():
        got = images.pull(img.ref(cache.host("hub"), by_digest=True), tmp_path / img.kind,
                          all_images=img.kind == "index")
        assert got.digest == img.digest


def test_cached_images_still_pull_when_the_upstream_stops(cache, upstream, test_images, tmp_path):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    pull_all(cache.host("hub"), test_images.all(), tmp_path / "warm")
    upstream.stop()
    pull_all(cache.host("hub"), test_images.all(), tmp_path / "offline")


def test_mirror_starts_read_only_without_upstream_and_returns_to_proxy_mode(
    cache, upstream, test_images, tmp_path
):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    images.pull(test_images.oci.ref(cache.host("hub")), tmp_path / "cold")
    cache.stop()
    upstream.stop()

    cache.start()  # Distribution alone would panic here: its upstream is down
    state = cache.wait_state("hub", mode="read-only")
    assert "upstream unreachable" in state["upstream_problem"]
    images.pull(test_images.oci.ref(cache.host("hub")), tmp_path / "offline")
    with pytest.raises(CommandError):
        images.pull(test_images.docker.ref(cache.host("hub")), tmp_path / "never-cached", timeout=30)
    assert cache.status()["hub"]["mode"] == "read-only"

    upstream.start()
    cache.wait_state("hub", mode="proxy", timeout=60)
    images.pull(test_images.docker.ref(cache.host("hub")), tmp_path / "after")


def test_token_auth_upstream_is_reached_with_password_file_credentials(
    cache, token_upstream, token_test_images, upstream_credentials, tmp_path
):
    cache.write_config({"ghcr": {
        "upstream": token_upstream.url,
        "username": upstream_credentials.username,
        "password_file": cache.password_file("token", upstream_credentials.password),
    }})
    cache.start()
    pull_all(cache.host("ghcr"), token_test_images.all(), tmp_path / "pulls")  # anonymous client
    status = cache.agent("status", "--no-rate-limit")
    assert status.returncode == 0, status.stdout + status.stderr
    secret = upstream_credentials.password
    assert secret not in status.stdout + status.stderr
    assert secret not in cache.log()
    assert cache.state("ghcr")["upstream_problem"] is None
    assert cache.state("ghcr")["blob_transfers"] > 0  # the pulls went through the mirror's front


@pytest.mark.parametrize("auth", ["token_upstream", "htpasswd_upstream"])
def test_wrong_upstream_password_is_reported_instead_of_a_silent_404(
    cache, auth, upstream_credentials, request
):
    """Token auth (as Docker Hub, ghcr.io) and basic auth (which the front answers) alike."""
    upstream = request.getfixturevalue(auth)
    cache.write_config({"private": {
        "upstream": upstream.url,
        "username": upstream_credentials.username,
        "password": "wrong-password-123",
    }})
    cache.start()
    state = cache.wait_state("private", mode="proxy")
    assert f"refused the credentials of '{upstream_credentials.username}'" in state["upstream_problem"]
    assert "wrong-password-123" not in cache.log() + json.dumps(cache.status())


def test_basic_auth_upstream_without_a_login_is_named_plainly_by_serve_status_and_apply(
    cache, htpasswd_upstream, tmp_path
):
    cache.write_config({"private": {"upstream": htpasswd_upstream.url}})
    cache.start()
    state = cache.wait_state("private", mode="proxy")
    assert "wants a login (HTTP basic auth)" in state["upstream_problem"]
    assert "wants a login (HTTP basic auth)" in cache.log()
    table = cache.agent("status", "--no-rate-limit").stdout
    assert "private: upstream" in table and "password_file" in table
    applied = subprocess.run(
        [*AGENT, "--root", str(tmp_path / "other-root"), "apply", "--config", str(cache.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "WARNING: mirror private" in applied.stdout and "basic auth" in applied.stdout


def test_a_killed_registry_is_restarted(cache, upstream, test_images, tmp_path):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    first = cache.wait_state("hub", mode="proxy")["pid"]
    os.kill(first, signal.SIGKILL)
    state = cache.wait_state("hub", mode="proxy", restarts=1)
    assert state["pid"] != first
    images.pull(test_images.oci.ref(cache.host("hub")), tmp_path / "after-restart")


def test_a_bad_config_sent_to_a_running_cache_changes_nothing(cache, upstream, test_images, tmp_path):
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    pid = cache.wait_state("hub", mode="proxy")["pid"]
    good = cache.config.read_text()
    cache.config.write_text(good.replace("upstream:", "upstrem:"))
    cache.process.signal(signal.SIGHUP)
    wait_until(lambda: "config not applied" in cache.log(), "serve refusing the bad config", timeout=20,
               interval=0.2, detail=cache.log, error=AssertionError)
    assert f"{cache.config}:8: mirrors.hub.upstrem: unknown key; did you mean 'upstream'?" in cache.log()
    images.pull(test_images.oci.ref(cache.host("hub")), tmp_path / "still-serving")
    assert cache.state("hub")["pid"] == pid


def test_a_mirror_added_by_reload_serves_and_the_old_one_is_not_restarted(
    cache, upstream, registry_factory, test_images, tmp_path
):
    second = registry_factory("second-upstream")
    other = push_test_images(tmp_path / "second-layouts", second.host)
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    pid = cache.wait_state("hub", mode="proxy")["pid"]
    cache.write_config({"hub": {"upstream": upstream.url}, "ghcr": {"upstream": second.url}})
    cache.process.signal(signal.SIGHUP)
    cache.wait_serving("ghcr")
    images.pull(other.oci.ref(cache.host("ghcr")), tmp_path / "new-mirror")
    assert cache.state("hub")["pid"] == pid
    assert cache.state("hub")["restarts"] == 0


def test_sigterm_stops_every_registry_it_started(cache, upstream):
    # one registry under two names: a mirror per registry
    other_name = upstream.url.replace("127.0.0.1", "localhost")
    cache.write_config({"a": {"upstream": upstream.url}, "b": {"upstream": other_name}})
    cache.start()
    pids = [cache.wait_state(n, mode="proxy")["pid"] for n in ("a", "b")]
    assert cache.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert cache.state("a")["mode"] == "stopped"



def test_a_registry_does_not_outlive_its_killed_runner(cache, upstream):
    # without systemd to end a unit's control group, a runner killed hard (OOM, kill -9)
    # must not leave its registry holding the mirror's storage and a port
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    registry = cache.wait_state("hub", mode="proxy")["pid"]
    cache.process.signal(signal.SIGKILL)
    wait_until(lambda: not _running(registry), f"registry {registry} ending after its runner was killed",
               timeout=15, interval=0.2, error=AssertionError)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def test_an_idle_client_connection_does_not_hold_up_a_stop(cache, upstream):
    # Docker keeps idle keep-alive connections open for about 90 s; a stop that waited for
    # them would outlast systemd's TimeoutStopSec and be killed before writing its state
    cache.write_config({"hub": {"upstream": upstream.url}})
    cache.start()
    with socket.create_connection(("127.0.0.1", cache.ports["hub"]), timeout=10) as idle:
        idle.sendall(b"GET /v2/ HTTP/1.1\r\nHost: cache\r\nConnection: keep-alive\r\n\r\n")
        assert idle.recv(100).startswith(b"HTTP/1.1 200")
        code = cache.process.stop(timeout=20)  # well inside the unit's TimeoutStopSec
    assert code == 0, cache.log()
    assert cache.state("hub")["mode"] == "stopped"
