"""Boots the VirtualBox box in plain QEMU, presenting the machine the way VirtualBox would.

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
import shutil
import socket
import tarfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from box.run import run
from tests.harness.procs import Process, start

_BASE_MAC = re.compile(r'config\.vm\.base_mac\s*=\s*"([0-9A-Fa-f:]{12,17})"')
# CIM resource types (DMTF CIM_ResourceAllocationSettingData)
_CPU, _MEMORY, _SATA, _NIC = "3", "4", "20", "10"


class BoxError(ValueError):
    """The VirtualBox box lacks something VirtualBox needs; the message names the file."""


@dataclass(frozen=True)
class VirtualBoxMachine:
    """What the VirtualBox box tells VirtualBox to create."""

    disk: Path
    cpus: int
    memory_mib: int
    mac: str  # aa:bb:cc:dd:ee:ff
    controller: str  # "AHCI"
    nic: str  # "E1000"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_box(folder: Path) -> VirtualBoxMachine:
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
    return VirtualBoxMachine(
        disk=folder / href,
        cpus=int(only(_CPU, "CPU")["VirtualQuantity"]),
        memory_mib=int(only(_MEMORY, "memory")["VirtualQuantity"]),
        mac=":".join(digits[i:i + 2] for i in range(0, 12, 2)),
        controller=only(_SATA, "SATA controller").get("ResourceSubType", ""),
        nic=only(_NIC, "network adapter").get("ResourceSubType", ""),
    )


def unpack_box(box_file: Path, dest: Path) -> Path:
    """Unpack a .box (a tar, gzip'd or not) into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(box_file) as tar:
        tar.extractall(dest, filter="data")
    return dest


def qemu_argv(
    machine: VirtualBoxMachine,
    overlay: Path,
    *,
    accel: str,
    forwards: Mapping[int, int],
    console_log: Path,
) -> list[str]:
    """The QEMU command line of the VirtualBox machine: AHCI disk, E1000 NIC with base_mac, NAT."""
    if machine.controller.upper() != "AHCI" or machine.nic.upper() != "E1000":
        raise BoxError(f"box.ovf asks for a {machine.controller} disk controller and a "
                       f"{machine.nic} NIC; this runner presents AHCI and E1000, as the box should")
    hostfwd = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for host, guest in forwards.items())
    return [
        "qemu-system-x86_64",
        "-accel", accel,
        "-machine", "pc",
        "-cpu", "max",
        "-smp", str(machine.cpus),
        "-m", str(machine.memory_mib),
        "-nodefaults", "-display", "none", "-no-user-config",
        "-device", "ahci,id=sata0",
        "-drive", f"if=none,id=disk0,file={overlay},format=qcow2",
        "-device", "ide-hd,drive=disk0,bus=sata0.0",
        "-netdev", f"user,id=nat0,{hostfwd}",
        "-device", f"e1000,netdev=nat0,mac={machine.mac}",
        "-serial", f"file:{console_log}",
    ]


@dataclass
class VirtualBoxLikeVM:
    """The VirtualBox box running in QEMU; `ssh_port` and `forwards` are on 127.0.0.1."""

    workdir: Path
    machine: VirtualBoxMachine
    accel: str
    forwards: dict[int, int]  # host port -> guest port
    launcher: Sequence[str] = ()
    process: Process | None = field(default=None, repr=False)
    powered_on: float = 0.0

    @property
    def console_log(self) -> Path:
        """The guest's serial console."""
        return self.workdir / "console.log"

    def start(self) -> None:
        """Make the overlay disk and power the VM on."""
        overlay = self.workdir / "disk.qcow2"
        overlay.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "vmdk",
             "-b", str(self.machine.disk.resolve()), str(overlay)], capture=True)
        argv = qemu_argv(self.machine, overlay, accel=self.accel, forwards=self.forwards,
                         console_log=self.console_log)
        self.powered_on = time.monotonic()
        self.process = start("virtualbox-box", [*self.launcher, *argv], self.workdir / "qemu.log")

    def wait_for_ssh(self, host_port: int, timeout: float = 600.0) -> float:
        """Wait until sshd greets on the forwarded port; return the seconds since power-on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and not self.process.alive():
                raise RuntimeError(f"QEMU exited: {self.process.log_tail()}")
            # user-mode networking accepts the connection itself: only data proves the guest
            try:
                with socket.create_connection(("127.0.0.1", host_port), timeout=3) as sock:
                    sock.settimeout(3)
                    if sock.recv(64):
                        return time.monotonic() - self.powered_on
            except OSError:
                pass
            time.sleep(1)
        raise RuntimeError(f"no answer on 127.0.0.1:{host_port} after {timeout:.0f} s; console:\n"
                           + "\n".join(self.console_log.read_text(errors="replace").splitlines()[-30:]))

    def stop(self) -> None:
        """Power the VM off (QEMU stopped by its pid) and delete its overlay disk."""
        if self.process is not None:
            self.process.stop(timeout=10)
        (self.workdir / "disk.qcow2").unlink(missing_ok=True)


def remove(path: Path) -> None:
    """Delete an unpacked box folder."""
    shutil.rmtree(path, ignore_errors=True)
