"""Checks that dist/ holds exactly the boxes build.json records (size and sha256) before publishing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from box.buildinfo import BuildMetadata
from box.publish.errors import PublishError
from box.run import step

_CHUNK = 4 * 1024 * 1024


class DistError(PublishError):
    """A box in dist/ is missing or differs from what build.json records."""


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks (boxes are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_dist(meta: BuildMetadata, dist: Path) -> None:
    """Make sure every box build.json lists is in dist/ with the recorded size and sha256."""
    problems = []
    for box in meta.boxes:
        path = dist / box.file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{path}: missing (listed in build.json for {box.provider})")
            continue
        if size != box.size:
            problems.append(f"{path}: {size} bytes, build.json says {box.size}")
    if problems:
        raise DistError("dist/ does not match build.json; rebuild (`invoke build-box`):\n  "
                        + "\n  ".join(problems))
    # Sizes first: a cheap check catches a missing or truncated box before hashing gigabytes.
    with step(f"verify sha256 of {len(meta.boxes)} box(es) in {dist}"):
        for box in meta.boxes:
            actual = sha256_file(dist / box.file)
            if actual != box.sha256:
                problems.append(f"{dist / box.file}: sha256 {actual}, build.json says {box.sha256}")
    if problems:
        raise DistError("a box changed after the build; rebuild (`invoke build-box`):\n  "
                        + "\n  ".join(problems))
