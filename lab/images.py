"""Makes test images without Docker or network, pushes them with skopeo and pulls them back.

Images are written by hand as OCI image layouts (lab/oci_layout.py), then pushed with
`skopeo copy oci:DIR:TAG docker://127.0.0.1:PORT/REPO:TAG`. What the tests assert
against (manifest digest, layer digests and sizes) is read back from the registry after the
push, so it is what a client really gets, also after skopeo's v2s2 conversion.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from box.run import output, run
from box.sizes import KiB, MiB
from lab.oci_layout import (
    DOCKER_LIST,
    OCI_INDEX,
    sha256_digest,
    write_image_layout,
    write_index_layout,
)

SKOPEO = "skopeo"
# skopeo must not depend on the machine's /etc/containers/policy.json
_SKOPEO_GLOBAL = [SKOPEO, "--insecure-policy"]


@dataclass(frozen=True)
class Blob:
    """A content-addressed object as a registry stores it: digest, size in bytes, media type."""

    digest: str
    size: int
    media_type: str = ""


@dataclass(frozen=True)
class Platform:
    """One image of a multi-arch index."""

    architecture: str
    manifest: Blob
    config: Blob
    layers: tuple[Blob, ...]


@dataclass(frozen=True)
class TestImage:
    """An image pushed to a registry, as the registry serves it."""

    __test__ = False  # not a pytest test class

    kind: str  # "oci", "v2s2" or "index"
    repo: str
    tag: str
    digest: str  # digest of the top manifest (the index, for kind "index")
    media_type: str
    platforms: tuple[Platform, ...]

    def ref(self, host: str, *, by_digest: bool = False) -> str:
        """`HOST/REPO:TAG` (or `HOST/REPO@DIGEST`) for skopeo's `docker://` transport."""
        return (
            f"{host}/{self.repo}@{self.digest}" if by_digest else f"{host}/{self.repo}:{self.tag}"
        )

    @property
    def layers(self) -> tuple[Blob, ...]:
        """Every layer blob of the image (all platforms of an index)."""
        return tuple(layer for p in self.platforms for layer in p.layers)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        """Every blob a full pull fetches: configs and layers, all platforms."""
        return tuple(b for p in self.platforms for b in (p.config, *p.layers))

    @property
    def manifests(self) -> tuple[Blob, ...]:
        """Every manifest a full pull fetches: the top one and, for an index, each platform's."""
        top = Blob(self.digest, 0, self.media_type)
        if self.kind == "index":
            return (top, *(p.manifest for p in self.platforms))
        return (top,)

    @property
    def blob_bytes(self) -> int:
        """Total size of every blob a full pull fetches."""
        return sum(b.size for b in self.blobs)


@dataclass
class TestImages:
    """The three kinds of test image, pushed to one upstream."""

    __test__ = False  # not a pytest test class

    oci: TestImage
    docker: TestImage
    index: TestImage

    def all(self) -> tuple[TestImage, ...]:
        """The three images, OCI first."""
        return self.oci, self.docker, self.index


@dataclass(frozen=True)
class PullResult:
    """What a pull brought back: the manifest digest the registry served, and where it went."""

    digest: str
    dest: Path


# ---------------------------------------------------------------- skopeo


@contextmanager
def authfile(host: str, creds: tuple[str, str] | None) -> Iterator[list[str]]:
    """skopeo arguments for `creds` on `host` (or none) in a private temp auth file: never in argv,
    and never the machine's own saved logins."""
    auths = {}
    if creds is not None:
        user, password = creds
        auths[host] = {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
    fd, path = tempfile.mkstemp(prefix="skopeo-auth-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"auths": auths}, f)
        yield ["--authfile", path]
    finally:
        os.unlink(path)


def inspect_raw(ref: str, *, creds: tuple[str, str] | None = None, timeout: float = 60) -> bytes:
    """The manifest bytes a registry serves for `HOST/REPO:TAG` or `HOST/REPO@DIGEST`."""
    host = ref.split("/", 1)[0]
    with authfile(host, creds) as auth:
        text = output(
            [*_SKOPEO_GLOBAL, "inspect", "--raw", "--tls-verify=false", *auth, f"docker://{ref}"],
            timeout=timeout,
        )
    return text.encode()


def describe(
    host: str, repo: str, tag: str, kind: str, *, creds: tuple[str, str] | None = None
) -> TestImage:
    """Read an image back from a registry: top manifest digest, and each platform's blobs."""
    raw = inspect_raw(f"{host}/{repo}:{tag}", creds=creds)
    top = json.loads(raw)
    media_type = top.get("mediaType", "")
    platforms = []
    if media_type in (OCI_INDEX, DOCKER_LIST):
        for entry in top["manifests"]:
            child_raw = inspect_raw(f"{host}/{repo}@{entry['digest']}", creds=creds)
            child = json.loads(child_raw)
            platforms.append(
                _platform(
                    entry["platform"]["architecture"], sha256_digest(child_raw), child, len(child_raw)
                )
            )
    else:
        platforms.append(_platform("amd64", sha256_digest(raw), top, len(raw)))
    return TestImage(
        kind=kind,
        repo=repo,
        tag=tag,
        digest=sha256_digest(raw),
        media_type=media_type,
        platforms=tuple(platforms),
    )


def _platform(arch: str, digest: str, manifest: dict, size: int) -> Platform:
    def blob(d: dict) -> Blob:
        return Blob(d["digest"], d["size"], d.get("mediaType", ""))

    return Platform(
        architecture=arch,
        manifest=Blob(digest, size, manifest.get("mediaType", "")),
        config=blob(manifest["config"]),
        layers=tuple(blob(layer) for layer in manifest["layers"]),
    )


def push_layout(
    layout: Path,
    tag: str,
    host: str,
    repo: str,
    *,
    fmt: str | None = None,
    all_images: bool = False,
    creds: tuple[str, str] | None = None,
    timeout: float = 300,
) -> None:
    """Push `oci:LAYOUT:TAG` to `docker://HOST/REPO:TAG` over HTTP (`fmt`: skopeo --format)."""
    argv = [*_SKOPEO_GLOBAL, "copy", "--quiet", "--dest-tls-verify=false"]
    if fmt:
        argv += ["--format", fmt]
    if all_images:
        argv.append("--all")
    with authfile(host, creds) as auth:
        run(
            [*argv, *auth, f"oci:{layout}:{tag}", f"docker://{host}/{repo}:{tag}"],
            capture=True,
            timeout=timeout,
        )


def push_oci_image(
    workdir: Path,
    host: str,
    repo: str = "test/oci",
    tag: str = "v1",
    layer_sizes: Sequence[int] = (256 * KiB, 64 * KiB, 1 * MiB, 16 * KiB),
    *,
    creds: tuple[str, str] | None = None,
) -> TestImage:
    """Make a 4-layer OCI image, push it as OCI; return it as the registry serves it."""
    return _push_single(workdir, host, repo, tag, layer_sizes, "oci", creds)


def push_docker_image(
    workdir: Path,
    host: str,
    repo: str = "test/docker",
    tag: str = "v1",
    layer_sizes: Sequence[int] = (128 * KiB, 512 * KiB, 32 * KiB),
    *,
    creds: tuple[str, str] | None = None,
) -> TestImage:
    """Make a 3-layer image and push it converted to Docker schema 2 (`--format v2s2`)."""
    return _push_single(workdir, host, repo, tag, layer_sizes, "v2s2", creds)


def _push_single(workdir: Path, host: str, repo: str, tag: str, layer_sizes: Sequence[int], kind: str,
                 creds: tuple[str, str] | None) -> TestImage:
    layout = write_image_layout(
        workdir / f"layout-{repo.replace('/', '-')}-{tag}", repo, tag, layer_sizes
    )
    push_layout(layout, tag, host, repo, fmt=None if kind == "oci" else kind, creds=creds)
    return describe(host, repo, tag, kind, creds=creds)


def push_index_image(
    workdir: Path,
    host: str,
    repo: str = "test/multiarch",
    tag: str = "v1",
    layer_sizes: Sequence[int] = (96 * KiB, 48 * KiB),
    *,
    creds: tuple[str, str] | None = None,
) -> TestImage:
    """Make an OCI index of linux/amd64 + linux/arm64 images and push it whole (`--all`)."""
    layout = write_index_layout(
        workdir / f"layout-{repo.replace('/', '-')}-{tag}", repo, tag, layer_sizes
    )
    push_layout(layout, tag, host, repo, all_images=True, creds=creds)
    return describe(host, repo, tag, "index", creds=creds)


def push_test_images(workdir: Path, host: str, creds: tuple[str, str] | None = None) -> TestImages:
    """Make and push the OCI image, the Docker schema 2 image and the multi-arch index."""
    return TestImages(
        oci=push_oci_image(workdir, host, creds=creds),
        docker=push_docker_image(workdir, host, creds=creds),
        index=push_index_image(workdir, host, creds=creds),
    )


def pull(
    ref: str,
    dest: Path,
    *,
    all_images: bool = False,
    creds: tuple[str, str] | None = None,
    timeout: float = 120,
    cert_dir: Path | None = None,
) -> PullResult:
    """Pull `HOST/REPO:TAG` (or `@DIGEST`) over HTTP into `dir:DEST`; return the served digest.

    With `cert_dir` (a folder holding the CA as ca.crt) the pull is over TLS, verifying the
    registry's certificate against that CA only.
    `all_images` pulls every platform of an index (`--all`); without it skopeo picks the
    host's platform. Raises `box.run.CommandError` (with skopeo's stderr) when the pull fails.
    """
    host = ref.split("/", 1)[0]
    dest.mkdir(parents=True, exist_ok=True)
    tls = ["--src-tls-verify=false"] if cert_dir is None else ["--src-tls-verify=true", "--src-cert-dir",
                                                                 str(cert_dir)]
    argv = [*_SKOPEO_GLOBAL, "copy", "--quiet", *tls]
    if all_images:
        argv.append("--all")
    with authfile(host, creds) as auth:
        run([*argv, *auth, f"docker://{ref}", f"dir:{dest}"], capture=True, timeout=timeout)
    return PullResult(digest=sha256_digest((dest / "manifest.json").read_bytes()), dest=dest)


def pull_image(
    image: TestImage, host: str, dest: Path, *, by_digest: bool = False, **kwargs: Any
) -> PullResult:
    """Pull a test image from `host` as a client would (an index with all its platforms); see `pull`."""
    return pull(image.ref(host, by_digest=by_digest), dest, all_images=image.kind == "index", **kwargs)
