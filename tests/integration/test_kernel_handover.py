"""The kernel holds a mirror's port: an nftables redirect to the registry on duty, switched atomically.

Real `registry-cache serve`, real docker-registry, real nft (root). Tests in this machine's
own network namespace use 127.0.0.1 only; the outside client runs in a pair of namespaces
the test creates (a veth between them) and deletes. No nft table is left behind: each test
deletes the tables of the ports it used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_cache import hold
from registry_cache.handover import kernel

from box.run import run
from box.sizes import MiB
from box.wait import wait_until
from lab import images, netns, nft, procs
from lab.agent import AGENT, Cache
from lab.images import TestImages
from lab.registry import Registry, start_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (Debian package nftables)"),
]


def _table(port: int, namespace: netns.NetworkNamespace | None = None) -> str | None:
    """The port's nftables table as `nft list` prints it; None when there is none."""
    prefix = namespace.launcher if namespace else []
    done = subprocess.run([*prefix, "nft", "list", "table", "inet", kernel.table_name(port)],
                          capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def _on_duty(port: int) -> int:
    """The private port the table of public `port` redirects new connections to."""
    table = _table(port)
    assert table is not None, f"no nft table for port {port}"
    return int(re.search(r"redirect to :(\d+)", table).group(1))


@pytest.fixture
def kernel_cache(cache: Cache) -> Iterator[Cache]:
    """The `cache` fixture, whose ports' nft tables are deleted after the test whatever happened."""
    yield cache
    cache.stop()
    for port in cache.ports.values():
        kernel.apply(kernel.plan_removal(port))


def _serve(cache: Cache, upstream: Registry, **env: str) -> None:
    """`registry-cache serve` of two mirrors of `upstream`: `hub` (the one endpoint), `own` (its own port)."""
    cache.write_config({"hub": {"upstream": upstream.url},
                        "own": {"upstream": upstream.url.replace("127.0.0.1", "localhost")}})
    cache.process = procs.start("registry-cache serve", [*AGENT, "serve", "--config", str(cache.config)],
                                cache.workdir / "serve.log", env={**cache.env, **env})
    cache.wait_serving("hub")
    cache.wait_serving("own")


def _pull(test_images: TestImages, cache: Cache, dest: Path) -> None:
    image = test_images.oci
    assert images.pull(image.ref(cache.host("own")), dest / str(time.monotonic_ns()), timeout=60).digest \
        == image.digest


def test_the_kernel_holds_a_mirrors_own_port_and_a_pull_through_it_works(
    kernel_cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    cache = kernel_cache
    _serve(cache, upstream)
    port = cache.ports["own"]
    private = _on_duty(port)
    _pull(test_images, cache, tmp_path)
    status = cache.status()
    assert status["own"]["handover"] == "kernel" and status["hub"]["handover"] == "endpoint"
    table = cache.agent("status", "--no-rate-limit").stdout
    assert f"own: port {port} held by the kernel" in table, table
    assert f"the kernel holds port {port}" in cache.log()
    # the registry on duty is the one its state names, and it listens on the redirect's port
    registry_pid = cache.state("own")["pid"]
    assert f"127.0.0.1:{private}" in Path(f"/proc/{registry_pid}/environ").read_text().replace("\0", "\n")
    cache.stop()
    assert _table(port) is None, "the runner left its nft table behind"


def test_a_stale_table_of_a_killed_runner_is_replaced_at_start(
    kernel_cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    cache = kernel_cache
    cache.ports["own"] = procs.free_port()
    dead = procs.free_port()  # nothing listens there: the stale table would refuse every pull
    kernel.apply(kernel.plan(cache.ports["own"], "127.0.0.1", dead, ()))
    _serve(cache, upstream)
    assert _on_duty(cache.ports["own"]) != dead
    _pull(test_images, cache, tmp_path)


def test_without_nft_the_relay_holds_the_port_and_says_so(
    kernel_cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    cache = kernel_cache
    # a PATH without /usr/sbin: no nft (the agent's own programs are in /usr/bin)
    _serve(cache, upstream, PATH=f"{Path(AGENT[0]).parent}:/usr/bin:/bin")
    _pull(test_images, cache, tmp_path)
    assert _table(cache.ports["own"]) is None
    assert cache.status()["own"]["handover"] == "relay"
    assert re.search(r"mirror own: the relay holds port \d+ \(a userspace copy of every byte\); "
                     r"the kernel handover is unavailable: nft is not installed", cache.log()), cache.log()
    table = cache.agent("status", "--no-rate-limit").stdout
    assert "held by the runner's relay" in table, table


def test_a_switch_under_pulls_refuses_none_finishes_the_retired_pull_and_idle_keepalives_do_not_hold_it(
    kernel_cache: Cache, upstream: Registry, test_images: TestImages, tmp_path: Path
):
    cache = kernel_cache
    big = images.push_oci_image(tmp_path / "layouts", upstream.host, repo="test/big", layer_sizes=(48 * MiB,))
    _serve(cache, upstream)
    port = cache.ports["own"]
    images.pull(big.ref(cache.host("own")), tmp_path / "warm", timeout=120)  # cached: served by any mode
    _pull(test_images, cache, tmp_path / "warm")
    time.sleep(3)  # Distribution stores a proxied blob after serving it
    proxy_port = _on_duty(port)

    idle = procs.keepalive_connection(port)  # an idle keep-alive with the proxy registry
    slow = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    slow.request("GET", f"/v2/{big.repo}/blobs/{big.layers[0].digest}")
    response = slow.getresponse()
    assert response.status == 200
    digest = hashlib.sha256(response.read(1 * MiB))  # the rest waits in the registry's socket

    failures: list[str] = []
    done = threading.Event()

    def pulls() -> None:
        while not done.is_set():
            try:
                _pull(test_images, cache, tmp_path / "during")
            except Exception as exc:  # any failed pull is the finding
                failures.append(str(exc))

    puller = threading.Thread(target=pulls)
    puller.start()
    try:
        # a gc's hold: the runner switches to a read-only registry
        request = hold.HoldRequest("test", os.getpid(), time.time() + 300)
        hold.ask(str(cache.workdir / "cache" / "own"), request)
        wait_until(lambda: _on_duty(port) != proxy_port, "the redirect never switched", timeout=60,
                   error=AssertionError)
        switched = time.monotonic()
        time.sleep(2)
        # the retired proxy registry still serves its pull; the rest of the blob arrives
        assert cache.process.popen.poll() is None
        for chunk in iter(lambda: response.read(1 * MiB), b""):
            digest.update(chunk)
        assert "sha256:" + digest.hexdigest() == big.layers[0].digest
        # its idle keep-alive is closed at once, not after the 30 s drain
        wait_until(lambda: "the retired proxy registry stopped after" in cache.log(),
                   "the retired registry never stopped", timeout=20, error=AssertionError,
                   detail=lambda: cache.log()[-3000:])
        assert time.monotonic() - switched < 20
        assert procs.closed_by_peer(idle.sock)
        cache.wait_state("own", mode="read-only")
        time.sleep(2)
    finally:
        done.set()
        puller.join(timeout=120)
    assert failures == []
    assert "stopping the proxy registry with pulls still open" not in cache.log()


# -- a client from another network ----------------------------------------------------------

SERVER_ADDRESS, CLIENT_ADDRESS = "10.213.0.1", "10.213.0.2"


@pytest.fixture
def two_networks() -> Iterator[tuple[netns.NetworkNamespace, netns.NetworkNamespace]]:
    """A server namespace and a client namespace, linked by a veth (10.213.0.1 <-> .2); deleted after."""
    server = netns.NetworkNamespace.create(f"khs{os.getpid()}")
    client = netns.NetworkNamespace.create(f"khc{os.getpid()}")
    try:
        run(["ip", "-n", server.name, "link", "add", "khs0", "type", "veth", "peer", "name", "khc0",
             "netns", client.name], capture=True)
        for ns, dev, addr in ((server, "khs0", SERVER_ADDRESS), (client, "khc0", CLIENT_ADDRESS)):
            run(["ip", "-n", ns.name, "addr", "add", f"{addr}/30", "dev", dev], capture=True)
            run(["ip", "-n", ns.name, "link", "set", dev, "up"], capture=True)
        yield server, client
    finally:
        client.delete()
        server.delete()


def _reaches(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return True
    except OSError:
        return False


def test_a_client_in_another_network_pulls_through_the_redirect_and_cannot_reach_the_private_port(
    two_networks: tuple[netns.NetworkNamespace, netns.NetworkNamespace], tmp_path: Path
):
    server, client = two_networks
    cache = Cache(tmp_path / "cache-host")
    cache.workdir.mkdir()
    ports = {"hub": 5000, "own": 5001}  # the namespace's own ports: nothing else there
    with server.entered():
        upstream = start_registry(tmp_path / "upstream")
        try:
            image = images.push_oci_image(tmp_path / "layouts", upstream.host, repo="test/outside")
            other = upstream.url.replace("127.0.0.1", "localhost")  # one mirror per registry
            cache.config.write_text(
                "listen: 0.0.0.0\nstorage: cache\nmirrors:\n"
                f"  hub: {{upstream: '{upstream.url}', port: {ports['hub']}}}\n"
                f"  own: {{upstream: '{other}', port: {ports['own']}}}\n")
            cache.process = procs.start("registry-cache serve",
                                        [*AGENT, "serve", "--config", str(cache.config)],
                                        cache.workdir / "serve.log", env=cache.env)
            procs.wait_for_v2(f"http://127.0.0.1:{ports['own']}", timeout=60, process=cache.process)
            table = _table(ports["own"], server)
            assert table is not None, cache.log()
            private = int(re.search(r"redirect to :(\d+)", table).group(1))
            assert _reaches("127.0.0.1", private)  # the runner's own view of its registry
            with client.entered():
                got = images.pull(image.ref(f"{SERVER_ADDRESS}:{ports['own']}"), tmp_path / "pull",
                                  timeout=60)
                assert got.digest == image.digest
                assert not _reaches(SERVER_ADDRESS, private), "the registry's private port is open to outside"
            cache.stop()
            assert _table(ports["own"], server) is None
        finally:
            cache.stop()
            upstream.stop()


def test_the_lab_sweeps_only_the_tables_of_ports_nobody_listens_on_any_more():
    """A killed runner's table would send a later test's connections for its port to a registry gone."""
    held = socket.create_server(("127.0.0.1", 0))
    alive, gone = held.getsockname()[1], procs.free_port()
    try:
        for port in (alive, gone):
            kernel.apply(kernel.plan(port, "127.0.0.1", procs.free_port(), ()))
        assert alive in kernel.listening_ports() and gone not in kernel.listening_ports()
        swept = nft.sweep_stale()
        assert kernel.table_name(gone) in swept and _table(gone) is None
        assert _table(alive) is not None  # its runner (here: a listener) still holds the port
    finally:
        held.close()
        for port in (alive, gone):
            kernel.apply(kernel.plan_removal(port))


def test_an_nft_killed_by_the_stops_signal_is_run_again_so_the_table_still_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """systemd signals a whole unit on stop: an nft caught by it must not leave the table behind."""
    runs = tmp_path / "runs"
    fake = tmp_path / "bin" / "nft"
    fake.parent.mkdir()
    # the first run is killed as a stop's SIGTERM would kill it; the next one applies the script
    marker = tmp_path / "killed-once"
    fake.write_text(f"#!/bin/sh\necho run >> {runs}\n"
                    f"[ -e {marker} ] && exit 0\n: > {marker}\nkill -TERM $$\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    kernel.apply(kernel.plan_removal(5001))
    assert runs.read_text().count("run") == 2


def test_an_nft_that_refuses_the_script_is_not_run_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runs = tmp_path / "runs"
    fake = tmp_path / "bin" / "nft"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\necho run >> {runs}\necho 'Error: no such table' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(kernel.KernelHandoverError, match="no such table"):
        kernel.apply(kernel.plan_removal(5001))
    assert runs.read_text().count("run") == 1
