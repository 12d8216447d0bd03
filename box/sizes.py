"""How the host side shows a size in bytes: one unit per kind of thing, so figures compare.

Files (a box, what gc freed) are shown in decimal megabytes (MB), the unit of the README's
figures and of download sizes; memory (a process's RSS) in MiB, as `free -m` and systemd do.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
UNITS = {"MB": 1000**2, "MiB": MiB}


def format_size(size: float, unit: str = "MB") -> str:
    """A size in bytes as the user reads it, e.g. "131.7 MB" (or "37.0 MiB" with unit="MiB")."""
    return f"{size / UNITS[unit]:.1f} {unit}"
