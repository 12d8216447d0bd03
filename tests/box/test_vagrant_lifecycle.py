"""What a team does to a running cache through Vagrant: reload, reboot, edit config.yml, break it.

libvirt box only (the VirtualBox box cannot run Vagrant here). Runs in file order: each
test starts from the state the previous one left.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lab import images
from lab.boot import LIBVIRT_HOST_SIDE
from lab.containerd import Containerd, write_hosts_dir
from lab.machines import MIRROR_UNIT, Machine, config_yaml
from tests.box.boxes import SECOND_PORT, LibvirtVM

pytestmark = [pytest.mark.box, pytest.mark.destructive]

# the bare mount point, seen through a bind mount of / that has no synced folder on top
UNDERLAY = "/run/registry-cache-test-underlay"


def _underlying_vagrant_dir(machine: Machine) -> list[str]:
    """What the root file system itself holds at /vagrant, below any synced folder."""
    text = machine.host.check_output(
        f"mkdir -p {UNDERLAY} && mount --bind / {UNDERLAY} && "
        f"(ls -A {UNDERLAY}/vagrant; umount {UNDERLAY})")
    return text.split()


def _pull_cached_with_upstream_stopped(machine: Machine, lab, dest: Path) -> None:
    lab.upstream.stop()
    try:
        pulled = images.pull(lab.image.ref(machine.mirror_host("team")), dest, timeout=300)
        assert pulled.digest == lab.image.digest
    finally:
        lab.upstream.start()


def _warm_the_cache(machine: Machine, lab, dest: Path) -> None:
    machine.wait_all_serving()
    pulled = images.pull(lab.image.ref(machine.mirror_host("team")), dest, timeout=300)
    assert pulled.digest == lab.image.digest


def test_the_readme_first_hour_up_from_the_build_catalog_then_a_pull_then_status(
    libvirt_vm: LibvirtVM, build_meta, lab, tmp_path: Path
):
    # the folder holds what a team drops in, nothing of this repository, and what the box made
    # there: the cache (data/) and, for `tls: auto`, the CA and certificate (tls/)
    assert sorted(p.name for p in libvirt_vm.project.iterdir() if p.name != ".vagrant") == \
        ["Vagrantfile", "config.yml", "data", "secrets", "tls"]
    up = libvirt_vm.machine.outputs[0]  # vagrant up's output: it added the box itself
    catalog = libvirt_vm.vagrant.settings["REGISTRY_CACHE_BOX_URL"]
    assert catalog.endswith(f"/dist/catalog/{build_meta.name}.json"), catalog
    assert f"Loading metadata for box '{catalog}'" in up, up
    assert "No version detected" not in up
    listed = libvirt_vm.vagrant("box", "list").output
    assert f"{build_meta.name} (libvirt, {build_meta.version}" in listed, listed

    _warm_the_cache(libvirt_vm.machine, lab, tmp_path / "first-pull")

    status = libvirt_vm.vagrant("ssh", "-c", "registry-cache status", timeout=300)
    assert "team" in status.output, status.output


def test_vagrant_reload_without_provision_brings_the_mirrors_back_with_their_cache(
    libvirt_vm: LibvirtVM, lab, tmp_path: Path
):
    machine = libvirt_vm.machine
    _warm_the_cache(machine, lab, tmp_path / "warm")
    before = machine.boot_id()

    reload = libvirt_vm.vagrant("reload", "--no-provision")
    machine.outputs.append(reload.output)

    assert "Running provisioner" not in reload.output
    assert machine.boot_id() != before
    machine.wait_all_serving()
    assert machine.host.service(MIRROR_UNIT.format("team")).is_running
    assert _underlying_vagrant_dir(machine) == [], "something was written into the bare /vagrant"
    _pull_cached_with_upstream_stopped(machine, lab, tmp_path / "offline")


def test_reboot_from_inside_waits_for_the_synced_folder_then_serves_the_cache(
    libvirt_vm: LibvirtVM, lab, tmp_path: Path
):
    machine = libvirt_vm.machine
    _warm_the_cache(machine, lab, tmp_path / "warm")
    mount = machine.host.check_output("findmnt -n -o SOURCE,FSTYPE,OPTIONS /vagrant").split()
    assert len(mount) == 3 and mount[1] == "9p", mount
    tag, options = mount[0], mount[2]
    before = machine.boot_id()

    mount_like_vagrant = f"mount -t 9p -o {options},version=9p2000.L {tag} /vagrant"

    machine.ssh("sudo systemd-run --on-active=1 systemctl reboot")
    machine.wait_for_new_boot(before)
    try:
        # Nobody mounted /vagrant (Vagrant was not asked): the mirror must wait, not write there.
        assert not machine.host.mount_point("/vagrant").exists
        machine.wait_until(
            lambda s: any(m["name"] == "team" and m["mode"] == "waiting-for-storage" for m in s),
            "the mirror waiting for its storage")
        assert machine.host.service(MIRROR_UNIT.format("team")).is_enabled
        assert _underlying_vagrant_dir(machine) == [], "something was written into the bare /vagrant"

        # Mount it the way Vagrant does: the mirror comes back by itself, its cache intact.
        machine.host.run_expect([0], mount_like_vagrant)
        machine.wait_all_serving()
        _pull_cached_with_upstream_stopped(machine, lab, tmp_path / "offline")
    finally:
        # the next tests need the synced folder, whatever happened here
        if not machine.host.mount_point("/vagrant").exists:
            machine.host.run(mount_like_vagrant)


def test_provision_with_a_second_upstream_starts_it_and_leaves_the_first_mirror_running(
    libvirt_vm: LibvirtVM, lab, tmp_path: Path
):
    machine = libvirt_vm.machine
    machine.wait_all_serving()
    first_before = machine.unit("team")
    config = yaml.safe_load((libvirt_vm.project / "config.yml").read_text())
    config["mirrors"]["second"] = {
        "upstream": f"http://{LIBVIRT_HOST_SIDE}:{lab.second_upstream.port}",
        "port": SECOND_PORT,
    }
    (libvirt_vm.project / "config.yml").write_text(config_yaml(config))

    provision = libvirt_vm.vagrant("provision")
    machine.outputs.append(provision.output)
    machine.config = config

    assert machine.host.service(MIRROR_UNIT.format("second")).is_running
    assert machine.host.service(MIRROR_UNIT.format("second")).is_enabled
    pulled = images.pull(lab.second_image.ref(machine.mirror_host("second")), tmp_path / "second",
                         timeout=300)
    assert pulled.digest == lab.second_image.digest
    first_after = machine.unit("team")
    assert first_after["MainPID"] == first_before["MainPID"], "the first mirror was restarted"
    assert first_after["ActiveEnterTimestamp"] == first_before["ActiveEnterTimestamp"]


def test_port_5000_serves_both_upstreams_to_containerd_by_ns(libvirt_vm: LibvirtVM, lab, tmp_path: Path):
    """After the second upstream's provision, the first mirror's port 5000 answers for both.

    containerd's own resolver is told only that port, for every registry (`_default/hosts.toml`):
    it names each image's registry with `?ns=`. Its fallback to a registry itself goes over https,
    which these plain-HTTP upstreams do not speak: the digests can only have come through port 5000.
    """
    machine = libvirt_vm.machine
    machine.wait_all_serving()
    assert "second" in machine.mirrors, "runs after the provision that adds the second upstream"
    ca = tmp_path / "ca.crt"
    ca.write_text(machine.ssh("registry-cache ca"))
    hosts = write_hosts_dir(tmp_path / "certs.d", f"https://{machine.mirror_host('team')}", ca_file=ca)
    with Containerd(tmp_path / "containerd") as containerd:
        for upstream, image in ((lab.upstream, lab.image), (lab.second_upstream, lab.second_image)):
            ref = f"{LIBVIRT_HOST_SIDE}:{upstream.port}/{image.repo}:{image.tag}"
            assert containerd.pull(ref, hosts) == image.digest, ref


def test_broken_config_fails_provision_naming_file_line_key_and_mirrors_keep_serving(
    libvirt_vm: LibvirtVM, lab, tmp_path: Path
):
    machine = libvirt_vm.machine
    machine.wait_all_serving()
    before = {name: machine.unit(name) for name in machine.mirrors}
    good = (libvirt_vm.project / "config.yml").read_text()
    broken = good.replace(f"port: {SECOND_PORT}", "port: 70000")
    assert broken != good
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "port: 70000" in text)
    (libvirt_vm.project / "config.yml").write_text(broken)
    try:
        provision = libvirt_vm.vagrant("provision", check=False)
        machine.outputs.append(provision.output)

        assert not provision.ok, "vagrant provision must fail on an invalid config.yml"
        assert re.search(rf"/vagrant/config\.yml:{line}: mirrors\.second\.port: ", provision.output), \
            provision.output
        for name in machine.mirrors:
            after = machine.unit(name)
            assert after["MainPID"] == before[name]["MainPID"], f"{name} was restarted"
        pulled = images.pull(lab.image.ref(machine.mirror_host("team")), tmp_path / "team",
                             timeout=300)
        assert pulled.digest == lab.image.digest
        pulled = images.pull(lab.second_image.ref(machine.mirror_host("second")),
                             tmp_path / "second", timeout=300)
        assert pulled.digest == lab.second_image.digest
    finally:
        (libvirt_vm.project / "config.yml").write_text(good)


def test_secret_never_printed_during_the_lifecycle(libvirt_vm: LibvirtVM):
    machine = libvirt_vm.machine
    journal = machine.host.check_output("journalctl --no-pager -o cat")
    for where, text in (("journalctl", journal), ("vagrant output", "\n".join(machine.outputs))):
        assert machine.secret not in text, f"the upstream password shows in {where}"
