"""`apply --boot` as it runs inside registry-cache-boot.service, before any config was applied.

systemd is not PID 1 on this machine, so systemctl is played by a stand-in that follows the
ordering the real unit files declare; the real boot is checked in the box (tests/box).
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import pytest
from registry_cache import apply as applymod
from registry_cache import proc, systemd

UNITS = Path(__file__).resolve().parents[3] / "bootstrap" / "systemd"
JOB_VERBS = {"start", "stop", "restart", "reload-or-restart", "try-restart"}


def _mirror_unit_after() -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNITS / "registry-cache-mirror@.service")
    return parser["Unit"]["After"].split()


class SystemctlDuringBoot:
    """systemctl seen from inside registry-cache-boot.service while it is still starting.

    A mirror unit is ordered after the boot unit, so a job for it waits until the boot
    unit has finished: a systemctl call that waits for such a job never returns.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str) -> None:
        self.calls.append(args)
        makes_job = args[0] in JOB_VERBS or "--now" in args
        mirror = any(a.startswith("registry-cache-mirror@") for a in args)
        if makes_job and mirror and "--no-block" not in args:
            raise proc.CommandError(["systemctl", *args], 124, "no answer after 120 s")


@pytest.fixture
def boot(monkeypatch, tmp_path):
    fake = SystemctlDuringBoot()
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setattr(systemd, "UNIT_DIR", str(tmp_path / "units"))
    monkeypatch.setattr(systemd, "systemctl", fake)
    monkeypatch.setattr(systemd, "is_active", lambda name: False)
    return fake


def test_the_mirror_units_are_ordered_after_the_boot_unit():
    # the premise of SystemctlDuringBoot, read from the unit file the box installs
    assert "registry-cache-boot.service" in _mirror_unit_after()


def test_first_boot_queues_the_default_mirror_without_waiting_for_its_own_unit(boot, tmp_path):
    out = io.StringIO()

    applymod.apply_at_boot(str(tmp_path / "root"), out)

    assert ("daemon-reload",) in boot.calls
    assert ("enable", "--now", "--no-block", "registry-cache-mirror@dockerhub.service") in boot.calls
    assert (tmp_path / "units" / "registry-cache-mirror@dockerhub.service.d"
            / "10-registry-cache.conf").is_file()
    assert "first boot: started the embedded default config" in out.getvalue()
    assert "started mirrors: dockerhub" in out.getvalue()


def test_later_boots_queue_the_last_good_mirrors_without_rendering_again(boot, tmp_path):
    root = str(tmp_path / "root")
    applymod.apply_at_boot(root, io.StringIO())
    boot.calls.clear()

    applymod.apply_at_boot(root, io.StringIO())

    assert boot.calls == [("start", "--no-block", "registry-cache-mirror@dockerhub.service")]
