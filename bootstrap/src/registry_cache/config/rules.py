"""The rules of the registry-cache format a schema cannot say: addresses, free ports, sizes, warm images."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from typing import Any, Optional
from urllib.parse import urlsplit

from registry_cache.config.document import Document, KeyPath, is_int
from registry_cache.config.endpoint import check_registries, upstream_url
from registry_cache.config.files import check_storage, read_secret
from registry_cache.config.model import (
    DEBUG_PORT_OFFSET,
    DEFAULT_LISTEN,
    DEFAULT_LOG_LEVEL,
    DEFAULT_METRICS_PORT,
    DEFAULT_RECONNECT_INTERVAL,
    DEFAULT_STORAGE,
    CacheConfig,
    Mirror,
)
from registry_cache.config.schema import check_schema
from registry_cache.config.security import check_auth, check_tls
from registry_cache.config.storage import check_s3

# Names of Docker Hub that are no registry endpoint (the website); its registry is registry-1.
DOCKER_HUB_WEBSITES = frozenset({"docker.io", "www.docker.io", "hub.docker.com"})


def upstream_problem(url: str) -> Optional[str]:
    """Say what is wrong with an upstream URL, or None when it is a registry root URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"'{url}' is not an http(s) URL; use the registry root, e.g. https://ghcr.io"
    if parts.username or parts.password:
        return "must not carry credentials; use username and password_file instead"
    if (parts.hostname or "") in DOCKER_HUB_WEBSITES:
        return (f"'{url}' is Docker Hub's name, not its registry endpoint; "
                "use https://registry-1.docker.io")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        root = f"{parts.scheme}://{parts.netloc}"
        return (f"'{url}' has a path; Distribution proxies a whole registry, "
                f"so give its root: {root}")
    return None


class Checker:
    """Checks the registry-cache format against the schema, then the rules a schema cannot say."""

    def __init__(self, doc: Document, base_dir: str, check_storage: bool) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.check_storage = check_storage

    def check(self, data: dict[str, Any]) -> Optional[CacheConfig]:
        """The config `data` says, or None when a problem was reported to the document."""
        check_schema(self.doc, data)
        listen = data.get("listen", DEFAULT_LISTEN)
        if isinstance(listen, str) and not _is_ip(listen):
            self.doc.add(
                ("listen",), f"'{listen}' is not an IP address; use 0.0.0.0 (every interface) "
                "or one address of this machine such as 127.0.0.1",
            )
        storage = data.get("storage", DEFAULT_STORAGE)
        shared = None
        if isinstance(storage, dict):  # a bucket every node shares; `path` is this node's own folder
            shared = check_s3(self.doc, storage.get("s3"), self.base_dir, probe=self.check_storage)
            storage = storage.get("path", DEFAULT_STORAGE)
        storage_root = None
        if isinstance(storage, str) and storage:
            storage_root = os.path.normpath(os.path.join(self.base_dir, storage))
            if self.check_storage:
                check_storage(self.doc, ("storage",), storage_root)
        mirrors_data = data.get("mirrors")
        mirrors: list[Mirror] = []
        if isinstance(mirrors_data, dict):
            debug_ports = self._check_ports(mirrors_data, data.get("metrics_port"))
            for name, spec in mirrors_data.items():
                if isinstance(spec, dict):
                    mirror = self._mirror(str(name), spec, storage_root or "", debug_ports.get(str(name)))
                    if mirror is not None and shared is not None:
                        mirror = dataclasses.replace(mirror, s3=shared)
                    if mirror is not None:
                        mirrors.append(mirror)
        check_registries(self.doc, [(m.name, m.upstream) for m in mirrors])
        max_size = self._size(("max_size",), data.get("max_size"))
        tls = check_tls(self.doc, data.get("tls"), self.base_dir, listen)
        auth = check_auth(self.doc, data.get("auth"), tls, self.base_dir)
        if self.doc.problems or storage_root is None:
            return None
        return CacheConfig(
            source=self.doc.filename,
            listen=listen,
            storage=storage_root,
            mirrors=tuple(mirrors),
            log_level=data.get("log_level", DEFAULT_LOG_LEVEL),
            reconnect_interval=data.get("reconnect_interval", DEFAULT_RECONNECT_INTERVAL),
            max_size=max_size,
            metrics_port=data.get("metrics_port", DEFAULT_METRICS_PORT),
            endpoint_redirects=data.get("endpoint_redirects", True),
            tls=tls,
            auth=auth,
            s3=shared,
        )

    def _mirror(
        self, name: str, spec: dict[str, Any], storage_root: str, debug_port: Optional[int]
    ) -> Optional[Mirror]:
        base: KeyPath = ("mirrors", name)
        upstream = spec.get("upstream")
        if isinstance(upstream, str):
            upstream = upstream_url(upstream)
            problem = upstream_problem(upstream)
            if problem:
                self.doc.add((*base, "upstream"), problem)
        password = spec.get("password")
        password_file = spec.get("password_file")
        username = spec.get("username")
        if password is not None and password_file is not None:
            self.doc.add((*base, "password_file"), "give either password or password_file, not both")
        elif isinstance(password_file, str) and password_file:
            password = read_secret(self.doc, self.base_dir, (*base, "password_file"), password_file)
        if username is not None and password is None and password_file is None:
            self.doc.add((*base, "username"), "needs a password_file (or password) beside it")
        if username is None and (spec.get("password") is not None or password_file is not None):
            key = "password" if spec.get("password") is not None else "password_file"
            self.doc.add((*base, key), "needs a username beside it")
        port = spec.get("port")
        if not isinstance(upstream, str) or not isinstance(port, int) or isinstance(port, bool):
            return None
        return Mirror(
            name=name,
            upstream=upstream.rstrip("/"),
            port=port,
            debug_port=debug_port,
            storage=os.path.join(storage_root, name),
            username=username if isinstance(username, str) else None,
            password=password if isinstance(password, str) else None,
            max_size=self._size((*base, "max_size"), spec.get("max_size")),
            warm=self._warm((*base, "warm"), spec.get("warm")),
        )

    def _size(self, path: KeyPath, value: Any) -> Optional[int]:
        from registry_cache import sizes

        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            return None  # absent, or the schema already said what is wrong
        problem = sizes.size_problem(value)
        if problem:
            self.doc.add(path, problem)
            return None
        return sizes.parse_size(value)

    def _warm(self, path: KeyPath, items: Any) -> tuple[dict[str, Any], ...]:
        from registry_cache.imageref import platform_problem, reference_problem

        warm = []
        for index, item in enumerate(items if isinstance(items, list) else []):
            spec = {"image": item} if isinstance(item, str) else item
            image = spec.get("image") if isinstance(spec, dict) else None
            if not isinstance(image, str):
                continue  # the schema already said what is wrong
            item_path = (*path, str(index)) if isinstance(item, str) else (*path, str(index), "image")
            problem = reference_problem(image)
            if problem:
                self.doc.add(item_path, problem)
                continue
            platforms = spec.get("platforms")
            for number, platform in enumerate(platforms if isinstance(platforms, list) else []):
                problem = platform_problem(platform) if isinstance(platform, str) else None
                if problem:
                    self.doc.add((*path, str(index), "platforms", str(number)), problem)
            chosen = list(platforms) if isinstance(platforms, list) else None
            warm.append({"image": image, "platforms": chosen})
        return tuple(warm)

    def _check_ports(self, mirrors_data: dict[str, Any], metrics_port: Any) -> dict[str, Optional[int]]:
        """Every port written must be free of the others; return each mirror's debug port.

        Ports as written are claimed first, in file order (the later one of a clash is
        reported, naming the key that holds it). A mirror without `debug_port` then gets
        port + 10000 when that is free, else no debug endpoint: a default never clashes.
        """
        claims: list[tuple[int, KeyPath, int]] = []  # (line, key path, port)
        if is_int(metrics_port) and 1 <= metrics_port <= 65535:
            claims.append((self.doc.line_of(("metrics_port",)), ("metrics_port",), metrics_port))
        for name, spec in mirrors_data.items():
            if not isinstance(spec, dict):
                continue
            for key in ("port", "debug_port"):
                path: KeyPath = ("mirrors", str(name), key)
                if is_int(spec.get(key)) and 1 <= spec[key] <= 65535:
                    claims.append((self.doc.line_of(path), path, spec[key]))
        used: dict[int, str] = {}
        if metrics_port is None:
            used[DEFAULT_METRICS_PORT] = \
                f"the metrics endpoint (metrics_port, default {DEFAULT_METRICS_PORT})"
        for _line, path, number in sorted(claims, key=lambda c: c[0]):
            if number in used:
                fix = "give each mirror its own port"
                if "metrics" in used[number] or path == ("metrics_port",):
                    fix = "set metrics_port to a port no mirror uses"
                self.doc.add(path, f"port {number} is already used by {used[number]}; {fix}")
            else:
                used[number] = ".".join(path)
        debug_ports: dict[str, Optional[int]] = {}
        for name, spec in mirrors_data.items():
            port = spec.get("port") if isinstance(spec, dict) else None
            if not is_int(port):
                continue
            if "debug_port" in spec:
                debug_ports[str(name)] = spec["debug_port"] if is_int(spec["debug_port"]) else None
                continue
            default = port + DEBUG_PORT_OFFSET
            if default <= 65535 and default not in used:
                used[default] = f"mirrors.{name} (its default debug port)"
                debug_ports[str(name)] = default
            else:
                debug_ports[str(name)] = None
        return debug_ports


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
