"""The seed format: a plain Distribution config with a `proxy:` section, run as written as one mirror."""

from __future__ import annotations

import os
from typing import Any, Optional

from registry_cache.config.document import Document, dig
from registry_cache.config.files import storage_problem
from registry_cache.config.model import (
    DEFAULT_LISTEN,
    DEFAULT_METRICS_PORT,
    SEED_MIRROR_NAME,
    CacheConfig,
    Mirror,
)
from registry_cache.config.rules import upstream_problem


def is_seed(data: dict[str, Any]) -> bool:
    """True when `data` is a Distribution config that proxies (the seed format)."""
    return "version" in data and "proxy" in data


class SeedChecker:
    """Accepts the seed format: a plain Distribution config with a proxy section, run as written."""

    def __init__(self, doc: Document, base_dir: str, check_storage: bool) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.check_storage = check_storage

    def check(self, data: dict[str, Any]) -> Optional[CacheConfig]:
        """The one-mirror config `data` says, or None when a problem was reported to the document."""
        remote = dig(data, "proxy", "remoteurl")
        if not isinstance(remote, str):
            self.doc.add(("proxy", "remoteurl"), "missing; set it to the upstream registry's root URL")
        else:
            problem = upstream_problem(remote)
            if problem:
                self.doc.add(("proxy", "remoteurl"), problem)
        addr = dig(data, "http", "addr")
        port = None
        listen = DEFAULT_LISTEN
        if not isinstance(addr, str) or ":" not in addr:
            self.doc.add(("http", "addr"), "missing; set it to HOST:PORT, e.g. ':5000'")
        else:
            host, _, port_text = addr.rpartition(":")
            listen = host.strip("[]") or DEFAULT_LISTEN
            if port_text.isdigit() and 1 <= int(port_text) <= 65535:
                port = int(port_text)
            else:
                self.doc.add(("http", "addr"), f"'{addr}' has no valid port; use e.g. ':5000'")
        root = dig(data, "storage", "filesystem", "rootdirectory")
        if not isinstance(root, str) or not root:
            self.doc.add(("storage", "filesystem", "rootdirectory"),
                         "missing; the seed format needs filesystem storage")
            root = None
        else:
            root = os.path.normpath(os.path.join(self.base_dir, root))
            if self.check_storage:
                problem = storage_problem(root)
                if problem:
                    self.doc.add(("storage", "filesystem", "rootdirectory"), problem)
        debug_addr = dig(data, "http", "debug", "addr")
        debug_port = None
        if isinstance(debug_addr, str) and debug_addr.rpartition(":")[2].isdigit():
            debug_port = int(debug_addr.rpartition(":")[2])
        for number, key in ((port, ("http", "addr")), (debug_port, ("http", "debug", "addr"))):
            if number == DEFAULT_METRICS_PORT:
                self.doc.add(key, f"port {number} is the metrics endpoint's (metrics_port, which the "
                                  "seed format cannot move); use another port")
        if self.doc.problems or port is None or root is None or not isinstance(remote, str):
            return None
        username = dig(data, "proxy", "username")
        password = dig(data, "proxy", "password")
        mirror = Mirror(
            name=SEED_MIRROR_NAME,
            upstream=remote.rstrip("/"),
            port=port,
            debug_port=debug_port,
            storage=root,
            username=username if isinstance(username, str) else None,
            password=password if isinstance(password, str) else None,
            raw=data,
        )
        return CacheConfig(
            source=self.doc.filename,
            listen=listen,
            storage=os.path.dirname(root),
            mirrors=(mirror,),
        )
