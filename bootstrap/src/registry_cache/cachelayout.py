"""Distribution's filesystem storage under a mirror's cache, read in one place: blobs, repositories, links.

Counting hits (counters.py), the runner's wait for stores in flight, `gc`'s scan and unlink, and
`status`'s cache size all go through here; nothing else knows where Distribution 2.8.2 keeps
what (`docker/registry/v2/...`).
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional

from registry_cache import routing
from registry_cache.fsutil import tree_size

_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def v2_root(storage: str) -> str:
    """Where Distribution's filesystem driver keeps everything under a storage root."""
    return os.path.join(storage, "docker", "registry", "v2")


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def blob_path(storage: str, digest: str) -> str:
    """Where Distribution keeps a blob's bytes."""
    hexdigest = _hex(digest)
    return os.path.join(v2_root(storage), "blobs", "sha256", hexdigest[:2], hexdigest, "data")


def repo_dir(storage: str, repo: str) -> str:
    """One repository's folder: its tags, manifest revisions and layer links."""
    return os.path.join(v2_root(storage), "repositories", repo)


def tag_dir(storage: str, repo: str, tag: str) -> str:
    """A tag's folder (`current/link` names the manifest it points to)."""
    return os.path.join(repo_dir(storage, repo), "_manifests", "tags", tag)


def revision_dir(storage: str, repo: str, digest: str) -> str:
    """The folder that links a manifest into a repository."""
    return os.path.join(repo_dir(storage, repo), "_manifests", "revisions", "sha256", _hex(digest))


def layer_dir(storage: str, repo: str, digest: str) -> str:
    """The folder that links a blob into a repository."""
    return os.path.join(repo_dir(storage, repo), "_layers", "sha256", _hex(digest))


def is_stored(storage: str, repo: str, digest: str) -> bool:
    """True once a blob is committed to the storage and linked into its repository."""
    link = os.path.join(layer_dir(storage, repo, digest), "link")
    return os.path.exists(blob_path(storage, digest)) and os.path.exists(link)


def linked_blob(storage: str, repo: str, digest: str) -> Optional[str]:
    """The path of a blob's bytes when the repository links it (Distribution would serve it), else None.

    `repo` must be a repository name by Distribution's grammar and `digest` a sha256 one: a
    name from a request never leads anywhere else in the storage.
    """
    if not routing.is_repository_name(repo) or not _SHA256.fullmatch(digest):
        return None
    if _read_link(os.path.join(layer_dir(storage, repo, digest), "link")) != digest:
        return None
    return blob_path(storage, digest)


def blob_sizes(storage: str) -> dict[str, int]:
    """The size of every blob stored in a Distribution filesystem storage root, by digest."""
    base = os.path.join(v2_root(storage), "blobs", "sha256")
    sizes: dict[str, int] = {}
    try:
        prefixes = sorted(os.listdir(base))
    except OSError:
        return sizes
    for prefix in prefixes:
        try:
            names = os.listdir(os.path.join(base, prefix))
        except OSError:
            continue
        for name in names:
            try:
                sizes["sha256:" + name] = os.stat(os.path.join(base, prefix, name, "data")).st_size
            except OSError:
                continue
    return sizes


def cached_blobs(storage: str) -> set[str]:
    """Return the digests of the blobs stored in a Distribution filesystem storage root."""
    return set(blob_sizes(storage))


def used_bytes(storage: str) -> int:
    """Bytes Distribution's storage takes on disk (blobs, links, uploads), as `status` shows it."""
    return tree_size(os.path.join(storage, "docker"))


def repositories(storage: str) -> list[str]:
    """Every repository that holds manifests, by name (`library/alpine`)."""
    base = os.path.join(v2_root(storage), "repositories")
    repos = []
    for top, dirs, _files in os.walk(base):
        if "_manifests" in dirs:
            repos.append(os.path.relpath(top, base))
        dirs[:] = [d for d in dirs if not d.startswith("_")]
    return sorted(repos)


def revisions(storage: str, repo: str) -> dict[str, float]:
    """The manifests linked into a repository, by digest, with the time each link was written."""
    base = os.path.join(repo_dir(storage, repo), "_manifests", "revisions", "sha256")
    found = {}
    for hexdigest in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        link = os.path.join(base, hexdigest, "link")
        if os.path.exists(link):
            found["sha256:" + hexdigest] = _mtime(link)
    return found


def tags(storage: str, repo: str) -> dict[str, tuple[Optional[str], float]]:
    """Every tag of a repository: (the manifest digest it points to, when it was last written)."""
    base = os.path.join(repo_dir(storage, repo), "_manifests", "tags")
    found = {}
    for tag in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        current = os.path.join(base, tag, "current", "link")
        found[tag] = (_read_link(current), _mtime(current))
    return found


def references(storage: str, digest: str) -> tuple[list[str], list[str]]:
    """(platform manifests, other blobs) a stored manifest refers to."""
    try:
        with open(blob_path(storage, digest), "rb") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return [], []
    if not isinstance(doc, dict):
        return [], []
    children = [m.get("digest") for m in doc.get("manifests") or [] if isinstance(m, dict)]
    blobs = [d.get("digest") for d in [doc.get("config"), *list(doc.get("layers") or [])]
             if isinstance(d, dict)]
    blobs += [d.get("blobSum") for d in doc.get("fsLayers") or [] if isinstance(d, dict)]  # schema 1
    return [c for c in children if isinstance(c, str)], [b for b in blobs if isinstance(b, str)]


def _read_link(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return text if text.startswith("sha256:") else None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
