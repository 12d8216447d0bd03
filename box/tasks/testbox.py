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

from box.buildinfo import PROVIDERS, BuildMetadataError, load_build_metadata
from box.run import run, step
from box.tasks import ensure_packages

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def providers_to_test(provider: str, built: list[str]) -> list[str]:
    """The providers `--provider` asks for, checked against what the build produced."""
    wanted = list(PROVIDERS) if provider == "all" else [provider]
    unknown = [p for p in wanted if p not in PROVIDERS]
    if unknown:
        raise Exit(f"--provider {provider!r}: pick libvirt, virtualbox or all")
    missing = [p for p in wanted if p not in built]
    if missing:
        raise Exit(f"the build produced no {', '.join(missing)} box (it has: {', '.join(built)}); "
                   "rebuild with `./invoke build-box`")
    # the VirtualBox box first: it is powered off before the libvirt one boots (2 cores)
    return sorted(wanted, key=lambda p: p != "virtualbox")


@task(
    help={
        "provider": "libvirt, virtualbox or all (default)",
        "dist": "folder with build.json and the boxes (default: dist)",
        "keep": "keep the work folder (VM consoles, libvirt and registry logs) under build/test-box",
        "k": "only tests whose names match this pytest -k expression",
    }
)
def test_box(c: Context, provider: str = "all", dist: str = "dist", keep: bool = False,
             k: str = "") -> None:
    """Boot the built boxes (vagrant up on libvirt; the VirtualBox disk in QEMU) and test them."""
    dist_dir = Path(dist).resolve()
    try:
        meta = load_build_metadata(dist_dir / "build.json")
    except BuildMetadataError as exc:
        raise Exit(str(exc)) from None
    chosen = providers_to_test(provider, [b.provider for b in meta.boxes])
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
