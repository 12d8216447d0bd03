"""Byte sizes as users write them in config.yml (`50GB`, `512MiB`) and as the agent prints them."""

from __future__ import annotations

import re
from typing import Optional, Union

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zA-Z]*)\s*$")
MINIMUM = 1024**2  # a cache cap below 1 MiB is a typo, not a wish


def parse_size(value: Union[str, int]) -> int:
    """Return the bytes a size means: an integer (bytes) or a string like `50GB`, `1.5TB`, `512MiB`.

    Decimal units (KB, MB, GB, TB) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) of 1024.
    Raises ValueError with a message for the user.
    """
    if isinstance(value, bool):
        raise ValueError("must be a size such as 50GB, not a boolean")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group("unit").lower() not in _UNITS:
            raise ValueError(f"'{value}' is not a size; write e.g. 50GB, 500MB or 1.5TB")
        number, unit = float(match.group("number")), match.group("unit").lower()
    size = int(number * _UNITS[unit])
    if size < MINIMUM:
        raise ValueError(f"'{value}' is less than 1 MiB; write e.g. 50GB")
    return size


def size_problem(value: object) -> Optional[str]:
    """Say what is wrong with a size from config.yml, or None when it is one."""
    if not isinstance(value, (str, int)):
        return "must be a size such as 50GB"
    try:
        parse_size(value)
    except ValueError as exc:
        return str(exc)
    return None


def format_size(count: Optional[int]) -> str:
    """A byte count for people: `512 B`, `3.2 MB`, `41.0 GB` (decimal units, as in config.yml)."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
