"""The drop-in Vagrantfile passes the real `vagrant validate`, and its settings refuse bad values."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VAGRANTFILE = ROOT / "Vagrantfile"
TIMEOUT = 120

pytestmark = [
    pytest.mark.allow_subprocess,
    pytest.mark.skipif(shutil.which("vagrant") is None,
                       reason="vagrant is not installed: ./invoke install-deps --groups vagrant"),
]


def _validate(tmp_path, *args, **settings):
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("REGISTRY_CACHE_", "VAGRANT_", "LIBVIRT_"))
    }
    env.update(
        VAGRANT_HOME=str(tmp_path / "vagrant-home"),
        VAGRANT_DOTFILE_PATH=str(tmp_path / "dot-vagrant"),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_CWD=str(ROOT),
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        # libvirt's built-in test driver: the libvirt provider's checks run without a libvirtd
        LIBVIRT_DEFAULT_URI="test:///default",
    )
    env.update(settings)
    return subprocess.run(["vagrant", "validate", *args], env=env, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def test_vagrantfile_validates_with_the_default_settings(tmp_path):
    proc = _validate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Vagrantfile validated successfully" in proc.stdout


def test_vagrantfile_validates_for_virtualbox_without_virtualbox_installed(tmp_path):
    # VirtualBox is not in Debian: validate all but the provider block (vagrant cannot load it)
    proc = _validate(tmp_path, "--ignore-provider", VAGRANT_DEFAULT_PROVIDER="virtualbox")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vagrantfile_validates_with_every_setting_changed(tmp_path):
    proc = _validate(
        tmp_path,
        REGISTRY_CACHE_BOX="team/registry-cache",
        REGISTRY_CACHE_BOX_URL="https://boxes.example.invalid/registry-cache.json",
        REGISTRY_CACHE_BOX_VERSION=">= 1.2.0",
        REGISTRY_CACHE_IP="192.168.57.10",
        REGISTRY_CACHE_MEMORY="512",
        REGISTRY_CACHE_CPUS="1",
        REGISTRY_CACHE_SYNCED_FOLDER_TYPE="rsync",
        REGISTRY_CACHE_LIBVIRT_DRIVER="qemu",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("REGISTRY_CACHE_MEMORY", "lots", 'REGISTRY_CACHE_MEMORY="lots" is not valid'),
        ("REGISTRY_CACHE_CPUS", "0", 'REGISTRY_CACHE_CPUS="0" is not valid'),
        ("REGISTRY_CACHE_IP", "192.168.56", 'REGISTRY_CACHE_IP="192.168.56" is not an IP address'),
        ("REGISTRY_CACHE_LIBVIRT_DRIVER", "xen", "use kvm or qemu"),
    ],
)
def test_a_bad_setting_fails_naming_the_variable(tmp_path, setting, value, says):
    proc = _validate(tmp_path, **{setting: value})
    assert proc.returncode != 0
    assert says in proc.stdout + proc.stderr


def test_vagrantfile_applies_config_yml_on_every_up_with_the_readme_command():
    text = VAGRANTFILE.read_text()
    assert 'run: "always"' in text
    assert 'inline: "registry-cache apply --config-if-exists /vagrant/config.yml"' in text
    assert 'registry-cache client-config --host #{ip} --format docker' in text
