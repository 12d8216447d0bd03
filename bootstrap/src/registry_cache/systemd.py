"""Drives the mirrors' systemd units: one template instance per mirror."""

from __future__ import annotations

import os

from registry_cache import paths, proc
from registry_cache.fsutil import write_file
from registry_cache.written import Owner


def running() -> bool:
    """True when systemd is this machine's init (the box), false in containers and CI."""
    return os.path.isdir("/run/systemd/system")


def unit(name: str) -> str:
    """The unit name of a mirror."""
    return paths.MIRROR_UNIT.format(name=name)


def render_dropin(name: str, owner: Owner, storage: str) -> str:
    """The per-mirror drop-in: which account runs it and the one folder it may write."""
    from registry_cache.render import templates  # apply's no-op fast path renders nothing

    return templates().get_template("mirror-dropin.conf.j2").render(
        name=name, user=owner.user, group=owner.group, storage=storage
    )


def dropin_path(name: str) -> str:
    """Where a mirror's drop-in lives."""
    return os.path.join(paths.UNIT_DIR, unit(name) + ".d", paths.DROPIN)


def write_dropin(name: str, owner: Owner, storage: str) -> bool:
    """Write a mirror's drop-in; return True when it changed (systemd must reload)."""
    return write_file(dropin_path(name), render_dropin(name, owner, storage))


def remove_dropin(name: str) -> None:
    """Delete a removed mirror's drop-in."""
    path = dropin_path(name)
    if os.path.exists(path):
        os.unlink(path)
        os.rmdir(os.path.dirname(path))


def systemctl(*args: str) -> None:
    """Run systemctl; a failure raises CommandError with systemd's own words."""
    proc.run(["systemctl", *args])


def is_active(name: str) -> bool:
    """True when a mirror's unit is active."""
    return proc.run(["systemctl", "is-active", "--quiet", unit(name)], check=False).returncode == 0
