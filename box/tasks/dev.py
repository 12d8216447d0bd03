"""Developer tasks: install what the tests need, run the tests, lint."""

from __future__ import annotations

import os
import sys

from invoke import Context, task
from invoke.exceptions import Exit

from box import deps
from box.run import run, step
from box.tasks import build, ensure_packages, testbox

# pytest's exit code when it collected no test at all
_PYTEST_NO_TESTS = 5


@task(help={"groups": "comma-separated groups from box/deps.py (default: all)"})
def install_deps(c: Context, groups: str = "") -> None:
    """Install the Debian packages the build, the tests and publishing need."""
    names = [g for g in groups.split(",") if g] or list(deps.APT_PACKAGES)
    unknown = sorted(set(names) - set(deps.APT_PACKAGES))
    if unknown:
        raise Exit(f"unknown group(s) {', '.join(unknown)}; pick from {', '.join(deps.APT_PACKAGES)}")
    ensure_packages(*names)


@task(
    help={
        "quick": "unit and integration tests only: no box build, no VM (the inner loop)",
        "k": "only tests whose names match this pytest -k expression (no box build)",
        "path": "a test file or folder instead of the whole suite (no box build)",
    }
)
def test(c: Context, quick: bool = False, k: str = "", path: str = "") -> None:
    """Run the whole test suite: unit, integration, then build the box and test it in a real VM."""
    ensure_packages(*(["test"] if quick else deps.APT_PACKAGES))
    with step("ruff check"):
        _ruff()
    argv = [sys.executable, "-m", "pytest", "-ra", "-m", "not box"]
    if k:
        argv += ["-k", k]
    argv.append(path or "tests")
    with step("pytest " + " ".join(argv[3:])):
        exited = run(argv, check=False, env=_test_env()).returncode
    if exited == _PYTEST_NO_TESTS:
        raise Exit("pytest collected no test", code=1)
    if exited != 0:
        raise Exit(f"tests failed (pytest exit {exited})", code=exited if exited > 0 else 1)
    if quick or k or path:
        return
    build.build_box(c, arch="all")  # both architectures: see README, "Build times"
    # Every box: the VirtualBox and arm64 disks booted in QEMU, then the libvirt box through
    # `vagrant up` with its whole lifecycle (reload, reboot, provision, broken config).
    testbox.test_box(c, provider="all")


@task
def lint(c: Context) -> None:
    """Check style with ruff (the same check the tests run first)."""
    _ruff()


def _ruff() -> None:
    """Run `ruff check .`; its findings are printed as they come, a finding fails the task."""
    exited = run(["ruff", "check", "."], check=False, env=_test_env()).returncode
    if exited != 0:
        raise Exit(f"ruff check found problems (exit {exited})", code=exited if exited > 0 else 1)


def _test_env() -> dict[str, str]:
    """This environment with the venv's tools (pytest, ruff) first on PATH."""
    venv_bin = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}


TASKS = [install_deps, test, lint]
