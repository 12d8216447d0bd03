"""`registry-cache serve` with real docker-registry mirrors and upstreams on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from box.run import CommandError
from lab import images, procs
from lab.images import push_test_images

pytestmark = pytest.mark.integration

AGENT = [sys.executable, "-m", "registry_cache"]


class Cache:
    """A `registry-cache serve` process and the files it works with."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.config = workdir / "config.yml"
        self.process: procs.Process | None = None
        self.ports: dict[str, int] = {}
        self.debug_ports: dict[str, int] = {}

    def write_config(self, mirrors: dict[str, dict], **top: object) -> None:
        lines = ["listen: 127.0.0.1", "storage: cache", "reconnect_interval: 1"]
        lines += [f"{k}: {v}" for k, v in top.items()]
        lines.append("mirrors:")
        for name, spec in mirrors.items():
            self.ports.setdefault(name, spec.get("port") or procs.free_port())
            lines.append(f"  {name}:")
            lines.append(f"    port: {self.ports[name]}")
            self.debug_ports.setdefault(name, procs.free_port())
            lines.append(f"    debug_port: {self.debug_ports[name]}")
            lines += [f"    {k}: {v}" for k, v in spec.items() if k != "port"]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *, wait_for: tuple[str, ...] | None = None) -> None:
        env = {**os.environ, "REGISTRY_CACHE_ROOT": str(self.root)}
        self.process = procs.start(
            "registry-cache serve", [*AGENT, "serve", "--config", str(self.config)],
            self.workdir / "serve.log", env=env,
        )
        for name in wait_for if wait_for is not None else tuple(self.ports):
            self.wait_serving(name)

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        procs.wait_for_http(f"http://{self.host(name)}/v2/", timeout=timeout, process=self.process)

    def host(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def stop(self) -> int | None:
        return self.process.stop(timeout=40) if self.process else None

    def status(self) -> dict[str, dict]:
        result = subprocess.run(
            [*AGENT, "--root", str(self.root), "status", "--json", "--no-rate-limit"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        return {m["name"]: m for m in json.loads(result.stdout)}

    def state(self, name: str) -> dict:
        return json.loads((self.workdir / "cache" / name / ".registry-cache-state.json").read_text())

    def wait_state(self, name: str, timeout: float = 30, **wanted: object) -> dict:
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            try:
                state = self.state(name)
            except (OSError, ValueError):
                state = {}
            if all(state.get(k) == v for k, v in wanted.items()):
                return state
            time.sleep(0.2)
        raise AssertionError(f"mirror {name} never reached {wanted}; last state {state}\n"
                             f"{self.process.log_tail(40) if self.process else ''}")

    def log(self) -> str:
        return self.process.log_text() if self.process else ""


@pytest.fixture
def cache(tmp_path):
    c = Cache(tmp_path / "cache-host")
    c.workdir.mkdir()
    yield c
    c.stop()


def pull_all(host: str, imgs, dest: Path) -> None:
    for img in imgs:
        images.pull(img.ref(host), dest / f"{img.kind}-{time.monotonic_ns()}", all_images=img.kind == "index")


def blob_requests(imgs) -> tuple[int, int]:
    """(blob GETs a full pull of every image makes, distinct blobs among them)."""
    digests = [b.digest for img in imgs for b in img.blobs]
    return len(digests), len(set(digests))


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
    (cache.workdir / "secrets").mkdir()
    (cache.workdir / "secrets" / "token").write_text(upstream_credentials.password + "\n")
    cache.write_config({"ghcr": {
        "upstream": token_upstream.url,
        "username": upstream_credentials.username,
        "password_file": "secrets/token",
    }})
    cache.start()
    pull_all(cache.host("ghcr"), token_test_images.all(), tmp_path / "pulls")  # anonymous client
    status = subprocess.run(
        [*AGENT, "--root", str(cache.root), "status", "--no-rate-limit"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    secret = upstream_credentials.password
    assert secret not in status.stdout + status.stderr
    assert secret not in cache.log()
    assert cache.state("ghcr")["upstream_problem"] is None
    assert cache.state("ghcr")["blob_transfers"] > 0  # the pulls went through the mirror's front


def test_wrong_upstream_password_is_reported_instead_of_a_silent_404(
    cache, token_upstream, token_test_images, upstream_credentials
):
    cache.write_config({"ghcr": {
        "upstream": token_upstream.url,
        "username": upstream_credentials.username,
        "password": "wrong-password-123",
    }})
    cache.start()
    state = cache.wait_state("ghcr", mode="proxy")
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
    table = subprocess.run(
        [*AGENT, "--root", str(cache.root), "status", "--no-rate-limit"],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout
    assert "private: upstream" in table and "password_file" in table
    applied = subprocess.run(
        [*AGENT, "--root", str(tmp_path / "other-root"), "apply", "--config", str(cache.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert "WARNING: mirror private" in applied.stdout and "basic auth" in applied.stdout


def test_wrong_password_for_a_basic_auth_upstream_is_reported(cache, htpasswd_upstream, upstream_credentials):
    cache.write_config({"private": {
        "upstream": htpasswd_upstream.url,
        "username": upstream_credentials.username,
        "password": "wrong-password-123",
    }})
    cache.start()
    state = cache.wait_state("private", mode="proxy")
    assert f"refused the credentials of '{upstream_credentials.username}'" in state["upstream_problem"]
    assert "wrong-password-123" not in cache.log() + json.dumps(cache.status())


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
    deadline = time.monotonic() + 20
    while "config not applied" not in cache.log() and time.monotonic() < deadline:
        time.sleep(0.2)
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
    cache.write_config({"a": {"upstream": upstream.url}, "b": {"upstream": upstream.url}})
    cache.start()
    pids = [cache.wait_state(n, mode="proxy")["pid"] for n in ("a", "b")]
    assert cache.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert cache.state("a")["mode"] == "stopped"

