"""Reads the build metadata (`dist/build.json`) that the build writes and publishing trusts.

The build task writes one JSON file next to the boxes; test and publish read it and
never guess a version or a checksum. Agreed format (all keys required unless noted):

    {
      "name": "registry-cache",            # box name; "org/box" allowed
      "version": "1.2.0",                  # a version Vagrant accepts (Gem::Version)
      "git_revision": "4ecb883...",        # commit the box was built from
      "git_dirty": false,                  # uncommitted changes at build time
      "created": "2024-05-01T12:00:00Z",   # ISO 8601
      "tools": {"packer": "1.6.6", ...},   # tool name -> version string
      "description": "...",                # optional: catalog description
      "inputs": "sha256:<64 hex>",         # optional: digest of what the box is made of
                                           # (box/buildinputs.py); same inputs, same box
      "boxes": [
        {"provider": "libvirt",            # "libvirt" or "virtualbox"
         "architecture": "amd64",          # optional: "amd64" (the default) or "arm64"
         "file": "registry-cache-1.2.0-libvirt.box",   # basename inside dist/
         "sha256": "<64 hex>",
         "size": 123456789}                # bytes
      ]
    }
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from box.arch import ARCHITECTURES
from box.arch import DEFAULT as DEFAULT_ARCHITECTURE
from box.boxversion import version_problem

PROVIDERS = ("libvirt", "virtualbox")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Vagrant accepts "box" or "org/box"; no path tricks in either part (the name is a
# folder of the catalog). 63 characters a part: the build names files and the VM after it.
_BOX_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class BuildMetadataError(ValueError):
    """The build metadata is missing, unreadable or does not match the agreed format."""


@dataclass(frozen=True)
class BoxFile:
    """One provider's box file in dist/, as the build recorded it."""

    provider: str
    file: str
    sha256: str
    size: int
    architecture: str = DEFAULT_ARCHITECTURE


@dataclass(frozen=True)
class BuildMetadata:
    """What one build produced: the box name, its version and one file per provider."""

    name: str
    version: str
    git_revision: str
    git_dirty: bool
    created: str
    boxes: tuple[BoxFile, ...]
    tools: dict[str, Any] = field(default_factory=dict)
    description: Optional[str] = None
    inputs: Optional[str] = None


def box_name_problem(name: str) -> Optional[str]:
    """Say what is wrong with a box name, None when Vagrant and a catalog folder can carry it.

    The one rule build, test-box and publish apply to the box name.
    """
    parts = name.split("/") if isinstance(name, str) else []
    if (not 1 <= len(parts) <= 2 or not all(_BOX_NAME_PART.match(p) for p in parts)
            or ".." in name):
        return (f"{name!r} is not a box name: use letters, digits, '.', '_', '-' and at most "
                "one '/' (org/box), each part starting with a letter or digit, at most 63 "
                "characters, no '..'")
    return None


def box_file_stem(name: str) -> str:
    """Return what the box's files are named after: the box part of an "org/box" name."""
    return name.rsplit("/", 1)[-1]


def parse_build_metadata(data: Any, source: str) -> BuildMetadata:
    """Check decoded build metadata against the agreed format; errors name `source` and the key."""
    def fail(key: str, what: str) -> BuildMetadataError:
        return BuildMetadataError(
            f"{source}: {key}: {what} (re-run `invoke build-box` to rewrite it)"
        )

    if not isinstance(data, dict):
        raise fail("(top level)", "expected a JSON object")

    def text(key: str) -> str:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "missing or not a non-empty string")
        return value

    name = text("name")
    problem = box_name_problem(name)
    if problem:
        raise fail("name", problem)
    version = text("version")
    problem = version_problem(version)
    if problem:
        raise fail("version", problem)
    if not isinstance(data.get("git_dirty"), bool):
        raise fail("git_dirty", "missing or not true/false")
    tools = data.get("tools", {})
    if not isinstance(tools, dict):
        raise fail("tools", "expected an object of tool name -> version")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise fail("description", "expected a string")
    inputs = data.get("inputs")
    if inputs is not None and not isinstance(inputs, str):
        raise fail("inputs", "expected the digest of the build's inputs as a string")
    raw_boxes = data.get("boxes")
    if not isinstance(raw_boxes, list) or not raw_boxes:
        raise fail("boxes", "missing or empty: the build produced no box")
    boxes = []
    seen = set()
    for i, raw in enumerate(raw_boxes):
        key = f"boxes[{i}]"
        if not isinstance(raw, dict):
            raise fail(key, "expected an object")
        provider = raw.get("provider")
        if provider not in PROVIDERS:
            raise fail(f"{key}.provider", f"{provider!r} is not one of {', '.join(PROVIDERS)}")
        architecture = raw.get("architecture", DEFAULT_ARCHITECTURE)
        if architecture not in ARCHITECTURES:
            raise fail(f"{key}.architecture",
                       f"{architecture!r} is not one of {', '.join(ARCHITECTURES)}")
        if (provider, architecture) in seen:
            raise fail(f"{key}.provider", f"{provider} {architecture} is listed twice")
        seen.add((provider, architecture))
        file = raw.get("file")
        if not isinstance(file, str) or not file or "/" in file or file in (".", ".."):
            raise fail(f"{key}.file", "expected the box file's basename inside dist/")
        sha256 = raw.get("sha256")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise fail(f"{key}.sha256", "expected 64 lowercase hex digits")
        size = raw.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise fail(f"{key}.size", "expected the file size in bytes (a positive integer)")
        boxes.append(BoxFile(provider=provider, file=file, sha256=sha256, size=size,
                             architecture=architecture))
    return BuildMetadata(
        name=name,
        version=version,
        git_revision=text("git_revision"),
        git_dirty=data["git_dirty"],
        created=text("created"),
        boxes=tuple(boxes),
        tools=dict(tools),
        description=description,
        inputs=inputs,
    )


def load_build_metadata(path: Path) -> BuildMetadata:
    """Read and check `dist/build.json`; a clear error says what is wrong and how to fix it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildMetadataError(
            f"{path}: not found: build the boxes first (`invoke build-box`) or pass --dist DIR"
        ) from None
    except OSError as exc:
        raise BuildMetadataError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BuildMetadataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    return parse_build_metadata(data, str(path))
