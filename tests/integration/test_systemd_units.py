"""The shipped systemd units pass `systemd-analyze verify` and are hardened as promised."""

import configparser
import os
import pathlib
import shutil
import subprocess

import pytest
from registry_cache import paths

pytestmark = pytest.mark.integration

UNITS = pathlib.Path(__file__).parents[2] / "bootstrap" / "systemd"


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(UNITS / name)
    return parser


def test_units_pass_systemd_analyze_verify(tmp_path):
    fake_agent = tmp_path / "registry-cache"
    fake_agent.write_text("#!/bin/sh\nexit 0\n")
    fake_agent.chmod(0o755)
    names = []
    for path in UNITS.iterdir():
        text = path.read_text().replace("/usr/local/bin/registry-cache", str(fake_agent))
        name = path.name.replace("@.service", "@hub.service")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    result = subprocess.run(
        [shutil.which("systemd-analyze"), "verify", "--man=no", *names],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_mirror_unit_never_runs_as_root_and_is_hardened():
    service = unit("registry-cache-mirror@.service")["Service"]
    assert service["User"] != "root"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
    }.items():
        assert service[key] == value, key
    assert "run-mirror %i" in service["ExecStart"]


def test_boot_unit_applies_the_last_good_config_at_boot():
    boot = unit("registry-cache-boot.service")
    assert boot["Service"]["ExecStart"].endswith("apply --boot")
    assert boot["Install"]["WantedBy"] == "multi-user.target"


def test_boot_unit_is_skipped_once_apply_has_recorded_a_config():
    # the file apply writes, as the agent names it: the enabled mirror units start on their own
    applied = os.path.join(paths.SYSTEM_ROOT, paths.APPLIED)
    assert unit("registry-cache-boot.service")["Unit"]["ConditionPathExists"] == f"!{applied}"


def test_mirror_unit_lets_the_runner_hold_thousands_of_client_connections():
    # two file descriptors per relayed connection; systemd's default soft limit is 1,024
    soft, _, hard = unit("registry-cache-mirror@.service")["Service"]["LimitNOFILE"].partition(":")
    assert int(soft) >= 65536 and int(hard or soft) >= 65536
