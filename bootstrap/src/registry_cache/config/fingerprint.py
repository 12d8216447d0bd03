"""Apply's input fingerprint: tells "nothing changed since the last apply" without parsing the config."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Optional


def digest(data: bytes) -> str:
    """The digest by which an input file is recorded (sha256, hex)."""
    return hashlib.sha256(data).hexdigest()


def input_fingerprint(inputs: Mapping[str, str], storage: str) -> Optional[str]:
    """A digest of everything the rendered mirrors depend on, or None when `storage` does not exist.

    That is the agent's version, each input file (path -> digest of its bytes) and the owner
    of the cache root (the mirrors run as that account). Same inputs, same (deterministic)
    output: `apply` compares it with the last applied one to skip validation and rendering.
    """
    from registry_cache import __version__

    total = hashlib.sha256(__version__.encode() + b"\0")
    for path in sorted(inputs):
        total.update(f"{path}\0{inputs[path]}\0".encode())
    try:
        total.update(str(os.stat(storage).st_uid).encode())
    except OSError:
        return None
    return total.hexdigest()


def fingerprint_now(files: Iterable[str], storage: str) -> Optional[str]:
    """The input fingerprint of `files` as they are on disk now; None when one of them is gone."""
    digests = {}
    try:
        for path in files:
            with open(path, "rb") as handle:
                digests[path] = digest(handle.read())
    except OSError:
        return None
    return input_fingerprint(digests, storage)
