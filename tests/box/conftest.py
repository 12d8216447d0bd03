"""Boots the built boxes the way users run them, inside a network namespace this run owns.

The boot steps themselves are the lab's (lab/boot.py, shared with bench/boot_to_ready.py).
Read `dist/build.json` (or $REGISTRY_CACHE_TEST_DIST/build.json), then, for the package:

- `lab`: a network namespace with only its loopback; the pytest process itself enters it
  (so vagrant, ssh, skopeo and every socket of the tests live there), an upstream
  `docker-registry` holding test images, and a second upstream for the "add a mirror" test;
- `libvirt_vm`: a private virtlogd + libvirtd in that namespace, then the README's first
  hour: in a fresh folder holding only the drop-in Vagrantfile, a config.yml and its secret,
  `vagrant up` with REGISTRY_CACHE_BOX_URL at the catalog build-box wrote (dist/catalog/),
  which adds the box at its version; VM networks exist only in the namespace;
- `machine` (parametrized): each box as a `Machine` for the shared checks; the VirtualBox
  box is booted in QEMU as VirtualBox would present it (lab/qemuvm.py); the arm64 libvirt
  box (`libvirt-arm64`) through a real `vagrant up` of the drop-in Vagrantfile as on an arm64
  host: vagrant-libvirt defines an aarch64 domain (UEFI, `virt`, virtio; emulated here), torn
  down before the amd64 libvirt box comes up.

Everything is torn down, also when a test fails: VMs destroyed, the box removed from
Vagrant and the libvirt pool, daemons stopped by pid, the namespace deleted.
Environment: REGISTRY_CACHE_TEST_PROVIDERS (libvirt,virtualbox,libvirt-arm64), REGISTRY_CACHE_TEST_KEEP=1
keeps the work folder (logs, consoles) for a post-mortem.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from box import arch as arches
from box import emulation
from box.buildinfo import BuildMetadata, BuildMetadataError, load_build_metadata
from box.qemu import choose_accelerator
from box.run import step
from box.sizes import KiB
from lab import boot, images
from lab import netns as netns_mod
from lab.machines import Machine
from lab.qemuvm import BoxMachine, read_box, unpack_box
from lab.registry import start_registry
from tests.box.boxes import MIRROR_PORT, SECOND_PORT, SSH_FORWARD, Lab, LibvirtVM, box_test_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = tuple(p for p in os.environ.get("REGISTRY_CACHE_TEST_PROVIDERS",
                                            "virtualbox,libvirt").split(",") if p)
KEEP = os.environ.get("REGISTRY_CACHE_TEST_KEEP") == "1"
DIST = Path(os.environ.get("REGISTRY_CACHE_TEST_DIST", PROJECT_ROOT / "dist"))
MIRROR_PORTS = {MIRROR_PORT: MIRROR_PORT, SECOND_PORT: SECOND_PORT}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.box)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "machine" in metafunc.fixturenames:
        metafunc.parametrize("machine", PROVIDERS, indirect=True, scope="package")


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


def _box_path(meta: BuildMetadata, provider: str, arch: str = "amd64") -> Path:
    for box in meta.boxes:
        if box.provider == provider and box.architecture == arch:
            return DIST / box.file
    pytest.fail(f"{DIST}/build.json lists no {provider} {arch} box: rebuild with "
                f"`./invoke build-box --arch {arch}`", pytrace=False)


@pytest.fixture(scope="package")
def lab() -> Iterator[Lab]:
    """A network namespace (entered by this process) with two upstream registries and images."""
    if os.geteuid() != 0:
        pytest.fail("box tests need root (network namespace, libvirtd)", pytrace=False)
    qemus = ("qemu-system-aarch64",) if "libvirt-arm64" in PROVIDERS else ()
    for tool in ("ip", "vagrant", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", *qemus,
                 "ssh", "skopeo", "docker-registry", "unshare", "containerd", "ctr"):
        if shutil.which(tool) is None:
            pytest.fail(f"box tests need {tool}: run `./invoke install-deps --groups vagrant,test`",
                        pytrace=False)
    stale = netns_mod.remove_stale()
    if stale:
        print(f"removed namespaces of earlier runs: {stale}", file=sys.stderr)
    workdir = _work_root()
    accel = choose_accelerator()
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
                        layer_sizes=(200 * KiB, 30 * KiB)),
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


@pytest.fixture(scope="package")
def libvirt_vm(lab: Lab, build_meta: BuildMetadata) -> Iterator[LibvirtVM]:
    """`vagrant up` of the libvirt box with the drop-in Vagrantfile, in the lab's namespace."""
    if "libvirt" not in PROVIDERS:
        pytest.skip("libvirt not in REGISTRY_CACHE_TEST_PROVIDERS")
    _box_path(build_meta, "libvirt")
    work = lab.workdir / "libvirt"
    secret = secrets.token_urlsafe(24)
    config = box_test_config(f"http://{boot.LIBVIRT_HOST_SIDE}:{lab.upstream.port}", "/vagrant/data")
    project = boot.drop_in_project(work / "project", config,
                                   {"secrets/upstream.password": secret + "\n"})
    catalog = DIST / "catalog" / f"{build_meta.name}.json"
    if not catalog.is_file():
        pytest.fail(f"{catalog}: no box catalog: `./invoke build-box` writes it", pytrace=False)
    with lab.namespace.entered(), \
            boot.libvirt_box_added(work, project, lab.namespace, build_meta, DIST, lab.accel,
                                   catalog=catalog) as added:
        start = time.monotonic()
        with step(f"vagrant up --provider=libvirt ({lab.accel})"):
            up = added.vagrant("up", "--provider=libvirt")
        up_seconds = time.monotonic() - start
        print(f"vagrant up: {up_seconds:.1f} s", file=sys.stderr)
        ssh_config = added.vagrant.ssh_config(work / "ssh-config")
        machine = Machine("libvirt", ssh_config, boot.BOX_IP, dict(MIRROR_PORTS), config, secret,
                          outputs=[up.output])
        yield LibvirtVM(machine, added.vagrant, project, up_seconds, added.box_add_output)
        if KEEP:
            print(f"keeping {work}", file=sys.stderr)


def _qemu_machine(label: str, box_file: Path, lab: Lab, request: pytest.FixtureRequest,
                  describe: Callable[[Path], BoxMachine], presented: str,
                  accel: str = "") -> Machine:
    """A box booted in plain QEMU as its provider presents it, then configured like Vagrant would."""
    work = lab.workdir / label
    with step(f"unpack the {label} box"):
        unpacked = unpack_box(box_file, work / "box")
    described = describe(unpacked)
    secret = secrets.token_urlsafe(24)
    config = box_test_config(f"http://{boot.QEMU_NAT_HOST}:{lab.upstream.port}",
                             "/var/lib/registry-cache-test")
    accel = accel or lab.accel
    qemu = boot.QemuBox.prepare(label, work, described, accel, ssh_port=SSH_FORWARD,
                                ports=MIRROR_PORTS, config=config, secret=secret)

    def stop() -> None:
        with lab.namespace.entered(), step(f"power off the {label} box"):
            qemu.vm.stop()
            if not KEEP:
                shutil.rmtree(unpacked, ignore_errors=True)

    request.addfinalizer(stop)
    with step(f"boot the {label} box in QEMU ({accel}, {presented})"):
        seconds = qemu.boot()
    print(f"{label} box: sshd answers {seconds:.1f} s after power-on", file=sys.stderr)
    # No Vagrant, no /vagrant: put config.yml and its password file where apply reads them.
    with step(f"registry-cache apply in the {label} box"):
        qemu.guest.outputs.append(boot.apply_config(
            qemu.guest, "/srv/cache-config", config, {"secrets/upstream.password": secret + "\n"},
            timeout=300))
    return qemu.guest


def _virtualbox_machine(lab: Lab, build_meta: BuildMetadata, request: pytest.FixtureRequest) -> Machine:
    box_file = _box_path(build_meta, "virtualbox")
    return _qemu_machine("virtualbox", box_file, lab, request, read_box, "AHCI, e1000")


@contextlib.contextmanager
def _arm64_vagrant_up(lab: Lab, build_meta: BuildMetadata) -> Iterator[Machine]:
    """The arm64 box through a real `vagrant up` of the drop-in Vagrantfile, as on an arm64 host.

    REGISTRY_CACHE_ARCH=arm64 stands for the host's architecture: with Debian's Vagrant 2.3.4
    the Vagrantfile reads the arm64 catalog build-box wrote beside dist/catalog/<box>.json,
    and vagrant-libvirt defines an aarch64 domain from the box's own Vagrantfile (UEFI loader,
    virt machine, virtio disk and NIC, its CPUs and memory), emulated here.
    """
    _box_path(build_meta, "libvirt", "arm64")
    work = lab.workdir / "libvirt-arm64"
    secret = secrets.token_urlsafe(24)
    config = box_test_config(f"http://{boot.LIBVIRT_HOST_SIDE}:{lab.upstream.port}", "/vagrant/data")
    project = boot.drop_in_project(work / "project", config,
                                   {"secrets/upstream.password": secret + "\n"})
    catalog = DIST / "catalog" / f"{build_meta.name}.json"
    # another architecture's guest runs emulated whatever KVM this machine has
    accel = lab.accel if emulation.native(arches.ARM64) else "tcg"
    with boot.libvirt_box_added(work, project, lab.namespace, build_meta, DIST, accel,
                                catalog=catalog, arch="arm64") as added:
        with step(f"vagrant up --provider=libvirt (arm64, {accel})"):
            up = added.vagrant("up", "--provider=libvirt")
        ssh_config = added.vagrant.ssh_config(work / "ssh-config")
        yield Machine("libvirt-arm64", ssh_config, boot.BOX_IP, dict(MIRROR_PORTS), config, secret,
                      outputs=[up.output])


@pytest.fixture(scope="package")
def machine(request: pytest.FixtureRequest, lab: Lab, build_meta: BuildMetadata) -> Iterator[Machine]:
    """Each box under test in turn (the VirtualBox one is powered off before the next)."""
    if request.param == "libvirt":
        yield request.getfixturevalue("libvirt_vm").machine
        return
    if request.param == "libvirt-arm64":
        with lab.namespace.entered(), _arm64_vagrant_up(lab, build_meta) as arm64:
            yield arm64
        return
    with lab.namespace.entered():
        yield _virtualbox_machine(lab, build_meta, request)
