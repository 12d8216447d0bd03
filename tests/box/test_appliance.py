"""The box as a team gets it: what runs, as whom, on which address, and a real pull through it.

Runs once per box (libvirt amd64 and arm64 through `vagrant up`, VirtualBox's disk in QEMU):
see conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import images
from lab.machines import DEBUG_PORT_OFFSET, MIRROR_UNIT, RENDERED, SECRET_FILES, Machine

pytestmark = pytest.mark.box


def test_registry_cache_is_installed(machine: Machine):
    assert machine.host.file("/usr/local/bin/registry-cache").is_executable
    machine.host.run_expect([0], "registry-cache --version")
    assert machine.host.exists("docker-registry")


def test_every_mirror_unit_is_enabled_active_and_not_root(machine: Machine):
    assert machine.host.service("registry-cache-boot.service").is_enabled
    for name in machine.mirrors:
        service = machine.host.service(MIRROR_UNIT.format(name))
        assert service.is_enabled, name
        assert service.is_running, name
        unit = machine.unit(name)
        assert unit["User"] not in ("", "root"), unit
        main_pid = unit["MainPID"]
        users = machine.host.check_output(
            f"ps -o user= -p {main_pid}; ps -o user= --ppid {main_pid}").split()
        assert users and "root" not in users, f"{name}: processes run as {users}"


@pytest.mark.parametrize("timer", ["registry-cache-gc.timer", "registry-cache-warm.timer"])
def test_the_gc_and_warm_timers_are_enabled_and_scheduled(machine: Machine, timer: str):
    assert machine.host.service(timer).is_enabled
    assert machine.host.service(timer).is_running  # an active timer waits for its next run
    service = timer.replace(".timer", ".service")
    assert machine.host.file(f"/etc/systemd/system/{service}").exists


def test_gc_dry_run_measures_every_mirror_and_changes_nothing(machine: Machine):
    out = machine.host.run_expect([0], "sudo registry-cache gc --dry-run").stdout
    for name in machine.mirrors:
        assert f"{name}: " in out and " used;" in out, out


def test_the_boot_unit_did_not_fail_and_was_skipped_since_the_box_comes_applied(machine: Machine):
    # the box is baked with the embedded default applied: every boot starts the enabled
    # mirror units directly, without the boot unit's apply (and its Python) in the way
    boot = machine.host.check_output(
        "systemctl show -p Result -p ConditionResult registry-cache-boot.service")
    assert "Result=success" in boot and "ConditionResult=no" in boot, boot
    log = machine.host.check_output("journalctl -b -o cat -u registry-cache-boot.service")
    assert "started mirrors:" not in log, log


def test_mirror_ports_listen_on_the_configured_address_and_debug_ports_on_loopback_only(
    machine: Machine,
):
    listening = machine.host.socket.get_listening_sockets()
    for name, port in machine.mirrors.items():
        assert f"tcp://{machine.config['listen']}:{port}" in listening, (name, listening)
        debug = [s for s in listening if s.endswith(f":{port + DEBUG_PORT_OFFSET}")]
        assert debug == [f"tcp://127.0.0.1:{port + DEBUG_PORT_OFFSET}"], (name, debug)


def test_the_metrics_endpoint_is_active_and_answers_on_the_private_address(machine: Machine):
    service = machine.host.service("registry-cache-metrics.service")
    assert service.is_enabled and service.is_running
    # libvirt (either architecture): the box's private address; the VirtualBox disk in QEMU:
    # the guest's NAT address
    address = machine.address if machine.provider.startswith("libvirt") else \
        machine.host.check_output("hostname -I").split()[0]
    text = machine.host.check_output(f"curl -fsS --max-time 10 http://{address}:9110/metrics")
    for name in machine.mirrors:
        assert f'registry_cache_mirror_up{{mirror="{name}"}} 1.0' in text, text[-2000:]


def test_rendered_configs_are_readable_by_the_mirror_account_only(machine: Machine):
    for name in machine.mirrors:
        account = machine.unit(name)["User"]
        for filename in SECRET_FILES:
            rendered = machine.host.file(f"{RENDERED.format(name)}/{filename}")
            assert rendered.is_file, rendered.path
            assert rendered.mode == 0o600, (rendered.path, oct(rendered.mode))
            assert rendered.user == account, (rendered.path, rendered.user)


def test_status_reports_every_mirror_healthy_in_proxy_mode(machine: Machine):
    status = machine.wait_all_serving()
    assert sorted(m["name"] for m in status) == sorted(machine.mirrors)
    for mirror in status:
        assert mirror["healthy"] is True, mirror
        assert mirror["mode"] == "proxy", mirror
        assert mirror["problem"] is None, mirror


def _counts(machine: Machine, name: str) -> tuple[int, int]:
    mirror = next(m for m in machine.status() if m["name"] == name)
    return mirror["hits"], mirror["misses"]


@pytest.mark.destructive
def test_pull_through_the_cache_hits_the_second_time_and_survives_the_upstream_stopping(
    machine: Machine, lab, tmp_path: Path
):
    image = lab.image
    mirror = machine.mirror_host("team")
    _hits0, misses0 = _counts(machine, "team")

    cold = images.pull(image.ref(mirror), tmp_path / "cold", timeout=300)
    assert cold.digest == image.digest
    hits1, misses1 = _counts(machine, "team")
    assert misses1 > misses0, "a cold pull must count misses"
    front = next(m for m in machine.status() if m["name"] == "team")
    assert front["blob_transfers"] >= 1 and front["bytes_from_upstream"] > 0, "it went through the front"

    warm = images.pull(image.ref(mirror), tmp_path / "warm", timeout=300)
    assert warm.digest == image.digest
    hits2, misses2 = _counts(machine, "team")
    assert misses2 == misses1, "the warm pull must not go upstream"
    assert hits2 > hits1, "the warm pull must count hits"

    lab.upstream.stop()
    try:
        offline = images.pull(image.ref(mirror), tmp_path / "offline", timeout=300)
        assert offline.digest == image.digest
        stored = (tmp_path / "offline" / image.layers[0].digest.split(":", 1)[1]).read_bytes()
        assert len(stored) == image.layers[0].size
    finally:
        lab.upstream.start()


def test_a_pull_over_tls_from_the_namespace_verifies_the_box_ca(machine: Machine, lab, tmp_path: Path):
    """The mirror serves TLS on its address as the namespace reaches it (the libvirt box: its
    private IP), with a certificate `registry-cache ca` vouches for: skopeo checks it."""
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    ca = machine.ssh("registry-cache ca")
    assert ca.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY" not in ca
    (cert_dir / "ca.crt").write_text(ca)
    pulled = images.pull(lab.docker_image.ref(machine.mirror_host("team")), tmp_path / "pull",
                         cert_dir=cert_dir, timeout=300)
    assert pulled.digest == lab.docker_image.digest
    # the generated files sit beside config.yml: /vagrant in the Vagrant box, see conftest.py for the other
    folder = "/vagrant" if machine.provider.startswith("libvirt") else "/srv/cache-config"
    for name in ("ca.key", "server.key"):
        key = machine.host.file(f"{folder}/tls/{name}")
        assert (key.mode, key.user) == (0o600, machine.unit("team")["User"]), (key.path, oct(key.mode))


def test_no_secret_in_the_journal_status_or_vagrant_output(machine: Machine):
    journal = machine.host.check_output("journalctl --no-pager -o cat")
    status_text = machine.host.check_output("registry-cache status --no-rate-limit")
    status_json = json.dumps(machine.status())
    assert "team" in status_text  # the command really printed its table
    for where, text in (("journalctl", journal), ("status", status_text),
                        ("status --json", status_json), ("vagrant/apply output",
                                                         "\n".join(machine.outputs))):
        assert machine.secret not in text, f"the upstream password shows in {where}"


def test_the_arm64_box_runs_aarch64_with_uefi_and_its_cache_in_the_project_folder(machine: Machine):
    if machine.provider != "libvirt-arm64":
        pytest.skip("the arm64 box only")
    assert machine.host.check_output("uname -m").strip() == "aarch64"
    assert machine.host.file("/sys/firmware/efi").is_directory  # booted by UEFI, not a kernel
    mount = machine.host.mount_point("/vagrant")
    assert mount.filesystem == "9p", mount.filesystem
    # the mirror's storage is data/ in the project folder on the host, through 9p
    storage = machine.host.check_output("stat -c %U /vagrant/data/team")
    assert storage.strip() == machine.unit("team")["User"]
