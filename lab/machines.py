"""The box under test as the tests see it: a testinfra host plus where its mirrors answer.

The process runs inside the lab's network namespace (tests/box/conftest.py, bench), so ssh,
skopeo and vagrant reach the VM's addresses with no wrapper, and nothing else can.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import testinfra
import yaml

from box.run import run
from box.wait import wait_until

MIRROR_UNIT = "registry-cache-mirror@{}.service"
RENDERED = "/etc/registry-cache/mirrors/{}"
# the registry configs (they may hold the upstream password); mirror.json holds no secret
SECRET_FILES = ("proxy.yml", "readonly.yml")
DEBUG_PORT_OFFSET = 10000
# the key every Vagrant box accepts until `vagrant up` replaces it (the VirtualBox disk keeps it)
VAGRANT_INSECURE_KEY = Path("/usr/share/rubygems-integration/all/gems/vagrant-2.3.4/keys/vagrant")


@dataclass
class Machine:
    """One running box: testinfra `host` (commands run with sudo) and how to reach its mirrors."""

    provider: str
    ssh_config: Path
    address: str  # where the namespace reaches the mirror ports
    ports: dict[int, int]  # guest port -> port at `address`
    config: dict[str, Any]  # the config.yml applied last (without secrets: they are in files)
    secret: str  # the upstream password the config refers to, which must never show up
    outputs: list[str] = field(default_factory=list)  # what vagrant/apply printed so far
    host: Any = None

    def __post_init__(self) -> None:
        self.host = testinfra.get_host(
            "ssh://default", ssh_config=str(self.ssh_config), sudo=True,
            ssh_extra_args="-o ConnectTimeout=10 -o ServerAliveInterval=5",
        )

    @property
    def mirrors(self) -> dict[str, int]:
        """Mirror name -> guest port, from the applied config."""
        return {name: m["port"] for name, m in self.config["mirrors"].items()}

    def mirror_host(self, name: str) -> str:
        """`ADDRESS:PORT` of a mirror as the namespace side reaches it (for skopeo)."""
        return f"{self.address}:{self.ports[self.mirrors[name]]}"

    def ssh(self, command: str, *, input: str | None = None, check: bool = True,
            timeout: float = 120) -> str:
        """Run a shell command in the guest over ssh (no sudo), optionally feeding stdin."""
        proc = run(["ssh", "-F", str(self.ssh_config), "default", command], capture=True,
                   input=input, check=False, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.provider}: `{command}` exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc.stdout

    def write_file(self, path: str, text: str, mode: str = "0644") -> None:
        """Write a file in the guest as root."""
        self.ssh(f"sudo install -D -m {mode} /dev/stdin {shlex.quote(path)}", input=text)

    def status(self) -> list[dict[str, Any]]:
        """`registry-cache status --json` (no Docker Hub rate-limit probe: no internet here).

        It exits 1 while a mirror is not healthy (e.g. waiting for its storage): the JSON
        on stdout is the answer either way.
        """
        result = self.host.run_expect([0, 1], "registry-cache status --json --no-rate-limit")
        return json.loads(result.stdout)

    def wait_until(self, predicate: Any, what: str, timeout: float = 240) -> list[dict[str, Any]]:
        """Poll `status` until `predicate(status)` holds; fail naming `what` and the last status."""
        last: Any = None

        def holds() -> bool:
            nonlocal last
            try:
                last = self.status()
                return bool(predicate(last))
            except (AssertionError, ValueError, RuntimeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                return False

        wait_until(holds, f"{self.provider}: {what}", timeout=timeout, interval=3,
                   detail=lambda: f"last status: {last}", error=AssertionError)
        return last

    def wait_all_serving(self, timeout: float = 240) -> list[dict[str, Any]]:
        """Wait until every configured mirror is healthy in proxy mode."""
        names = set(self.mirrors)

        def ready(status: list[dict[str, Any]]) -> bool:
            by_name = {m["name"]: m for m in status}
            return names <= set(by_name) and all(
                by_name[n]["healthy"] and by_name[n]["mode"] == "proxy" for n in names)

        return self.wait_until(ready, "every mirror healthy in proxy mode", timeout)

    def unit(self, name: str) -> dict[str, str]:
        """systemd's view of one mirror unit: MainPID, ActiveEnterTimestamp, states."""
        props = "MainPID,ActiveEnterTimestamp,ActiveState,UnitFileState,User,NRestarts"
        text = self.host.check_output(f"systemctl show -p {props} {MIRROR_UNIT.format(name)}")
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def boot_id(self) -> str:
        """The guest kernel's boot id: changes with every boot."""
        return self.host.check_output("cat /proc/sys/kernel/random/boot_id").strip()

    def wait_for_new_boot(self, old_boot_id: str, timeout: float = 420) -> None:
        """Wait until the guest answers over ssh from a boot other than `old_boot_id`.

        A reboot under TCG takes seconds to tear sshd down, so "ssh works" alone may still
        be the old boot; the boot id tells. Also waits for testinfra's shared connection.
        """
        def new_boot() -> bool:
            try:
                result = self.host.run("cat /proc/sys/kernel/random/boot_id")
            except RuntimeError:  # testinfra raises when ssh itself fails (exit 255)
                return False
            return result.rc == 0 and result.stdout.strip() not in ("", old_boot_id)

        wait_until(new_boot, f"{self.provider}: back from a reboot", timeout=timeout, interval=3,
                   error=AssertionError)

    def wait_for_ssh(self, timeout: float = 300) -> None:
        """Wait until the guest accepts ssh commands again, also through testinfra's connection.

        After a reboot testinfra's shared ssh connection (ControlMaster) is dead but still
        there until its keep-alives give up: wait for it to be replaced too.
        """
        def answers() -> bool:
            proc = run(["ssh", "-F", str(self.ssh_config), "-o", "ConnectTimeout=5", "default",
                        "true"], capture=True, check=False, timeout=30)
            if proc.returncode != 0:
                return False
            try:
                return self.host.run("true").rc == 0
            except RuntimeError:  # testinfra's shared connection is still the dead one
                return False

        wait_until(answers, f"{self.provider}: ssh", timeout=timeout, interval=3, error=AssertionError)


def config_yaml(config: dict[str, Any]) -> str:
    """config.yml text, keys in the order written."""
    return yaml.safe_dump(config, sort_keys=False)


def ssh_config_for(path: Path, *, port: int, identity: Path) -> Path:
    """An ssh_config for a VM whose sshd is forwarded to 127.0.0.1:`port` (Vagrant's NAT way)."""
    path.write_text(
        "Host default\n"
        "  HostName 127.0.0.1\n"
        f"  Port {port}\n"
        "  User vagrant\n"
        "  UserKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking no\n"
        "  PasswordAuthentication no\n"
        f"  IdentityFile {identity}\n"
        "  IdentitiesOnly yes\n"
        "  LogLevel FATAL\n"
    )
    return path
