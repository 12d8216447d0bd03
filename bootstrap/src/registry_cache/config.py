"""Reads config.yml, reports every problem at once as FILE:LINE: key.path: message, and models it."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import ipaddress
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Optional
from urllib.parse import urlsplit

import yaml

from registry_cache import secure

log = logging.getLogger(__name__)

EMBEDDED_DEFAULT = "<embedded default>"
DEFAULT_LISTEN = "0.0.0.0"
DEFAULT_STORAGE = "/vagrant/data"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_RECONNECT_INTERVAL = 30
DEBUG_PORT_OFFSET = 10000
DEFAULT_METRICS_PORT = 9110
# Names of Docker Hub that are no registry endpoint (the website); its registry is registry-1.
DOCKER_HUB_WEBSITES = frozenset({"docker.io", "www.docker.io", "hub.docker.com"})
# The single mirror that a plain Distribution config (the seed format) becomes.
SEED_MIRROR_NAME = "default"
# Keys whose values are secrets: never echoed in a message.
SECRET_KEYS = frozenset({"password", "bcrypt"})

Path = tuple[str, ...]
_PLAIN_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located by line and dotted key path."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class ConfigError(Exception):
    """The config is invalid; `problems` lists every problem found, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Mirror:
    """One pull-through mirror: a Distribution registry proxying one upstream registry."""

    name: str
    upstream: str
    port: int
    storage: str
    debug_port: Optional[int] = None
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    # Size cap of this mirror's cache in bytes, and the images warmed through it (gc.py, warm.py).
    max_size: Optional[int] = None
    warm: tuple[dict[str, Any], ...] = ()
    # The seed format: a Distribution config that runs as written.
    raw: Optional[dict[str, Any]] = field(default=None, repr=False, compare=True)

    @property
    def is_docker_hub(self) -> bool:
        """True when the upstream is Docker Hub, whose images `registry-mirrors` can redirect."""
        host = urlsplit(self.upstream).hostname or ""
        return host in {"registry-1.docker.io", "docker.io", "index.docker.io"}


@dataclass(frozen=True)
class CacheConfig:
    """The whole validated config: where mirrors listen, where they cache, and the mirrors."""

    source: str
    listen: str
    storage: str
    mirrors: tuple[Mirror, ...]
    log_level: str = DEFAULT_LOG_LEVEL
    reconnect_interval: int = DEFAULT_RECONNECT_INTERVAL
    max_size: Optional[int] = None  # size cap of the whole cache in bytes
    metrics_port: int = DEFAULT_METRICS_PORT
    tls: Optional[secure.TlsSettings] = None  # None: plain HTTP
    auth: Optional[secure.AuthSettings] = None  # None: anyone who reaches a mirror may pull
    # The files the config was read from (config.yml, password files): absolute path and the
    # digest of the bytes parsed. With the cache's owner, they are all the rendered mirrors
    # depend on, so `apply` can tell "nothing changed" without parsing anything.
    inputs: tuple[tuple[str, str], ...] = ()
    # Things that work but should not stay so (a secret file others can read); never secrets.
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    def fingerprint(self) -> Optional[str]:
        """The input fingerprint of this config as parsed (None while its storage does not exist)."""
        return input_fingerprint(dict(self.inputs), self.storage)

    def mirror(self, name: str) -> Mirror:
        """Return the mirror called `name`."""
        for mirror in self.mirrors:
            if mirror.name == name:
                return mirror
        raise KeyError(name)


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema of config.yml shipped with the package."""
    text = resources.files("registry_cache").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


def default_config_text() -> str:
    """Return the embedded default config: one Docker Hub mirror on port 5000."""
    return resources.files("registry_cache").joinpath("default-config.yml").read_text("utf-8")


def load(path: Optional[str], *, check_storage: bool = True, default_if_missing: bool = False) -> CacheConfig:
    """Read and validate a config file; None, or a missing file when allowed: the embedded default.

    A file that does not exist is a ConfigError naming it, unless `default_if_missing`
    (the Vagrantfile's optional /vagrant/config.yml). Warnings are logged, and kept in the model.
    """
    if path is not None and not os.path.exists(path) and not default_if_missing:
        raise ConfigError([Problem(path, 1, "(file)", "does not exist; give the path of your "
                                   "config.yml (or --config-if-exists to fall back to the "
                                   "embedded default when it is missing)")])
    if path is None or not os.path.exists(path):
        return parse(default_config_text(), EMBEDDED_DEFAULT, base_dir="/", check_storage=False)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, 1, "(file)", f"cannot read the file: {_os_reason(exc)}")]) from exc
    base_dir = os.path.dirname(os.path.abspath(path))
    config = parse(text, path, base_dir=base_dir, check_storage=check_storage)
    for warning in config.warnings:
        log.warning("%s", warning)
    return dataclasses.replace(config, inputs=((os.path.abspath(path), _digest(raw)), *config.inputs))


def input_fingerprint(inputs: Mapping[str, str], storage: str) -> Optional[str]:
    """A digest of everything the rendered mirrors depend on, or None when `storage` does not exist.

    That is the agent's version, each input file (path -> digest of its bytes) and the owner
    of the cache root (the mirrors run as that account). Same inputs, same (deterministic)
    output: `apply` compares it with the last applied one to skip validation and rendering.
    """
    from registry_cache import __version__

    digest = hashlib.sha256(__version__.encode() + b"\0")
    for path in sorted(inputs):
        digest.update(f"{path}\0{inputs[path]}\0".encode())
    try:
        digest.update(str(os.stat(storage).st_uid).encode())
    except OSError:
        return None
    return digest.hexdigest()


def fingerprint_now(files: Iterable[str], storage: str) -> Optional[str]:
    """The input fingerprint of `files` as they are on disk now; None when one of them is gone."""
    digests = {}
    try:
        for path in files:
            with open(path, "rb") as handle:
                digests[path] = _digest(handle.read())
    except OSError:
        return None
    return input_fingerprint(digests, storage)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def parse(text: str, filename: str, *, base_dir: str, check_storage: bool = True) -> CacheConfig:
    """Validate config text; raise ConfigError listing every problem, or return the model."""
    doc = _Document(filename)
    data = doc.load(text)
    if doc.problems and data is None:
        raise ConfigError(doc.problems)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        doc.add((), f"the file is {what}; it needs a 'mirrors:' section (see examples/)")
        raise ConfigError(doc.problems)
    if "version" in data and "proxy" in data:
        config = _SeedChecker(doc, base_dir, check_storage).check(data)
    elif "version" in data and "mirrors" not in data:
        doc.add(("version",), "this is a plain Distribution registry config without a 'proxy:' "
                "section, so it would cache nothing; add 'proxy: {remoteurl: "
                "https://registry-1.docker.io}' to run it as one mirror (the seed format), or "
                "write a registry-cache config with 'mirrors:' (see examples/)")
        raise ConfigError(doc.problems)
    else:
        config = _Checker(doc, base_dir, check_storage).check(data)
    if doc.problems or config is None:
        raise ConfigError(doc.problems)
    return dataclasses.replace(config, inputs=tuple(sorted(doc.inputs.items())),
                               warnings=tuple(doc.warnings))


class _Document:
    """A YAML document with the line of every key, and the problems found in it."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[Path, int] = {(): 1}
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.inputs: dict[str, str] = {}  # files read besides the config: path -> digest
        self._constructor = yaml.constructor.SafeConstructor()

    def add(self, path: Path, message: str, line: Optional[int] = None) -> None:
        if line is None:
            line = self.line_of(path)
        shown = ".".join(path) if path else "(top level)"
        self.problems.append(Problem(self.filename, line, shown, message))

    def line_of(self, path: Path) -> int:
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path]

    def load(self, text: str) -> Any:
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            if exc.context == "while scanning a quoted scalar" and exc.context_mark:
                # a quoted value may span lines, so YAML notices only at the end of the file
                self.add((), "YAML syntax error: a quote opened on this line is never closed; "
                         "close it", exc.context_mark.line + 1)
                return None
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            reason = " ".join(p for p in (exc.context, exc.problem) if p)
            self.add((), f"YAML syntax error: {reason}; check the indentation and quoting", line)
            return None
        except yaml.YAMLError as exc:
            self.add((), f"YAML error: {exc}")
            return None
        if node is None:
            return None
        return self._value(node, ())

    def _value(self, node: yaml.Node, path: Path) -> Any:
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # a key as written: `true:` names "true", `5000:` names "5000", not True or 5000
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else \
                    self._scalar(key_node, path)
                key_path = (*path, str(key))
                if key in result:
                    first = self.lines.get(key_path, 0)
                    self.add(
                        key_path,
                        f"duplicate key (first on line {first}); YAML would silently keep "
                        "only the last one: remove or rename one of them",
                        key_node.start_mark.line + 1,
                    )
                    continue
                self.lines[key_path] = key_node.start_mark.line + 1
                result[key] = self._value(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                item_path = (*path, str(index))
                self.lines[item_path] = item.start_mark.line + 1
                items.append(self._value(item, item_path))
            return items
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.add(path, f"unsupported YAML value: {exc}", node.start_mark.line + 1)
            return None
        if _is_int(value) and not _PLAIN_DECIMAL.fullmatch(node.value):
            # YAML 1.1 reads 05000 as octal, 0x1389 as hex, 83:20 as base 60: not what was meant
            self.add(path, f"'{node.value}' reads as the number {value}; write a number as "
                           "plain decimal digits", node.start_mark.line + 1)
        return value


_TYPE_WORDS = {
    "object": "a mapping of keys",
    "string": "a string",
    "integer": "a whole number",
    "array": "a list",
    "boolean": "true or false",
}


class _Checker:
    """Checks the registry-cache format against the schema, then the rules a schema cannot say."""

    def __init__(self, doc: _Document, base_dir: str, check_storage: bool) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.check_storage = check_storage
        self.schema = load_schema()

    def check(self, data: dict[str, Any]) -> Optional[CacheConfig]:
        self._data = data
        self._schema_problems(data)
        listen = data.get("listen", DEFAULT_LISTEN)
        if isinstance(listen, str) and not _is_ip(listen):
            self.doc.add(
                ("listen",), f"'{listen}' is not an IP address; use 0.0.0.0 (every interface) "
                "or one address of this machine such as 127.0.0.1",
            )
        storage = data.get("storage", DEFAULT_STORAGE)
        storage_root = None
        if isinstance(storage, str) and storage:
            storage_root = os.path.normpath(os.path.join(self.base_dir, storage))
            if self.check_storage:
                self._check_writable(("storage",), storage_root)
        mirrors_data = data.get("mirrors")
        mirrors: list[Mirror] = []
        if isinstance(mirrors_data, dict):
            debug_ports = self._check_ports(mirrors_data, data.get("metrics_port"))
            for name, spec in mirrors_data.items():
                if isinstance(spec, dict):
                    mirror = self._mirror(str(name), spec, storage_root or "", debug_ports.get(str(name)))
                    if mirror is not None:
                        mirrors.append(mirror)
        max_size = self._size(("max_size",), data.get("max_size"))
        tls = secure.check_tls(self.doc, data.get("tls"), self.base_dir, listen)
        auth = secure.check_auth(self.doc, data.get("auth"), tls, self._read_secret)
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
            tls=tls,
            auth=auth,
        )

    def _schema_problems(self, data: dict[str, Any]) -> None:
        for error in _validator(self.schema).iter_errors(data):
            self._report(error)

    def _report(self, error: Any) -> None:
        path: Path = tuple(str(p) for p in error.absolute_path)
        kind = error.validator
        secret = bool(path) and path[-1] in SECRET_KEYS
        if kind == "additionalProperties":
            known = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known)):
                self.doc.add((*path, str(key)), "unknown key" + _did_you_mean(str(key), known))
        elif kind == "required":
            for key in error.validator_value:
                if key not in error.instance:
                    described = error.schema["properties"][key].get("description", "")
                    self.doc.add((*path, key), f"missing; add it. {described}".strip())
        elif kind == "type":
            got = "" if secret else f", not {_describe(error.instance)}"
            types = error.validator_value
            types = types if isinstance(types, list) else [types]
            wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
            self.doc.add(path, f"must be {wanted}{got}")
        elif kind in ("minimum", "maximum"):
            low = error.schema.get("minimum")
            high = error.schema.get("maximum")
            self.doc.add(path, f"{error.instance} is out of range; use a number from {low} to {high}")
        elif kind == "enum":
            choices = ", ".join(str(c) for c in error.validator_value if not isinstance(c, bool))
            self.doc.add(path, f"{_describe(error.instance)} is not allowed; use one of: {choices}")
        elif kind == "minLength":
            self.doc.add(path, "must not be empty")
        elif kind == "minProperties":
            self.doc.add(path, "defines no mirror; add one, e.g. 'dockerhub: {upstream: "
                         "https://registry-1.docker.io, port: 5000}'")
        elif kind == "pattern" and isinstance(error.instance, str) and path and \
                isinstance(self._at(path), dict) and error.instance in self._at(path):
            self.doc.add(
                (*path, error.instance),
                "a mirror name must be 1-32 lower-case letters, digits or dashes "
                "(it names a systemd unit and a cache folder), e.g. 'docker-hub'",
            )
        else:
            self.doc.add(path, "is not valid" if secret else error.message)

    def _at(self, path: Path) -> Any:
        return _dig(self._data, *path)

    def _mirror(
        self, name: str, spec: dict[str, Any], storage_root: str, debug_port: Optional[int]
    ) -> Optional[Mirror]:
        base: Path = ("mirrors", name)
        upstream = spec.get("upstream")
        if isinstance(upstream, str):
            self._check_upstream((*base, "upstream"), upstream)
        password = spec.get("password")
        password_file = spec.get("password_file")
        username = spec.get("username")
        if password is not None and password_file is not None:
            self.doc.add((*base, "password_file"), "give either password or password_file, not both")
        elif isinstance(password_file, str) and password_file:
            password = self._read_secret((*base, "password_file"), password_file)
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

    def _size(self, path: Path, value: Any) -> Optional[int]:
        from registry_cache import sizes

        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            return None  # absent, or the schema already said what is wrong
        problem = sizes.size_problem(value)
        if problem:
            self.doc.add(path, problem)
            return None
        return sizes.parse_size(value)

    def _warm(self, path: Path, items: Any) -> tuple[dict[str, Any], ...]:
        from registry_cache.warm import platform_problem, reference_problem

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

    def _check_upstream(self, path: Path, url: str) -> None:
        problem = upstream_problem(url)
        if problem:
            self.doc.add(path, problem)

    def _read_secret(self, path: Path, relative: str) -> Optional[str]:
        full = os.path.normpath(os.path.join(self.base_dir, relative))
        try:
            with open(full, "rb") as handle:
                raw = handle.read()
            secret = raw.decode("utf-8").strip()
        except FileNotFoundError:
            self.doc.add(path, f"{full} does not exist; put the password or token in it "
                               "(chmod 600), or fix the path (relative to this file)")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.doc.add(path, f"cannot read {full}: {_os_reason(exc)}")
            return None
        if not secret:
            self.doc.add(path, f"{full} is empty; put the password or token in it")
            return None
        self.doc.inputs[full] = _digest(raw)
        self._check_private(path, full, relative)
        return secret

    def _check_private(self, path: Path, full: str, relative: str) -> None:
        """Warn when a secret file can be read by its group or others."""
        try:
            mode = stat.S_IMODE(os.stat(full).st_mode)
        except OSError:
            return
        if mode & 0o077:
            line = self.doc.line_of(path)
            self.doc.warnings.append(Problem(
                self.doc.filename, line, ".".join(path),
                f"{full} can be read by its group or others (mode {mode:04o}) though it holds "
                f"a secret; run `chmod 600 {relative}` in the folder of "
                f"{os.path.basename(self.doc.filename)}",
            ))

    def _check_ports(self, mirrors_data: dict[str, Any], metrics_port: Any) -> dict[str, Optional[int]]:
        """Every port written must be free of the others; return each mirror's debug port.

        Ports as written are claimed first, in file order (the later one of a clash is
        reported, naming the key that holds it). A mirror without `debug_port` then gets
        port + 10000 when that is free, else no debug endpoint: a default never clashes.
        """
        claims: list[tuple[int, Path, int]] = []  # (line, key path, port)
        if _is_int(metrics_port) and 1 <= metrics_port <= 65535:
            claims.append((self.doc.line_of(("metrics_port",)), ("metrics_port",), metrics_port))
        for name, spec in mirrors_data.items():
            if not isinstance(spec, dict):
                continue
            for key in ("port", "debug_port"):
                path: Path = ("mirrors", str(name), key)
                if _is_int(spec.get(key)) and 1 <= spec[key] <= 65535:
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
            if not _is_int(port):
                continue
            if "debug_port" in spec:
                debug_ports[str(name)] = spec["debug_port"] if _is_int(spec["debug_port"]) else None
                continue
            default = port + DEBUG_PORT_OFFSET
            if default <= 65535 and default not in used:
                used[default] = f"mirrors.{name} (its default debug port)"
                debug_ports[str(name)] = default
            else:
                debug_ports[str(name)] = None
        return debug_ports

    def _check_writable(self, path: Path, directory: str) -> None:
        problem = storage_problem(directory)
        if problem:
            self.doc.add(path, problem)


class _SeedChecker:
    """Accepts the seed format: a plain Distribution config with a proxy section, run as written."""

    def __init__(self, doc: _Document, base_dir: str, check_storage: bool) -> None:
        self.doc = doc
        self.base_dir = base_dir
        self.check_storage = check_storage

    def check(self, data: dict[str, Any]) -> Optional[CacheConfig]:
        remote = _dig(data, "proxy", "remoteurl")
        if not isinstance(remote, str):
            self.doc.add(("proxy", "remoteurl"), "missing; set it to the upstream registry's root URL")
        else:
            problem = upstream_problem(remote)
            if problem:
                self.doc.add(("proxy", "remoteurl"), problem)
        addr = _dig(data, "http", "addr")
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
        root = _dig(data, "storage", "filesystem", "rootdirectory")
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
        debug_addr = _dig(data, "http", "debug", "addr")
        debug_port = None
        if isinstance(debug_addr, str) and debug_addr.rpartition(":")[2].isdigit():
            debug_port = int(debug_addr.rpartition(":")[2])
        for number, key in ((port, ("http", "addr")), (debug_port, ("http", "debug", "addr"))):
            if number == DEFAULT_METRICS_PORT:
                self.doc.add(key, f"port {number} is the metrics endpoint's (metrics_port, which the "
                                  "seed format cannot move); use another port")
        if self.doc.problems or port is None or root is None or not isinstance(remote, str):
            return None
        username = _dig(data, "proxy", "username")
        password = _dig(data, "proxy", "password")
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


def storage_problem(directory: str) -> Optional[str]:
    """Say why the cache cannot be kept in `directory`, or None when it can be created/written."""
    probe = directory
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory, so {directory} cannot be created; pick another path"
    try:
        # a real write: os.access() says yes to root even on a read-only file system
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        verb = "written" if probe == directory else "created"
        hint = ("fix its permissions or pick another path" if not (probe + "/").startswith("/vagrant/")
                else "on the host, the account QEMU runs as (libvirt-qemu on Debian) must be "
                     "able to write the project folder: `vagrant up` grants it when setfacl is "
                     "installed (apt-get install acl), see the README's libvirt notes")
        return f"{directory} cannot be {verb}: {probe} is not writable ({_os_reason(exc)}); {hint}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def _validator_class() -> Any:
    """Draft 7, but an integer is an int as written: YAML's 5001.0 is a float, not a port."""
    import jsonschema

    checker = jsonschema.Draft7Validator.TYPE_CHECKER.redefine("integer", lambda _c, value: _is_int(value))
    return jsonschema.validators.extend(jsonschema.Draft7Validator, type_checker=checker)


def _validator(schema: dict[str, Any]) -> Any:
    return _validator_class()(schema)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return "; allowed here: " + ", ".join(known)


def _describe(value: Any) -> str:
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _os_reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or type(exc).__name__
