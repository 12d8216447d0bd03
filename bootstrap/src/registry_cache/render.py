"""Turns a validated config into the files each mirror runs on: pure, no I/O beyond templates."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import Any

import yaml

from registry_cache.config import CacheConfig, Mirror

PROXY_CONFIG = "proxy.yml"
READONLY_CONFIG = "readonly.yml"
MIRROR_INFO = "mirror.json"
# Written into a mirror's storage by `apply`: a mirror serves only once it sees this file,
# so it never writes its cache into the bare mount point of a synced folder not mounted yet.
STORAGE_MARKER = ".registry-cache-mirror"
# Kept by the running mirror beside its cache: mode, true hit/miss counters.
STATE_FILE = ".registry-cache-state.json"



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
    """The files one mirror needs: its proxy config, its read-only fallback, its public facts."""

    name: str
    files: dict[str, str]

    @property
    def info(self) -> dict[str, Any]:
        """The mirror's public facts (no secrets), as written to mirror.json."""
        return json.loads(self.files[MIRROR_INFO])


def render(config: CacheConfig) -> dict[str, RenderedMirror]:
    """Render every mirror of the config, by name."""
    return {m.name: render_mirror(config, m) for m in config.mirrors}


def render_mirror(config: CacheConfig, mirror: Mirror) -> RenderedMirror:
    """Render one mirror's Distribution configs (proxy and read-only) and its facts file."""
    if mirror.raw is not None:
        proxy_text, readonly_text = _seed_configs(mirror.raw, mirror.storage)
    else:
        proxy_text = _distribution_config(config, mirror, readonly=False)
        readonly_text = _distribution_config(config, mirror, readonly=True)
    info = {
        "name": mirror.name,
        "upstream": mirror.upstream,
        "listen": config.listen,
        "port": mirror.port,
        "debug_port": mirror.debug_port,
        "storage": mirror.storage,
        "docker_hub": mirror.is_docker_hub,
        "authenticated": mirror.username is not None,
        "reconnect_interval": config.reconnect_interval,
        "source": config.source,
    }
    return RenderedMirror(
        name=mirror.name,
        files={
            PROXY_CONFIG: proxy_text,
            READONLY_CONFIG: readonly_text,
            MIRROR_INFO: json.dumps(info, indent=2, sort_keys=True) + "\n",
        },
    )


def host_port(host: str, port: int) -> str:
    """Join an address and a port the way Go's net package wants them ([::1]:5000)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_host(listen: str) -> str:
    """The address to reach a mirror listening on `listen` from this machine."""
    if listen in ("0.0.0.0", ""):
        return "127.0.0.1"
    if listen == "::":
        return "::1"
    return listen


def _distribution_config(config: CacheConfig, mirror: Mirror, *, readonly: bool) -> str:
    proxy = None
    if not readonly:
        credentials = []
        if mirror.username is not None and mirror.password is not None:
            credentials = [("username", mirror.username), ("password", mirror.password)]
        proxy = {"remoteurl": mirror.upstream, "credentials": credentials}
    debug_port = mirror.debug_port or 0
    return templates().get_template("registry.yml.j2").render(
        name=mirror.name,
        mode="read-only" if readonly else "proxy",
        log_level=config.log_level,
        storage=mirror.storage,
        readonly=readonly,
        addr=host_port(config.listen, mirror.port),
        debug_addr=host_port("127.0.0.1", debug_port),
        proxy=proxy,
    )


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
