"""Test-box task: boot the built boxes the way users run them and check them with testinfra.

The work happens in tests/box (pytest fixtures own every VM, daemon and namespace, so
cleanup runs also when a test fails); this task checks the inputs, installs what the
tests need and runs that package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from invoke import Context, task
from invoke.exceptions import Exit

from box import arch as arches
from box.buildinfo import BuildMetadataError, load_build_metadata
from box.run import run, step
from box.tasks import ensure_packages

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# The boxes test-box knows, in the order it boots them: the ones booted in plain QEMU first,
# each powered off before the next; the amd64 libvirt box last, through `vagrant up` (2 cores).
BOXES = ("virtualbox", "libvirt-arm64", "libvirt")


def box_id(provider: str, architecture: str) -> str:
    """How test-box names a built box: its provider, with the architecture unless amd64."""
    return provider if architecture == arches.DEFAULT else f"{provider}-{architecture}"


def providers_to_test(provider: str, built: list[str]) -> list[str]:
    """The boxes `--provider` asks for (all: every box built), checked against the build."""
    wanted = [b for b in BOXES if b in built] if provider == "all" else [provider]
    unknown = [p for p in wanted if p not in BOXES]
    if unknown:
        raise Exit(f"--provider {provider!r}: pick {', '.join(BOXES)} or all")
    missing = [p for p in wanted if p not in built]
    if missing:
        raise Exit(f"the build produced no {', '.join(missing)} box (it has: {', '.join(built)}); "
                   "rebuild with `./invoke build-box` (--arch arm64 for libvirt-arm64)")
    return sorted(wanted, key=BOXES.index)


@task(
    help={
        "provider": "libvirt, virtualbox, libvirt-arm64 or all (default: every box built)",
        "dist": "folder with build.json and the boxes (default: dist)",
        "keep": "keep the work folder (VM consoles, libvirt and registry logs) under build/test-box",
        "k": "only tests whose names match this pytest -k expression",
    }
)
def test_box(c: Context, provider: str = "all", dist: str = "dist", keep: bool = False,
             k: str = "") -> None:
    """Boot the built boxes (vagrant up on libvirt; VirtualBox's and arm64's disks in QEMU), test them."""
    dist_dir = Path(dist).resolve()
    try:
        meta = load_build_metadata(dist_dir / "build.json")
    except BuildMetadataError as exc:
        raise Exit(str(exc)) from None
    chosen = providers_to_test(provider, [box_id(b.provider, b.architecture) for b in meta.boxes])
    if os.geteuid() != 0:
        raise Exit("test-box needs root: it creates a network namespace and runs libvirtd "
                   "(run it with sudo)")
    ensure_packages("test", "vagrant")
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "REGISTRY_CACHE_TEST_DIST": str(dist_dir),
        "REGISTRY_CACHE_TEST_PROVIDERS": ",".join(chosen),
        "REGISTRY_CACHE_TEST_KEEP": "1" if keep else "0",
    }
    argv = [sys.executable, "-m", "pytest", "-ra", "--durations=0", "--capture=tee-sys", "-p",
            "no:cacheprovider", "-m", "box"]
    if k:
        argv += ["-k", k]
    argv.append(str(PROJECT_ROOT / "tests" / "box"))
    print(f"box {meta.name} {meta.version} ({meta.git_revision[:12]}"
          f"{', built from uncommitted changes' if meta.git_dirty else ''}): {', '.join(chosen)}")
    with step(f"test-box ({', '.join(chosen)})"):
        exited = run(argv, check=False, env=env).returncode
    if exited != 0:
        raise Exit(f"box tests failed (pytest exit {exited})", code=exited if exited > 0 else 1)


TASKS = [test_box]
