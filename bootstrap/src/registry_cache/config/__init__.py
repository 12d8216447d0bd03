"""config.yml: read, every problem reported at once as FILE:LINE: key.path: message, and modelled.

The package, by job (each module imports only those above it in this list):
- `model`: what a valid config says (CacheConfig, Mirror, TlsSettings, AuthSettings, Problem);
- `fingerprint`: apply's input fingerprint, so "nothing changed" needs no parsing;
- `document`: the YAML reader that keeps each key's line;
- `schema`: schema.json and the wording of what it finds;
- `files`: the rules that look at the disk (cache folder writable, secret files);
- `security`: the rules of `tls:` and `auth:`;
- `rules`: the registry-cache format's other rules (addresses, ports, sizes, warm images);
- `seed`: the seed format (a plain Distribution config);
- `read`: `load` and `parse`, which pick the format.

The names below load their module when first used: `apply`'s no-op fast path takes the model
and the fingerprint only, never the YAML reader or the rules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from registry_cache.config.files import storage_problem
    from registry_cache.config.fingerprint import fingerprint_now, input_fingerprint
    from registry_cache.config.model import (
        AUTO,
        DEBUG_PORT_OFFSET,
        DEFAULT_LISTEN,
        DEFAULT_LOG_LEVEL,
        DEFAULT_METRICS_PORT,
        DEFAULT_RECONNECT_INTERVAL,
        DEFAULT_STORAGE,
        EMBEDDED_DEFAULT,
        SEED_MIRROR_NAME,
        USER_CERT,
        WARM_USER,
        AuthSettings,
        CacheConfig,
        ConfigError,
        Mirror,
        Problem,
        TlsSettings,
    )
    from registry_cache.config.read import default_config_text, load, parse
    from registry_cache.config.rules import DOCKER_HUB_WEBSITES, upstream_problem
    from registry_cache.config.schema import SECRET_KEYS, load_schema

# Each public name, and the module of this package that defines it.
_HOME = {
    "storage_problem": "files",
    "fingerprint_now": "fingerprint", "input_fingerprint": "fingerprint",
    **dict.fromkeys((
        "AUTO", "DEBUG_PORT_OFFSET", "DEFAULT_LISTEN", "DEFAULT_LOG_LEVEL", "DEFAULT_METRICS_PORT",
        "DEFAULT_RECONNECT_INTERVAL", "DEFAULT_STORAGE", "EMBEDDED_DEFAULT", "SEED_MIRROR_NAME",
        "USER_CERT", "WARM_USER", "AuthSettings", "CacheConfig", "ConfigError", "Mirror", "Problem",
        "TlsSettings",
    ), "model"),
    "default_config_text": "read", "load": "read", "parse": "read",
    "DOCKER_HUB_WEBSITES": "rules", "upstream_problem": "rules",
    "SECRET_KEYS": "schema", "load_schema": "schema",
}
__all__ = [
    "AUTO", "DEBUG_PORT_OFFSET", "DEFAULT_LISTEN", "DEFAULT_LOG_LEVEL", "DEFAULT_METRICS_PORT",
    "DEFAULT_RECONNECT_INTERVAL", "DEFAULT_STORAGE", "DOCKER_HUB_WEBSITES", "EMBEDDED_DEFAULT",
    "SECRET_KEYS", "SEED_MIRROR_NAME", "USER_CERT", "WARM_USER", "AuthSettings", "CacheConfig",
    "ConfigError", "Mirror", "Problem", "TlsSettings", "default_config_text", "fingerprint_now",
    "input_fingerprint", "load", "load_schema", "parse", "storage_problem", "upstream_problem",
]


def __getattr__(name: str) -> Any:
    """Load a public name's module on first use (PEP 562); it stays in the package after."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
