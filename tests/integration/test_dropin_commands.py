"""The README's drop-in commands, run as the real `registry-cache` program."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = ROOT / "tests" / "unit" / "golden" / "client"
CLI = str(Path(sys.executable).parent / "registry-cache")
TIMEOUT = 60


def _run(*args, cwd=ROOT):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("name", ["dockerhub.yml", "multi-upstream.yml", "seed-distribution.yml"])
def test_registry_cache_check_accepts_the_example(name):
    # the README's command, run from the project root
    proc = _run("check", "--config", f"examples/{name}")
    assert proc.returncode == 0, proc.stderr
    assert f"examples/{name}: OK" in proc.stdout


def test_registry_cache_check_accepts_the_credentials_example_set_up_as_the_readme_says(tmp_path):
    secret = "dckr_pat_never-print-this"
    shutil.copy(EXAMPLES / "dockerhub-credentials.yml", tmp_path / "config.yml")
    (tmp_path / "secrets").mkdir()
    # the example's "Use it" steps: the upstream token and the client login's password
    for name, text in (("dockerhub.token", secret), ("cache-ci.password", "client-password")):
        path = tmp_path / "secrets" / name
        path.write_text(text + "\n")
        os.chmod(path, 0o600)
    proc = _run("check", "--config", "config.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert secret not in proc.stdout + proc.stderr


def test_registry_cache_check_fails_the_credentials_example_until_the_token_exists(tmp_path):
    shutil.copy(EXAMPLES / "dockerhub-credentials.yml", tmp_path / "config.yml")
    lines = (tmp_path / "config.yml").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1)
                if text.strip().startswith("password_file:") and "dockerhub.token" in text)
    proc = _run("check", "--config", "config.yml", cwd=tmp_path)
    assert proc.returncode == 3
    assert f"config.yml:{line}: mirrors.dockerhub.password_file:" in proc.stderr
    assert "secrets/dockerhub.token does not exist" in proc.stderr


@pytest.mark.parametrize("fmt", ["docker", "containerd", "k3s", "podman"])
def test_registry_cache_client_config_prints_the_golden_setup_of_a_plain_http_config(fmt, tmp_path):
    # a config from before TLS: the example without its `tls: auto` line
    text = (EXAMPLES / "multi-upstream.yml").read_text()
    (tmp_path / "config.yml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("tls:")) + "\n")
    proc = _run("client-config", "--host", "192.168.56.50", "--format", fmt, "--config", "config.yml",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (GOLDEN / "multi-upstream" / f"{fmt}.txt").read_text()


def test_registry_cache_client_config_of_a_tls_config_asks_for_apply_before_its_ca_exists(tmp_path):
    shutil.copy(EXAMPLES / "multi-upstream.yml", tmp_path / "config.yml")
    proc = _run("client-config", "--host", "192.168.56.50", "--format", "docker", "--config", "config.yml",
                cwd=tmp_path)
    assert proc.returncode == 1
    assert "registry-cache apply" in proc.stderr
    assert proc.stdout == ""
