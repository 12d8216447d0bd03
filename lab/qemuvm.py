"""Boots a box's disk in plain QEMU, presenting the machine the way its provider would.

Mainly for the VirtualBox box:
VirtualBox cannot run on the build machines, so the box's own description is read and
honoured instead: `box.ovf` (CPUs, memory, the disk file, an AHCI/SATA controller, one
E1000 NAT adapter) and the box's `Vagrantfile` (`config.vm.base_mac`, the MAC Vagrant
gives that adapter). The streamOptimized VMDK is never written to: like VirtualBox's
import, the VM runs on a copy (a qcow2 overlay on top of it). The NAT adapter becomes
QEMU user-mode networking: the guest reaches the host as 10.0.2.2 (the host's 127.0.0.1),
and `hostfwd` forwards 127.0.0.1 ports to the guest, as Vagrant's NAT port forwards do.
Run it inside the test's network namespace so even that loopback is the namespace's own.
"""

from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from box import arch as arches
from box.run import Process, run, start
from box.wait import wait_until

_BASE_MAC = re.compile(r'config\.vm\.base_mac\s*=\s*"([0-9A-Fa-f:]{12,17})"')
# the libvirt box's Vagrantfile (packer/Vagrantfile.libvirt*.j2): `libvirt.NAME = VALUE`
_LIBVIRT_SETTING = re.compile(r'^\s*libvirt\.(\w+)\s*=\s*"?([^"\n]*?)"?\s*$', re.M)
# CIM resource types (DMTF CIM_ResourceAllocationSettingData)
_CPU, _MEMORY, _SATA, _NIC = "3", "4", "20", "10"


class BoxError(ValueError):
    """The VirtualBox box lacks something VirtualBox needs; the message names the file."""


@dataclass(frozen=True)
class BoxMachine:
    """The machine a box asks its provider for: disk, CPUs, memory, disk controller, NIC."""

    disk: Path
    cpus: int
    memory_mib: int
    mac: str  # aa:bb:cc:dd:ee:ff
    controller: str  # "AHCI" (VirtualBox's SATA) or "virtio" (libvirt)
    nic: str  # "E1000" (VirtualBox) or "virtio" (libvirt)
    disk_format: str = "vmdk"
    arch: str = arches.DEFAULT
    # UEFI firmware (arm64): what the box's Vagrantfile hands libvirt as its loader
    firmware: str = ""


def host_firmware(architecture: arches.Architecture) -> str:
    """The UEFI firmware a box of this architecture boots with here ("" for a BIOS one).

    The first of the paths the arm64 box's Vagrantfile tries, as it would pick it.
    """
    if not architecture.efi:
        return ""
    found = next((p for p in arches.AARCH64_FIRMWARE if Path(p).is_file()), "")
    if not found:
        raise BoxError(f"no arm64 UEFI firmware here (tried {', '.join(arches.AARCH64_FIRMWARE)}):"
                       " install qemu-efi-aarch64")
    return found


def libvirt_machine(disk: Path, cpus: int = 2, memory_mib: int = 1024,
                    arch: str = arches.DEFAULT) -> BoxMachine:
    """The machine vagrant-libvirt makes of a libvirt box: virtio disk and NIC (arm64: UEFI)."""
    return BoxMachine(disk=disk, cpus=cpus, memory_mib=memory_mib, mac="52:54:00:12:34:56",
                      controller="virtio", nic="virtio", disk_format="qcow2", arch=arch,
                      firmware=host_firmware(arches.get(arch)))


def read_libvirt_box(folder: Path) -> BoxMachine:
    """Read an unpacked libvirt box: its disk, and CPUs, memory, architecture from its Vagrantfile."""
    vagrantfile, disk = folder / "Vagrantfile", folder / "box.img"
    for path in (vagrantfile, disk):
        if not path.exists():
            raise BoxError(f"{path}: missing from the libvirt box")
    settings = dict(_LIBVIRT_SETTING.findall(vagrantfile.read_text()))
    by_libvirt_arch = {a.libvirt_arch: a.name for a in arches.ARCHITECTURES.values()}
    arch = by_libvirt_arch.get(settings.get("machine_arch", ""), arches.DEFAULT)
    try:
        cpus, memory = int(settings["cpus"]), int(settings["memory"])
    except (KeyError, ValueError):
        raise BoxError(f"{vagrantfile}: no libvirt.cpus and libvirt.memory numbers") from None
    return libvirt_machine(disk, cpus=cpus, memory_mib=memory, arch=arch)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_box(folder: Path) -> BoxMachine:
    """Read box.ovf and the Vagrantfile of an unpacked VirtualBox box."""
    ovf_path, vagrantfile = folder / "box.ovf", folder / "Vagrantfile"
    for path in (ovf_path, vagrantfile):
        if not path.exists():
            raise BoxError(f"{path}: missing from the VirtualBox box")
    root = ET.parse(ovf_path).getroot()
    files = [el for el in root.iter() if _local(el.tag) == "File"]
    if len(files) != 1:
        raise BoxError(f"{ovf_path}: expected one References/File, found {len(files)}")
    href = next((v for k, v in files[0].attrib.items() if _local(k) == "href"), "")
    items: dict[str, list[dict[str, str]]] = {}
    for item in (el for el in root.iter() if _local(el.tag) == "Item"):
        fields = {_local(child.tag): (child.text or "").strip() for child in item}
        items.setdefault(fields.get("ResourceType", ""), []).append(fields)

    def only(kind: str, what: str) -> dict[str, str]:
        found = items.get(kind, [])
        if len(found) != 1:
            raise BoxError(f"{ovf_path}: expected one {what} item, found {len(found)}")
        return found[0]

    match = _BASE_MAC.search(vagrantfile.read_text())
    if not match:
        raise BoxError(f"{vagrantfile}: no config.vm.base_mac (Vagrant needs it to set the NAT MAC)")
    digits = match.group(1).replace(":", "").lower()
    return BoxMachine(
        disk=folder / href,
        cpus=int(only(_CPU, "CPU")["VirtualQuantity"]),
        memory_mib=int(only(_MEMORY, "memory")["VirtualQuantity"]),
        mac=":".join(digits[i:i + 2] for i in range(0, 12, 2)),
        controller=only(_SATA, "SATA controller").get("ResourceSubType", ""),
        nic=only(_NIC, "network adapter").get("ResourceSubType", ""),
    )


def unpack_box(box_file: Path, dest: Path) -> Path:
    """Unpack a .box (a tar, gzip'd or not) into `dest`, with the system's tar as Vagrant does.

    Not Python's tarfile: Packer's vagrant post-processor writes GNU headers whose atime/ctime
    fields tarfile reads as a ustar name prefix (box.img became 15302610461/box.img).
    """
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "-xf", str(box_file), "-C", str(dest), "--no-same-owner"], capture=True)
    return dest


def qemu_argv(
    machine: BoxMachine,
    overlay: Path,
    *,
    accel: str,
    forwards: Mapping[int, int],
    console_log: Path,
) -> list[str]:
    """The QEMU command line: the box's disk controller and NIC (with its MAC), NAT networking."""
    hostfwd = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in forwards.items())
    presented = (machine.controller.upper(), machine.nic.upper())
    if presented == ("AHCI", "E1000"):
        disk = ["-device", "ahci,id=sata0",
                "-drive", f"if=none,id=disk0,file={overlay},format=qcow2",
                "-device", "ide-hd,drive=disk0,bus=sata0.0"]
        nic = f"e1000,netdev=nat0,mac={machine.mac}"
    elif presented == ("VIRTIO", "VIRTIO"):
        disk = ["-drive", f"if=none,id=disk0,file={overlay},format=qcow2",
                "-device", "virtio-blk-pci,drive=disk0"]
        nic = f"virtio-net-pci,netdev=nat0,mac={machine.mac}"
    else:
        raise BoxError(f"the box asks for a {machine.controller} disk controller and a "
                       f"{machine.nic} NIC; this runner presents AHCI+E1000 (VirtualBox) or "
                       "virtio (libvirt)")
    architecture = arches.get(machine.arch)
    # arm64 as its box's Vagrantfile asks libvirt: the host's CPU under KVM, else emulated
    cpu = "host" if accel == "kvm" and architecture.needs_emulation else architecture.emulated_cpu
    # vagrant-libvirt's <loader type='rom'>: libvirt passes the firmware as -bios
    firmware = ["-bios", machine.firmware] if machine.firmware else []
    return [
        architecture.qemu_binary,
        "-accel", accel,
        "-machine", architecture.machine_type,
        "-cpu", cpu,
        *firmware,
        "-smp", str(machine.cpus),
        "-m", str(machine.memory_mib),
        "-nodefaults", "-display", "none", "-no-user-config",
        *disk,
        "-netdev", f"user,id=nat0,{hostfwd}",
        "-device", nic,
        "-serial", f"file:{console_log}",
    ]


@dataclass
class QemuVM:
    """A box's disk running in QEMU; the `forwards` (host -> guest ports) are on 127.0.0.1."""

    workdir: Path
    machine: BoxMachine
    accel: str
    forwards: dict[int, int]  # host port -> guest port
    process: Process | None = field(default=None, repr=False)
    powered_on: float = 0.0

    @property
    def console_log(self) -> Path:
        """The guest's serial console."""
        return self.workdir / "console.log"

    @property
    def overlay(self) -> Path:
        """The VM's own disk: a qcow2 overlay; the box's disk is never written."""
        return self.workdir / "disk.qcow2"

    def start(self, *, fresh: bool = True) -> None:
        """Power the VM on (`fresh`: on a new overlay, else on the disk of the last run)."""
        overlay = self.overlay
        if fresh or not overlay.exists():
            overlay.unlink(missing_ok=True)
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", self.machine.disk_format,
                 "-b", str(self.machine.disk.resolve()), str(overlay)], capture=True)
        argv = qemu_argv(self.machine, overlay, accel=self.accel, forwards=self.forwards,
                         console_log=self.console_log)
        self.powered_on = time.monotonic()
        self.process = start(f"box-{self.machine.controller.lower()}", argv,
                             self.workdir / "qemu.log")

    def wait_for_ssh(self, host_port: int, timeout: float = 600.0) -> float:
        """Wait until sshd greets on the forwarded port; return the seconds since power-on."""
        def greets() -> bool:
            if self.process is not None and not self.process.alive():
                raise RuntimeError(f"QEMU exited: {self.process.log_tail()}")
            # user-mode networking accepts the connection itself: only data proves the guest
            try:
                with socket.create_connection(("127.0.0.1", host_port), timeout=3) as sock:
                    sock.settimeout(3)
                    return bool(sock.recv(64))
            except OSError:
                return False

        wait_until(greets, f"sshd greeting on 127.0.0.1:{host_port}", timeout=timeout, interval=1,
                   detail=lambda: "console:\n" + "\n".join(
                       self.console_log.read_text(errors="replace").splitlines()[-30:]),
                   error=RuntimeError)
        return time.monotonic() - self.powered_on

    def wait_exit(self, timeout: float = 120.0) -> None:
        """Wait for QEMU to end by itself (the guest powered off)."""
        if self.process is not None:
            self.process.wait(timeout)

    def stop(self, *, keep_disk: bool = False) -> None:
        """Power the VM off (QEMU stopped by its pid); delete its overlay unless `keep_disk`."""
        if self.process is not None:
            self.process.stop(timeout=10)
        if not keep_disk:
            self.overlay.unlink(missing_ok=True)
