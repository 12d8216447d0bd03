"""The drop-in Vagrantfile passes the real `vagrant validate`, and its settings refuse bad values."""

import os
import re
import shutil
import subprocess
import tempfile
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
        VAGRANT_CWD=str(settings.pop("cwd", ROOT)),
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


# --- the libvirt folder check (run by a trigger before `vagrant up`) ------------------------
# Vagrant cannot run `up` here, so the Vagrantfile is loaded by the same Ruby Vagrant uses,
# with Vagrant.configure stubbed, and its check is called the way the trigger calls it.
HARNESS = """
module Vagrant
  VERSION = "2.3.4"
  def self.require_version(*) end
  def self.configure(*) end
  module Errors
    class VagrantError < StandardError
      def initialize(*) super(error_message) end
      def error_message; "" end
    end
  end
end
load ARGV.shift
project = ARGV.shift
puts "ACCOUNT #{registry_cache_qemu_account.inspect}"
begin
  registry_cache_prepare_folder(project, ARGV.shift, ->(line) { puts "SAID #{line}" })
  puts "READY"
rescue RegistryCacheFolderError => e
  puts "STOPPED #{e.message}"
end
"""
# a stand-in for setfacl: records its arguments, grants what it was asked to "other"
FAKE_SETFACL = """#!/bin/sh
PATH=/usr/bin:/bin
echo "$@" >> "$(dirname "$0")/setfacl.log"
perms=$(echo "$2" | cut -d: -f3)
chmod "o+$perms" "$(eval echo \\${$#})"
"""
ACCOUNT = "nobody"  # any account that owns nothing here


def _prepare(project: Path, tools: Path, **env) -> str:
    ruby = shutil.which("ruby")
    assert ruby, "vagrant is installed, so is its ruby"
    harness = tools / "harness.rb"
    harness.write_text(HARNESS)
    proc = subprocess.run([ruby, str(harness), str(VAGRANTFILE), str(project), ACCOUNT],
                          env={"PATH": str(tools), "HOME": str(tools), **env}, capture_output=True,
                          text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def folders():
    """A project folder under a parent QEMU's account can search, and an empty tools folder."""
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        root = Path(top)
        root.chmod(0o755)
        project = root / "home" / "team"
        project.mkdir(parents=True)
        (root / "home").chmod(0o755)
        project.chmod(0o755)
        (project / "config.yml").write_text("mirrors: {}\n")
        (project / "config.yml").chmod(0o644)
        tools = root / "tools"
        tools.mkdir()
        yield project, tools


def test_libvirt_check_stops_before_boot_naming_a_parent_without_search_and_the_one_fix(folders):
    project, tools = folders
    project.parent.chmod(0o700)
    out = _prepare(project, tools)
    assert "STOPPED nobody, the host account libvirt runs QEMU as, cannot use this folder" in out
    assert f"x on {project.parent}" in out
    assert f"w on {project / 'data'}" in out
    # setfacl is missing here: the one command installs it, grants the parent, and retries
    assert re.search(r"(install the acl package|sudo apt-get install acl) && "
                     + re.escape(f"setfacl -m u:nobody:x {project.parent} && vagrant up"), out), out
    assert (project / "data").is_dir(), "data/ is created before the check"


def test_libvirt_check_grants_qemu_access_inside_the_project_with_setfacl(folders):
    project, tools = folders
    (project / "secrets").mkdir(mode=0o700)
    (project / "secrets" / "token").write_text("s3cret\n")
    (project / "secrets" / "token").chmod(0o600)
    (tools / "setfacl").write_text(FAKE_SETFACL)
    (tools / "setfacl").chmod(0o755)

    out = _prepare(project, tools)

    assert "READY" in out, out
    assert f"SAID granted nobody (QEMU's account) access to {project / 'data'}" in out
    granted = (tools / "setfacl.log").read_text().splitlines()
    assert f"-m u:nobody:rwx -m d:u:nobody:rwx {project / 'data'}" in granted
    assert f"-m u:nobody:rx {project / 'secrets'}" in granted
    assert f"-m u:nobody:r {project / 'secrets' / 'token'}" in granted
    assert not [line for line in granted if str(project.parent) + " " in line + " "], \
        "nothing outside the project folder is changed"


def test_libvirt_check_grants_qemu_a_cache_kept_from_an_earlier_run_with_all_it_holds(folders):
    project, tools = folders
    kept = project / "data" / "dockerhub"  # e.g. from VirtualBox: owned by the user, 0700
    kept.mkdir(parents=True)
    (project / "data").chmod(0o777)
    kept.chmod(0o700)
    (tools / "setfacl").write_text(FAKE_SETFACL)
    (tools / "setfacl").chmod(0o755)

    out = _prepare(project, tools)

    assert "READY" in out, out
    granted = (tools / "setfacl.log").read_text().splitlines()
    assert granted == [f"-m u:nobody:rwX -m d:u:nobody:rwX -R {kept}"], granted


def test_libvirt_check_is_quiet_when_qemu_can_already_use_the_folder(folders):
    project, tools = folders
    (project / "data").mkdir(mode=0o777)
    (project / "data").chmod(0o777)
    out = _prepare(project, tools)
    assert "READY" in out and "SAID" not in out, out


@pytest.mark.parametrize(("setting", "account"), [("none", "nil"), ("root", '"root"')])
def test_the_qemu_account_can_be_named_or_the_check_skipped(folders, setting, account):
    project, tools = folders
    out = _prepare(project, tools, REGISTRY_CACHE_QEMU_USER=setting)
    assert f"ACCOUNT {account}" in out


def test_vagrantfile_requires_a_vagrant_with_ruby_triggers():
    assert re.search(r'^Vagrant\.require_version ">= 2\.2\.0"$', VAGRANTFILE.read_text(), re.M)


# --- the box's architecture and the qemu provider --------------------------------------------
# The Vagrantfile is loaded by Vagrant's Ruby with Vagrant.configure handing it a recorder that
# prints every setting it makes (provider blocks run too), on a faked host CPU and Vagrant version.
RECORDER = """
require "rbconfig"
RbConfig::CONFIG["host_cpu"] = ENV.fetch("FAKE_HOST_CPU")
class Recorder
  def initialize(path) @path = path end
  def method_missing(name, *args, **kw, &block)
    key = (@path + [name.to_s.chomp("=")]).join(".")
    if name.to_s.end_with?("=")
      puts "SET #{key} #{args.first.inspect}"
    elsif block && key.end_with?("vm.provider")
      block.call(Recorder.new([args.first.to_s]), Recorder.new([args.first.to_s, "override"]))
    else
      puts "CALL #{key} #{args.map(&:inspect).join(' ')} #{kw.inspect}" unless block
    end
    Recorder.new(@path + [name.to_s])
  end
  def respond_to_missing?(*) true end
end
module Vagrant
  VERSION = ENV.fetch("FAKE_VAGRANT_VERSION")
  def self.require_version(*) end
  def self.configure(*) yield Recorder.new([]) end
  module Errors
    class VagrantError < StandardError; end
  end
end
load ARGV.shift
"""


def _recorded(tmp_path: Path, host_cpu: str, vagrant_version: str, config_yml: str = "",
              **env) -> list[str]:
    """What the Vagrantfile sets on a host of `host_cpu` with that Vagrant, line by line."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    shutil.copy(VAGRANTFILE, project / "Vagrantfile")
    if config_yml:
        (project / "config.yml").write_text(config_yml)
    harness = tmp_path / "recorder.rb"
    harness.write_text(RECORDER)
    proc = subprocess.run(
        [shutil.which("ruby") or "ruby", str(harness), str(project / "Vagrantfile")],
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "FAKE_HOST_CPU": host_cpu,
             "FAKE_VAGRANT_VERSION": vagrant_version, **env},
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def _box_settings(lines: list[str]) -> dict[str, str]:
    return {line.split()[1]: line.split(" ", 2)[2] for line in lines
            if line.startswith("SET vm.box")}


def test_an_amd64_host_gets_the_catalog_and_any_vagrant_its_default_architecture(tmp_path):
    old = _box_settings(_recorded(tmp_path, "x86_64", "2.3.4"))
    assert old["vm.box_url"].endswith('/dist/catalog/registry-cache.json"')
    assert "vm.box_architecture" not in old  # Vagrant 2.3 has no such setting
    new = _box_settings(_recorded(tmp_path, "x86_64", "2.4.1"))
    assert new["vm.box_architecture"] == '"amd64"'


@pytest.mark.parametrize("host_cpu", ["arm64", "aarch64"])
def test_an_arm64_host_picks_the_arm64_box_from_the_catalog_with_vagrant_2_4(tmp_path, host_cpu):
    settings = _box_settings(_recorded(tmp_path, host_cpu, "2.4.1"))
    assert settings["vm.box_architecture"] == '"arm64"'
    assert settings["vm.box_url"].endswith('/dist/catalog/registry-cache.json"')


def test_an_arm64_host_with_vagrant_2_3_reads_the_arm64_catalog(tmp_path):
    settings = _box_settings(_recorded(
        tmp_path, "aarch64", "2.3.4",
        REGISTRY_CACHE_BOX_URL="https://boxes.example.invalid/team/registry-cache.json"))
    assert settings["vm.box_url"] == '"https://boxes.example.invalid/team/registry-cache-arm64.json"'


def test_the_architecture_can_be_chosen_and_a_bad_one_is_refused(tmp_path):
    settings = _box_settings(_recorded(tmp_path, "x86_64", "2.4.1", REGISTRY_CACHE_ARCH="arm64"))
    assert settings["vm.box_architecture"] == '"arm64"'
    proc = _validate(tmp_path, REGISTRY_CACHE_ARCH="riscv64")
    assert proc.returncode != 0
    assert 'REGISTRY_CACHE_ARCH="riscv64" is not valid: use amd64 or arm64' in proc.stdout + proc.stderr


def test_the_qemu_provider_forwards_every_mirror_port_and_copies_the_folder_in_by_rsync(tmp_path):
    lines = _recorded(tmp_path, "arm64", "2.4.1",
                      config_yml="mirrors:\n  hub: {upstream: https://r.test, port: 5000}\n"
                                 "  ghcr: {upstream: https://g.test, port: 5002}\n")
    qemu = [line for line in lines if line.split()[1].startswith("qemu.")]
    assert "SET qemu.arch \"aarch64\"" in qemu
    assert "SET qemu.memory \"1024M\"" in qemu
    forwards = [line for line in qemu if "forwarded_port" in line]
    assert len(forwards) == 2
    assert all(any(f":guest=>{p}, :host=>{p}" in line for line in forwards) for p in (5000, 5002))
    synced = next(line for line in qemu if "synced_folder" in line)
    assert ':type=>"rsync"' in synced and '"data/"' in synced


def test_the_qemu_provider_forwards_the_default_mirror_port_without_a_config(tmp_path):
    lines = _recorded(tmp_path, "arm64", "2.4.1")
    forwards = [line for line in lines if "qemu.override.vm.network" in line]
    assert len(forwards) == 1 and ":guest=>5000, :host=>5000" in forwards[0], forwards


def test_the_cluster_example_validates_with_a_ceph_node_and_with_an_external_endpoint(tmp_path):
    folder = ROOT / "examples" / "cluster"
    for settings in ({}, {"REGISTRY_CACHE_S3_ENDPOINT": "https://s3.example.invalid",
                          "REGISTRY_CACHE_NODES": "3"}):
        proc = _validate(tmp_path, cwd=folder, **settings)
        assert proc.returncode == 0, proc.stdout + proc.stderr
