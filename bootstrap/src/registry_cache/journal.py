"""`registry-cache logs`: the journalctl command that shows the mirrors' logs."""

from __future__ import annotations

import os
import shutil
from typing import Optional

from registry_cache import paths

JOURNAL_SOCKETS = "/run/systemd/journal"
ABSENT = ("journald is not running here (no /run/systemd/journal or no journalctl), so the "
          "mirrors' logs are in no journal: mirrors run by `registry-cache serve` log to its stderr")
BOOT_UNIT = "registry-cache-boot.service"


def available() -> bool:
    """True when journald runs and journalctl is installed."""
    return os.path.isdir(JOURNAL_SOCKETS) and shutil.which("journalctl") is not None


def units(mirror: Optional[str]) -> list[str]:
    """The units whose logs `logs` shows: one mirror's, or every mirror's and the agent's own."""
    if mirror is not None:
        return [paths.MIRROR_UNIT.format(name=mirror)]
    return [paths.MIRROR_UNIT.format(name="*"), paths.METRICS_UNIT, BOOT_UNIT]


def command(mirror: Optional[str], *, follow: bool = False, lines: int = 200) -> list[str]:
    """The journalctl argv for one mirror's logs (or all): its last `lines` lines, new ones with `follow`."""
    argv = ["journalctl", "--output=short-iso", f"--lines={lines}"]
    for unit in units(mirror):
        argv += ["--unit", unit]
    if follow:
        argv.append("--follow")
    else:
        argv.append("--no-pager")
    return argv
