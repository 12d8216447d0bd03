"""Talks to QEMU on the host: which accelerator really works, and what a disk image holds."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from box.run import CommandError, output, run, start
from box.wait import WaitTimeout, wait_until

# what `-accel` may be set to; "" asks for the probe
ACCELERATORS = ("kvm", "tcg")
# SeaBIOS prints one of these on its debug console once it has run through POST and found
# nothing to boot: reaching it proves the accelerator executes guest code.
_POST_DONE = ("No bootable device", "Boot failed")


class AcceleratorError(ValueError):
    """An accelerator other than kvm or tcg was asked for; the message says what to use."""


def check_accelerator(requested: str) -> str:
    """Return `requested` when it is kvm, tcg or "" (probe); otherwise raise AcceleratorError."""
    if requested and requested not in ACCELERATORS:
        raise AcceleratorError(f"accelerator {requested!r}: use kvm or tcg, or leave it out to probe")
    return requested


def choose_accelerator(requested: str = "") -> str:
    """The accelerator QEMU runs with: `requested` (kvm or tcg), or, when empty, the probe's answer."""
    return check_accelerator(requested) or probe_accelerator()


def probe_accelerator(seconds: float = 2.0) -> str:
    """Return "kvm" when a guest really runs under KVM within `seconds`, else "tcg".

    /dev/kvm can exist while nested KVM cannot run a guest (it hangs or stops with
    "KVM internal error ... emulation failure"), so this boots an empty machine and
    waits for the BIOS to finish, instead of trusting the device node.
    """
    if not Path("/dev/kvm").exists():
        return "tcg"
    with tempfile.TemporaryDirectory(prefix="kvm-probe-") as tmp:
        log = Path(tmp) / "bios.log"
        argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-m", "64",
                "-nodefaults", "-display", "none", "-no-reboot",
                "-chardev", f"file,id=bios,path={log}",
                "-device", "isa-debugcon,iobase=0x402,chardev=bios"]
        try:
            qemu = start("kvm-probe", argv, Path(tmp) / "qemu.log")
        except (CommandError, OSError):
            return "tcg"
        def posted() -> bool:
            text = log.read_text(errors="replace") if log.exists() else ""
            return any(mark in text for mark in _POST_DONE)

        try:
            wait_until(lambda: posted() or not qemu.alive(), "the BIOS under KVM", timeout=seconds)
            return "kvm" if posted() else "tcg"
        except WaitTimeout:
            return "tcg"
        finally:
            qemu.stop(timeout=5)


def image_info(path: Path) -> dict:
    """Return `qemu-img info` of a disk image as a dict (format, virtual-size, ...)."""
    return json.loads(output(["qemu-img", "info", "--output=json", str(path)]))


def convert_to_stream_vmdk(source: Path, target: Path) -> None:
    """Write `source` as a streamOptimized VMDK (compressed, what VirtualBox imports)."""
    run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(source), str(target)])
