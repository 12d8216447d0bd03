"""The arm64 box: its base disk's inputs, boot loader, Packer template, box Vagrantfile and QEMU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from box import arch as arches
from box import base_image, emulation
from box.packer import BoxSettings, PackerSettings, render_libvirt_vagrantfile, render_template
from lab.qemuvm import BoxError, libvirt_machine, qemu_argv, read_libvirt_box


def test_arch_lists_name_one_or_both_architectures_amd64_first():
    assert arches.parse_list("arm64") == ("arm64",)
    assert arches.parse_list("arm64,amd64") == ("amd64", "arm64")
    assert arches.parse_list("all") == ("amd64", "arm64")
    with pytest.raises(arches.ArchitectureError, match="pick amd64, arm64"):
        arches.parse_list("riscv64")


def test_the_amd64_base_disk_keeps_its_inputs():
    assert base_image.spec_for("amd64") == base_image.BaseImageSpec()


def test_the_arm64_base_disk_has_its_kernel_boot_loader_console_and_own_cache_name(tmp_path):
    spec = base_image.spec_for("arm64")
    assert spec.packages[0] == "linux-image-arm64"
    assert "linux-image-amd64" not in spec.packages
    assert "grub-efi-arm64-bin" in spec.packages
    assert "console=ttyAMA0" in spec.kernel_cmdline
    assert spec.key() != base_image.BaseImageSpec().key()
    assert base_image.image_path(tmp_path, spec).name.startswith("debian-bookworm-arm64-")


def test_the_arm64_disk_has_an_efi_system_partition_before_its_root():
    table, root_offset = base_image.partition_table(arches.ARM64)
    lines = table.splitlines()
    assert lines[0] == "label: dos"
    assert "type=ef" in lines[1] and f"size={base_image.ESP_MIB * 2048}" in lines[1]
    assert "type=83" in lines[2]
    assert root_offset == base_image.PARTITION_OFFSET + base_image.ESP_MIB * 2**20
    amd64_table, amd64_root = base_image.partition_table(arches.AMD64)
    assert "bootable" in amd64_table and amd64_root == base_image.PARTITION_OFFSET


def test_grub_boots_the_kernel_at_once_by_root_uuid_on_the_arm_serial_console():
    spec = base_image.spec_for("arm64")
    text = base_image.render_extlinux(spec.assets["grub.cfg.j2"], kernel="/boot/vmlinuz-6",
                                      initrd="/boot/initrd.img-6", root_uuid="1234",
                                      cmdline=spec.kernel_cmdline, timeout=0)
    assert "set timeout=0" in text
    assert "search --no-floppy --fs-uuid --set=root 1234" in text
    assert "linux /boot/vmlinuz-6 root=UUID=1234 ro console=ttyAMA0" in text
    assert "initrd /boot/initrd.img-6" in text


def test_cached_disks_and_pruning_keep_each_architecture_apart(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    names = ["debian-bookworm-aaaa.raw", "debian-bookworm-bbbb.raw", "debian-bookworm-cccc.raw",
             "debian-bookworm-arm64-dddd.raw"]
    for name in names:
        (base / name).write_bytes(b"")
    assert [p.name for p in base_image.cached_disks(tmp_path, "arm64")] == [names[3]]
    assert len(base_image.cached_disks(tmp_path)) == 3
    removed = base_image.prune(tmp_path, keep=1)
    assert len(removed) == 2 and (base / names[3]).exists()


def _settings(arch: arches.Architecture, root: Path = Path("/build")) -> PackerSettings:
    return PackerSettings(
        box=BoxSettings(version="1.2.3"), base_image=str(root / "base/debian.raw"),
        accelerator="tcg", output_dir=str(root / "packer/output"),
        serial_log=str(root / "packer/serial.log"),
        libvirt_box=str(root / "packer/registry-cache-1.2.3-libvirt-arm64.box"),
        libvirt_vagrantfile=str(root / "packer/Vagrantfile.libvirt"),
        payload=str(root / "payload.tar"), arch=arch)


def test_the_arm64_template_boots_uefi_on_qemus_virt_machine_with_an_emulated_cpu():
    text = render_template(_settings(arches.ARM64))
    assert 'qemu_binary      = "qemu-system-aarch64"' in text
    assert 'machine_type     = "virt"' in text
    assert '["-bios", "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd"]' in text
    assert '["-cpu", "cortex-a72"]' in text
    amd64 = render_template(_settings(arches.AMD64))
    assert 'qemu_binary      = "qemu-system-x86_64"' in amd64 and "-bios" not in amd64


@pytest.mark.allow_subprocess
def test_packer_validates_and_formats_the_arm64_template(tmp_path):
    if shutil.which("packer") is None:
        pytest.skip("packer is not installed (invoke install-deps --groups build)")
    (tmp_path / "payload.tar").write_bytes(b"")
    (tmp_path / "packer").mkdir()
    (tmp_path / "packer" / "Vagrantfile.libvirt").write_text("# empty\n")
    settings = _settings(arches.ARM64, tmp_path)
    settings = PackerSettings(**{**settings.__dict__,
                                 "scripts_dir": str(Path(__file__).parents[2] / "packer/scripts")})
    template = tmp_path / "box.pkr.hcl"
    template.write_text(render_template(settings))
    for argv in (["packer", "fmt", "-check", template.name], ["packer", "validate", template.name]):
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"


def test_the_arm64_box_vagrantfile_asks_libvirt_for_an_aarch64_uefi_machine(tmp_path):
    text = render_libvirt_vagrantfile(BoxSettings(version="1.2.3", memory=768, cpus=1),
                                      arch=arches.ARM64)
    assert 'libvirt.machine_arch = "aarch64"' in text
    assert 'libvirt.machine_type = "virt"' in text
    assert 'libvirt.cpu_model = "cortex-a72"' in text
    assert '"/usr/share/AAVMF/AAVMF_CODE.fd"' in text
    for setting in ("features = []", "inputs = []", 'graphics_type = "none"', 'video_type = "none"'):
        assert f"libvirt.{setting}" in text, setting
    assert "config.vm.provider :qemu" in text
    (tmp_path / "Vagrantfile").write_text(text)
    (tmp_path / "box.img").write_bytes(b"")
    machine = read_libvirt_box(tmp_path)
    assert (machine.arch, machine.cpus, machine.memory_mib) == ("arm64", 1, 768)


def test_a_libvirt_box_without_its_settings_is_refused(tmp_path):
    (tmp_path / "Vagrantfile").write_text("Vagrant.configure('2') {}\n")
    (tmp_path / "box.img").write_bytes(b"")
    with pytest.raises(BoxError, match=r"libvirt\.cpus"):
        read_libvirt_box(tmp_path)


def test_the_arm64_disk_boots_in_qemu_aarch64_as_vagrant_libvirt_presents_it():
    if not any(Path(p).is_file() for p in arches.AARCH64_FIRMWARE):
        pytest.skip("no arm64 UEFI firmware here (qemu-efi-aarch64)")
    machine = libvirt_machine(Path("box.img"), arch="arm64")
    argv = qemu_argv(machine, Path("o.qcow2"), accel="tcg", forwards={2222: 22},
                     console_log=Path("c.log"))
    text = " ".join(argv)
    assert argv[0] == "qemu-system-aarch64"
    assert "-machine virt" in text and "-cpu cortex-a72" in text
    assert f"-bios {machine.firmware}" in text
    assert "virtio-blk-pci" in text and "virtio-net-pci" in text
    kvm = " ".join(qemu_argv(machine, Path("o.qcow2"), accel="kvm", forwards={},
                             console_log=Path("c.log")))
    assert "-cpu host" in kvm


def test_an_amd64_disk_still_boots_in_qemu_x86_with_seabios():
    argv = qemu_argv(libvirt_machine(Path("box.img")), Path("o.qcow2"), accel="tcg", forwards={},
                     console_log=Path("c.log"))
    assert argv[0] == "qemu-system-x86_64" and "-bios" not in argv
    assert argv[argv.index("-cpu") + 1] == "max"


def test_binfmt_registration_is_read_from_qemu_user_static_and_checked(tmp_path):
    binfmt, confs = tmp_path / "binfmt", tmp_path / "binfmt.d"
    binfmt.mkdir()
    confs.mkdir()
    (binfmt / "register").write_text("")
    if emulation.native(arches.ARM64):
        pytest.skip("an arm64 machine runs arm64 programs itself")
    with pytest.raises(emulation.EmulationError, match="install qemu-user-static"):
        emulation.ensure_binfmt(arches.ARM64, binfmt, confs)
    (confs / "qemu-aarch64.conf").write_text("# comment\n:qemu-aarch64:M::magic:mask:/q:OPF\n")
    (binfmt / "qemu-aarch64").write_text("enabled\ninterpreter /q\n")
    assert emulation.ensure_binfmt(arches.ARM64, binfmt, confs) == "qemu-aarch64 already registered"
    (binfmt / "qemu-aarch64").write_text("disabled\n")
    with pytest.raises(emulation.EmulationError, match="is disabled"):
        emulation.ensure_binfmt(arches.ARM64, binfmt, confs)
