"""Checks of what a pull through a mirror left: the image arrived intact, its blobs stored and sound."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from registry_cache.cachelayout import is_stored

from box.wait import wait_until
from lab.images import PullResult, TestImage


def assert_pulled_intact(image: TestImage, result: PullResult) -> None:
    """The pull got the image's manifest, and every blob file matches its digest."""
    assert result.digest == image.digest
    for blob in image.blobs:
        data = (result.dest / blob.digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob.digest


def broken_stored_blobs(storage: Path) -> list[str]:
    """Every blob in a mirror's storage whose bytes do not match its digest (none, we hope)."""
    bad = []
    for data in (storage / "docker/registry/v2/blobs/sha256").glob("*/*/data"):
        if hashlib.sha256(data.read_bytes()).hexdigest() != data.parent.name:
            bad.append(data.parent.name)
    return bad


def wait_until_stored(storage: Path, imgs: Iterable[TestImage], timeout: float = 30) -> None:
    """Wait until a mirror has stored (committed and linked) every blob of `imgs`; fail after `timeout`."""
    pending = [(img.repo, b.digest) for img in imgs for b in img.blobs]

    def stored() -> bool:
        pending[:] = [b for b in pending if not is_stored(str(storage), *b)]
        return not pending

    wait_until(stored, "the mirror storing every blob", timeout=timeout, detail=lambda: f"missing {pending}")
