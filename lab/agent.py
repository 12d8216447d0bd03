"""The agent as tests and benchmarks run it: `registry-cache serve` on 127.0.0.1, its commands,
and the front's memory while it streams a huge blob.

The agent runs as a child process (`python -m registry_cache`), exactly as the box runs it; the
lab never imports the agent's modules.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from registry_cache.state import read_state

from box.run import run
from box.sizes import MiB
from box.wait import wait_until
from lab import images, procs
from lab.fake_upstream import HugeBlobUpstream, pattern_bytes

AGENT = [sys.executable, "-m", "registry_cache"]


class Cache:
    """A `registry-cache serve` process and the files it works with."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.config = workdir / "config.yml"
        self.process: procs.Process | None = None
        self.ports: dict[str, int] = {}
        self.debug_ports: dict[str, int] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment the agent's commands run with: this cache's root."""
        return {**os.environ, "REGISTRY_CACHE_ROOT": str(self.root)}

    def write_config(self, mirrors: dict[str, dict], **top: object) -> None:
        """Write config.yml with `mirrors` (name: keys) on free ports and the `top` keys."""
        # a mapping (e.g. an S3 bucket, `s3_storage`) is written as YAML's flow form, i.e. JSON
        storage = top.pop("storage", "cache")
        lines = ["listen: 127.0.0.1", f"storage: {json.dumps(storage)}", "reconnect_interval: 1"]
        lines += [f"{k}: {v}" for k, v in top.items()]
        lines.append("mirrors:")
        for name, spec in mirrors.items():
            self.ports.setdefault(name, spec.get("port") or procs.free_port())
            lines.append(f"  {name}:")
            lines.append(f"    port: {self.ports[name]}")
            self.debug_ports.setdefault(name, procs.free_port())
            lines.append(f"    debug_port: {self.debug_ports[name]}")
            lines += [f"    {k}: {v}" for k, v in spec.items() if k != "port"]
        self.config.write_text("\n".join(lines) + "\n")

    def password_file(self, name: str, password: str) -> str:
        """Write `password` to secrets/`name` beside the config; return the path config.yml names."""
        secrets = self.workdir / "secrets"
        secrets.mkdir(exist_ok=True)
        (secrets / name).write_text(password + "\n")
        return f"secrets/{name}"

    def s3_storage(self, endpoint: str, bucket: str, access_key: str, secret_key: str,
                   **extra: object) -> dict[str, object]:
        """`storage:` naming an S3 bucket (its secret written beside the config); node files in cache/."""
        return {"path": "cache", "s3": {"endpoint": endpoint, "bucket": bucket, "access_key": access_key,
                                        "secret_file": self.password_file("s3.secret", secret_key),
                                        **extra}}

    def start(self, *, wait_for: tuple[str, ...] | None = None) -> None:
        """Start `serve`; wait until the mirrors `wait_for` (default: all) answer."""
        self.process = procs.start(
            "registry-cache serve", [*AGENT, "serve", "--config", str(self.config)],
            self.workdir / "serve.log", env=self.env,
        )
        for name in wait_for if wait_for is not None else tuple(self.ports):
            self.wait_serving(name)

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        """Wait until mirror `name` answers /v2/."""
        procs.wait_for_v2(f"http://{self.host(name)}", timeout=timeout, process=self.process)

    def host(self, name: str) -> str:
        """host:port of mirror `name`, as a client names it."""
        return f"127.0.0.1:{self.ports[name]}"

    def stop(self) -> int | None:
        """Stop `serve` (if it runs); its exit code."""
        return self.process.stop(timeout=40) if self.process else None

    def agent(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run `registry-cache --root ROOT ARGS...` and return what it did (its exit code unchecked)."""
        return run([*AGENT, "--root", str(self.root), *args], capture=True, check=False, timeout=timeout,
                   env=self.env)

    def status(self) -> dict[str, dict]:
        """`status --json`, by mirror name."""
        result = self.agent("status", "--json", "--no-rate-limit")
        return {m["name"]: m for m in json.loads(result.stdout)}

    def state(self, name: str) -> dict:
        """Mirror `name`'s state file as `serve` last wrote it, read by its owner (OSError when none)."""
        state = read_state(str(self.workdir / "cache" / name))
        if state is None:
            raise FileNotFoundError(f"mirror {name} has no state file yet")
        return state.as_dict()

    def wait_state(self, name: str, timeout: float = 30, **wanted: object) -> dict:
        """Wait until mirror `name`'s state has every `wanted` key=value; return that state."""
        state: dict = {}

        def reached() -> bool:
            nonlocal state
            try:
                state = self.state(name)
            except (OSError, ValueError):
                state = {}
            return all(state.get(k) == v for k, v in wanted.items())

        wait_until(reached, f"mirror {name} reaching {wanted}", timeout=timeout, interval=0.2,
                   detail=lambda: f"last state {state}\n{self.process.log_tail(40) if self.process else ''}",
                   error=AssertionError)
        return state

    def log(self) -> str:
        """What `serve` logged."""
        return self.process.log_text() if self.process else ""


class ClusterNode(Cache):
    """A cache node of a cluster on one bucket, named after its folder (REGISTRY_CACHE_NODE)."""

    @property
    def env(self) -> dict[str, str]:
        """The agent's environment: the cache's root and the node's name."""
        return {**super().env, "REGISTRY_CACHE_NODE": self.workdir.name}


class TlsCache(Cache):
    """A `registry-cache serve` process with `tls: auto`; each start logs to a file of its own."""

    def __init__(self, workdir: Path, mirrors: dict[str, str], extra: str = "",
                 warm: dict[str, list[str]] | None = None) -> None:
        super().__init__(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {name: procs.free_port() for name in mirrors}
        lines = ["listen: 127.0.0.1", "storage: cache", "tls: auto", extra, "mirrors:"]
        for name, upstream in mirrors.items():
            lines += [f"  {name}:", f"    upstream: {upstream}", f"    port: {self.ports[name]}",
                      f"    debug_port: {procs.free_port()}"]
            if warm and name in warm:
                lines.append(f"    warm: {json.dumps(warm[name])}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *, wait_for: tuple[str, ...] | None = None) -> None:
        """Start `serve`; wait until the mirrors `wait_for` (default: all) answer over TLS."""
        self.process = procs.start("registry-cache serve", [*AGENT, "serve", "--config", str(self.config)],
                                   self.workdir / f"serve-{time.monotonic_ns()}.log", env=self.env)
        for name in wait_for if wait_for is not None else tuple(self.ports):
            self.wait_serving(name)

    def wait_serving(self, name: str, timeout: float = 60) -> None:
        """Wait until mirror `name` answers /v2/ over TLS, trusting only the cache's CA."""
        procs.wait_for_v2(self.url(name), timeout=timeout, process=self.process,
                          ca=self.workdir / "tls" / "ca.crt")

    def stop(self) -> int | None:
        """Stop `serve` (if it runs); its exit code."""
        code = super().stop()
        self.process = None
        return code

    def url(self, name: str) -> str:
        """https:// URL of mirror `name`."""
        return f"https://{self.host(name)}"

    def client_files(self, out: Path) -> Path:
        """Run client-config --output-dir for podman/skopeo; return the certs.d folder it wrote."""
        result = self.agent("client-config", "--host", "127.0.0.1", "--format", "podman",
                            "--output-dir", str(out))
        assert result.returncode == 0, result.stderr
        return out / "etc" / "containers" / "certs.d"

    def log(self) -> str:
        """What every start of `serve` logged, oldest first."""
        return "".join(p.read_text() for p in sorted(self.workdir.glob("serve-*.log")))


def pull_all(host: str, imgs: Iterable[images.TestImage], dest: Path) -> None:
    """Pull every image from `host` (an index with all its platforms) into fresh folders under `dest`."""
    for img in imgs:
        got = images.pull_image(img, host, dest / f"{img.kind}-{time.monotonic_ns()}")
        if got.digest != img.digest:
            raise AssertionError(f"{img.kind} image from {host}: digest {got.digest}, pushed {img.digest}")


def blob_requests(imgs: Iterable[images.TestImage]) -> tuple[int, int]:
    """(blob GETs a full pull of every image makes, distinct blobs among them)."""
    digests = [b.digest for img in imgs for b in img.blobs]
    return len(digests), len(set(digests))


def rss_kib(pid: int) -> int:
    """Resident memory of one process now, in KiB."""
    return _proc_status_kib(pid, "VmRSS:")


def peak_rss_kib(pid: int) -> int:
    """Peak resident memory of one process so far, in KiB."""
    return _proc_status_kib(pid, "VmHWM:")


def _proc_status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


@dataclass
class FrontMemory:
    """What `front_memory` saw: the front's peak RSS and what reached the readers and the upstream."""

    peak_kib: int
    digest: str  # the blob's digest
    received: list[str]  # the digest of what each reader got
    upstream_gets: int  # GETs of the blob the upstream answered


def front_memory(size: int, workdir: Path, *, readers: int = 2, timeout: float = 600) -> FrontMemory:
    """Start a front (`python -m registry_cache.front`) on a generated `size`-byte blob and have
    `readers` clients read it at once; the front's peak memory tells whether it streams."""
    digest, _ = pattern_bytes(size)
    with HugeBlobUpstream(size) as upstream:
        port = procs.free_port()
        argv = [sys.executable, "-m", "registry_cache.front", "--upstream", upstream.url,
                "--port", str(port), "--spool", str(workdir / "huge-spool")]
        process = procs.start("front", argv, workdir / "front.log")
        try:
            procs.wait_for_v2(f"http://127.0.0.1:{port}", process=process)
            url = f"http://127.0.0.1:{port}/v2/lab/huge/blobs/{digest}"
            received: list[str] = []

            def read() -> None:
                hasher = hashlib.sha256()
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    while chunk := resp.read(MiB):
                        hasher.update(chunk)
                received.append("sha256:" + hasher.hexdigest())

            threads = [threading.Thread(target=read) for _ in range(readers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            peak_kib = peak_rss_kib(process.pid)
        finally:
            process.stop()
        return FrontMemory(peak_kib, digest, received, len(upstream.gets(digest)))
