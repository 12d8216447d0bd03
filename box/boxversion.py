"""Orders box versions exactly as Vagrant does (RubyGems' Gem::Version), so catalogs sort right.

Vagrant reads every `versions[].version` of a box catalog with `Gem::Version.new` and
picks the newest by Gem::Version comparison. The rules, from RubyGems:

- a version is digits, then `.`-separated alphanumeric parts, optionally followed by a
  `-suffix` (`1.0.0-rc.1` is read as `1.0.0.pre.rc.1`);
- it is split into segments: runs of digits (compared as numbers) and runs of letters
  (compared as strings): `1.0.0.rc1` -> 1, 0, 0, "rc", 1;
- trailing zeros of the numeric part and of the part after the first letter are
  ignored: `1.0` == `1.0.0`;
- a missing segment counts as 0; a letter segment sorts before any number, so every
  pre-release (`1.0.0.rc1`, `1.0.0-rc.1`, `1.0.0.a`) sorts before `1.0.0`.
"""

from __future__ import annotations

import functools
import re
from typing import Optional, Union

Segment = Union[int, str]

_PATTERN = re.compile(r"^\s*([0-9]+(\.[0-9a-zA-Z]+)*(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?)\s*$")
_SEGMENT = re.compile(r"[0-9]+|[a-zA-Z]+")


class VersionError(ValueError):
    """A version string Vagrant would refuse."""


@functools.total_ordering
class BoxVersion:
    """One box version, compared the way Vagrant compares them."""

    def __init__(self, text: str) -> None:
        match = _PATTERN.match(text) if isinstance(text, str) else None
        if not match:
            raise VersionError(
                f"{text!r} is not a version Vagrant accepts: use digits and dots such as "
                "1.2.0, optionally a pre-release suffix such as 1.2.0.rc1 or 1.2.0-rc.1"
            )
        self.text = match.group(1)
        normalised = self.text.replace("-", ".pre.")
        self.segments: tuple[Segment, ...] = tuple(
            int(s) if s.isdigit() else s for s in _SEGMENT.findall(normalised)
        )
        self.canonical = _canonical(self.segments)

    @property
    def prerelease(self) -> bool:
        """True for versions with a letter in them (`1.0.0.rc1`), which sort before `1.0.0`."""
        return any(isinstance(s, str) for s in self.segments)

    def _cmp(self, other: BoxVersion) -> int:
        left, right = self.canonical, other.canonical
        for i in range(max(len(left), len(right))):
            lhs = left[i] if i < len(left) else 0
            rhs = right[i] if i < len(right) else 0
            if lhs == rhs:
                continue
            if isinstance(lhs, str) and isinstance(rhs, int):
                return -1
            if isinstance(lhs, int) and isinstance(rhs, str):
                return 1
            return -1 if lhs < rhs else 1  # type: ignore[operator]
        return 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BoxVersion):
            return NotImplemented
        return self._cmp(other) == 0

    def __lt__(self, other: BoxVersion) -> bool:
        return self._cmp(other) < 0

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"BoxVersion({self.text!r})"

    def __str__(self) -> str:
        return self.text


def _canonical(segments: tuple[Segment, ...]) -> tuple[Segment, ...]:
    # Gem::Version#canonical_segments: split at the first letter segment, drop the
    # trailing zeros of each half, join again.
    first_letter = next((i for i, s in enumerate(segments) if isinstance(s, str)), len(segments))
    parts = []
    for half in (segments[:first_letter], segments[first_letter:]):
        half = list(half)
        while half and half[-1] == 0:
            half.pop()
        parts.extend(half)
    return tuple(parts)


def parse_version(text: str) -> BoxVersion:
    """Parse a version as Vagrant would, or raise VersionError saying what is accepted."""
    return BoxVersion(text)


def version_problem(text: str) -> Optional[str]:
    """Say what is wrong with the version of a box we build or publish; None when it is fine.

    The one rule build, test-box and publish apply: a version Vagrant accepts, written
    without surrounding spaces (it goes into file names and URLs as it is).
    """
    try:
        version = parse_version(text)
    except VersionError as exc:
        return str(exc)
    if version.text != text:
        return f"{text!r} has spaces around it: write it as {version.text!r}"
    return None


def sort_versions(texts: list[str]) -> list[str]:
    """Return the version strings oldest first, in Vagrant's order."""
    return sorted(texts, key=BoxVersion)
