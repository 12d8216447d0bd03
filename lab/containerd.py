"""A containerd of the test's own, and `ctr` pulls through a hosts.toml folder: containerd's own resolver.

The daemon keeps everything under its work folder (root, state, socket) and runs only the
plugins a pull needs (no CRI). Start it from a thread inside the test's network namespace
(lab/netns.py): then containerd's fallback to a registry's own server, which it tries when every
mirror fails, reaches nothing outside the namespace.

A `_default/hosts.toml` (`hosts_dir`) sends every registry's pulls to one mirror; containerd
adds `?ns=<registry host>` to every request it sends there (since 1.4).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from box.run import Process, run, start
from lab.procs import HarnessError

CONTAINERD = "containerd"
CTR = "ctr"
DEFAULT_HOSTS = "_default"
# Plugins a pull neither needs nor can run in a test folder (CRI wants its own networking).
_DISABLED = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
             "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
             "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
             "io.containerd.tracing.processor.v1.otlp"]


def hosts_toml(mirror_url: str, *, ca_file: Optional[Path] = None, server: Optional[str] = None) -> str:
    """A containerd hosts.toml that pulls through `mirror_url` (with TLS: trusting `ca_file`)."""
    lines = [f"server = {json.dumps(server)}"] if server else []
    lines += ["", f"[host.{json.dumps(mirror_url)}]", '  capabilities = ["pull", "resolve"]']
    if ca_file is not None:
        lines.append(f"  ca = {json.dumps(str(ca_file))}")
    return "\n".join(lines) + "\n"


def write_hosts_dir(directory: Path, mirror_url: str, *, ca_file: Optional[Path] = None) -> Path:
    """Write DIRECTORY/_default/hosts.toml: every registry through `mirror_url`; return DIRECTORY."""
    (directory / DEFAULT_HOSTS).mkdir(parents=True, exist_ok=True)
    (directory / DEFAULT_HOSTS / "hosts.toml").write_text(hosts_toml(mirror_url, ca_file=ca_file))
    return directory


@dataclass
class Containerd:
    """One `containerd` daemon whose root, state and socket live under `workdir`."""

    workdir: Path
    process: Optional[Process] = field(default=None, repr=False)

    @property
    def address(self) -> Path:
        """The daemon's gRPC socket."""
        return self.workdir / "containerd.sock"

    def start(self, timeout: float = 30.0) -> Containerd:
        """Write its config and start the daemon; return once `ctr version` answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.toml"
        config.write_text("\n".join([
            "version = 2",
            f"root = {json.dumps(str(self.workdir / 'root'))}",
            f"state = {json.dumps(str(self.workdir / 'state'))}",
            f"disabled_plugins = {json.dumps(_DISABLED)}",
            "[grpc]",
            f"  address = {json.dumps(str(self.address))}",
            "[ttrpc]",
            f"  address = {json.dumps(str(self.workdir / 'containerd-ttrpc.sock'))}",
            "[debug]",
            f"  address = {json.dumps(str(self.workdir / 'containerd-debug.sock'))}",
            "",
        ]))
        self.process = start("containerd", [CONTAINERD, "--config", str(config)],
                             self.workdir / "containerd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise HarnessError(f"containerd exited:\n{self.process.log_tail()}")
            if self.address.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise HarnessError(f"containerd did not answer within {timeout} s:\n{self.process.log_tail()}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> object:
        """Run `ctr --address SOCKET ARGS...` (captured); CommandError when it fails and `check`."""
        return run([CTR, "--address", str(self.address), *args], capture=True, check=check, timeout=timeout)

    def pull(self, ref: str, hosts_dir: Path, *, all_platforms: bool = False,
             creds: Optional[tuple[str, str]] = None) -> str:
        """Fetch `ref` with containerd's resolver as configured by `hosts_dir`; return its manifest digest.

        Content only (`ctr content fetch`): what a pull downloads, without unpacking layers.
        `creds` log in to every registry (ctr takes them only in its argv: test passwords only).
        """
        args = ["content", "fetch", "--hosts-dir", str(hosts_dir)]
        if all_platforms:
            args.append("--all-platforms")
        if creds is not None:
            args += ["--user", ":".join(creds)]
        self.ctr(*args, ref)
        return self.digest(ref)

    def digest(self, ref: str) -> str:
        """The digest containerd recorded for image `ref`."""
        listing = self.ctr("images", "ls").stdout  # type: ignore[attr-defined]
        for line in listing.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == ref:
                return next(f for f in fields if f.startswith("sha256:"))
        raise HarnessError(f"containerd has no image {ref}:\n{listing}")

    def stop(self) -> None:
        """Stop the daemon (by its pid)."""
        if self.process is not None:
            self.process.stop(timeout=10)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
