"""Turns a validated config into the files each mirror runs on: pure, no I/O beyond templates.

The agent's Jinja2 environment lives here too: every template of the package is loaded through
`templates()`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from registry_cache import paths, routing, shared
from registry_cache.clientauth import REALM
from registry_cache.config import CacheConfig, Mirror
from registry_cache.net import host_port
from registry_cache.record import Credentials, MirrorRecord, mirror_files
from registry_cache.secure import Security
from registry_cache.state import PROXY, READ_ONLY


@functools.cache
def templates() -> Any:
    """The package's Jinja2 templates (loaded on first use: `apply` with nothing changed never needs them)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("registry_cache", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    # plain JSON strings, which are valid YAML and TOML strings too (Jinja's own escapes for HTML)
    env.filters["tojson"] = json.dumps
    return env


@dataclass(frozen=True)
class RenderedMirror:
    """What one mirror runs on: its Distribution configs, its record and its upstream credentials."""

    record: MirrorRecord
    configs: dict[str, str] = field(repr=False)  # the proxy config may hold the upstream password
    credentials: Optional[Credentials] = field(default=None, repr=False)
    # readable by anyone (0644): the certificate served and the CA that checks it
    public_files: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The mirror's name."""
        return self.record.name

    @property
    def files(self) -> dict[str, str]:
        """Every file of the mirror's folder, by file name, as `apply` compares them with the disk."""
        return {**self.configs, **self.public_files, **mirror_files(self.record, self.credentials)}


def render(config: CacheConfig, security: Optional[Security] = None) -> dict[str, RenderedMirror]:
    """Render every mirror of the config, by name (with `security`: TLS and client authentication)."""
    return {m.name: render_mirror(config, m, security) for m in config.mirrors}


def render_mirror(config: CacheConfig, mirror: Mirror, security: Optional[Security] = None) -> RenderedMirror:
    """Render one mirror's Distribution configs (proxy and read-only), its record and credentials."""
    extra = _security_files(mirror, security)
    if mirror.raw is not None:
        proxy_text, readonly_text = _seed_configs(mirror.raw, mirror.storage)
    else:
        proxy_text = _distribution_config(config, mirror, readonly=False, extra=extra)
        readonly_text = _distribution_config(config, mirror, readonly=True, extra=extra)
    credentials = None
    if mirror.username is not None and mirror.password is not None:
        credentials = Credentials(mirror.username, mirror.password)
    table = endpoint_table(config) if endpoint_mirror(config) == mirror.name else None
    record = MirrorRecord(
        name=mirror.name,
        upstream=mirror.upstream,
        listen=config.listen,
        port=mirror.port,
        debug_port=mirror.debug_port,
        debug_listen=_debug_listen(mirror),
        storage=mirror.storage,
        docker_hub=mirror.is_docker_hub,
        authenticated=mirror.username is not None,
        reconnect_interval=config.reconnect_interval,
        source=config.source,
        max_size=mirror.max_size,
        cache_max_size=config.max_size,
        warm=mirror.warm,
        is_endpoint=table is not None,
        **extra.record,
        # where apply writes it: the probe finds the mirror's CA there
        directory=paths.mirror_dir(security.root, mirror.name) if security is not None else None,
    )
    if mirror.s3 is not None:
        extra.secret[paths.SHARED_BUCKET] = shared.from_config(mirror.s3, mirror.name).text()
    return RenderedMirror(
        record=record,
        configs={paths.PROXY_CONFIG: proxy_text, paths.READONLY_CONFIG: readonly_text, **extra.secret},
        credentials=credentials,
        public_files={**extra.public, **({paths.ENDPOINT: table.to_json()} if table else {})},
    )


def endpoint_mirror(config: CacheConfig) -> Optional[str]:
    """The mirror whose port is the one endpoint: the first of config.yml (none in the seed format)."""
    if not config.mirrors or config.mirrors[0].raw is not None:
        return None
    return config.mirrors[0].name


def endpoint_table(config: CacheConfig) -> routing.Table:
    """The one endpoint's routing table: every mirror's registry hosts and port, in config order."""
    home = endpoint_mirror(config)
    if home is None:
        raise ValueError("the seed format has no endpoint")
    return routing.table_for([(m.name, m.upstream, m.port) for m in config.mirrors], home,
                             redirects=config.endpoint_redirects)


@dataclass(frozen=True)
class _SecurityFiles:
    """A mirror's TLS and htpasswd files, their settings for Distribution, and its record's TLS facts."""

    template: dict[str, Any] = field(default_factory=lambda: {"tls": None, "auth": None})
    record: dict[str, Any] = field(default_factory=dict)
    public: dict[str, str] = field(default_factory=dict)
    secret: dict[str, str] = field(default_factory=dict, repr=False)


def _security_files(mirror: Mirror, security: Optional[Security]) -> _SecurityFiles:
    if security is None or mirror.raw is not None:  # the seed format runs as written
        return _SecurityFiles()
    directory = paths.mirror_dir(security.root, mirror.name)
    result = _SecurityFiles()
    if security.tls is not None:
        tls = security.tls
        result.template["tls"] = {
            "certificate": os.path.join(directory, paths.MIRROR_TLS_CERT),
            "key": os.path.join(directory, paths.MIRROR_TLS_KEY),
        }
        result.public.update({paths.MIRROR_TLS_CERT: tls.cert_pem, paths.MIRROR_CA: tls.ca_pem})
        result.secret[paths.MIRROR_TLS_KEY] = tls.key_pem
        result.record.update(tls=True, tls_server_name=tls.server_name,
                             tls_renew_after=tls.renew_after, tls_hosts=tls.hosts)
    if security.htpasswd is not None:
        result.template["auth"] = {"realm": REALM, "path": os.path.join(directory, paths.HTPASSWD)}
        result.secret[paths.HTPASSWD] = security.htpasswd
        result.record["client_auth"] = True
        if security.warm_login is not None:
            result.secret[paths.WARM_LOGIN] = security.warm_login.text()
    return result


def _distribution_config(config: CacheConfig, mirror: Mirror, *, readonly: bool,
                         extra: Optional[_SecurityFiles] = None) -> str:
    proxy = None
    if not readonly:
        # Distribution reads its upstream login only from here; the agent reads credentials.json.
        credentials = []
        if mirror.username is not None and mirror.password is not None:
            credentials = [("username", mirror.username), ("password", mirror.password)]
        proxy = {"remoteurl": mirror.upstream, "credentials": credentials}
    return templates().get_template("registry.yml.j2").render(
        name=mirror.name,
        mode=READ_ONLY if readonly else PROXY,
        log_level=config.log_level,
        storage=mirror.storage,
        readonly=readonly,
        addr=host_port(config.listen, mirror.port),
        # no debug endpoint when its default port was taken (config/rules.py leaves it None)
        debug_addr=host_port("127.0.0.1", mirror.debug_port) if mirror.debug_port else None,
        proxy=proxy,
        s3=_s3_settings(mirror),
        **(extra or _SecurityFiles()).template,
    )


def _debug_listen(mirror: Mirror) -> str:
    """Where the mirror's debug endpoint listens: loopback, or the host a seed config gives it."""
    debug = ((mirror.raw or {}).get("http") or {}).get("debug")
    if not isinstance(debug, dict) or not debug.get("addr"):
        return "127.0.0.1"
    return str(debug["addr"]).rpartition(":")[0].strip("[]") or "0.0.0.0"


def _s3_settings(mirror: Mirror) -> Optional[dict[str, Any]]:
    """Distribution's `s3` driver settings of a mirror kept in a shared bucket, or None."""
    s3 = mirror.s3
    if s3 is None:
        return None
    return {
        "bucket": s3.bucket,
        "region": s3.region,
        # without a path style the registries reach AWS S3 by its region's own endpoint
        "regionendpoint": s3.endpoint if s3.path_style else None,
        "accesskey": s3.access_key,
        "secretkey": s3.secret_key,
        "rootdirectory": s3.root(mirror.name),
        "secure": s3.secure,
    }


def _seed_configs(raw: dict[str, Any], storage: str) -> tuple[str, str]:
    """The seed format runs as written, but for the log format (to count hits) and an absolute storage."""
    proxy = copy.deepcopy(raw)
    proxy["storage"]["filesystem"]["rootdirectory"] = storage  # relative paths are relative to config.yml
    log = proxy.get("log") if isinstance(proxy.get("log"), dict) else {}
    log["formatter"] = "json"
    log.setdefault("accesslog", {})["disabled"] = True
    proxy["log"] = log
    readonly = copy.deepcopy(proxy)
    readonly.pop("proxy", None)
    storage = readonly.setdefault("storage", {})
    maintenance = storage.setdefault("maintenance", {})
    maintenance["readonly"] = {"enabled": True}
    header = "# Rendered by registry-cache from a plain Distribution config (seed format).\n"
    return (
        header + yaml.safe_dump(proxy, sort_keys=False),
        header + yaml.safe_dump(readonly, sort_keys=False),
    )
