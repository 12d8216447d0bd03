"""Writes the VirtualBox box's OVF 1.0 descriptor (box.ovf) from plain data, from a template."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from box.templating import render

# VirtualBox's "Debian (64-bit)": its OSType name and the CIM id VirtualBox exports with it
OS_TYPE = "Debian_64"
OS_CIM_ID = 96
# a fixed MAC in VirtualBox's own range (08:00:27), the same in box.ovf and the Vagrantfile
DEFAULT_MAC = "080027A1C0DE"
_MAC = re.compile(r"^[0-9A-F]{12}$")
_NAMESPACE = uuid.UUID("8f1f6a49-63c4-4f0a-9d5c-2b1f0a6f6c11")


@dataclass(frozen=True)
class OvfMachine:
    """The VirtualBox machine a box describes: its disk file and the hardware around it."""

    name: str
    version: str
    disk_file: str
    disk_file_size: int
    disk_capacity: int
    cpus: int = 2
    memory: int = 1024
    mac: str = DEFAULT_MAC

    def __post_init__(self) -> None:
        if not _MAC.match(self.mac):
            raise ValueError(f"MAC {self.mac!r}: give 12 upper-case hex digits, no colons")
        if self.disk_capacity <= 0 or self.disk_file_size <= 0:
            raise ValueError("the disk's capacity and file size must be positive")

    def disk_uuid(self) -> str:
        """Return the disk's UUID: stable for a name, version and disk file."""
        name = f"disk/{self.name}/{self.version}/{self.disk_file}"
        return "{" + str(uuid.uuid5(_NAMESPACE, name)) + "}"

    def machine_uuid(self) -> str:
        """Return the machine's UUID: stable for a name and version."""
        return "{" + str(uuid.uuid5(_NAMESPACE, f"machine/{self.name}/{self.version}")) + "}"


def render_ovf(machine: OvfMachine) -> str:
    """Return box.ovf for the machine (OVF 1.0, importable by VirtualBox)."""
    return render("box.ovf.j2",
        name=machine.name,
        disk_file=machine.disk_file,
        disk_file_size=machine.disk_file_size,
        disk_capacity=machine.disk_capacity,
        disk_uuid=machine.disk_uuid(),
        machine_uuid=machine.machine_uuid(),
        cpus=machine.cpus,
        memory=machine.memory,
        mac=machine.mac,
        os_type=OS_TYPE,
        os_cim_id=OS_CIM_ID,
    )


def render_vagrantfile(machine: OvfMachine) -> str:
    """Return the Vagrantfile of the VirtualBox box: base_mac, memory and CPUs."""
    return render("Vagrantfile.virtualbox.j2",
        name=machine.name, version=machine.version, mac=machine.mac,
        memory=machine.memory, cpus=machine.cpus,
    )
