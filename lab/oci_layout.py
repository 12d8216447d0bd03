"""Writes OCI image layouts by hand, without Docker or network: the test images before their push.

A layout holds gzip'd tar layers of deterministic pseudo-random content of a chosen size,
a config JSON, a manifest (one per platform, under an index for a multi-arch image) and
`index.json` naming each tag; skopeo pushes it with `oci:DIR:TAG` (see lab/images.py). The
same name and sizes always give the same bytes, so digests are stable across runs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def sha256_digest(data: bytes) -> str:
    """The `sha256:HEX` digest of `data`, as registries name blobs and manifests."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OciLayout:
    """An OCI image layout folder being written: blobs plus `index.json` tags."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self._refs: list[dict] = []

    def add_blob(self, data: bytes, media_type: str) -> dict:
        """Store one blob; return its descriptor."""
        digest = sha256_digest(data)
        path = self.root / "blobs" / "sha256" / digest.split(":", 1)[1]
        if not path.exists():
            path.write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_json(self, obj: dict, media_type: str) -> dict:
        """Store a JSON document (config, manifest, index) as a blob; return its descriptor."""
        return self.add_blob(json.dumps(obj, indent=2, sort_keys=True).encode(), media_type)

    def tag(self, descriptor: dict, tag: str, platform: dict | None = None) -> None:
        """Name a manifest or index in `index.json`, so `oci:DIR:TAG` finds it."""
        entry = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
        if platform:
            entry["platform"] = platform
        self._refs.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs}
        (self.root / "index.json").write_text(json.dumps(index, indent=2))


def layer_tar_gz(seed: str, size: int) -> tuple[bytes, str]:
    """A gzip'd tar of one file of `size` pseudo-random bytes from `seed`: (blob, diff_id).

    The same seed and size always give the same bytes, so digests are stable across runs.
    Random content keeps the compressed size close to `size`.
    """
    content = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        safe = "".join(c if c.isalnum() else "-" for c in seed)
        info = tarfile.TarInfo(f"data/{safe}.bin")
        info.size = size
        info.mtime = 0
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=1, filename="") as gz:
        gz.write(tar_bytes)
    return packed.getvalue(), sha256_digest(tar_bytes)


def add_image(
    layout: OciLayout, name: str, layer_sizes: Sequence[int], arch: str = "amd64"
) -> dict:
    """Write one single-platform OCI image into `layout`; return its manifest descriptor."""
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        blob, diff_id = layer_tar_gz(f"{name}/{arch}/{i}", size)
        layers.append(layout.add_blob(blob, OCI_LAYER_GZIP))
        diff_ids.append(diff_id)
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/true"], "Labels": {"registry-cache.test": name}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "1970-01-01T00:00:00Z", "created_by": f"layer {i}"}
            for i in range(len(layers))
        ],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": layout.add_json(config, OCI_CONFIG),
        "layers": layers,
    }
    return layout.add_json(manifest, OCI_MANIFEST)


def write_image_layout(root: Path, name: str, tag: str, layer_sizes: Sequence[int]) -> Path:
    """Write an OCI layout holding one linux/amd64 image tagged `tag`; return the layout folder."""
    layout = OciLayout(root)
    layout.tag(add_image(layout, name, layer_sizes), tag)
    return root


def write_index_layout(
    root: Path,
    name: str,
    tag: str,
    layer_sizes: Sequence[int],
    arches: Sequence[str] = ("amd64", "arm64"),
) -> Path:
    """Write an OCI layout holding a multi-arch index (one image per arch) tagged `tag`."""
    layout = OciLayout(root)
    manifests = []
    for arch in arches:
        desc = add_image(layout, name, layer_sizes, arch=arch)
        manifests.append(dict(desc, platform={"architecture": arch, "os": "linux"}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    layout.tag(layout.add_json(index, OCI_INDEX), tag)
    return root
