"""`registry-cache warm`: pull a mirror's `warm:` images through it, so the first client pull is a hit.

A pull here is what a client does, over HTTP through the mirror itself: the manifest (an index
and the chosen platforms' manifests), then every blob, streamed to nowhere while its digest is
checked. The mirror stores what it fetched on the way, as for any client. A failure is logged
and kept beside the cache for `status`; it never fails `apply`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from registry_cache.imageref import REFERENCE, reference_problem
from registry_cache.record import MirrorRecord
from registry_cache.warmresult import WarmOutcome

log = logging.getLogger(__name__)

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
CHUNK = 1024 * 1024
SERVING_WAIT = 120.0  # after `apply`, the mirrors may still be starting
TIMEOUT = (10, 300)  # connect, read: a cold blob may take minutes to start through a slow upstream

class WarmError(RuntimeError):
    """One image could not be warmed; the message says which and why."""


@dataclass(frozen=True)
class Reference:
    """An image to warm: repository, tag or digest, and the platforms wanted (None: all)."""

    repo: str
    ref: str
    platforms: Optional[tuple[str, ...]] = None

    @property
    def name(self) -> str:
        """The reference as the user wrote it (`repo:tag` or `repo@digest`)."""
        return f"{self.repo}@{self.ref}" if self.ref.startswith("sha256:") else f"{self.repo}:{self.ref}"


def parse_reference(item: dict[str, Any]) -> Reference:
    """The reference of one `warm:` item ({"image": ..., "platforms": [...] or None})."""
    match = REFERENCE.match(str(item.get("image", "")))
    if not match:
        raise WarmError(reference_problem(str(item.get("image"))) or "bad reference")
    ref = match.group("digest") or match.group("tag") or "latest"
    platforms = item.get("platforms")
    return Reference(match.group("repo"), ref, tuple(platforms) if platforms else None)


def _platform_of(descriptor: dict[str, Any]) -> str:
    platform = descriptor.get("platform") or {}
    parts = [platform.get("os", ""), platform.get("architecture", "")]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


def _wanted(descriptor: dict[str, Any], platforms: Optional[tuple[str, ...]]) -> bool:
    if platforms is None:
        return True
    name = _platform_of(descriptor)
    # linux/arm64 asks for linux/arm64/v8 too
    return any(name == p or name.startswith(p + "/") for p in platforms)


class Warmer:
    """Pulls images through one mirror over HTTP, reporting each step to `progress`."""

    def __init__(self, record: MirrorRecord, progress: Callable[[str], None] = lambda _line: None) -> None:
        import requests

        self.record = record
        endpoint = record.endpoint
        self.base = endpoint.url.rstrip("/")
        self.session: requests.Session = endpoint.session()  # https with the mirror's CA under TLS
        login = record.warm_login()
        if login is not None:
            self.session.auth = login.pair()
        self.progress = progress

    def warm_all(self) -> WarmOutcome:
        """Warm every image of the mirror's `warm:` list; failures are collected, not raised."""
        outcome = WarmOutcome(self.record.name)
        begun = time.monotonic()
        for item in self.record.warm:
            try:
                reference = parse_reference(item)
                blobs, size = self.pull(reference)
            except WarmError as exc:
                outcome.failures.append(str(exc))
                log.error("mirror %s: warm: %s", self.record.name, exc)
                self.progress(f"FAILED {exc}")
                continue
            outcome.images += 1
            outcome.blobs += blobs
            outcome.bytes += size
        outcome.duration = time.monotonic() - begun
        return outcome

    def pull(self, reference: Reference) -> tuple[int, int]:
        """Pull one image through the mirror; return (blobs, bytes). Raises WarmError."""
        import requests

        try:
            top = self._manifest(reference.repo, reference.ref)
            manifests = [top]
            children = [d for d in top.get("manifests") or [] if _wanted(d, reference.platforms)]
            if top.get("manifests") is not None and not children:
                raise WarmError(f"{reference.name}: none of the platforms "
                                f"{', '.join(reference.platforms or ())} is in the image")
            manifests += [self._manifest(reference.repo, d["digest"]) for d in children]
            blobs = []
            for manifest in manifests:
                for descriptor in [manifest.get("config"), *(manifest.get("layers") or [])]:
                    if isinstance(descriptor, dict) and descriptor.get("digest") not in blobs:
                        blobs.append(descriptor["digest"])
            total = 0
            for index, digest in enumerate(blobs, 1):
                total += self._blob(reference.repo, digest)
                self.progress(f"{reference.name}: blob {index}/{len(blobs)} {digest[:19]}")
        except requests.RequestException as exc:
            raise WarmError(f"{reference.name}: {type(exc).__name__}: {exc}") from None
        self.progress(f"{reference.name}: warm ({len(blobs)} blobs, {total} bytes)")
        return len(blobs), total

    def _manifest(self, repo: str, ref: str) -> dict[str, Any]:
        answer = self.session.get(f"{self.base}/v2/{repo}/manifests/{ref}",
                                  headers={"Accept": ACCEPT}, timeout=TIMEOUT)
        if answer.status_code == 401 and self.record.client_auth and self.session.auth is None:
            raise WarmError(f"{repo}:{ref}: the mirror asks for a login and the warm login in "
                            f"{self.record.directory} cannot be read: run `sudo registry-cache warm`")
        if answer.status_code != 200:
            raise WarmError(f"{repo}:{ref}: the mirror answered {answer.status_code} for the "
                            f"manifest: {answer.text[:200].strip()}")
        if ref.startswith("sha256:") and "sha256:" + hashlib.sha256(answer.content).hexdigest() != ref:
            raise WarmError(f"{repo}@{ref}: the manifest served does not match its digest")
        try:
            doc = json.loads(answer.content)
        except ValueError:
            raise WarmError(f"{repo}:{ref}: the manifest is not JSON") from None
        return doc if isinstance(doc, dict) else {}

    def _blob(self, repo: str, digest: str) -> int:
        hasher = hashlib.sha256()
        size = 0
        url = f"{self.base}/v2/{repo}/blobs/{digest}"
        with self.session.get(url, stream=True, timeout=TIMEOUT) as answer:
            if answer.status_code != 200:
                raise WarmError(f"{repo}: the mirror answered {answer.status_code} for blob {digest}")
            for chunk in answer.iter_content(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        if "sha256:" + hasher.hexdigest() != digest:
            raise WarmError(f"{repo}: blob {digest} arrived with other content (cut short?)")
        return size


def warm(records: list[MirrorRecord], progress: Callable[[str], None]) -> list[WarmOutcome]:
    """Warm every mirror of `records` that has a `warm:` list; keep each outcome for `status`."""
    from registry_cache import net

    outcomes = []
    for record in records:
        if not record.warm:
            continue
        if net.wait_until_serving({record.name: record.endpoint}, SERVING_WAIT):
            outcome = WarmOutcome(record.name, failures=[f"the mirror does not serve at {record.url}"])
            log.error("mirror %s: warm: %s", record.name, outcome.failures[0])
            _keep(record, outcome)
            outcomes.append(outcome)
            continue
        progress(f"{record.name}: warming {len(record.warm)} image(s) through {record.url}")
        outcome = Warmer(record, lambda line, name=record.name: progress(f"{name}: {line}")).warm_all()
        _keep(record, outcome)
        progress(f"{record.name}: {outcome.images} image(s) warm, {len(outcome.failures)} failed, "
                 f"{outcome.bytes} bytes in {outcome.duration:.1f} s")
        outcomes.append(outcome)
    return outcomes


def _keep(record: MirrorRecord, outcome: WarmOutcome) -> None:
    if record.storage_ready:
        try:
            outcome.save(record.storage)
        except OSError as exc:
            log.warning("mirror %s: cannot keep the warm outcome: %s", record.name, exc)
