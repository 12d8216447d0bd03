"""What a published box entry is: its architecture and checksum, and when a build may replace it.

The catalog and Vagrant Cloud keep the same facts about a published provider, so both
compare checksums and refuse to overwrite a changed box with the functions here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from box.arch import DEFAULT as ARCHITECTURE

CHECKSUM_TYPE = "sha256"


def provider_entry_order(entry: Mapping[str, Any]) -> tuple[str, bool, str]:
    """Sort key of a version's provider entries: by provider, the default architecture last.

    Vagrant < 2.4 reads no architecture: of several entries with one provider name it keeps
    the last, which must be the default (amd64) one.
    """
    arch = str(entry.get("architecture") or ARCHITECTURE)
    return (str(entry.get("name")), arch == ARCHITECTURE, arch)


def same_checksum(published: Mapping[str, Any], sha256: str) -> bool:
    """Tell whether a published provider entry carries this build's sha256."""
    return (
        str(published.get("checksum_type") or "").lower() == CHECKSUM_TYPE
        and str(published.get("checksum") or "").lower() == sha256
    )


def overwrite_refusal(conflicts: list[str]) -> str:
    """The message that refuses to replace published boxes whose checksum differs."""
    return (
        "refusing to overwrite published boxes:\n  "
        + "\n  ".join(conflicts)
        + "\nbump the version in the build, or pass --force to replace them"
    )
