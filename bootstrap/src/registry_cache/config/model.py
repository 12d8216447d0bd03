"""What a valid config.yml says: the mirrors, where they listen and cache, TLS and who may pull."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from registry_cache.clientauth import ClientUser
from registry_cache.record import DEFAULT_RECONNECT_INTERVAL  # one default for the config and the record

EMBEDDED_DEFAULT = "<embedded default>"
DEFAULT_LISTEN = "0.0.0.0"
DEFAULT_STORAGE = "/vagrant/data"
DEFAULT_LOG_LEVEL = "info"
DEBUG_PORT_OFFSET = 10000
DEFAULT_METRICS_PORT = 9110
# The single mirror that a plain Distribution config (the seed format) becomes.
SEED_MIRROR_NAME = "default"
# `tls:` modes: a certificate generated on the first apply, or the user's own.
AUTO = "auto"
USER_CERT = "cert_file"
# With client auth, the agent's own login into the mirrors: `registry-cache warm` pulls with it.
WARM_USER = "registry-cache-warm"
# `storage.s3.region` when none is given (Ceph RGW and MinIO take any).
DEFAULT_REGION = "us-east-1"


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
class S3Storage:
    """A bucket that every cache node of a cluster keeps its mirrors in (Distribution's s3 driver)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = DEFAULT_REGION
    path_style: bool = True
    ca_file: Optional[str] = None
    prefix: str = ""

    def root(self, mirror: str) -> str:
        """The bucket prefix of one mirror's cache (Distribution's `rootdirectory`): /PREFIX/MIRROR."""
        return "/" + "/".join(part for part in (self.prefix.strip("/"), mirror) if part)

    @property
    def secure(self) -> bool:
        """Whether the endpoint speaks https."""
        return self.endpoint.startswith("https://")


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
    # The bucket the cache lives in, shared with other nodes (None: `storage` holds the cache).
    s3: Optional[S3Storage] = None
    # The seed format: a Distribution config that runs as written.
    raw: Optional[dict[str, Any]] = field(default=None, repr=False, compare=True)

    @property
    def is_docker_hub(self) -> bool:
        """True when the upstream is Docker Hub, whose images `registry-mirrors` can redirect."""
        host = urlsplit(self.upstream).hostname or ""
        return host in {"registry-1.docker.io", "docker.io", "index.docker.io"}


@dataclass(frozen=True)
class TlsSettings:
    """How the mirrors serve TLS: a generated certificate (auto) or the user's own (cert_file)."""

    mode: str
    directory: str = ""  # auto: where the CA and certificate live
    names: tuple[str, ...] = ()
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    ca_file: Optional[str] = None


@dataclass(frozen=True)
class AuthSettings:
    """Who may pull through the mirrors: users and their bcrypt hash or password."""

    users: tuple[ClientUser, ...] = field(repr=False)


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
    endpoint_redirects: bool = True  # the one endpoint redirects other mirrors' blob GETs to their ports
    tls: Optional[TlsSettings] = None  # None: plain HTTP
    auth: Optional[AuthSettings] = None  # None: anyone who reaches a mirror may pull
    s3: Optional[S3Storage] = None  # None: the cache lives in `storage`; else in this bucket
    # The files the config was read from (config.yml, password files): absolute path and the
    # digest of the bytes parsed. With the cache's owner, they are all the rendered mirrors
    # depend on, so `apply` can tell "nothing changed" without parsing anything.
    inputs: tuple[tuple[str, str], ...] = ()
    # Things that work but should not stay so (a secret file others can read); never secrets.
    warnings: tuple[Problem, ...] = field(default=(), compare=False)

    def fingerprint(self) -> Optional[str]:
        """The input fingerprint of this config as parsed (None while its storage does not exist)."""
        from registry_cache.config.fingerprint import input_fingerprint

        return input_fingerprint(dict(self.inputs), self.storage)

    def mirror(self, name: str) -> Mirror:
        """Return the mirror called `name`."""
        for mirror in self.mirrors:
            if mirror.name == name:
                return mirror
        raise KeyError(name)
