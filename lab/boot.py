"""Boots a built box the way users run it, for the box tests and the boot benchmark.

Two ways, shared by tests/box/conftest.py and bench/boot_to_ready.py:

- the libvirt box through the real `vagrant up` of the drop-in Vagrantfile, against a
  private libvirtd (`libvirt_box_added`): from the catalog build-box wrote, as the README's
  first hour does, or after an explicit `vagrant box add` (timed apart, for the benchmark);
- a box's disk in plain QEMU as its provider presents it, reached over forwarded
  127.0.0.1 ports with Vagrant's insecure key (`QemuBox`): how the VirtualBox box is
  booted where VirtualBox cannot run.

The calling thread must be inside the lab's network namespace (`NetworkNamespace.entered`),
so every VM network, daemon and forwarded port exists only there.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from box.buildinfo import BuildMetadata
from box.run import step
from lab.libvirtd import PrivateLibvirt
from lab.machines import VAGRANT_INSECURE_KEY, Machine, config_yaml, ssh_config_for
from lab.netns import NetworkNamespace
from lab.qemuvm import BoxMachine, QemuVM
from lab.vagrant import Vagrant, box_catalog, libvirt_volume_prefix

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# the drop-in Vagrantfile's private network: the box's default address, and the host side of
# the bridge vagrant-libvirt creates (where the guest reaches the namespace)
BOX_IP = "192.168.56.50"
LIBVIRT_HOST_SIDE = "192.168.56.1"
# QEMU user-mode networking: the guest reaches the namespace's 127.0.0.1 here (VirtualBox NAT alike)
QEMU_NAT_HOST = "10.0.2.2"


def insecure_identity(dest: Path) -> Path:
    """A copy of Vagrant's insecure private key that only we can read (ssh refuses it otherwise)."""
    shutil.copy(VAGRANT_INSECURE_KEY, dest)
    dest.chmod(0o600)
    return dest


def drop_in_project(project: Path, config: Mapping[str, Any], files: Mapping[str, str]) -> Path:
    """A team's project folder: the repository's drop-in Vagrantfile, config.yml and `files`."""
    project.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "Vagrantfile", project / "Vagrantfile")
    for name, text in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (project / "config.yml").write_text(config_yaml(dict(config)))
    return project


def apply_config(guest: Machine, folder: str, config: Mapping[str, Any],
                 files: Mapping[str, str], timeout: float = 600) -> str:
    """Put config.yml and `files` (0600) under `folder` in the guest, run `registry-cache apply` on it.

    For a box booted without Vagrant (no /vagrant): returns what apply printed.
    """
    for name, text in files.items():
        guest.write_file(f"{folder}/{name}", text, mode="0600")
    guest.write_file(f"{folder}/config.yml", config_yaml(dict(config)))
    return guest.ssh(f"sudo registry-cache apply --config {folder}/config.yml 2>&1", timeout=timeout)


@dataclass
class LibvirtBox:
    """The libvirt box added to a private Vagrant that talks to a private libvirtd."""

    vagrant: Vagrant
    libvirt: PrivateLibvirt
    box_add_output: str  # what `vagrant box add` printed ("" when `vagrant up` adds the box)
    box_add_seconds: float


@contextlib.contextmanager
def libvirt_box_added(
    work: Path,
    project: Path,
    namespace: NetworkNamespace,
    meta: BuildMetadata,
    dist: Path,
    accel: str,
    *,
    ip: str = BOX_IP,
    catalog: Path | None = None,
    arch: str = "amd64",
) -> Iterator[LibvirtBox]:
    """Start libvirtd in `namespace`, ready to `vagrant up` the libvirt box of `meta`, at its version.

    With `catalog` (build-box's dist/catalog/<name>.json) the box is left to `vagrant up`,
    which adds it from there through REGISTRY_CACHE_BOX_URL as a user's does; without,
    it is `vagrant box add`ed here from a catalog of its own.
    `vagrant up` is the caller's (it times it). On the way out, also on failure: every VM
    destroyed, the box removed from Vagrant and from the libvirt pool, the daemons stopped.
    """
    box = next((b for b in meta.boxes if b.provider == "libvirt" and b.architecture == arch), None)
    if box is None:
        raise ValueError(f"{dist}/build.json lists no {arch} libvirt box: rebuild with "
                         f"`./invoke build-box --arch {arch}`")
    daemons = PrivateLibvirt(work / "libvirt", namespace)
    vagrant = Vagrant(project, work / "vagrant-home", settings={
        "REGISTRY_CACHE_BOX": meta.name,
        "REGISTRY_CACHE_BOX_URL": (catalog or work / "box-catalog.json").resolve().as_uri(),
        "REGISTRY_CACHE_BOX_VERSION": meta.version,
        "REGISTRY_CACHE_IP": ip,
        # kvm only where KVM really runs guests (box.qemu.probe_accelerator); else emulation
        "REGISTRY_CACHE_LIBVIRT_DRIVER": "kvm" if accel == "kvm" else "qemu",
        # the private libvirtd runs QEMU as root (lab/libvirt-qemu.conf), not libvirt-qemu
        "REGISTRY_CACHE_QEMU_USER": "root",
        # the box of that architecture, whatever this host's is
        "REGISTRY_CACHE_ARCH": arch,
    })
    box_added = catalog is not None  # then `vagrant up` adds it
    try:
        with step("start virtlogd + libvirtd in the namespace"):
            daemons.start()
        vagrant.configure_home(daemons.uri)
        if catalog is not None:
            if not catalog.is_file():
                raise FileNotFoundError(f"{catalog}: no box catalog: `./invoke build-box` writes it")
            yield LibvirtBox(vagrant, daemons, "", 0.0)
            return
        with step(f"vagrant box add {meta.name} {meta.version} (libvirt)"):
            box_added = True  # a half-done add leaves files behind too
            started = time.monotonic()
            added = vagrant.add_box(
                box_catalog(meta.name, meta.version, "libvirt", dist / box.file, box.sha256),
                work, "libvirt", box.architecture)
        yield LibvirtBox(vagrant, daemons, added.output, time.monotonic() - started)
    finally:
        with step("vagrant destroy; box removed from Vagrant and the libvirt pool"):
            if daemons.pids:
                vagrant("destroy", "--force", check=False)
            if box_added:
                vagrant.remove_box(meta.name, meta.version, "libvirt")
            if daemons.pids:
                daemons.delete_volumes("default", libvirt_volume_prefix(meta.name))
        with step("stop libvirtd and virtlogd"):
            daemons.stop()


@dataclass
class QemuBox:
    """A box's disk in QEMU (`vm`) and the guest behind its forwarded ports (`guest`)."""

    vm: QemuVM
    guest: Machine
    ssh_port: int

    @classmethod
    def prepare(cls, label: str, work: Path, machine: BoxMachine, accel: str, *, ssh_port: int,
                ports: Mapping[int, int], config: Mapping[str, Any], secret: str = "") -> QemuBox:
        """A powered-off VM forwarding 127.0.0.1:`ssh_port` to sshd and `ports` (host -> guest)."""
        vm = QemuVM(work, machine, accel, {ssh_port: 22, **ports})
        identity = insecure_identity(work / "vagrant-insecure-key")
        ssh_config = ssh_config_for(work / "ssh-config", port=ssh_port, identity=identity)
        guest = Machine(label, ssh_config, "127.0.0.1", {guest: host for host, guest in ports.items()},
                        dict(config), secret)
        return cls(vm, guest, ssh_port)

    def boot(self, *, fresh: bool = True) -> float:
        """Power on and wait until ssh commands work; return the seconds from power-on to sshd."""
        self.vm.start(fresh=fresh)
        seconds = self.vm.wait_for_ssh(self.ssh_port)
        self.guest.wait_for_ssh()
        return seconds
