"""Drives the real `vagrant` with a private VAGRANT_HOME, on a project folder like a team's.

The project folder holds a copy of the repository's drop-in `Vagrantfile` and a
`config.yml`, exactly what a team drops into its repository. Settings go in through the
Vagrantfile's environment variables; the only addition is the private VAGRANT_HOME's own
Vagrantfile pointing vagrant-libvirt at the test's libvirtd
(lab/templates/vagrant-home.Vagrantfile.j2).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from box.run import CommandError, stream
from box.templating import render_from

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"


def box_catalog(name: str, version: str, provider: str, box_file: Path, sha256: str) -> dict:
    """The Vagrant box metadata (catalog) of one local box file, so it is added with its version."""
    return {
        "name": name,
        "versions": [{
            "version": version,
            "providers": [{
                "name": provider,
                "url": box_file.resolve().as_uri(),
                "checksum_type": "sha256",
                "checksum": sha256,
            }],
        }],
    }


def libvirt_volume_prefix(box_name: str) -> str:
    """How vagrant-libvirt names a box's image in the storage pool (before `_vagrant_box_image_`)."""
    return box_name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"


@dataclass
class VagrantResult:
    """What one vagrant command did: its exit status and everything it printed."""

    argv: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        """Whether vagrant exited 0."""
        return self.returncode == 0


@dataclass
class Vagrant:
    """The `vagrant` CLI on one project folder, with its own VAGRANT_HOME and settings."""

    project: Path
    home: Path
    settings: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment every vagrant command gets."""
        return {
            **os.environ,
            "VAGRANT_HOME": str(self.home),
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DEFAULT_PROVIDER": "libvirt",
            "VAGRANT_NO_COLOR": "1",
            **self.settings,
        }

    def configure_home(self, libvirt_uri: str) -> None:
        """Write the private VAGRANT_HOME's Vagrantfile (vagrant-libvirt's connection)."""
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "Vagrantfile").write_text(
            render_from(TEMPLATES, "vagrant-home.Vagrantfile.j2", uri=libvirt_uri)
        )

    def __call__(self, *args: str, check: bool = True, timeout: float = 900) -> VagrantResult:
        """Run `vagrant ARGS` in the project folder; its output is echoed as it comes, and returned."""
        argv = ["vagrant", *args]
        proc = stream(argv, env=self.env(), cwd=str(self.project), timeout=timeout)
        result = VagrantResult(argv, proc.returncode, proc.stdout)
        if check and not result.ok:
            raise CommandError(argv, proc.returncode, proc.stdout)
        return result

    def add_box(self, catalog: dict, workdir: Path, provider: str,
                arch: str = "amd64") -> VagrantResult:
        """`vagrant box add` from a catalog file, so the box gets its version.

        The file is the one the drop-in Vagrantfile reads for this architecture (box-catalog.json,
        or box-catalog-arm64.json where Vagrant < 2.4 reads a catalog per architecture).
        """
        path = workdir / ("box-catalog.json" if arch == "amd64" else f"box-catalog-{arch}.json")
        path.write_text(json.dumps(catalog, indent=2))
        return self("box", "add", "--provider", provider, path.resolve().as_uri())

    def remove_box(self, name: str, version: str, provider: str) -> None:
        """`vagrant box remove` one version of the box (no error when it is not there)."""
        self("box", "remove", name, "--box-version", version, "--provider", provider, "--force",
             check=False)

    def ssh_config(self, path: Path) -> Path:
        """Write `vagrant ssh-config` to `path` (pytest-testinfra's Vagrant recipe)."""
        result = self("ssh-config", timeout=120)
        path.write_text(_ssh_config_only(result.output))
        return path


def _ssh_config_only(text: str) -> str:
    """The `Host ...` block of `vagrant ssh-config` output (our echo adds nothing else, but be sure)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Host "):
            return "\n".join(lines[i:]) + "\n"
    raise ValueError("vagrant ssh-config printed no Host block:\n" + text)


__all__ = ["Vagrant", "VagrantResult", "box_catalog", "libvirt_volume_prefix"]
