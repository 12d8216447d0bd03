"""Picks a box version's description from CHANGELOG.md (Keep a Changelog format)."""

from __future__ import annotations

import re
from typing import Optional

_HEADING = re.compile(r"^##\s+\[?([^\]\s]+)\]?(.*)$")


def changelog_section(text: str, version: str) -> Optional[str]:
    """Return the body of the `## [version]` section of a Keep-a-Changelog file, if any."""
    wanted = version.lower()
    lines = text.splitlines()
    body: Optional[list[str]] = None
    for line in lines:
        match = _HEADING.match(line)
        if match:
            if body is not None:
                break
            if match.group(1).lower().lstrip("v") == wanted.lstrip("v"):
                body = []
            continue
        if body is not None:
            if re.match(r"^\[[^\]]+\]:\s", line):  # link reference definitions at the end
                continue
            body.append(line)
    if body is None:
        return None
    section = "\n".join(body).strip()
    return section or None


def version_description(changelog: Optional[str], version: str) -> tuple[str, str]:
    """Pick the version's description: its CHANGELOG section, else Unreleased, else a line.

    Returns (description, where it came from). Falling back to "Unreleased" covers a box
    built before the CHANGELOG section was renamed to the version; the caller prints
    where the text came from so a wrong pick is visible.
    """
    if changelog:
        section = changelog_section(changelog, version)
        if section:
            return section, f"CHANGELOG.md section {version}"
        section = changelog_section(changelog, "Unreleased")
        if section:
            return section, f"CHANGELOG.md section Unreleased (no section {version})"
    return f"docker-registry-cache {version}", "default text (no CHANGELOG.md section found)"
