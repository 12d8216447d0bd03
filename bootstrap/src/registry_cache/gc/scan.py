"""What a mirror's cache holds, as gc sees it: its images, the blobs each needs, when each was last pulled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from registry_cache import cachelayout
from registry_cache.usage import Usage


@dataclass(frozen=True)
class Image:
    """One image in a mirror's cache: a manifest (an index with its platforms) and its tags."""

    mirror: str
    repo: str
    digest: str
    tags: tuple[str, ...]
    manifests: frozenset[str]  # the top manifest and the platform manifests of an index
    blobs: frozenset[str]  # every blob it needs: manifests, configs, layers
    last_pull: float

    @property
    def name(self) -> str:
        """`repo:tag` (the first tag), or `repo@digest` for an image pulled by digest only."""
        return f"{self.repo}:{self.tags[0]}" if self.tags else f"{self.repo}@{self.digest}"


@dataclass
class Inventory:
    """What one mirror's storage holds: its images and the size of every blob."""

    mirror: str
    storage: str
    images: list[Image] = field(default_factory=list)
    blob_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def used(self) -> int:
        """Bytes of blob data in the cache."""
        return sum(self.blob_sizes.values())

    def orphan_bytes(self) -> int:
        """Bytes of blobs no image uses (garbage-collect removes them whenever it runs)."""
        used = set().union(*(i.blobs for i in self.images)) if self.images else set()
        return sum(size for digest, size in self.blob_sizes.items() if digest not in used)


def scan(mirror: str, storage: str, usage: Optional[Usage] = None) -> Inventory:
    """Read a mirror's storage: every image with the blobs it needs and when it was last pulled.

    The last pull is the latest of: the stamps the runner took from the registry's log, the
    time the manifest was stored, and the time a tag was last refreshed from the upstream
    (Distribution rewrites a tag's link at every proxied pull of it).
    """
    usage = usage or Usage()
    inventory = Inventory(mirror=mirror, storage=storage, blob_sizes=cachelayout.blob_sizes(storage))
    for repo in cachelayout.repositories(storage):
        stored = cachelayout.revisions(storage, repo)
        tags: dict[str, list[str]] = {}
        tag_times: dict[str, float] = {}
        for tag, (digest, written) in cachelayout.tags(storage, repo).items():
            if digest in stored:
                tags.setdefault(digest, []).append(tag)
                tag_times[digest] = max(tag_times.get(digest, 0.0), written)
        inventory.images += repo_images(mirror, repo, stored, tags, tag_times,
                                        lambda d: cachelayout.references(storage, d), usage)
    return inventory


def repo_images(
    mirror: str,
    repo: str,
    stored: dict[str, float],
    tags: dict[str, list[str]],
    tag_times: dict[str, float],
    references: Callable[[str], tuple[list[str], list[str]]],
    usage: Usage,
) -> list[Image]:
    """The images of one repository from what its storage holds, wherever that is (folder or bucket).

    `stored`: each manifest revision and when it was stored; `tags`: the tags pointing at each
    manifest, `tag_times` when the latest of them was written; `references(digest)`: the platform
    manifests and blobs a manifest names. A platform manifest of an index goes with its index.
    """
    refs = {d: references(d) for d in stored}
    children = {c for d in stored for c in refs[d][0]}
    images = []
    for digest in stored:
        if digest in children and digest not in tags:
            continue  # a platform of an index: evicted with its index
        platforms = [c for c in refs[digest][0] if c in stored]
        manifests = frozenset([digest, *platforms])
        blobs = set(manifests) | set(refs[digest][1])
        for child in platforms:
            blobs |= set(refs[child][1])
        pulled = usage.last_pull(repo, [*tags.get(digest, []), *manifests])
        last = max([stored[d] for d in manifests] + [tag_times.get(digest, 0.0), pulled or 0.0])
        images.append(Image(
            mirror=mirror, repo=repo, digest=digest, tags=tuple(tags.get(digest, [])),
            manifests=manifests, blobs=frozenset(blobs), last_pull=last,
        ))
    return images
