"""Builds the Debian base disk with debootstrap, cached under build/ by a hash of its inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jinja2

from box import arch as arches
from box.run import output, run, step
from box.templating import TEMPLATES

ASSETS = Path(__file__).parent / "assets"

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"

# What the base disk carries beyond debootstrap's minbase. Recommends are never installed.
BASE_PACKAGES: tuple[str, ...] = (
    # boot: kernel with e1000/virtio/ahci/vboxguest drivers, init, device manager
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    # network: systemd-networkd DHCP; resolved writes resolv.conf from DHCP's DNS servers,
    # which the mirrors need to reach their upstreams by name
    "systemd-resolved",
    "iproute2",
    "dbus",
    # Vagrant: ssh in, sudo, rsync synced folders offline
    "openssh-server",
    "sudo",
    "rsync",
    "ca-certificates",
    "curl",
    "procps",
    # grow the root partition to the box's disk size (sfdisk)
    "fdisk",
    # the cache itself and the agent's runtime (from Debian: no PyPI inside the box)
    "docker-registry",
    "nftables",  # nft: the kernel hands each mirror's port to its registry on duty (a redirect)
    "python3",
    "python3-pip",
    "python3-yaml",
    "python3-jinja2",
    "python3-requests",
    "python3-jsonschema",
    "python3-aiohttp",
    "python3-prometheus-client",
    "python3-cryptography",  # TLS: the generated CA and server certificate
    "python3-bcrypt",  # client authentication: htpasswd hashes
)

# Put into the disk before the packages install: (asset, path in the disk, mode).
PRE_INSTALL_FILES: tuple[tuple[str, str, int], ...] = (
    ("dpkg-excludes.cfg", "etc/dpkg/dpkg.cfg.d/90-registry-cache", 0o644),
    ("initramfs.conf", "etc/initramfs-tools/conf.d/registry-cache.conf", 0o644),
    ("initramfs-hook.sh", "etc/initramfs-tools/hooks/registry-cache", 0o755),
    ("modprobe-blacklist.conf", "etc/modprobe.d/registry-cache-blacklist.conf", 0o644),
)

# The partition starts at 1 MiB; extlinux's MBR code sits in the first 440 bytes.
PARTITION_OFFSET = 1024 * 1024
# UEFI (arm64): an EFI system partition first, the root filesystem after it. The ESP holds
# one GRUB binary (a few MiB); FAT16 needs at least 16 MiB.
ESP_MIB = 32
MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
# syslinux 6.04 cannot read these ext4 features; the disk is far below 16 TiB anyway
EXT4_FEATURES = "^64bit,^metadata_csum_seed,^orphan_file"


@dataclass(frozen=True)
class BaseImageSpec:
    """Everything that decides the base disk's content; its hash names the cached file."""

    mirror: str = DEFAULT_MIRROR
    suite: str = DEFAULT_SUITE
    size_mib: int = 2048
    hostname: str = "registry-cache"
    packages: tuple[str, ...] = BASE_PACKAGES
    kernel_cmdline: str = "console=tty0 console=ttyS0,115200n8 quiet"
    extlinux_timeout: int = 1
    arch: str = arches.DEFAULT
    # file contents that end up in the disk: a changed script means a new disk
    assets: dict[str, str] = field(default_factory=lambda: default_assets())
    # how the disk is made (partitions, ext4 features, extlinux): this module's own digest
    builder: str = field(default_factory=lambda: _builder_digest())

    def key(self) -> str:
        """Return the short hash of every input: same inputs, same cached disk."""
        data = asdict(self)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def packages_for(architecture: arches.Architecture) -> tuple[str, ...]:
    """Return the base packages with the architecture's kernel and boot loader packages."""
    common = tuple(p for p in BASE_PACKAGES if not p.startswith("linux-image-"))
    return (architecture.kernel_package, *common, *architecture.boot_loader_packages)


def spec_for(arch: str = arches.DEFAULT, **inputs: str) -> BaseImageSpec:
    """Return the base disk's inputs for one architecture (amd64: exactly BaseImageSpec())."""
    architecture = arches.get(arch)
    if architecture.name == arches.DEFAULT:
        return BaseImageSpec(**inputs)
    return BaseImageSpec(**inputs, arch=architecture.name, packages=packages_for(architecture),
                         kernel_cmdline=f"console={architecture.console} quiet")


def _builder_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def default_assets() -> dict[str, str]:
    """Return the files copied into the disk (setup script, Vagrant keys, extlinux template)."""
    return {
        "base-image-setup.sh": (ASSETS / "base-image-setup.sh").read_text(),
        "vagrant-insecure-keys.pub": (ASSETS / "vagrant-insecure-keys.pub").read_text(),
        "extlinux.conf.j2": (TEMPLATES / "extlinux.conf.j2").read_text(),
        "grub.cfg.j2": (TEMPLATES / "grub.cfg.j2").read_text(),
        **{name: (ASSETS / name).read_text() for name, _, _ in PRE_INSTALL_FILES},
    }


def image_path(build_dir: Path, spec: BaseImageSpec) -> Path:
    """Return where the base disk for these inputs lives (whether built yet or not)."""
    arch = "" if spec.arch == arches.DEFAULT else f"{spec.arch}-"
    return build_dir / "base" / f"debian-{spec.suite}-{arch}{spec.key()}.raw"


# --- building ---------------------------------------------------------------------------


def render_extlinux(template: str, *, kernel: str, initrd: str, root_uuid: str, cmdline: str,
                    timeout: int) -> str:
    """Render the boot loader's config (extlinux.conf, grub.cfg) for one kernel and root UUID."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(template).render(
        kernel=kernel, initrd=initrd, root_uuid=root_uuid, cmdline=cmdline, timeout=timeout
    )


@contextmanager
def _loop_device(raw: Path, offset: int, size: int = 0) -> Iterator[str]:
    # no udev here, so no loopNp1: attach the partition itself by its offset (and size)
    limit = ["--sizelimit", str(size)] if size else []
    device = output(["losetup", "--find", "--show", "--offset", str(offset), *limit, str(raw)])
    try:
        yield device
    finally:
        run(["losetup", "--detach", device], check=False)


@contextmanager
def _mounted(source: str, target: Path, *options: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", *options, source, str(target)])
    try:
        yield target
    finally:
        # a plain umount: the root filesystem must be flushed before the loop device goes
        run(["umount", "--recursive", str(target)], check=False)


def _chroot(root: Path, argv: list[str], env: dict[str, str]) -> None:
    run(["chroot", str(root), *argv], env=env)


def partition_table(architecture: arches.Architecture) -> tuple[str, int]:
    """Return the disk's sfdisk script and the root partition's byte offset.

    BIOS (extlinux): one bootable partition. UEFI: the EFI system partition first (type
    ef; UEFI firmware reads an MBR disk's ESP as well as a GPT one's), then the root. Both
    MBR, so the box's grow-root step works the same on either: the root is the last one.
    """
    start = PARTITION_OFFSET // 512
    if not architecture.efi:
        return f"label: dos\nstart={start}, type=83, bootable\n", PARTITION_OFFSET
    esp_sectors = ESP_MIB * 1024 * 1024 // 512
    script = (f"label: dos\nstart={start}, size={esp_sectors}, type=ef\n"
              f"start={start + esp_sectors}, type=83\n")
    return script, PARTITION_OFFSET + ESP_MIB * 1024 * 1024


# GRUB's EFI binary carries only what boots the one kernel (and what those modules need)
GRUB_MODULES = ("part_msdos", "ext2", "search_fs_uuid")
GRUB_INSTALL_MODULES = (*GRUB_MODULES, "normal", "linux", "search", "configfile", "echo",
                        "test", "boot", "gzio")


def _install_grub_efi(root: Path, raw: Path, grub_cfg: str, env: dict[str, str]) -> None:
    """Make GRUB's standalone EFI binary in the chroot and put it on the EFI system partition.

    Standalone: its grub.cfg is inside it, so nothing on the disk has to be found by
    grub-probe (which cannot map a loop device attached at an offset). The packages that
    made it are purged again.
    """
    (root / "tmp/grub.cfg").write_text(grub_cfg)
    _chroot(root, ["grub-mkstandalone", "--format=arm64-efi", "--output=/tmp/BOOTAA64.EFI",
                   f"--modules={' '.join(GRUB_MODULES)}",
                   f"--install-modules={' '.join(GRUB_INSTALL_MODULES)}",
                   "--locales=", "--themes=", "--fonts=",
                   "boot/grub/grub.cfg=/tmp/grub.cfg"], env)
    # FAT written with mtools, not mounted: build machines (containers) often lack vfat
    with _loop_device(raw, PARTITION_OFFSET, ESP_MIB * 1024 * 1024) as device:
        run(["mkfs.vfat", "-F", "16", "-n", "EFI", device], capture=True)
        run(["mmd", "-i", device, "::/EFI", "::/EFI/BOOT"], capture=True)
        # the removable-media path: UEFI boots it with no boot entry in its NVRAM (a box has none)
        run(["mcopy", "-i", device, str(root / "tmp/BOOTAA64.EFI"), "::/EFI/BOOT/BOOTAA64.EFI"],
            capture=True)
    for name in ("grub.cfg", "BOOTAA64.EFI"):
        (root / "tmp" / name).unlink()


def build(spec: BaseImageSpec, build_dir: Path, env: dict[str, str]) -> Path:
    """Build the base disk for `spec` (needs root and loop devices) and return its path."""
    architecture = arches.get(spec.arch)
    final = image_path(build_dir, spec)
    work = final.parent / f"tmp-{spec.key()}"
    if work.exists():
        remove_work(work)  # left by a build that was killed, perhaps with its mounts
    work.mkdir(parents=True)
    raw = work / "disk.raw"
    root = work / "root"
    root_uuid = str(uuid.uuid4())
    assets = spec.assets

    with open(raw, "wb") as disk:
        disk.truncate(spec.size_mib * 1024 * 1024)
    table, root_offset = partition_table(architecture)
    run(["sfdisk", "--quiet", str(raw)], input=table)

    with ExitStack() as stack:
        device = stack.enter_context(_loop_device(raw, root_offset))
        run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", root_uuid, "-O", EXT4_FEATURES,
             device])
        stack.enter_context(_mounted(device, root))
        with step(f"debootstrap {spec.suite} {spec.arch} from {spec.mirror}"):
            run(["debootstrap", f"--arch={spec.arch}", "--variant=minbase", spec.suite,
                 str(root), spec.mirror], env=env)
        stack.enter_context(_mounted("proc", root / "proc", "-t", "proc"))
        stack.enter_context(_mounted("sysfs", root / "sys", "-t", "sysfs"))
        stack.enter_context(_mounted("/dev", root / "dev", "--bind"))
        stack.enter_context(_mounted("devpts", root / "dev/pts", "-t", "devpts"))
        # nothing starts inside the chroot
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        for name, target, mode in PRE_INSTALL_FILES:
            path = root / target
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(assets[name])
            path.chmod(mode)
        with step(f"apt-get install {len(spec.packages)} packages into the base disk"):
            _chroot(root, ["apt-get", "update", "-q"], env)
            _chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                           *spec.packages], env)
        kernel = _newest(root / "boot", "vmlinuz-*")
        initrd = _newest(root / "boot", "initrd.img-*")
        if architecture.efi:
            with step("GRUB for UEFI on the EFI system partition"):
                _install_grub_efi(root, raw, render_extlinux(
                    assets["grub.cfg.j2"], kernel=f"/boot/{kernel}", initrd=f"/boot/{initrd}",
                    root_uuid=root_uuid, cmdline=spec.kernel_cmdline, timeout=0), env)
                _chroot(root, ["apt-get", "purge", "-y", "-q", "--autoremove",
                               *architecture.boot_loader_packages], env)
        with step("configure the base disk (vagrant user, network, fstab)"):
            for name in ("base-image-setup.sh", "vagrant-insecure-keys.pub"):
                (root / "tmp" / name).write_text(assets[name])
            _chroot(root, ["/bin/sh", "/tmp/base-image-setup.sh"],
                    {**env, "ROOT_UUID": root_uuid, "BOX_HOSTNAME": spec.hostname})
            _chroot(root, ["apt-get", "clean"], env)
            for name in ("base-image-setup.sh", "vagrant-insecure-keys.pub"):
                (root / "tmp" / name).unlink()
            policy.unlink()
        if not architecture.efi:
            with step("install extlinux"):
                conf_dir = root / "boot/extlinux"
                conf_dir.mkdir(parents=True, exist_ok=True)
                (conf_dir / "extlinux.conf").write_text(render_extlinux(
                    assets["extlinux.conf.j2"], kernel=f"/boot/{kernel}",
                    initrd=f"/boot/{initrd}", root_uuid=root_uuid, cmdline=spec.kernel_cmdline,
                    timeout=spec.extlinux_timeout))
                run(["extlinux", "--install", str(conf_dir)])
    if not architecture.efi:
        # the MBR boot code jumps to the active partition's extlinux
        run(["dd", f"if={MBR_BIN}", f"of={raw}", "bs=440", "count=1", "conv=notrunc",
             "status=none"])
    os.replace(raw, final)
    final.with_suffix(".json").write_text(json.dumps(
        {**asdict(spec), "assets": sorted(assets), "root_uuid": root_uuid}, indent=2) + "\n")
    remove_work(work)
    return final


def _mounts_under(folder: Path) -> list[str]:
    real = os.path.realpath(folder)
    mounts = output(["findmnt", "--list", "--noheadings", "--output", "TARGET"]).splitlines()
    return [m for m in mounts if m == real or m.startswith(real + "/")]


class MountsLeftError(RuntimeError):
    """A work folder still has mounts under it, so it is not deleted."""


def remove_work(work: Path) -> None:
    """Delete a build's work folder, never through a mount still under it.

    A build killed mid-way leaves the host's /dev bind-mounted in the chroot: deleting the
    folder then would delete the host's device nodes. Unmount first (deepest first), and
    refuse when a mount stays.
    """
    for target in sorted(_mounts_under(work), key=len, reverse=True):
        run(["umount", target], check=False, capture=True)
    left = _mounts_under(work)
    if left:
        raise MountsLeftError(f"{work} still has mounts ({', '.join(left)}): unmount them "
                              "(`umount PATH`) and build again")
    shutil.rmtree(work)


def cached_disks(build_dir: Path, arch: str = arches.DEFAULT) -> list[Path]:
    """Return the cached base disks of one architecture, newest first."""
    others = [f"-{a}-" for a in arches.ARCHITECTURES if a != arches.DEFAULT]
    wanted = None if arch == arches.DEFAULT else f"-{arch}-"
    disks = [p for p in (build_dir / "base").glob("debian-*.raw")
             if (wanted in p.name if wanted else not any(o in p.name for o in others))]
    return sorted(disks, key=lambda p: p.stat().st_mtime, reverse=True)


def prune(build_dir: Path, keep: int = 2, arch: str = arches.DEFAULT) -> list[Path]:
    """Delete all but the `keep` newest cached base disks of one architecture (each up to 2 GiB)."""
    removed = []
    for disk in cached_disks(build_dir, arch)[keep:]:
        disk.unlink()
        disk.with_suffix(".json").unlink(missing_ok=True)
        removed.append(disk)
    return removed


def _newest(directory: Path, pattern: str) -> str:
    names = sorted(p.name for p in directory.glob(pattern))
    if not names:
        raise FileNotFoundError(f"no {pattern} in {directory}: did the linux-image package install?")
    return names[-1]
