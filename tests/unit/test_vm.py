"""The pure parts of the lab's VM machinery: reading the VirtualBox box, QEMU argv, catalogs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from invoke.exceptions import Exit

from box.tasks.testbox import providers_to_test
from lab.qemuvm import BoxError, BoxMachine, libvirt_machine, qemu_argv, read_box
from lab.vagrant import Vagrant, box_catalog, libvirt_volume_prefix

DATA = Path(__file__).parent / "vm_data"


def _box(tmp_path: Path, vagrantfile: str | None = None) -> Path:
    folder = tmp_path / "box"
    folder.mkdir()
    shutil.copy(DATA / "box.ovf", folder / "box.ovf")
    if vagrantfile is None:
        shutil.copy(DATA / "Vagrantfile", folder / "Vagrantfile")
    else:
        (folder / "Vagrantfile").write_text(vagrantfile)
    return folder


def test_read_box_takes_hardware_from_the_ovf_and_the_mac_from_base_mac(tmp_path):
    machine = read_box(_box(tmp_path))
    assert machine.disk == tmp_path / "box" / "box-disk001.vmdk"
    assert (machine.cpus, machine.memory_mib) == (2, 1024)
    assert (machine.controller, machine.nic) == ("AHCI", "E1000")
    assert machine.mac == "08:00:27:a1:c0:de"


def test_read_box_without_base_mac_names_the_vagrantfile(tmp_path):
    with pytest.raises(BoxError, match=r"Vagrantfile: no config\.vm\.base_mac"):
        read_box(_box(tmp_path, vagrantfile='Vagrant.configure("2") do |config|\nend\n'))


def test_virtualbox_machine_boots_with_an_ahci_disk_and_an_e1000_nic_on_loopback_forwards(tmp_path):
    machine = read_box(_box(tmp_path))
    argv = qemu_argv(machine, tmp_path / "o.qcow2", accel="tcg", forwards={2222: 22, 5000: 5000},
                     console_log=tmp_path / "console.log")
    joined = " ".join(argv)
    assert "-device ahci,id=sata0" in joined
    assert "-device ide-hd,drive=disk0,bus=sata0.0" in joined
    assert "-device e1000,netdev=nat0,mac=08:00:27:a1:c0:de" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:5000-:5000" in joined
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-m") + 1] == "1024"


def test_libvirt_disk_boots_on_virtio():
    argv = " ".join(qemu_argv(libvirt_machine(Path("box.img")), Path("o.qcow2"), accel="kvm",
                              forwards={}, console_log=Path("c.log")))
    assert "virtio-blk-pci" in argv and "virtio-net-pci" in argv


def test_a_controller_the_runner_cannot_present_is_refused():
    odd = BoxMachine(Path("d.vmdk"), 1, 512, "08:00:27:00:00:01", "IDE", "E1000")
    with pytest.raises(BoxError, match="IDE disk controller"):
        qemu_argv(odd, Path("o.qcow2"), accel="tcg", forwards={}, console_log=Path("c.log"))


def test_box_catalog_adds_the_local_box_with_its_version(tmp_path):
    catalog = box_catalog("org/cache", "1.2.0", "libvirt", tmp_path / "x.box", "ab" * 32)
    version = catalog["versions"][0]
    assert catalog["name"] == "org/cache" and version["version"] == "1.2.0"
    assert version["providers"] == [{"name": "libvirt", "url": (tmp_path / "x.box").as_uri(),
                                     "checksum_type": "sha256", "checksum": "ab" * 32}]


def test_libvirt_volume_prefix_follows_vagrant_libvirts_naming():
    assert libvirt_volume_prefix("org/cache") == "org-VAGRANTSLASH-cache_vagrant_box_image_"


def test_vagrant_home_file_points_vagrant_libvirt_at_the_private_socket(tmp_path):
    vagrant = Vagrant(tmp_path / "project", tmp_path / "home")
    vagrant.configure_home("qemu:///system?socket=/x/libvirt-sock")
    text = (tmp_path / "home" / "Vagrantfile").read_text()
    assert 'libvirt.uri = "qemu:///system?socket=/x/libvirt-sock"' in text


def test_providers_run_virtualbox_first_and_refuse_what_the_build_lacks():
    assert providers_to_test("all", ["libvirt", "virtualbox"]) == ["virtualbox", "libvirt"]
    assert providers_to_test("libvirt", ["libvirt"]) == ["libvirt"]
    with pytest.raises(Exit, match="no virtualbox box"):
        providers_to_test("virtualbox", ["libvirt"])
    with pytest.raises(Exit, match="pick virtualbox, libvirt-arm64, libvirt or all"):
        providers_to_test("hyperv", ["libvirt"])


def test_the_arm64_box_is_tested_after_virtualbox_and_before_the_vagrant_up_of_libvirt():
    built = ["libvirt", "virtualbox", "libvirt-arm64"]
    assert providers_to_test("all", built) == ["virtualbox", "libvirt-arm64", "libvirt"]
    assert providers_to_test("libvirt-arm64", built) == ["libvirt-arm64"]
    with pytest.raises(Exit, match="--arch arm64"):
        providers_to_test("libvirt-arm64", ["libvirt", "virtualbox"])
