"""Packages the boxes into dist/: the VirtualBox box from the built disk, checksums, build.json."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

from box import ovf, qemu
from box.arch import DEFAULT as DEFAULT_ARCHITECTURE
from box.buildinfo import box_file_stem
from box.files import atomic_write
from box.publish.dist import sha256_file
from box.run import run, step

VMDK_NAME = "box-disk001.vmdk"


def box_file_name(name: str, version: str, provider: str, arch: str = DEFAULT_ARCHITECTURE) -> str:
    """Return the file name of a box in dist/: <name>-<version>-<provider>[-<arch>].box.

    ("org/" dropped; the default architecture, amd64, keeps the names it always had.)
    """
    suffix = "" if arch == DEFAULT_ARCHITECTURE else f"-{arch}"
    return f"{box_file_stem(name)}-{version}-{provider}{suffix}.box"


def write_box(target: Path, files: Mapping[str, Path], compresslevel: int = 1) -> None:
    """Write a Vagrant box: a gzipped tar of `files` (name in box -> host path) at its root."""
    def fill(out: BinaryIO) -> None:
        with tarfile.open(fileobj=out, mode="w:gz", compresslevel=compresslevel) as tar:
            for name, path in files.items():
                tar.add(str(path), arcname=name, recursive=False)

    atomic_write(target, fill)


def make_virtualbox_box(disk: Path, work: Path, target: Path, machine: dict) -> Path:
    """Build the VirtualBox box from a disk image: streamOptimized VMDK, box.ovf, Vagrantfile.

    `machine` holds name, version, cpus, memory and mac (see box.ovf.OvfMachine).
    """
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    vmdk = work / VMDK_NAME
    with step("qemu-img convert to a streamOptimized VMDK"):
        qemu.convert_to_stream_vmdk(disk, vmdk)
    spec = ovf.OvfMachine(
        disk_file=VMDK_NAME,
        disk_file_size=vmdk.stat().st_size,
        disk_capacity=int(qemu.image_info(vmdk)["virtual-size"]),
        **machine,
    )
    (work / "box.ovf").write_text(ovf.render_ovf(spec))
    (work / "metadata.json").write_text(json.dumps({"provider": "virtualbox"}) + "\n")
    (work / "Vagrantfile").write_text(ovf.render_vagrantfile(spec))
    with step(f"pack {target.name}"):
        write_box(target, {name: work / name for name in
                           ("metadata.json", "Vagrantfile", "box.ovf", VMDK_NAME)})
    shutil.rmtree(work)
    return target


def tool_versions(raw: Mapping[str, str]) -> dict[str, str]:
    """Return bare version numbers from the tools' version lines ('Packer v1.6.6' -> '1.6.6')."""
    found = {}
    for tool, line in raw.items():
        match = re.search(r"v?(\d+\.\d+[^\s,()]*)", line)
        found[tool] = match.group(1) if match else line
    return found


def box_entry(provider: str, path: Path, arch: str = DEFAULT_ARCHITECTURE) -> dict:
    """Return one box's record for build.json: provider, architecture, file, sha256, size."""
    return {"provider": provider, "architecture": arch, "file": path.name,
            "sha256": sha256_file(path), "size": path.stat().st_size}


def build_metadata(*, name: str, version: str, description: str, git_revision: str,
                   git_dirty: bool, tools: Mapping[str, str], boxes: Iterable[dict],
                   created: datetime.datetime) -> dict:
    """Return dist/build.json's content, the record the test and publish tasks read."""
    return {
        "name": name,
        "version": version,
        "description": description,
        "git_revision": git_revision,
        "git_dirty": git_dirty,
        "created": created.astimezone(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tools": dict(tools),
        "boxes": list(boxes),
    }


def sha256sums(boxes: Iterable[dict]) -> str:
    """Return SHA256SUMS text (sha256sum -c format) for the box records."""
    return "".join(f"{b['sha256']}  {b['file']}\n" for b in boxes)


def git_state(repo: Path) -> tuple[str, bool]:
    """Return (revision, dirty) of the project's git checkout; ('unknown', True) outside git."""
    proc = run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture=True, check=False)
    if proc.returncode != 0:
        return "unknown", True
    status = run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                 capture=True, check=False)
    return proc.stdout.strip(), bool(status.stdout.strip())
