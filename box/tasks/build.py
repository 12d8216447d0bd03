"""Build tasks: the Debian base disk, the Packer template, and the libvirt + VirtualBox boxes."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Context, task
from invoke.exceptions import Exit

from box import aptmirror, base_image, buildinputs, emulation, package, qemu
from box import arch as arches
from box.packer import (
    LIMITS,
    BoxSettings,
    PackerSettings,
    render_libvirt_vagrantfile,
    render_template,
)
from box.run import CommandError, run, start, step
from box.tasks import ensure_packages
from box.tasks.dist import (
    BUILD,
    DIST,
    ROOT,
    built_metadata,
    dist_sizes,
    make_dist,
    next_steps,
    write_local_catalog,
)

PACKER_BUILD = BUILD / "packer"
PAYLOAD = BUILD / "payload"
PAYLOAD_TAR = BUILD / "payload.tar"
AGENT_INIT = ROOT / "bootstrap" / "src" / "registry_cache" / "__init__.py"
AGENT_UNITS = ROOT / "bootstrap" / "systemd"
TEMPLATE_NAME = "registry-cache.pkr.hcl"
# a Packer build that runs longer than this is stuck (emulated arm64 takes minutes, not hours)
PACKER_TIMEOUT = 3600.0


def _config(c: Context) -> dict:
    """Return the `build:` section of the Invoke config (invoke.yaml, INVOKE_BUILD_* vars)."""
    section = c.config.get("build", None)
    return dict(section) if section else {}


@contextmanager
def _as_exit(what: str) -> Iterator[None]:
    """Turn a failed host command into a clear Exit (command, exit code, stderr tail)."""
    try:
        yield
    except CommandError as exc:
        raise Exit(f"{what} failed: {exc}") from exc


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise Exit(f"{what} needs root (loop devices, mount, chroot): run it with sudo")


def _base_spec(c: Context, arch: str = arches.DEFAULT) -> base_image.BaseImageSpec:
    """Return the base disk's inputs; the mirror is probed only when no disk is cached for it."""
    conf = _config(c)
    configured = str(conf.get("mirror", base_image.DEFAULT_MIRROR)).rstrip("/")
    suite = str(conf.get("suite", base_image.DEFAULT_SUITE))
    host_mirrors = aptmirror.host_apt_mirrors()
    for known in (configured, *host_mirrors):
        cached = base_image.spec_for(arch, mirror=known.rstrip("/"), suite=suite)
        if base_image.image_path(BUILD, cached).exists():
            return cached  # offline rebuilds work, also after a build that fell back to apt's mirror
    mirror = aptmirror.choose_mirror(configured, suite, host_mirrors)
    if mirror is None:
        raise Exit(
            f"no Debian mirror serves {suite}: tried {configured} and this machine's apt "
            "sources. Set build.mirror in invoke.yaml (or http_proxy) to one that does."
        )
    if mirror != configured:
        print(f"==> {configured} is not reachable; using this machine's apt mirror {mirror}")
    return base_image.spec_for(arch, mirror=mirror, suite=suite)


def ensure_base_image(c: Context, force: bool = False,
                      spec: base_image.BaseImageSpec | None = None) -> Path:
    """Return the cached base disk for the current inputs, building it first if needed."""
    spec = spec or _base_spec(c)
    path = base_image.image_path(BUILD, spec)
    if path.exists() and not force:
        print(f"==> base image up to date: {path.relative_to(ROOT)}")
        return path
    _require_root("invoke base-image")
    ensure_packages("build")
    architecture = arches.get(spec.arch)
    if architecture.needs_emulation:
        try:
            print(f"==> {architecture.name} programs: {emulation.ensure_binfmt(architecture)}")
        except (CommandError, OSError, emulation.EmulationError) as exc:
            raise Exit(f"running {architecture.name} programs here failed: {exc}") from exc
    try:
        with step(f"base image {path.name}"):
            built = base_image.build(spec, BUILD, aptmirror.proxy_env())
    except (CommandError, base_image.MountsLeftError) as exc:
        raise Exit(f"base image failed: {exc}") from exc
    for old in base_image.prune(BUILD, arch=spec.arch):
        print(f"==> removed an older base image: {old.relative_to(ROOT)}")
    return built


@task(name="base-image", help={
    "force": "rebuild even when a disk for the same inputs is cached",
    "arch": "amd64 (default), arm64, amd64,arm64 or all",
})
def base_image_task(c: Context, force: bool = False, arch: str = arches.DEFAULT) -> None:
    """Build the Debian base disk with debootstrap (cached in build/base/ by input hash)."""
    for name in _arch_flag(arch):
        ensure_base_image(c, force=force, spec=_base_spec(c, name))


def _arch_flag(value: str) -> tuple[str, ...]:
    """The architectures --arch names, or an Exit that lists the valid ones."""
    try:
        return arches.parse_list(value)
    except arches.ArchitectureError as exc:
        raise Exit(str(exc)) from None


def project_version(init_file: Path = AGENT_INIT) -> str:
    """Return the agent's __version__, read from its source (the package is not imported)."""
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", init_file.read_text(), re.M)
    if not match:
        raise Exit(f"{init_file}: no __version__ = \"X.Y.Z\" line; add one or pass --version")
    return match.group(1)


def box_settings(c: Context, version: str = "", name: str = "", memory: int | None = None,
                 cpus: int | None = None, disk_size: str = "") -> BoxSettings:
    """Return the box settings from the flags, then invoke.yaml's build:, then the defaults;
    exit with every bad value named before anything runs."""
    conf = _config(c)
    defaults = BoxSettings()
    settings = BoxSettings(
        name=name or str(conf.get("name", defaults.name)),
        version=version or str(conf.get("version", "")) or project_version(),
        description=str(conf.get("description", defaults.description)),
        memory=_whole_number("--memory (build.memory)",
                             memory if memory is not None else conf.get("memory", defaults.memory)),
        cpus=_whole_number("--cpus (build.cpus)",
                           cpus if cpus is not None else conf.get("cpus", defaults.cpus)),
        disk_size=disk_size or str(conf.get("disk_size", defaults.disk_size)),
    )
    problems = settings.problems()
    if problems:
        raise Exit("bad box settings:\n  " + "\n  ".join(problems))
    return settings


def _whole_number(what: str, value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise Exit(f"{what} {value!r}: give a whole number") from None


def packer_dir(architecture: arches.Architecture) -> Path:
    """Where one architecture's template, console log and output go (build/packer/<arch>/)."""
    return PACKER_BUILD / architecture.name


def packer_settings(box: BoxSettings, base: Path, accelerator: str,
                    architecture: arches.Architecture = arches.AMD64) -> PackerSettings:
    """Return the template's data for this build (paths under build/packer/<arch>/)."""
    folder = packer_dir(architecture)
    return PackerSettings(
        box=box,
        base_image=str(base),
        accelerator=accelerator,
        output_dir=str(folder / "output"),
        serial_log=str(folder / "serial.log"),
        libvirt_box=str(folder / package.box_file_name(box.name, box.version, "libvirt",
                                                       architecture.name)),
        libvirt_vagrantfile=str(folder / "Vagrantfile.libvirt"),
        payload=str(PAYLOAD_TAR),
        arch=architecture,
    )


def write_template(settings: PackerSettings) -> Path:
    """Render the Packer template and the libvirt box's Vagrantfile into build/packer/<arch>/."""
    folder = packer_dir(settings.arch)
    folder.mkdir(parents=True, exist_ok=True)
    Path(settings.libvirt_vagrantfile).write_text(
        render_libvirt_vagrantfile(settings.box, arch=settings.arch))
    template = folder / TEMPLATE_NAME
    template.write_text(render_template(settings))
    return template


def build_payload() -> Path:
    """Build the agent's wheel and pack it with its systemd units into build/payload.tar."""
    if PAYLOAD.exists():
        shutil.rmtree(PAYLOAD)
    (PAYLOAD / "wheel").mkdir(parents=True)
    (PAYLOAD / "systemd").mkdir()
    with step("build the agent wheel"), _as_exit("building the agent wheel"):
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             str(ROOT / "bootstrap"), "-w", str(PAYLOAD / "wheel")])
    for unit in sorted(AGENT_UNITS.glob("*")) if AGENT_UNITS.is_dir() else []:
        if unit.suffix in (".service", ".timer", ".socket", ".path", ".target"):
            shutil.copy2(unit, PAYLOAD / "systemd" / unit.name)
    # one file to upload: Packer's directory uploads differ with trailing slashes
    archive = PAYLOAD_TAR
    with tarfile.open(archive, "w") as tar:
        for path in sorted(PAYLOAD.rglob("*")):
            tar.add(str(path), arcname=str(path.relative_to(PAYLOAD)), recursive=False)
    return archive


@task(help={
    "version": "box version (default: the agent's __version__)",
    "name": "box name (default: registry-cache)",
    "memory": "box memory in MiB (default 1024)",
    "cpus": "box CPUs (default 2)",
    "disk_size": "box disk size, e.g. 20G (default 20G)",
    "accelerator": "kvm or tcg (default: probe KVM, fall back to tcg)",
    "arch": "amd64 (default), arm64, amd64,arm64 or all",
})
def render(c: Context, version: str = "", name: str = "", memory: int | None = None,
           cpus: int | None = None, disk_size: str = "", accelerator: str = "",
           arch: str = arches.DEFAULT) -> None:
    """Render the Packer template into build/packer/<arch>/ and check it with packer validate."""
    box = box_settings(c, version, name, memory, cpus, disk_size)
    _accelerator_flag(accelerator)
    build_payload()
    ensure_packages("build")
    for architecture in map(arches.get, _arch_flag(arch)):
        base = base_image.image_path(BUILD, _base_spec(c, architecture.name))
        settings = packer_settings(box, base, _accelerator_for(architecture, accelerator),
                                   architecture)
        path = write_template(settings)
        print(f"==> rendered {path.relative_to(ROOT)}")
        _packer_check(path)


def _accelerator_for(architecture: arches.Architecture, requested: str) -> str:
    """The accelerator this machine runs the architecture's VMs with (another one's: tcg)."""
    if emulation.native(architecture):
        return qemu.choose_accelerator(requested)
    if requested == "kvm":
        raise Exit(f"--accelerator kvm: this machine cannot run {architecture.name} guests "
                   "under KVM (another architecture); leave it out for tcg")
    return "tcg"


def _accelerator_flag(value: str) -> None:
    """Refuse a bad --accelerator before any long step (the probe itself runs later)."""
    try:
        qemu.check_accelerator(value)
    except qemu.AcceleratorError as exc:
        raise Exit(f"--{exc}") from None


def _packer_check(path: Path) -> None:
    for argv in (["packer", "fmt", "-check", "-diff", path.name],
                 ["packer", "validate", path.name]):
        proc = run(argv, capture=True, check=False, cwd=str(path.parent))
        if proc.returncode != 0:
            raise Exit(f"{' '.join(argv)} failed on {path}:\n{proc.stdout}{proc.stderr}")


@task(name="build-box", help={
    "version": "box version (default: the agent's __version__)",
    "name": "box name (default: registry-cache)",
    "memory": f"box memory in MiB, {LIMITS.memory_mib[0]}-{LIMITS.memory_mib[1]} (default 1024)",
    "cpus": f"box CPUs, {LIMITS.cpus[0]}-{LIMITS.cpus[1]} (default 2)",
    "disk_size": f"box disk size, e.g. 20G or 8192M, at least {LIMITS.disk_mib_min // 1024}G "
    "(default 20G)",
    "accelerator": "kvm or tcg (default: probe KVM, fall back to tcg)",
    "keep": "keep build/packer/<arch>/output (the provisioned qcow2) after packaging",
    "force": "build again even when dist/ holds a box built from the same inputs",
    "arch": "amd64 (default: libvirt + VirtualBox), arm64 (libvirt, UEFI), amd64,arm64 or all "
    "(both, built side by side)",
})
def build_box(c: Context, version: str = "", name: str = "", memory: int | None = None,
              cpus: int | None = None, disk_size: str = "", accelerator: str = "",
              keep: bool = False, force: bool = False, arch: str = "") -> None:
    """Bake the boxes (amd64: libvirt + VirtualBox; arm64: libvirt) into dist/ and dist/catalog/."""
    box = box_settings(c, version, name, memory, cpus, disk_size)
    _accelerator_flag(accelerator)
    names = _arch_flag(arch or str(_config(c).get("arch", arches.DEFAULT)))
    ensure_packages("build")
    specs = {n: _base_spec(c, n) for n in names}
    digest = buildinputs.inputs_digest(
        buildinputs.file_digests(ROOT), {**dataclasses.asdict(box), "arch": list(names)},
        ",".join(base_image.image_path(BUILD, specs[n]).name for n in names))
    verdict = buildinputs.reuse_verdict(built_metadata(), digest, dist_sizes())
    if verdict.reuse and not force:
        print(f"==> box up to date: {verdict.why}, reusing (--force builds it again)")
    else:
        print(f"==> building the box ({', '.join(names)}): "
              f"{'--force' if verdict.reuse else verdict.why}")
        _bake(c, box, accelerator, keep, digest, specs)
    meta = built_metadata()
    if meta is None:  # just written by _bake: unreadable means a bug, say where
        raise Exit(f"{DIST / 'build.json'} is missing or unreadable after the build")
    write_local_catalog(meta)
    print(next_steps(meta, ROOT))


def _bake(c: Context, box: BoxSettings, accelerator: str, keep: bool, digest: str,
          specs: dict[str, base_image.BaseImageSpec]) -> None:
    """Base disks, payload, templates, packer builds, then dist/ (the long part of build-box).

    Several architectures are built side by side, one thread each (base disk, then Packer):
    their emulated CPUs and downloads overlap on the build machine's cores.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    build_payload()
    architectures = [arches.get(n) for n in specs]
    accels = {}
    with step("probe the QEMU accelerator"):
        for architecture in architectures:
            accels[architecture.name] = _accelerator_for(architecture, accelerator)
    print(f"==> accelerator: {', '.join(f'{n} {a}' for n, a in accels.items())}")

    def one(architecture: arches.Architecture, log: Path | None) -> PackerSettings:
        base = ensure_base_image(c, spec=specs[architecture.name])
        settings = packer_settings(box, base, accels[architecture.name], architecture)
        template = write_template(settings)
        _packer_check(template)
        _packer_build(settings, template, log)
        return settings

    if len(architectures) == 1:
        built = [one(architectures[0], None)]
    else:
        with concurrent.futures.ThreadPoolExecutor(len(architectures)) as pool:
            futures = [pool.submit(one, a, packer_dir(a) / "packer.log") for a in architectures]
            concurrent.futures.wait(futures)
            built = [f.result() for f in futures]  # the first failure, as its Exit
    make_dist(box, built, started, keep=keep, inputs=digest)


def _packer_build(settings: PackerSettings, template: Path, log: Path | None) -> None:
    """Run packer build on one architecture's template (into `log` when builds run side by side)."""
    name, accel = settings.arch.name, settings.accelerator
    if log is not None:
        print(f"==> packer build {name}: its output goes to {log.relative_to(ROOT)}")
    argv = ["packer", "build", "-force", "-color=false", "-timestamp-ui", template.name]
    env = {**os.environ, "PACKER_NO_COLOR": "1"}
    with step(f"packer build {name} ({accel})"):
        if log is None:
            exited = run(argv, cwd=str(template.parent), env=env, check=False).returncode
        else:
            log.unlink(missing_ok=True)
            packer = start(f"packer-{name}", argv, log, env=env, cwd=template.parent)
            try:
                exited = packer.wait(timeout=PACKER_TIMEOUT)
            finally:
                packer.stop()
    if exited != 0:
        where = f"; Packer's output is in {log}" if log is not None else ""
        raise Exit(f"packer build {name} failed (exit {exited}); the guest's console is in "
                   f"{settings.serial_log}{where}")


TASKS = [base_image_task, render, build_box]
