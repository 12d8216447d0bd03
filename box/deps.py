"""Installs the Debian packages each task needs, so a fresh Debian/Ubuntu machine works first time."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable

from box.run import output, run, step

# What each kind of work needs from Debian. Keep each list to what that work runs.
APT_PACKAGES: dict[str, tuple[str, ...]] = {
    # unit + integration tests: real registries on loopback, images moved with skopeo
    "test": (
        "docker-registry", "skopeo", "iproute2", "curl", "systemd",
        # containerd's own resolver pulls through the one endpoint (`ctr content fetch --hosts-dir`)
        "containerd",
        # a single-node Ceph (monitor, memstore OSD, S3 gateway): the shared-bucket tests (lab/ceph.py)
        "ceph-mon", "ceph-osd", "radosgw", "ceph-common",
        # nft: the kernel handover of a mirror's port (an nftables redirect) and its tests
        "nftables",
    ),
    # baking the box
    "build": (
        "debootstrap",
        "qemu-utils",
        "qemu-system-x86",
        "packer",
        "extlinux",
        "syslinux-common",
        "parted",
        "e2fsprogs",
        "dosfstools",
        "zstd",
        "fdisk",  # sfdisk: the base disk's partition table
        "debian-archive-keyring",  # debootstrap checks the Debian archive's signatures
        # the arm64 box: its disk's programs run under qemu-user-static (binfmt_misc) in the
        # chroot, Packer boots it in qemu-system-aarch64 with Debian's UEFI firmware
        "qemu-user-static",
        "qemu-system-arm",
        "qemu-efi-aarch64",
        "mtools",  # the EFI system partition, written without mounting FAT
    ),
    # catalog checks and VM tests with the real vagrant
    "vagrant": (
        "vagrant",
        "vagrant-libvirt",
        "libvirt-daemon-system",
        "rsync",
        "openssh-client",
        "qemu-utils",  # qemu-img: the catalog tests make a tiny libvirt box
        # test-box: VMs under a private libvirtd in a network namespace (lab/)
        "qemu-system-x86",
        "qemu-system-arm",  # the arm64 box, with its UEFI firmware
        "qemu-efi-aarch64",
        "dnsmasq-base",  # DHCP of vagrant-libvirt's networks (only Recommended by libvirt)
        "iptables",  # libvirt's NAT rules, inside the namespace
        "iproute2",  # ip netns
    ),
}


class MissingPackagesError(RuntimeError):
    """Packages a task needs are missing and cannot be installed here; the message says how."""


# An apt index younger than this counts as fresh: `apt-get update` runs once, not per task.
_APT_INDEX_FRESH_SECONDS = 6 * 3600


def missing_packages(wanted: Iterable[str]) -> list[str]:
    """Return the packages of `wanted` that dpkg does not list as installed."""
    wanted = list(dict.fromkeys(wanted))
    if not wanted:
        return []
    proc = run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *wanted],
        capture=True,
        check=False,
    )
    installed = {
        line.split()[0]
        for line in proc.stdout.splitlines()
        if line.strip().endswith(" installed")
    }
    return [name for name in wanted if name not in installed]


def _apt_index_is_fresh() -> bool:
    if os.environ.get("REGISTRY_CACHE_APT_UPDATED") == "1":
        return True
    stamp = "/var/lib/apt/periodic/update-success-stamp"
    lists = "/var/lib/apt/lists"
    newest = 0.0
    for path in (stamp, lists):
        if os.path.exists(path):
            newest = max(newest, os.path.getmtime(path))
    return time.time() - newest < _APT_INDEX_FRESH_SECONDS


def ensure(*groups: str) -> None:
    """Install whatever Debian packages the named groups need and this machine lacks.

    Raises MissingPackagesError when they are missing and this process cannot install them.
    """
    wanted = [pkg for group in groups for pkg in APT_PACKAGES[group]]
    if shutil.which("dpkg-query") is None:
        raise MissingPackagesError(
            "this is not a Debian/Ubuntu machine: install these yourself, then retry: "
            + " ".join(wanted)
        )
    missing = missing_packages(wanted)
    if not missing:
        return
    if os.geteuid() != 0:
        raise MissingPackagesError(
            "missing packages: "
            + " ".join(missing)
            + "\nrun this task as root, or install them first: sudo apt-get install "
            + " ".join(missing)
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with step(f"apt-get install {' '.join(missing)}"):
        if not _apt_index_is_fresh():
            run(["apt-get", "update", "-q"], env=env)
            os.environ["REGISTRY_CACHE_APT_UPDATED"] = "1"
        run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def tool_version(argv: list[str]) -> str:
    """Return the first line a tool prints for its version, or 'missing'."""
    if shutil.which(argv[0]) is None:
        return "missing"
    proc = run(argv, capture=True, check=False)
    text = (proc.stdout or proc.stderr or "").strip().splitlines()
    return text[0] if text else "unknown"


__all__ = ["APT_PACKAGES", "MissingPackagesError", "ensure", "missing_packages", "output", "tool_version"]
