"""Image references and platforms as users write them under `warm:`: the rules, for config and warm alike."""

from __future__ import annotations

import re
from typing import Optional

_REPO = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
# repo[:tag][@sha256:digest], the registry host left out: the mirror is the registry
REFERENCE = re.compile(
    rf"^(?P<repo>{_REPO})(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)

_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(?:/[a-z0-9]+)?$")


def reference_problem(text: str) -> Optional[str]:
    """Say what is wrong with an image reference from `warm:`, or None when it is one."""
    if "://" in text:
        return f"'{text}' is a URL; give the image as the mirror serves it, e.g. library/alpine:3.19"
    if not REFERENCE.match(text):
        return (f"'{text}' is not an image reference; write repo:tag or repo@sha256:<64 hex>, "
                "lower-case repository, e.g. library/alpine:3.19 (no registry host: the mirror is it)")
    return None


def platform_problem(text: str) -> Optional[str]:
    """Say what is wrong with a platform from `warm:`, or None when it is os/arch[/variant]."""
    if not _PLATFORM.match(text):
        return f"'{text}' is not a platform; write os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
    return None
