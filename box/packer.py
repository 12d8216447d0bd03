"""Renders the Packer template (packer/*.pkr.hcl.j2) from plain settings into build/packer/."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from box import arch as arches
from box.boxversion import version_problem
from box.buildinfo import box_file_stem, box_name_problem

PACKER_DIR = Path(__file__).resolve().parents[1] / "packer"
TEMPLATE = "registry-cache.pkr.hcl.j2"
# the libvirt box's own Vagrantfile, by architecture (arm64 adds its machine and UEFI firmware)
LIBVIRT_VAGRANTFILE = {"amd64": "Vagrantfile.libvirt.j2", "arm64": "Vagrantfile.libvirt-arm64.j2"}

# The provisioning scripts in the order they run, each with what it is for.
SCRIPTS: tuple[tuple[str, str], ...] = (
    ("10-grow-root.sh", "grow the root partition and filesystem to the box's disk size"),
    ("20-agent.sh", "install the agent wheel, its user, directories and systemd units"),
    ("80-cleanup.sh", "clean up: apt caches, logs, machine-id, SSH host keys (made at boot)"),
    ("90-zero-free-space.sh", "free every unused block so the box compresses well"),
)

# Inside the VM the payload (a tar of wheel/ and systemd/) lands here; 20-agent.sh unpacks it.
PAYLOAD_IN_VM = "/tmp/registry-cache-payload.tar"

_SIZE = re.compile(r"^([1-9][0-9]*)([MG])$")


@dataclass(frozen=True)
class Limits:
    """The bounds of the box's machine settings.

    Python checks them before any work (BoxSettings.problems) and hands the same numbers
    to the Packer template, whose validation blocks guard a hand-run `packer build`.
    """

    memory_mib: tuple[int, int] = (256, 65536)
    cpus: tuple[int, int] = (1, 64)
    disk_mib_min: int = 4096


LIMITS = Limits()


@dataclass(frozen=True)
class BoxSettings:
    """What the user chooses about the box (task flags, invoke.yaml), validated before any work."""

    name: str = "registry-cache"
    version: str = "0.0.0"
    description: str = "Docker/OCI pull-through registry cache"
    memory: int = 1024
    cpus: int = 2
    disk_size: str = "20G"

    def problems(self) -> list[str]:
        """Return every invalid setting, each with how to fix it (empty when all is well)."""
        found = []
        # the same rules test-box and publish apply to build.json (box/buildinfo.py)
        name = box_name_problem(self.name)
        if name:
            found.append(f"--name {self.name!r}: {name}")
        version = version_problem(self.version)
        if version:
            found.append(f"--version {self.version!r}: {version}")
        low, high = LIMITS.memory_mib
        if not low <= self.memory <= high:
            found.append(f"--memory {self.memory}: give MiB between {low} and {high}")
        low, high = LIMITS.cpus
        if not low <= self.cpus <= high:
            found.append(f"--cpus {self.cpus}: give a count between {low} and {high}")
        if self.disk_mib() is None:
            found.append(f"--disk-size {self.disk_size!r}: give a size like 20G or 8192M, "
                         f"at least {LIMITS.disk_mib_min // 1024}G")
        return found

    def disk_mib(self) -> int | None:
        """Return the disk size in MiB, or None when it is malformed or below the minimum."""
        match = _SIZE.match(self.disk_size)
        if not match:
            return None
        mib = int(match.group(1)) * (1024 if match.group(2) == "G" else 1)
        return mib if mib >= LIMITS.disk_mib_min else None


@dataclass(frozen=True)
class Upload:
    """A file provisioner: a host path copied to a path inside the VM."""

    comment: str
    source: str
    destination: str


@dataclass(frozen=True)
class Script:
    """A shell provisioner: a script run with sudo, with its environment."""

    comment: str
    source: str
    env: tuple[str, ...] = ()


@dataclass(frozen=True)
class PackerSettings:
    """Everything the template needs, as plain data (paths absolute)."""

    box: BoxSettings
    base_image: str
    accelerator: str
    output_dir: str
    serial_log: str
    libvirt_box: str
    libvirt_vagrantfile: str
    payload: str
    scripts_dir: str = str(PACKER_DIR / "scripts")
    ssh_timeout: str = "15m"
    # box.img is a compressed qcow2 already: gzip on top only costs time
    compression_level: int = 1
    uploads: tuple[Upload, ...] = field(default=())
    arch: arches.Architecture = arches.AMD64

    def disk_file(self) -> str:
        """Return the file name of the provisioned disk in output_dir."""
        return f"{box_file_stem(self.box.name)}.qcow2"

    def template_data(self) -> dict:
        """Return the template's variables: the settings flattened, provisioners listed."""
        env = (f"BOX_NAME={self.box.name}", f"BOX_VERSION={self.box.version}",
               f"PAYLOAD={PAYLOAD_IN_VM}")
        scripts = [Script(comment=comment, source=f"{self.scripts_dir}/{name}", env=env)
                   for name, comment in SCRIPTS]
        uploads = self.uploads or (
            Upload("upload the agent wheel and systemd units (20-agent.sh installs them)",
                   self.payload, PAYLOAD_IN_VM),
        )
        return {
            "arch": self.arch.name,
            "qemu_binary": self.arch.qemu_binary,
            "machine_type": self.arch.machine_type,
            "qemuargs": self.qemuargs(),
            "name": self.box.name,
            "version": self.box.version,
            "memory": self.box.memory,
            "cpus": self.box.cpus,
            "disk_size": self.box.disk_size,
            "disk_file": self.disk_file(),
            "limits": LIMITS,
            "base_image": self.base_image,
            "accelerator": self.accelerator,
            "output_dir": self.output_dir,
            "serial_log": self.serial_log,
            "ssh_timeout": self.ssh_timeout,
            "libvirt_box": self.libvirt_box,
            "libvirt_vagrantfile": self.libvirt_vagrantfile,
            "compression_level": self.compression_level,
            "uploads": uploads,
            "scripts": scripts,
        }


    def qemuargs(self) -> list[list[str]]:
        """Return QEMU's extra arguments: loopback-only SSH, the serial console, the arch's CPU."""
        args = [
            # SSH forward on loopback only (Packer's default listens on every address)
            ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
            # the guest's serial console into a file, for debugging a boot
            ["-serial", f"file:{self.serial_log}"],
        ]
        if self.arch.build_firmware:
            # UEFI: the disk boots GRUB from its EFI system partition
            args.append(["-bios", self.arch.build_firmware])
        if self.arch.needs_emulation and self.accelerator == "tcg":
            args.append(["-cpu", self.arch.emulated_cpu])
        return args


def hcl_quote(value: object) -> str:
    """Quote a string (or a list of strings) for HCL, escaping its template sequences."""
    text = json.dumps(list(value) if isinstance(value, (list, tuple)) else str(value))
    return text.replace("${", "$${").replace("%{", "%%{")


def _environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        undefined=jinja2.StrictUndefined,
        # Packer owns {{ }}: Jinja gets brackets
        block_start_string="[%", block_end_string="%]",
        variable_start_string="[[", variable_end_string="]]",
        comment_start_string="[#", comment_end_string="#]",
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = hcl_quote
    return env


def render_template(settings: PackerSettings, directory: Path = PACKER_DIR) -> str:
    """Return the Packer HCL2 template for these settings."""
    return _environment(directory).get_template(TEMPLATE).render(**settings.template_data())


def render_libvirt_vagrantfile(box: BoxSettings, directory: Path = PACKER_DIR,
                               arch: arches.Architecture = arches.AMD64) -> str:
    """Return the Vagrantfile the libvirt box carries (memory, CPUs, driver; arm64: machine)."""
    template = _environment(directory).get_template(LIBVIRT_VAGRANTFILE[arch.name])
    return template.render(version=box.version, memory=box.memory, cpus=box.cpus,
                           firmware=list(arches.AARCH64_FIRMWARE), cpu=arch.emulated_cpu,
                           machine_type=arch.machine_type, machine_arch=arch.libvirt_arch)
