"""The box's two architectures as plain data: which kernel, boot loader, QEMU and firmware each needs.

Every decision that differs between amd64 and arm64 is a field here; the base disk, the
Packer template, the box's Vagrantfile and the lab read the fields, never the name.
amd64 boots from BIOS with extlinux; arm64 only from UEFI (Debian's AAVMF/edk2 firmware)
with a GRUB EFI binary on an EFI system partition, on QEMU's `virt` machine.
"""

from __future__ import annotations

from dataclasses import dataclass

# The firmware each host keeps for an arm64 guest, first found wins (the box's Vagrantfile
# looks for it on the user's host): Debian/Ubuntu (qemu-efi-aarch64), Fedora (edk2-aarch64),
# Homebrew on Apple Silicon and on Intel Macs, QEMU's own share folder.
AARCH64_FIRMWARE = (
    "/usr/share/AAVMF/AAVMF_CODE.fd",
    "/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw",
    "/opt/homebrew/share/qemu/edk2-aarch64-code.fd",
    "/usr/local/share/qemu/edk2-aarch64-code.fd",
    "/usr/share/qemu/edk2-aarch64-code.fd",
)


@dataclass(frozen=True)
class Architecture:
    """What one architecture of the box is built and booted with."""

    name: str  # Debian's and Vagrant's name: amd64, arm64
    kernel_package: str
    boot_loader: str  # "extlinux" (BIOS, MBR) or "grub-efi" (UEFI, EFI system partition)
    # packages that only make the boot loader and leave the disk again
    boot_loader_packages: tuple[str, ...]
    console: str  # the serial console the kernel writes to
    qemu_binary: str
    machine_type: str  # QEMU's -machine for builds and tests
    # -cpu under emulation (TCG); under KVM/HVF the host's own CPU
    emulated_cpu: str
    # the UEFI firmware the build machine boots the disk with ("" for BIOS: QEMU's SeaBIOS)
    build_firmware: str
    libvirt_arch: str  # libvirt's <type arch=...> (vagrant-libvirt's machine_arch)
    # what debootstrap needs on an amd64 build machine to run this architecture's programs
    needs_emulation: bool

    @property
    def efi(self) -> bool:
        """Whether the disk boots from UEFI (an EFI system partition) rather than BIOS."""
        return self.boot_loader == "grub-efi"


AMD64 = Architecture(
    name="amd64",
    kernel_package="linux-image-amd64",
    boot_loader="extlinux",
    boot_loader_packages=(),
    console="ttyS0,115200n8",
    qemu_binary="qemu-system-x86_64",
    machine_type="pc",
    emulated_cpu="max",
    build_firmware="",
    libvirt_arch="x86_64",
    needs_emulation=False,
)

ARM64 = Architecture(
    name="arm64",
    kernel_package="linux-image-arm64",
    boot_loader="grub-efi",
    boot_loader_packages=("grub-efi-arm64-bin",),
    # QEMU virt's PL011 UART
    console="ttyAMA0,115200n8",
    qemu_binary="qemu-system-aarch64",
    machine_type="virt",
    # no pointer authentication (an ARMv8.3 feature `max` has): TCG emulates it slowly; it is
    # also what vagrant-qemu presents by default
    emulated_cpu="cortex-a72",
    build_firmware="/usr/share/qemu-efi-aarch64/QEMU_EFI.fd",
    libvirt_arch="aarch64",
    needs_emulation=True,
)

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (AMD64, ARM64)}
# What a Vagrant < 2.4 client gets from a catalog (it ignores `architecture`), and what a
# plain `build-box` builds.
DEFAULT = AMD64.name


class ArchitectureError(ValueError):
    """An architecture the box is not built for; the message lists the ones it is."""


def get(name: str) -> Architecture:
    """Return the architecture called `name` (amd64 or arm64)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ArchitectureError(
            f"architecture {name!r}: pick {', '.join(ARCHITECTURES)}") from None


def parse_list(text: str) -> tuple[str, ...]:
    """Return the architectures a `--arch` value names: "arm64", "amd64,arm64" or "all"."""
    if text.strip() == "all":
        return tuple(ARCHITECTURES)
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise ArchitectureError(f"--arch {text!r}: pick {', '.join(ARCHITECTURES)} or all")
    for name in names:
        get(name)
    # amd64 first: the default architecture leads every listing
    return tuple(sorted(names, key=lambda n: list(ARCHITECTURES).index(n)))
