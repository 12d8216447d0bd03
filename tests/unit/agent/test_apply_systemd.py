"""How `apply` drives systemd: at boot inside registry-cache-boot.service, and at provision.

systemd is not PID 1 on this machine, so systemctl is played by a stand-in that follows the
ordering the real unit files declare; the real units are checked in the box (tests/box).
"""

from __future__ import annotations

import configparser
import io
from pathlib import Path

import pytest
from registry_cache import apply as applymod
from registry_cache import converge as convergemod
from registry_cache import paths, proc, systemd, written

UNITS = Path(__file__).resolve().parents[3] / "bootstrap" / "systemd"
JOB_VERBS = {"start", "stop", "restart", "reload-or-restart", "try-restart"}


def _mirror_unit_after() -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(UNITS / "registry-cache-mirror@.service")
    return parser["Unit"]["After"].split()


class Systemctl:
    """systemctl as the agent sees it, from inside registry-cache-boot.service while `booting`.

    A mirror unit is ordered after the boot unit, so while that one is still starting a job
    for a mirror waits for it: a systemctl call that waits for such a job never returns.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.booting = True

    def __call__(self, *args: str) -> None:
        self.calls.append(args)
        makes_job = args[0] in JOB_VERBS or "--now" in args
        mirror = any(a.startswith("registry-cache-mirror@") for a in args)
        if self.booting and makes_job and mirror and "--no-block" not in args:
            raise proc.CommandError(["systemctl", *args], 124, "no answer after 120 s")


@pytest.fixture
def boot(monkeypatch, tmp_path):
    fake = Systemctl()
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setattr(paths, "UNIT_DIR", str(tmp_path / "units"))
    monkeypatch.setattr(systemd, "systemctl", fake)
    monkeypatch.setattr(systemd, "is_active", lambda name: False)
    return fake


def test_the_mirror_units_are_ordered_after_the_boot_unit():
    # the premise of Systemctl.booting, read from the unit file the box installs
    assert "registry-cache-boot.service" in _mirror_unit_after()


def test_first_boot_queues_the_default_mirror_without_waiting_for_its_own_unit(boot, tmp_path):
    out = io.StringIO()

    applymod.apply_at_boot(str(tmp_path / "root"), out)

    assert boot.calls == [
        ("enable", "--no-reload", "registry-cache-mirror@dockerhub.service"),
        ("daemon-reload",),
        ("start", "--no-block", "registry-cache-mirror@dockerhub.service"),
    ]
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


def _reloads(calls: list[tuple[str, ...]]) -> int:
    """daemon-reloads, counting the one enable/disable do by themselves without --no-reload."""
    return sum(1 for c in calls
               if c[0] == "daemon-reload" or (c[0] in ("enable", "disable") and "--no-reload" not in c))


def test_provision_replacing_the_default_mirror_reloads_systemd_once(boot, tmp_path, monkeypatch):
    root = str(tmp_path / "root")
    applymod.apply_at_boot(root, io.StringIO())
    boot.calls.clear()
    boot.booting = False
    monkeypatch.setattr(convergemod, "warn_about_upstreams", lambda cfg, plan, out: None)
    monkeypatch.setattr(applymod, "_wait_until_serving", lambda cfg, out: None)
    config = tmp_path / "config.yml"
    config.write_text(f"storage: {tmp_path / 'cache'}\n"
                      "mirrors:\n  team:\n    upstream: http://127.0.0.1:9\n    port: 5000\n")

    plan = applymod.apply(str(config), root, io.StringIO())

    assert (plan.add, plan.remove) == (["team"], ["dockerhub"])
    assert _reloads(boot.calls) == 1, boot.calls
    assert ("disable", "--now", "--no-reload", "registry-cache-mirror@dockerhub.service") in boot.calls
    mirror_calls = [c for c in boot.calls if paths.METRICS_UNIT not in c]
    assert mirror_calls[-1] == ("start", "registry-cache-mirror@team.service")


def test_a_kept_mirror_whose_cache_changed_owner_gets_its_files_and_restart_as_the_new_owner(
    boot, tmp_path, monkeypatch
):
    boot.booting = False
    monkeypatch.setattr(convergemod, "warn_about_upstreams", lambda wanted, plan, out: None)
    monkeypatch.setattr(applymod, "_wait_until_serving", lambda wanted, out: None)
    config = tmp_path / "config.yml"
    config.write_text(f"storage: {tmp_path / 'cache'}\n"
                      "mirrors:\n  team:\n    upstream: http://127.0.0.1:9\n    port: 5000\n")
    root = str(tmp_path / "root")
    applymod.apply(str(config), root, io.StringIO())
    new_owner = written.Owner(user="vagrant", uid=1000, gid=1000, group="vagrant")
    monkeypatch.setattr(written, "storage_owner", lambda storage_root: new_owner)
    (tmp_path / "root" / "applied.json").unlink()  # as when the cache's owner changed
    wrote = []
    monkeypatch.setattr(written, "write_rendered",
                        lambda root, mirror, owner: wrote.append((mirror.name, owner)))
    boot.calls.clear()

    plan = applymod.apply(str(config), root, io.StringIO())

    assert plan.keep == ["team"]
    assert wrote == [("team", new_owner)]
    assert ("restart", "registry-cache-mirror@team.service") in boot.calls
