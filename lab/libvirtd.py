"""A libvirtd of our own, inside the test's network namespace, with private state.

systemd is not PID 1 on the build machines, so nothing starts libvirtd for us: we start
`virtlogd --daemon` and `libvirtd --daemon` ourselves (libvirt-private.sh says how their
state stays private), talk to them through their socket, and stop them by pid.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from box.run import CommandError, output, run, stop_pids
from box.wait import wait_until
from lab.netns import NetworkNamespace

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
START_SCRIPT = _HERE / "libvirt-private.sh"
QEMU_CONF_EXTRA = _HERE / "libvirt-qemu.conf"
SYSTEM_CONFIG = Path("/etc/libvirt")


@dataclass
class PrivateLibvirt:
    """virtlogd + libvirtd running in `namespace`, with their state under `workdir`."""

    workdir: Path
    namespace: NetworkNamespace
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def socket(self) -> Path:
        """The daemon's read-write socket."""
        return self.workdir / "run" / "libvirt" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The connection URI for virsh and vagrant-libvirt."""
        return f"qemu:///system?socket={self.socket}"

    def prepare(self) -> None:
        """Make the private folders: a copy of /etc/libvirt with no autostarted network."""
        if not SYSTEM_CONFIG.is_dir():
            raise RuntimeError(f"{SYSTEM_CONFIG} is missing: install libvirt-daemon-system "
                               "(`./invoke install-deps --groups vagrant`)")
        for sub in ("run", "lib", "cache", "log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        etc = self.workdir / "etc"
        if etc.exists():
            shutil.rmtree(etc)
        shutil.copytree(SYSTEM_CONFIG, etc, symlinks=True)
        # Debian's "default" network (192.168.122.0/24) would start with the daemon: not ours.
        autostart = etc / "qemu" / "networks" / "autostart"
        if autostart.is_dir():
            shutil.rmtree(autostart)
            autostart.mkdir()
        qemu_conf = etc / "qemu.conf"
        qemu_conf.write_text(qemu_conf.read_text() + QEMU_CONF_EXTRA.read_text())

    def start(self, timeout: float = 60.0) -> None:
        """Start virtlogd and libvirtd in the namespace; return once the socket answers."""
        self.prepare()
        run([*self.namespace.launcher, "unshare", "--mount", "--propagation", "private",
             "sh", str(START_SCRIPT), str(self.workdir)], capture=True, timeout=timeout)
        for name in ("virtlogd", "libvirtd"):
            self.pids[name] = self._read_pid(self.workdir / "run" / f"{name}.pid", timeout)
        last: list[CommandError] = []

        def answers() -> bool:
            try:
                self.virsh("version")
                return True
            except CommandError as exc:
                last[:] = [exc]
                return False

        wait_until(answers, f"libvirtd answering on {self.uri}", timeout=timeout, interval=0.5,
                   detail=lambda: str(last[0]) if last else "", error=RuntimeError)

    @staticmethod
    def _read_pid(path: Path, timeout: float) -> int:
        def pid() -> int | None:
            text = path.read_text().strip() if path.exists() else ""
            return int(text) if text.isdigit() else None

        return wait_until(pid, f"a pid in {path}", timeout=timeout, error=RuntimeError)

    def virsh(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        """Run one virsh command against this daemon; return its output."""
        return output(["virsh", "--connect", self.uri, *args], check=check, timeout=timeout)

    def child_pids(self) -> list[int]:
        """Processes the daemon started and tracks by pid file: QEMU domains, dnsmasq."""
        pids = []
        for folder in ("qemu", "network"):
            for pidfile in (self.workdir / "run" / "libvirt" / folder).glob("*.pid"):
                text = pidfile.read_text().strip() if pidfile.exists() else ""
                if text.isdigit() and int(text) not in self.pids.values():
                    pids.append(int(text))
        return pids

    def delete_volumes(self, pool: str, prefix: str) -> list[str]:
        """Delete the pool's volumes whose names start with `prefix` (e.g. an uploaded box)."""
        deleted = []
        listing = self.virsh("vol-list", "--pool", pool, "--name", check=False)
        for name in listing.split():
            if name.startswith(prefix):
                self.virsh("vol-delete", "--pool", pool, name, check=False)
                deleted.append(name)
        return deleted

    def stop(self) -> None:
        """Stop the domains' QEMU, dnsmasq, libvirtd and virtlogd, each by its pid."""
        children = self.child_pids()
        if children:
            log.warning("libvirt: stopping processes still running: %s", children)
            stop_pids(children, 15.0, name="libvirt child")
        daemons = [self.pids[n] for n in ("libvirtd", "virtlogd") if n in self.pids]
        stop_pids(daemons, 15.0, name="libvirt daemon")
        self.pids.clear()
