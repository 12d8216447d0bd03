"""`registry-cache apply` and `check` through the real command line (no systemd here: rendering only)."""

import json
import os
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

CONFIG = """\
listen: 127.0.0.1
storage: cache
mirrors:
  hub:
    upstream: http://127.0.0.1:9
    port: 5000
    username: alice
    password_file: hub.token
  ghcr:
    upstream: http://127.0.0.1:8
    port: 5001
"""
SECRET = "dckr_pat_SECRET_do_not_print"
# the seed format: a plain Distribution config, run as written
SEED = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: cache/default
http:
  addr: 127.0.0.1:5000
proxy:
  remoteurl: http://127.0.0.1:9
"""


def cli(*args, root):
    return subprocess.run(
        [sys.executable, "-m", "registry_cache", "--root", str(root), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def project(tmp_path):
    (tmp_path / "hub.token").write_text(SECRET + "\n")
    (tmp_path / "config.yml").write_text(CONFIG)
    return tmp_path


def snapshot(root):
    found = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            st = os.stat(path)
            with open(path, "rb") as handle:
                found[path] = (handle.read(), st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return found


def test_apply_renders_every_mirror_with_secret_files_readable_by_owner_only(project):
    root = project / "root"
    result = cli("apply", "--config", str(project / "config.yml"), root=root)
    assert result.returncode == 0, result.stderr
    for name in ("hub", "ghcr"):
        for filename, wanted in (("proxy.yml", 0o600), ("readonly.yml", 0o600), ("mirror.json", 0o644)):
            mode = stat.S_IMODE(os.stat(root / "mirrors" / name / filename).st_mode)
            assert mode == wanted, f"{name}/{filename} has mode {oct(mode)}"
        assert SECRET not in (root / "mirrors" / name / "mirror.json").read_text()
        assert (project / "cache" / name / ".registry-cache-mirror").exists()
    # the agent reads the login from credentials.json; Distribution from its proxy config
    credentials = root / "mirrors" / "hub" / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert json.loads(credentials.read_text()) == {"username": "alice", "password": SECRET}
    assert not (root / "mirrors" / "ghcr" / "credentials.json").exists()
    assert SECRET in (root / "mirrors" / "hub" / "proxy.yml").read_text()
    assert json.loads((root / "applied.json").read_text())["mirrors"] == ["ghcr", "hub"]
    assert "add    hub" in result.stdout
    assert "registry-cache serve" in result.stdout  # no systemd here: it says how to start them
    assert SECRET not in result.stdout + result.stderr


def test_apply_with_nothing_changed_keeps_every_mirror(project):
    root = project / "root"
    cli("apply", "--config", str(project / "config.yml"), root=root)
    before = snapshot(root / "mirrors")
    again = cli("apply", "--config", str(project / "config.yml"), root=root)
    assert again.returncode == 0, again.stderr
    assert "keep   ghcr" in again.stdout and "keep   hub" in again.stdout
    assert snapshot(root / "mirrors") == before  # not even rewritten


def test_apply_with_nothing_changed_in_a_seed_format_config_only_prints_the_plan(project):
    (project / "config.yml").write_text(SEED)
    root = project / "root"
    first = cli("apply", "--config", str(project / "config.yml"), root=root)
    assert first.returncode == 0, first.stderr
    assert "upstream http://127.0.0.1:9 is unreachable" in first.stdout  # the full path probes it
    before = snapshot(root)
    again = cli("apply", "--config", str(project / "config.yml"), root=root)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["keep   default: unchanged: left running"]  # no probe, no render
    assert snapshot(root) == before


def test_invalid_config_exits_3_with_file_line_key_and_changes_nothing(project):
    root = project / "root"
    cli("apply", "--config", str(project / "config.yml"), root=root)
    before = snapshot(root)
    (project / "config.yml").write_text(CONFIG.replace("port: 5001", "port: 5000"))
    result = cli("apply", "--config", str(project / "config.yml"), root=root)
    assert result.returncode == 3
    assert f"{project}/config.yml:11: mirrors.ghcr.port: port 5000 is already used by mirrors.hub.port" \
        in result.stderr
    assert "nothing was changed" in result.stderr
    assert snapshot(root) == before
    assert SECRET not in result.stdout + result.stderr


def test_dry_run_prints_the_plan_and_writes_nothing(project):
    root = project / "root"
    result = cli("apply", "--dry-run", "--config", str(project / "config.yml"), root=root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "add    ghcr: render its config and start it",
        "add    hub: render its config and start it",
    ]
    assert not root.exists()
    assert not (project / "cache").exists()


def test_check_accepts_a_good_config_and_rejects_a_bad_one_with_exit_3(project):
    good = cli("check", "--config", str(project / "config.yml"), root=project / "root")
    assert good.returncode == 0, good.stderr
    assert "2 mirror(s)" in good.stdout
    (project / "config.yml").write_text("mirrors:\n  hub: {upstream: https://ghcr.io, prot: 5000}\n")
    bad = cli("check", "--config", str(project / "config.yml"), root=project / "root")
    assert bad.returncode == 3
    assert "config.yml:2: mirrors.hub.prot: unknown key; did you mean 'port'?" in bad.stderr
