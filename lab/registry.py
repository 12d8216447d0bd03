"""Runs real Distribution registries (`docker-registry serve`) on 127.0.0.1 for integration tests.

Each registry gets its own free port, a debug port (`/debug/vars`) on another loopback port,
filesystem storage in a temporary folder, and a JSON log file. Variants: plain, htpasswd
(basic auth), token auth (see `tokenauth.TokenServer.registry_auth`), proxy (pull-through
cache of another registry) and read-only.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from box.files import atomic_write_text
from box.run import Process, start
from lab.procs import LOOPBACK, HarnessError, free_port, wait_for_v2

REGISTRY_BIN = os.environ.get("REGISTRY_CACHE_TEST_REGISTRY_BIN", "/usr/bin/docker-registry")

# A fixed HTTP secret: keeps the log free of the "generated random secret" warning and makes
# uploads survive a restart of the same registry.
_HTTP_SECRET = "registry-cache-integration-tests"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `extra` merged in (nested mappings merged, other values replaced)."""
    merged = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def registry_config(
    *,
    port: int,
    debug_port: int,
    storage: Path,
    auth: Mapping[str, Any] | None = None,
    proxy: Mapping[str, Any] | None = None,
    readonly: bool = False,
    extra: Mapping[str, Any] | None = None,
    host: str = LOOPBACK,
) -> dict[str, Any]:
    """The Distribution 2.8 config of one test registry, as a dict (written out as YAML)."""
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": f"{host}:{port}",
            "secret": _HTTP_SECRET,
            "debug": {"addr": f"{host}:{debug_port}"},
        },
    }
    if readonly:
        config["storage"]["maintenance"] = {"readonly": {"enabled": True}}
    if auth:
        config["auth"] = copy.deepcopy(dict(auth))
    if proxy:
        config["proxy"] = copy.deepcopy(dict(proxy))
    if extra:
        config = deep_merge(config, extra)
    return config


def htpasswd_auth(
    workdir: Path, users: Mapping[str, str], realm: str = "test-realm"
) -> dict[str, Any]:
    """Write a bcrypt htpasswd file for `users` and return the matching `auth:` section."""
    import bcrypt  # only the htpasswd variant needs it

    path = workdir / "htpasswd"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}"
        for user, password in users.items()
    ]
    atomic_write_text(path, "\n".join(lines) + "\n", mode=0o600)
    return {"htpasswd": {"realm": realm, "path": str(path)}}


@dataclass
class Registry:
    """One running `docker-registry serve` process on 127.0.0.1."""

    name: str
    port: int
    debug_port: int
    workdir: Path
    storage: Path
    config_path: Path
    config: dict[str, Any]
    process: Process | None = field(default=None, repr=False)
    # where it listens: 127.0.0.1, or an address inside a test network namespace (netem.py)
    bind_host: str = LOOPBACK
    # argv prefix that runs the registry elsewhere, e.g. `ip netns exec NS`
    launcher: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as skopeo and docker references want it."""
        return f"{self.bind_host}:{self.port}"

    @property
    def url(self) -> str:
        """The registry root URL, e.g. for a proxy's `remoteurl`."""
        return f"http://{self.host}"

    @property
    def debug_url(self) -> str:
        """The debug server root (`/debug/vars`, `/debug/health`)."""
        return f"http://{self.bind_host}:{self.debug_port}"

    @property
    def log_path(self) -> Path:
        """Where the registry's stdout and stderr go."""
        return self.workdir / "registry.log"

    def log_text(self) -> str:
        """Everything the registry logged so far (all of its runs)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def json_log(self) -> list[dict[str, Any]]:
        """The registry's JSON log entries so far (the Apache-style access lines left out)."""
        entries = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def alive(self) -> bool:
        """Whether the registry process runs."""
        return self.process is not None and self.process.alive()

    def start(self, *, wait: bool = True, timeout: float = 20.0) -> Registry:
        """Start the process (again) with the same config and port; wait until `/v2/` answers."""
        if self.alive():
            return self
        self.process = start(
            self.name, [*self.launcher, REGISTRY_BIN, "serve", str(self.config_path)], self.log_path
        )
        if wait:
            try:
                wait_for_v2(self.url, timeout=timeout, process=self.process)
            except HarnessError:
                self.stop()
                raise
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the process by its pid (SIGTERM, then SIGKILL); return its exit status."""
        if self.process is None:
            return None
        return self.process.stop(timeout=timeout)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(path: Path, config: Mapping[str, Any]) -> None:
    """Write a registry config as YAML, readable only by its owner (it may hold passwords)."""
    atomic_write_text(path, yaml.safe_dump(dict(config), sort_keys=False), mode=0o600)


def start_registry(
    workdir: Path,
    name: str = "upstream",
    *,
    auth: Mapping[str, Any] | None = None,
    proxy: Mapping[str, Any] | None = None,
    readonly: bool = False,
    storage: Path | None = None,
    port: int | None = None,
    extra: Mapping[str, Any] | None = None,
    wait: bool = True,
    timeout: float = 20.0,
    bind_host: str = LOOPBACK,
    launcher: tuple[str, ...] = (),
) -> Registry:
    """Start a registry on 127.0.0.1:<free port> with its config, storage and log under `workdir`.

    `storage` may point at another registry's storage (e.g. a read-only registry over a
    proxy's cache). With `wait`, returns once `GET /v2/` answers (any status) and raises
    `HarnessError` with the log's tail if the process dies first (it is stopped then).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    storage = storage if storage is not None else workdir / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    debug_port = free_port()
    while debug_port == port:
        debug_port = free_port()
    config = registry_config(
        port=port,
        debug_port=debug_port,
        storage=storage,
        auth=auth,
        proxy=proxy,
        readonly=readonly,
        extra=extra,
        host=bind_host,
    )
    config_path = workdir / "config.yml"
    write_config(config_path, config)
    registry = Registry(
        name=name,
        port=port,
        debug_port=debug_port,
        workdir=workdir,
        storage=storage,
        config_path=config_path,
        config=config,
        bind_host=bind_host,
        launcher=tuple(launcher),
    )
    return registry.start(wait=wait, timeout=timeout)
