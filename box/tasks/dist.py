"""The build's output in dist/: the boxes, SHA256SUMS, build.json and the local catalog."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

from invoke.exceptions import Exit

from box import arch as arches
from box import deps, package
from box.buildinfo import BuildMetadata, BuildMetadataError, load_build_metadata
from box.files import atomic_write_text
from box.packer import BoxSettings, PackerSettings
from box.publish import flow
from box.publish.errors import PublishError
from box.run import step
from box.sizes import format_size

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build"
DIST = ROOT / "dist"
# the catalog build-box keeps up to date: the drop-in Vagrantfile's default box_url
LOCAL_CATALOG = DIST / "catalog"


def built_metadata() -> BuildMetadata | None:
    """dist/build.json, None when there is none (or it is unreadable: then build again)."""
    try:
        return load_build_metadata(DIST / "build.json")
    except BuildMetadataError:
        return None


def dist_sizes() -> dict[str, int]:
    """The size of every box file in dist/, by file name."""
    return {p.name: p.stat().st_size for p in DIST.glob("*.box")} if DIST.is_dir() else {}


def write_local_catalog(meta: BuildMetadata) -> None:
    """Publish the build to dist/catalog/ (file:// URLs), where the drop-in Vagrantfile looks.

    The boxes are hard-linked, not copied. A rebuild of the same version replaces it there:
    this catalog is the build's own, not a published one colleagues already rely on.
    """
    try:
        flow.publish_catalog(meta, DIST, LOCAL_CATALOG, base_url=None, force=True,
                             dry_run=False, link=True)
    except PublishError as exc:
        raise Exit(f"writing the local catalog {LOCAL_CATALOG} failed: {exc}") from None


def next_steps(meta: BuildMetadata, root: Path) -> str:
    """What to type next: `vagrant up` here, or the drop-in Vagrantfile in another folder."""
    catalog = (root / "dist" / "catalog" / f"{meta.name}.json").as_uri()
    box_env = "" if meta.name == BoxSettings().name else f"REGISTRY_CACHE_BOX={meta.name} "
    return "\n".join([
        f"==> next: start the cache ({meta.name} {meta.version}) from this folder:",
        f"      {box_env}vagrant up",
        "    or from your own repository, with the drop-in Vagrantfile (and a config.yml from "
        "examples/):",
        f"      cp {root / 'Vagrantfile'} /path/to/your/repository/",
        "      cd /path/to/your/repository",
        f"      {box_env}REGISTRY_CACHE_BOX_URL={catalog} vagrant up",
        "    then: vagrant ssh -c \"registry-cache status\"",
    ])


def make_dist(box: BoxSettings, built: list[PackerSettings], started: datetime.datetime,
              keep: bool = False, inputs: str | None = None) -> None:
    """Move the boxes into dist/ with SHA256SUMS and build.json; clean build scratch.

    amd64 gives a libvirt and a VirtualBox box; arm64 a libvirt box only (Debian's arm64
    kernels have no vboxguest/vboxsf driver: README, "On Apple Silicon").
    """
    DIST.mkdir(exist_ok=True)
    for old in [*DIST.glob("*.box"), DIST / "SHA256SUMS", DIST / "build.json"]:
        old.unlink(missing_ok=True)
    boxes = []
    for settings in built:
        arch = settings.arch.name
        libvirt = DIST / package.box_file_name(box.name, box.version, "libvirt", arch)
        shutil.move(settings.libvirt_box, libvirt)
        boxes.append(("libvirt", libvirt, arch))
        if settings.arch.name == arches.AMD64.name:
            disk = Path(settings.output_dir) / settings.disk_file()
            virtualbox = package.make_virtualbox_box(
                disk, BUILD / "virtualbox", DIST / package.box_file_name(box.name, box.version,
                                                                        "virtualbox"),
                {"name": box.name, "version": box.version, "cpus": box.cpus,
                 "memory": box.memory},
            )
            boxes.append(("virtualbox", virtualbox, arch))
    with step("checksums and build.json"):
        entries = [package.box_entry(provider, path, arch) for provider, path, arch in boxes]
        revision, dirty = package.git_state(ROOT)
        tools = package.tool_versions({
            "packer": deps.tool_version(["packer", "version"]),
            "qemu": deps.tool_version([built[0].arch.qemu_binary, "--version"]),
            "debootstrap": deps.tool_version(["debootstrap", "--version"]),
        })
        meta = package.build_metadata(
            name=box.name, version=box.version, description=box.description,
            git_revision=revision, git_dirty=dirty, tools=tools, boxes=entries, created=started)
        if inputs is not None:
            meta["inputs"] = inputs  # what the next build-box compares to reuse this one
        atomic_write_text(DIST / "SHA256SUMS", package.sha256sums(entries))
        atomic_write_text(DIST / "build.json", json.dumps(meta, indent=2) + "\n")
    if not keep:
        for settings in built:
            shutil.rmtree(settings.output_dir, ignore_errors=True)
    for entry in entries:
        print(f"==> dist/{entry['file']}: {format_size(entry['size'])}")
