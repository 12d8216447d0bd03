"""Turns a validated config into the files each mirror runs on: pure, no I/O beyond templates.

The agent's Jinja2 environment lives here too: every template of the package is loaded through
`templates()`.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from registry_cache import paths
from registry_cache.config import CacheConfig, Mirror
from registry_cache.net import host_port
from registry_cache.record import Credentials, MirrorRecord


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

    @property
    def name(self) -> str:
        """The mirror's name."""
        return self.record.name

    @property
    def files(self) -> dict[str, str]:
        """Every file of the mirror's folder, by file name, as `apply` compares them with the disk."""
        files = {**self.configs, paths.MIRROR_RECORD: self.record.text()}
        if self.credentials is not None:
            files[paths.CREDENTIALS] = self.credentials.text()
        return files


def render(config: CacheConfig) -> dict[str, RenderedMirror]:
    """Render every mirror of the config, by name."""
    return {m.name: render_mirror(config, m) for m in config.mirrors}


def render_mirror(config: CacheConfig, mirror: Mirror) -> RenderedMirror:
    """Render one mirror's Distribution configs (proxy and read-only), its record and credentials."""
    if mirror.raw is not None:
        proxy_text, readonly_text = _seed_configs(mirror.raw, mirror.storage)
    else:
        proxy_text = _distribution_config(config, mirror, readonly=False)
        readonly_text = _distribution_config(config, mirror, readonly=True)
    credentials = None
    if mirror.username is not None and mirror.password is not None:
        credentials = Credentials(mirror.username, mirror.password)
    record = MirrorRecord(
        name=mirror.name,
        upstream=mirror.upstream,
        listen=config.listen,
        port=mirror.port,
        debug_port=mirror.debug_port,
        storage=mirror.storage,
        docker_hub=mirror.is_docker_hub,
        authenticated=mirror.username is not None,
        reconnect_interval=config.reconnect_interval,
        source=config.source,
        max_size=mirror.max_size,
        cache_max_size=config.max_size,
        warm=mirror.warm,
    )
    return RenderedMirror(
        record=record,
        configs={paths.PROXY_CONFIG: proxy_text, paths.READONLY_CONFIG: readonly_text},
        credentials=credentials,
    )


def _distribution_config(config: CacheConfig, mirror: Mirror, *, readonly: bool) -> str:
    proxy = None
    if not readonly:
        # Distribution reads its upstream login only from here; the agent reads credentials.json.
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
