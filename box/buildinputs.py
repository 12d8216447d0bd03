"""Says whether dist/ already holds the box a build would make, so a second build-box reuses it.

A build is made from its inputs: the Packer template and scripts, the agent's sources and
units, the assets and templates of the disk and the VirtualBox box, the host code that
packages them, the box settings and the base disk (whose file name carries the hash of its
own inputs). `inputs_digest` folds them into one digest that build.json records
(`inputs`); `reuse_verdict` compares it with what dist/ holds. Both are pure; reading the
files is `file_digests`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from box.buildinfo import BuildMetadata

# What the box is made of, relative to the project root (folders are read recursively).
INPUT_PATHS = (
    "packer",
    "bootstrap/src",
    "bootstrap/systemd",
    "bootstrap/pyproject.toml",
    "box/assets",
    "box/templates",
    "box/packer.py",
    "box/package.py",
    "box/ovf.py",
    "box/templating.py",
    "box/qemu.py",  # the VirtualBox disk's VMDK conversion
    "box/arch.py",  # each architecture's machine, firmware and boot loader
    "box/tasks/build.py",  # the payload (wheel, units)
    "box/tasks/dist.py",  # the boxes' packaging steps
)
# Files in those folders that are by-products, not inputs.
_NOT_INPUTS = ("__pycache__", ".egg-info", ".pyc")


@dataclass(frozen=True)
class Verdict:
    """Whether the box in dist/ can be reused, and why (a line the user reads)."""

    reuse: bool
    why: str


def file_digests(root: Path, paths: Iterable[str] = INPUT_PATHS) -> dict[str, str]:
    """Return the sha256 of every input file under `root`, by path relative to it."""
    found: dict[str, str] = {}
    for rel in paths:
        top = root / rel
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in files:
            name = path.relative_to(root).as_posix()
            if any(part in name for part in _NOT_INPUTS) or not path.is_file():
                continue
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def inputs_digest(files: Mapping[str, str], settings: Mapping[str, Any], base_image: str) -> str:
    """Fold the input files' digests, the box settings and the base disk's name into one digest."""
    blob = json.dumps({"files": dict(files), "settings": dict(settings), "base_image": base_image},
                      sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def reuse_verdict(built: Optional[BuildMetadata], digest: str,
                  present: Mapping[str, int]) -> Verdict:
    """Decide whether dist/ already holds the build of these inputs.

    `built` is dist/build.json (None when missing or unreadable), `present` maps each
    file found in dist/ to its size in bytes.
    """
    if built is None:
        return Verdict(False, "no earlier build in dist/")
    if built.inputs is None:
        return Verdict(False, "dist/build.json does not record its inputs (an older build)")
    if built.inputs != digest:
        return Verdict(False, "the inputs changed since the last build (sources, settings or "
                              "base image)")
    for box in built.boxes:
        if present.get(box.file) != box.size:
            return Verdict(False, f"dist/{box.file} is missing or not the size build.json records")
    files = ", ".join(f"dist/{box.file}" for box in built.boxes)
    return Verdict(True, f"{built.name} {built.version} built {built.created} from the same "
                         f"inputs ({files})")
