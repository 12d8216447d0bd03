"""Lets this build machine run another architecture's programs (qemu-user-static + binfmt_misc).

debootstrap and apt run the arm64 disk's own programs (maintainer scripts, update-initramfs)
in a chroot; on an amd64 machine the kernel hands them to qemu-aarch64-static through
binfmt_misc. Debian's qemu-user-static ships the registration (/usr/lib/binfmt.d), but a
container or a fresh CI machine often has binfmt_misc unmounted and nothing registered.
"""

from __future__ import annotations

import platform
from pathlib import Path

from box.arch import Architecture
from box.run import run

BINFMT = Path("/proc/sys/fs/binfmt_misc")
REGISTRATIONS = Path("/usr/lib/binfmt.d")
# binfmt_misc's entry name for each guest machine (Debian's qemu-user-static names them so)
ENTRY = {"aarch64": "qemu-aarch64", "x86_64": "qemu-x86_64"}


class EmulationError(RuntimeError):
    """This machine cannot run the other architecture's programs; the message says what to do."""


def native(architecture: Architecture) -> bool:
    """Whether this machine runs the architecture's programs itself (no emulation)."""
    return platform.machine() == architecture.libvirt_arch


def ensure_binfmt(architecture: Architecture, binfmt: Path = BINFMT,
                  registrations: Path = REGISTRATIONS) -> str:
    """Mount binfmt_misc and register qemu-user-static for `architecture`; say what was done."""
    if native(architecture):
        return "native"
    name = ENTRY[architecture.libvirt_arch]
    done = []
    if not (binfmt / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)])
        done.append(f"mounted {binfmt}")
    entry = binfmt / name
    if not entry.exists():
        conf = registrations / f"{name}.conf"
        if not conf.is_file():
            raise EmulationError(f"{conf} is missing: install qemu-user-static "
                                 "(`./invoke install-deps --groups build`)")
        line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
        (binfmt / "register").write_text(line)
        done.append(f"registered {name} from {conf}")
    if not entry.read_text().startswith("enabled"):
        raise EmulationError(f"{entry} is disabled: `echo 1 > {entry}` enables it")
    return ", ".join(done) or f"{name} already registered"
