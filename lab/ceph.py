"""A single-node Ceph cluster with its S3 gateway (RGW) on loopback, for tests and benches.

One monitor, one OSD on memstore (objects in RAM: nothing to format, gone when it stops) and
radosgw with beast; no manager (nothing here needs one). `auth none` everywhere, with
`ms_mon_client_mode = crc` or radosgw waits forever for the monitor. It answers S3 about 1 s
after `start()`. `stop()` ends the gateway, then the OSD, then the monitor (each waits for the
one below; all at once takes 5-6 s), and removes the cluster's folder.

Every daemon listens on 127.0.0.1, or inside a test's network namespace when `launcher` is
`ip netns exec NS` (the namespace's own loopback).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from box.run import Process, output, run, start
from lab.procs import LOOPBACK, HarnessError, free_port, wait_for_http

PACKAGES = ("ceph-mon", "ceph-osd", "radosgw", "ceph-common")
DEFAULT_REGION = "us-east-1"
# memstore's size as the OSD reports it; memory is only used as objects arrive
MEMSTORE_BYTES = 8 << 30


@dataclass(frozen=True)
class S3Account:
    """An RGW user's keys and the endpoint they work on."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = DEFAULT_REGION


def _conf(root: Path, fsid: str, mon_port: int, rgw_port: int, host: str) -> str:
    return f"""\
[global]
fsid = {fsid}
mon host = v2:{host}:{mon_port}
public addr = {host}
auth cluster required = none
auth service required = none
auth client required = none
ms_mon_client_mode = crc
run dir = {root}/run
log file = {root}/log/$name.log
admin socket = {root}/run/$name.asok
# a quick paxos commit: pool and user creation in milliseconds, not seconds
paxos_propose_interval = 0.01
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
# a busy build machine's disk is no reason to stop the test monitor
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = {root}/mon
[osd.0]
osd data = {root}/osd
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
[client.rgw]
rgw frontends = beast endpoint={host}:{rgw_port} tcp_nodelay=1
rgw data = {root}/rgw
"""


@dataclass
class CephCluster:
    """One running single-node Ceph cluster: monitor, memstore OSD, S3 gateway."""

    root: Path
    host: str
    rgw_port: int
    launcher: tuple[str, ...] = ()
    processes: list[Process] = field(default_factory=list)
    started_in: float = 0.0

    @property
    def conf(self) -> Path:
        """The cluster's ceph.conf."""
        return self.root / "ceph.conf"

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL (plain HTTP)."""
        return f"http://{self.host}:{self.rgw_port}"

    def _tool(self, *argv: str) -> list[str]:
        return [*self.launcher, *argv, "-c", str(self.conf)]

    def admin(self, *args: str) -> str:
        """Run `radosgw-admin ARGS` against this cluster; return its output."""
        return output([*self._tool("radosgw-admin", "-n", "client.admin"), *args])

    def create_account(self, name: str = "cache") -> S3Account:
        """A new RGW user with fresh keys."""
        access = uuid.uuid4().hex[:20].upper()
        secret = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.admin("user", "create", "--uid", name, "--display-name", name,
                   "--access-key", access, "--secret-key", secret)
        return S3Account(self.endpoint, access, secret)

    def gateway(self) -> Optional[Process]:
        """The radosgw process (for tests that stop the object store)."""
        return next((p for p in self.processes if p.name == "radosgw"), None)

    def stop_gateway(self) -> None:
        """Stop the S3 gateway alone: the object store is away, the cluster behind it keeps its data."""
        gateway = self.gateway()
        if gateway is not None:
            gateway.stop(timeout=10.0)
            self.processes.remove(gateway)

    def start_gateway(self, timeout: float = 30.0) -> None:
        """Start the S3 gateway (again) on its port; return once it answers."""
        if self.gateway() is not None:
            return
        gateway = start("radosgw", self._tool("radosgw", "-f", "-n", "client.rgw"),
                        self.root / "log" / "rgw.out")
        self.processes.append(gateway)
        wait_for_http(f"{self.endpoint}/", timeout=timeout, process=gateway)

    def log_tails(self) -> str:
        """The last lines of every daemon's log, for a failure message."""
        parts = []
        for path in sorted((self.root / "log").glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the gateway, the OSD, then the monitor, and remove the cluster's folder."""
        for process in reversed(self.processes):
            process.stop(timeout=10.0)
        self.processes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> CephCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(
    root: Optional[Path] = None,
    *,
    host: str = LOOPBACK,
    launcher: tuple[str, ...] = (),
    timeout: float = 30.0,
) -> CephCluster:
    """Start a single-node Ceph cluster with radosgw in `root` (a fresh temporary folder by default).

    Returns once the S3 gateway answers; raises HarnessError with the daemons' log tails when
    a daemon fails. Ports are free loopback ports (inside a namespace, fixed ones are free too).
    """
    missing = [tool for tool in ("ceph-mon", "ceph-osd", "radosgw") if shutil.which(tool) is None]
    if missing:
        raise HarnessError(f"{', '.join(missing)} not installed: run `./invoke install-deps --groups test`")
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="rc-ceph-")) if root is None else root
    for folder in ("run", "log", "mon", "osd", "rgw"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    mon_port = free_port() if not launcher else 3300
    rgw_port = free_port() if not launcher else 7480
    fsid = str(uuid.uuid4())
    cluster = CephCluster(root=root, host=host, rgw_port=rgw_port, launcher=tuple(launcher))
    cluster.conf.write_text(_conf(root, fsid, mon_port, rgw_port, host))
    try:
        monmap = str(root / "monmap")
        run([*cluster.launcher, "monmaptool", "--create", "--fsid", fsid,
             "--addv", "a", f"[v2:{host}:{mon_port}]", monmap], capture=True)
        run(cluster._tool("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap), capture=True)
        cluster.processes.append(
            start("ceph-mon", cluster._tool("ceph-mon", "-f", "-i", "a"), root / "log" / "mon.out"))
        osd_id = output(cluster._tool("ceph", "--connect-timeout", "15", "osd", "create")).strip()
        run(cluster._tool("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", str(uuid.uuid4())),
            capture=True)
        cluster.processes.append(
            start("ceph-osd", cluster._tool("ceph-osd", "-f", "-i", osd_id), root / "log" / "osd.out"))
        cluster.start_gateway(timeout)
    except BaseException as exc:
        tails = cluster.log_tails()
        cluster.stop()
        if isinstance(exc, Exception) and not isinstance(exc, HarnessError):
            raise HarnessError(f"the Ceph test cluster did not start: {exc}\n{tails}") from exc
        raise
    cluster.started_in = time.monotonic() - began
    return cluster
