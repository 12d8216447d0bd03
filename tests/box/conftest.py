"""Boots the built boxes the way users run them, inside a network namespace this run owns.

Read `dist/build.json` (or $REGISTRY_CACHE_TEST_DIST/build.json), then, for the package:

- `lab`: a network namespace with only its loopback; the pytest process itself enters it
  (so vagrant, ssh, skopeo and every socket of the tests live there), an upstream
  `docker-registry` holding test images, and a second upstream for the "add a mirror" test;
- `libvirt_vm`: a private virtlogd + libvirtd in that namespace, `vagrant box add` of the
  libvirt box with its version, `vagrant up` of the project's drop-in Vagrantfile with a
  test config.yml, exactly as a team runs it; VM networks exist only in the namespace;
- `machine` (parametrized): each box as a `Machine` for the shared checks; the VirtualBox
  box is booted in QEMU as VirtualBox would present it (box/vm/qemuvm.py).

Everything is torn down, also when a test fails: VMs destroyed, the box removed from
Vagrant and the libvirt pool, daemons stopped by pid, the namespace deleted.
Environment: REGISTRY_CACHE_TEST_PROVIDERS (libvirt,virtualbox), REGISTRY_CACHE_TEST_KEEP=1
keeps the work folder (logs, consoles) for a post-mortem.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from box.buildinfo import BuildMetadata, BuildMetadataError, load_build_metadata
from box.qemu import probe_accelerator
from box.run import step
from box.vm import netns as netns_mod
from box.vm.libvirtd import PrivateLibvirt
from box.vm.qemuvm import QemuVM, read_box, unpack_box
from box.vm.vagrant import Vagrant, box_catalog, libvirt_volume_prefix
from tests.box.machines import VAGRANT_INSECURE_KEY, Machine, config_yaml, ssh_config_for
from tests.harness import images
from tests.harness.registry import Registry, start_registry

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = tuple(p for p in os.environ.get("REGISTRY_CACHE_TEST_PROVIDERS",
                                            "virtualbox,libvirt").split(",") if p)
KEEP = os.environ.get("REGISTRY_CACHE_TEST_KEEP") == "1"
DIST = Path(os.environ.get("REGISTRY_CACHE_TEST_DIST", PROJECT_ROOT / "dist"))
# where the guest reaches the namespace side: libvirt's private network bridge / QEMU NAT's host
LIBVIRT_HOST_SIDE = "192.168.56.1"
LIBVIRT_BOX_IP = "192.168.56.50"
QEMU_NAT_HOST = "10.0.2.2"
MIRROR_PORT, SECOND_PORT = 5000, 5001
SSH_FORWARD = 2222


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.box)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "machine" in metafunc.fixturenames:
        metafunc.parametrize("machine", PROVIDERS, indirect=True, scope="package")


@dataclass
class Lab:
    """The namespace, its upstream registries and the images they hold."""

    workdir: Path
    namespace: netns_mod.NetworkNamespace
    upstream: Registry
    second_upstream: Registry
    image: images.TestImage  # on `upstream`
    docker_image: images.TestImage  # on `upstream`
    second_image: images.TestImage  # on `second_upstream`
    accel: str


def _work_root() -> Path:
    root = PROJECT_ROOT / "build" / "test-box" / str(os.getpid())
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="package")
def build_meta() -> BuildMetadata:
    """The build metadata of the boxes under test."""
    try:
        return load_build_metadata(DIST / "build.json")
    except BuildMetadataError as exc:
        pytest.fail(str(exc), pytrace=False)


def _box_path(meta: BuildMetadata, provider: str) -> Path:
    for box in meta.boxes:
        if box.provider == provider:
            return DIST / box.file
    pytest.fail(f"{DIST}/build.json lists no {provider} box: rebuild with `./invoke build-box`",
                pytrace=False)


@pytest.fixture(scope="package")
def lab() -> Iterator[Lab]:
    """A network namespace (entered by this process) with two upstream registries and images."""
    if os.geteuid() != 0:
        pytest.fail("box tests need root (network namespace, libvirtd)", pytrace=False)
    for tool in ("ip", "vagrant", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "ssh",
                 "skopeo", "docker-registry", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"box tests need {tool}: run `./invoke install-deps --groups vagrant,test`",
                        pytrace=False)
    stale = netns_mod.remove_stale()
    if stale:
        print(f"removed namespaces of earlier runs: {stale}", file=sys.stderr)
    workdir = _work_root()
    accel = probe_accelerator()
    namespace = netns_mod.NetworkNamespace.create()
    try:
        with namespace.entered():
            # Bound to every address of the namespace: the libvirt guest comes in through
            # 192.168.56.1 (a bridge vagrant-libvirt creates later), QEMU NAT through 127.0.0.1.
            upstream = start_registry(workdir / "upstream", "upstream", bind_host="0.0.0.0")
            second = start_registry(workdir / "second-upstream", "second-upstream",
                                    bind_host="0.0.0.0")
            try:
                push_to = f"127.0.0.1:{upstream.port}"
                layouts = workdir / "layouts"
                lab = Lab(
                    workdir=workdir,
                    namespace=namespace,
                    upstream=upstream,
                    second_upstream=second,
                    image=images.push_oci_image(layouts, push_to, repo="team/app"),
                    docker_image=images.push_docker_image(layouts, push_to, repo="team/tool"),
                    second_image=images.push_oci_image(
                        layouts, f"127.0.0.1:{second.port}", repo="other/thing",
                        layer_sizes=(200 * images.KiB, 30 * images.KiB)),
                    accel=accel,
                )
                yield lab
            finally:
                upstream.stop()
                second.stop()
    finally:
        namespace.delete()
        if not KEEP:
            shutil.rmtree(workdir, ignore_errors=True)


def test_config(upstream_url: str, storage: str) -> dict:
    """The config.yml the tests apply: one mirror, with a password kept in a file."""
    return {
        "listen": "0.0.0.0",
        "storage": storage,
        "mirrors": {
            "team": {
                "upstream": upstream_url,
                "port": MIRROR_PORT,
                "username": "robot",
                "password_file": "secrets/upstream.password",
            },
        },
    }


test_config.__test__ = False  # type: ignore[attr-defined]


@dataclass
class LibvirtVM:
    """The libvirt box up through Vagrant, and the handles the lifecycle tests need."""

    machine: Machine
    vagrant: Vagrant
    project: Path
    libvirt: PrivateLibvirt
    up_seconds: float
    box_add_output: str


@pytest.fixture(scope="package")
def libvirt_vm(lab: Lab, build_meta: BuildMetadata) -> Iterator[LibvirtVM]:
    """`vagrant up` of the libvirt box with the drop-in Vagrantfile, in the lab's namespace."""
    if "libvirt" not in PROVIDERS:
        pytest.skip("libvirt not in REGISTRY_CACHE_TEST_PROVIDERS")
    box_file = _box_path(build_meta, "libvirt")
    box_sha = next(b.sha256 for b in build_meta.boxes if b.provider == "libvirt")
    work = lab.workdir / "libvirt"
    project = work / "project"
    (project / "secrets").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "Vagrantfile", project / "Vagrantfile")
    secret = secrets.token_urlsafe(24)
    (project / "secrets" / "upstream.password").write_text(secret + "\n")
    config = test_config(f"http://{LIBVIRT_HOST_SIDE}:{lab.upstream.port}", "/vagrant/data")
    (project / "config.yml").write_text(config_yaml(config))
    daemons = PrivateLibvirt(work / "libvirt", lab.namespace)
    vagrant = Vagrant(project, work / "vagrant-home", settings={
        "REGISTRY_CACHE_BOX": build_meta.name,
        "REGISTRY_CACHE_BOX_URL": (work / "box-catalog.json").as_uri(),
        "REGISTRY_CACHE_BOX_VERSION": build_meta.version,
        "REGISTRY_CACHE_IP": LIBVIRT_BOX_IP,
        "REGISTRY_CACHE_LIBVIRT_DRIVER": "kvm" if lab.accel == "kvm" else "qemu",
    })
    box_added = False
    try:
        with lab.namespace.entered():
            with step("start virtlogd + libvirtd in the namespace"):
                daemons.start()
            vagrant.configure_home(daemons.uri)
            with step(f"vagrant box add {build_meta.name} {build_meta.version} (libvirt)"):
                box_added = True
                added = vagrant.add_box(box_catalog(build_meta.name, build_meta.version, "libvirt",
                                                    box_file, box_sha), work, "libvirt")
            start = time.monotonic()
            with step(f"vagrant up --provider=libvirt ({lab.accel})"):
                up = vagrant("up", "--provider=libvirt")
            up_seconds = time.monotonic() - start
            print(f"vagrant up: {up_seconds:.1f} s", file=sys.stderr)
            ssh_config = vagrant.ssh_config(work / "ssh-config")
            machine = Machine("libvirt", ssh_config, LIBVIRT_BOX_IP,
                              {MIRROR_PORT: MIRROR_PORT, SECOND_PORT: SECOND_PORT}, config, secret,
                              outputs=[up.output])
            yield LibvirtVM(machine, vagrant, project, daemons, up_seconds, added.output)
    finally:
        with lab.namespace.entered():
            if KEEP:
                print(f"keeping {work}", file=sys.stderr)
            with step("vagrant destroy; box removed from Vagrant and the libvirt pool"):
                if daemons.pids:
                    vagrant("destroy", "--force", check=False)
                if box_added:
                    vagrant.remove_box(build_meta.name, build_meta.version, "libvirt")
                if daemons.pids:
                    daemons.delete_volumes("default", libvirt_volume_prefix(build_meta.name))
            with step("stop libvirtd and virtlogd"):
                daemons.stop()


def _virtualbox_machine(lab: Lab, build_meta: BuildMetadata, request: pytest.FixtureRequest) -> Machine:
    box_file = _box_path(build_meta, "virtualbox")
    work = lab.workdir / "virtualbox"
    with step("unpack the VirtualBox box"):
        unpacked = unpack_box(box_file, work / "box")
    described = read_box(unpacked)
    vm = QemuVM(work, described, lab.accel,
                          {SSH_FORWARD: 22, MIRROR_PORT: MIRROR_PORT, SECOND_PORT: SECOND_PORT})
    identity = work / "vagrant-insecure-key"
    shutil.copy(VAGRANT_INSECURE_KEY, identity)
    identity.chmod(0o600)

    def stop() -> None:
        with lab.namespace.entered(), step("power off the VirtualBox box"):
            vm.stop()
            if not KEEP:
                shutil.rmtree(unpacked, ignore_errors=True)

    request.addfinalizer(stop)
    with step(f"boot the VirtualBox box in QEMU ({lab.accel}, AHCI, e1000 {described.mac})"):
        vm.start()
        boot = vm.wait_for_ssh(SSH_FORWARD)
    print(f"VirtualBox box: sshd answers {boot:.1f} s after power-on", file=sys.stderr)
    secret = secrets.token_urlsafe(24)
    config = test_config(f"http://{QEMU_NAT_HOST}:{lab.upstream.port}",
                         "/var/lib/registry-cache-test")
    ssh_config = ssh_config_for(work / "ssh-config", port=SSH_FORWARD, identity=identity)
    machine = Machine("virtualbox", ssh_config, "127.0.0.1",
                      {MIRROR_PORT: MIRROR_PORT, SECOND_PORT: SECOND_PORT}, config, secret)
    machine.wait_for_ssh()
    # No Vagrant, no /vagrant: put config.yml and its password file where apply reads them.
    machine.write_file("/srv/cache-config/secrets/upstream.password", secret + "\n", mode="0600")
    machine.write_file("/srv/cache-config/config.yml", config_yaml(config))
    with step("registry-cache apply in the VirtualBox box"):
        machine.outputs.append(machine.ssh(
            "sudo registry-cache apply --config /srv/cache-config/config.yml 2>&1", timeout=300))
    return machine


@pytest.fixture(scope="package")
def machine(request: pytest.FixtureRequest, lab: Lab, build_meta: BuildMetadata) -> Iterator[Machine]:
    """Each box under test in turn (the VirtualBox one is powered off before the next)."""
    if request.param == "libvirt":
        yield request.getfixturevalue("libvirt_vm").machine
        return
    with lab.namespace.entered():
        yield _virtualbox_machine(lab, build_meta, request)
