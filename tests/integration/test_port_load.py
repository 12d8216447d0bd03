"""The mirror's port under a CI fleet's load: it never stops taking connections, and idle ones end.

The runner (`registry-cache serve`) runs with the open file limits a systemd unit gives it,
set with prlimit as systemd does; the pulls are real skopeo pulls of images in a real upstream.
A mirror's own port is the byte relay here (REGISTRY_CACHE_HANDOVER=relay: the kernel handover,
which test_kernel_handover.py proves, would leave the runner no connection to hold); the first
mirror's is the one endpoint.
The idle timeout is proved on the relay itself, in front of a real registry.
"""

from __future__ import annotations

import re
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from registry_cache.handover import Relay, free_port, kernel

from lab import images, procs
from lab.agent import AGENT, Cache
from lab.images import TestImages
from lab.registry import Registry

pytestmark = pytest.mark.integration

# what systemd gives a unit without LimitNOFILE= (Debian 12: DefaultLimitNOFILE=1024:524288)
UNIT_SOFT_LIMIT = 1024


def _start_serve(cache: Cache, upstream: Registry, soft: int, hard: int) -> None:
    """`registry-cache serve` under open file limits `soft`:`hard`, with two mirrors of `upstream`:
    `hub`, whose port is the one endpoint (the first mirror), and `own`, on a port of its own."""
    # one mirror per registry: `own` reaches the same upstream by its other name
    other_name = upstream.url.replace("127.0.0.1", "localhost")
    cache.write_config({"hub": {"upstream": upstream.url}, "own": {"upstream": other_name}})
    cache.process = procs.start(
        "registry-cache serve",
        ["prlimit", f"--nofile={soft}:{hard}", *AGENT, "serve", "--config", str(cache.config)],
        cache.workdir / "serve.log", env={**cache.env, kernel.HANDOVER_ENV: kernel.RELAY},
    )
    cache.wait_serving("hub")
    cache.wait_serving("own")


@contextmanager
def _idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """`count` client connections to 127.0.0.1:`port` that say nothing, closed on leaving."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))  # the kernel completes it into the backlog
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def _pull(test_images: TestImages, host: str, dest: Path) -> None:
    image = test_images.oci
    got = images.pull(image.ref(host), dest / str(time.monotonic_ns()), timeout=60)
    assert got.digest == image.digest


def _wait_for(predicate, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_the_port_takes_connections_again_after_running_out_of_file_descriptors(
    cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    # soft = hard = 1,024: the runner cannot raise its limit; 600 idle clients need ~1,200 fds
    _start_serve(cache, upstream, UNIT_SOFT_LIMIT, UNIT_SOFT_LIMIT)
    port = cache.ports["own"]
    fds = Path(f"/proc/{cache.process.popen.pid}/fd")
    with _idle_connections(port, 600):
        _wait_for(lambda: len(list(fds.iterdir())) > UNIT_SOFT_LIMIT - 20,
                  "the runner never used up its file descriptors", timeout=30)
        time.sleep(1)
    # the clients have all gone: the port takes (and relays) new pulls again
    _pull(test_images, cache.host("own"), tmp_path / "after")
    assert re.search(r"port \d+: cannot take new connections, out of file descriptors: "
                     r"\[Errno 24\] Too many open files", cache.log()), cache.log()
    _wait_for(lambda: "taking connections again" in cache.log(),
              "the runner never said it takes connections again", timeout=30)


@pytest.mark.parametrize("mirror", ["own", "hub"])
def test_a_pull_works_while_2000_idle_connections_are_open_and_after_they_close(
    cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path, mirror: str
):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 5000:
        pytest.skip(f"this test needs an open file hard limit of 5,000 or more (it is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the test holds 2,000 sockets itself
    try:
        # a unit's default limits: the runner raises its soft limit to the hard one at start
        _start_serve(cache, upstream, UNIT_SOFT_LIMIT, hard)
        with _idle_connections(cache.ports[mirror], 2000):
            _pull(test_images, cache.host(mirror), tmp_path / "during")
        _pull(test_images, cache.host(mirror), tmp_path / "after")
        assert "cannot take new connections" not in cache.log(), cache.log()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_an_idle_client_connection_is_closed_after_the_idle_timeout_and_the_drain_reaches_zero(
    upstream: Registry,
):
    port = free_port()
    relay = Relay("127.0.0.1", port, idle_timeout=2)
    relay.point_to(upstream.port)
    try:
        idle = procs.keepalive_connection(port)
        silent = socket.create_connection(("127.0.0.1", port), timeout=5)  # never says a word
        _wait_for(lambda: relay.open_connections(upstream.port) == 2, "the relay took both", 5)
        # the kernel probes the client with TCP keepalive (a destroyed VM answers no probe)
        shown = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                               capture_output=True, text=True, check=True, timeout=10).stdout
        assert shown.count("timer:(keepalive") == 2, shown
        began = time.monotonic()
        assert relay.wait_idle(upstream.port, timeout=15)
        assert 1.5 < time.monotonic() - began < 8
        assert procs.closed_by_peer(idle.sock) and procs.closed_by_peer(silent)
        # a new connection is served as ever
        procs.keepalive_connection(port).close()
    finally:
        relay.close()


def test_a_switch_closes_the_retired_registrys_idle_keepalive_connections_without_waiting_out_the_drain(
    registry_factory, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    """gc's switch to read-only waits for the old registry's connections: idle keep-alives
    (Docker keeps them 90 s) end at once instead of holding it for its whole drain timeout."""
    readonly = registry_factory("readonly", storage=upstream.storage, readonly=True)
    port = free_port()
    relay = Relay("127.0.0.1", port)
    relay.point_to(upstream.port)
    try:
        idle = procs.keepalive_connection(port)
        relay.point_to(readonly.port)
        began = time.monotonic()
        assert relay.wait_idle(upstream.port, timeout=30)
        assert time.monotonic() - began < 15  # the drain allows 30
        assert procs.closed_by_peer(idle.sock)
        _pull(test_images, f"127.0.0.1:{port}", tmp_path / "pull")  # from the registry on duty
        assert relay.open_connections(upstream.port) == 0
    finally:
        relay.close()
