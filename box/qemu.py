"""Talks to QEMU on the host: which accelerator really works, and what a disk image holds."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from box.run import output, run

# SeaBIOS prints one of these on its debug console once it has run through POST and found
# nothing to boot: reaching it proves the accelerator executes guest code.
_POST_DONE = ("No bootable device", "Boot failed")


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
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            return "tcg"
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and proc.poll() is None:
                text = log.read_text(errors="replace") if log.exists() else ""
                if any(mark in text for mark in _POST_DONE):
                    return "kvm"
                time.sleep(0.1)
            return "tcg"
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def image_info(path: Path) -> dict:
    """Return `qemu-img info` of a disk image as a dict (format, virtual-size, ...)."""
    return json.loads(output(["qemu-img", "info", "--output=json", str(path)]))


def convert_to_stream_vmdk(source: Path, target: Path) -> None:
    """Write `source` as a streamOptimized VMDK (compressed, what VirtualBox imports)."""
    run(["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized",
         str(source), str(target)])
