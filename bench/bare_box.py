"""Makes the benchmark's anchor: a libvirt box of the bare base disk, packaged like the real one.

The base disk build-box starts from (build/base/, debootstrap + the base packages, no agent,
no mirror unit, nothing started but sshd and the network) becomes `box.img` the way Packer
makes the appliance's: a compressed qcow2 of the same virtual size, with the same box
Vagrantfile (packer/Vagrantfile.libvirt.j2). Whatever the two boxes share (kernel, initrd,
Vagrant's steps) costs both the same, so their ratio is what the appliance adds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from box import arch as arches
from box import base_image
from box.buildinfo import BoxFile, BuildMetadata
from box.package import box_entry, write_box
from box.packer import BoxSettings, render_libvirt_vagrantfile
from box.run import run, step

BARE_NAME = "registry-cache-bare"


def base_disk(build_dir: Path, given: str = "", arch: str = arches.DEFAULT) -> Path:
    """The base disk to package: `given`, else the one of today's inputs, else the newest cached."""
    if given:
        return Path(given).resolve()
    current = base_image.image_path(build_dir, base_image.spec_for(arch))
    if current.exists():
        return current
    disks = base_image.cached_disks(build_dir, arch)
    if not disks:
        raise FileNotFoundError(f"no base disk in {build_dir / 'base'}: run `./invoke build-box` first")
    return disks[0]


@dataclass(frozen=True)
class BareBox:
    """The bare box file and the build metadata lab.boot needs to `vagrant box add` it."""

    meta: BuildMetadata
    dist: Path  # the folder holding meta.boxes[0].file
    disk: Path  # the qcow2 inside it, for booting in plain QEMU


def build(base: Path, work: Path, version: str, disk_size: str = BoxSettings().disk_size,
          arch: str = arches.DEFAULT) -> BareBox:
    """Package `base` as a libvirt box `registry-cache-bare` at `version` under `work`."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    disk = work / "box.img"
    with step(f"bare box from {base.name}"):
        # what Packer's qemu builder does with disk_compression: a compressed qcow2, resized
        run(["qemu-img", "convert", "-c", "-O", "qcow2", str(base), str(disk)], capture=True)
        run(["qemu-img", "resize", "-q", str(disk), disk_size], capture=True)
        settings = BoxSettings(name=BARE_NAME, version=version)
        (work / "Vagrantfile").write_text(render_libvirt_vagrantfile(settings,
                                                                     arch=arches.get(arch)))
        size_gib = int(disk_size[:-1]) // (1 if disk_size.endswith("G") else 1024)
        (work / "metadata.json").write_text(json.dumps(
            {"provider": "libvirt", "format": "qcow2", "virtual_size": size_gib}) + "\n")
        target = work / f"{BARE_NAME}-{version}-libvirt.box"
        write_box(target, {name: work / name for name in ("metadata.json", "Vagrantfile", "box.img")})
    entry = box_entry("libvirt", target, arch)
    meta = BuildMetadata(name=BARE_NAME, version=version, git_revision="bare", git_dirty=False,
                         created="", boxes=(BoxFile(**entry),))
    return BareBox(meta=meta, dist=work, disk=disk)
