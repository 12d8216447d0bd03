"""Every file and folder name the agent reads or writes, and the registry program it runs, in one place."""

from __future__ import annotations

import os

# The Distribution registry program (Debian's docker-registry), which mirrors and gc run.
REGISTRY_BIN = os.environ.get("REGISTRY_CACHE_REGISTRY_BIN", "/usr/bin/docker-registry")

# Where `apply` keeps the rendered mirrors and the last good config.
SYSTEM_ROOT = "/etc/registry-cache"
APPLIED = "applied.json"
LAST_GOOD = "last-good.yml"
# Where the metrics endpoint listens (written by `apply`, read by `registry-cache metrics`).
METRICS_SETTINGS = "metrics.json"
MIRRORS = "mirrors"

# One mirror's folder under MIRRORS: its two Distribution configs (0600: the proxy one may hold
# the upstream password), its public record (0644) and its upstream credentials (0600).
PROXY_CONFIG = "proxy.yml"
READONLY_CONFIG = "readonly.yml"
MIRROR_RECORD = "mirror.json"
CREDENTIALS = "credentials.json"
# With TLS: the certificate a mirror serves and the CA its probe checks it with (public), its
# key (0600); with client authentication: the htpasswd file (0600).
MIRROR_TLS_CERT = "tls.crt"
MIRROR_TLS_KEY = "tls.key"
MIRROR_CA = "ca.crt"
HTPASSWD = "htpasswd"
# With client authentication: the login `registry-cache warm` pulls with (0600; warm.py).
WARM_LOGIN = "warm-login.json"
# A mirror kept in a bucket other nodes share: the bucket, its prefix and keys (0600; shared.py).
SHARED_BUCKET = "shared.json"
# Under the root: this node's name in a cluster on a shared bucket, chosen once (shared.py).
NODE_ID = "node-id"
# The first mirror's only: the one endpoint's routing table and the other mirrors' ports (public).
ENDPOINT = "endpoint.json"

# `tls: auto`: the generated CA and server certificate, in this folder beside config.yml (in
# the box /vagrant/tls), so they survive `vagrant destroy` like the cache; keys 0600.
TLS_DIR = "tls"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"

# Written into a mirror's storage by `apply`: a mirror serves only once it sees this file,
# so it never writes its cache into the bare mount point of a synced folder not mounted yet.
STORAGE_MARKER = ".registry-cache-mirror"
# Kept by the running mirror beside its cache: mode, true hit/miss counters (owner: state.py).
STATE_FILE = ".registry-cache-state.json"
# The front's blobs in transfer, beside the cache: same disk, same owner, emptied at every start.
FRONT_SPOOL = ".registry-cache-spool"

# systemd: one template unit instance per mirror, and the drop-in `apply` writes for it.
UNIT_DIR = "/etc/systemd/system"
MIRROR_UNIT = "registry-cache-mirror@{name}.service"
WARM_UNIT = "registry-cache-warm.service"
METRICS_UNIT = "registry-cache-metrics.service"
DROPIN = "10-registry-cache.conf"


def default_root() -> str:
    """Where rendered configs live: $REGISTRY_CACHE_ROOT, else /etc/registry-cache or ~/.local/state."""
    if os.environ.get("REGISTRY_CACHE_ROOT"):
        return os.environ["REGISTRY_CACHE_ROOT"]
    if os.geteuid() == 0 or os.path.isdir(SYSTEM_ROOT):
        return SYSTEM_ROOT  # in the box, `registry-cache status` works for the vagrant user too
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state_home, "registry-cache")


def mirrors_dir(root: str) -> str:
    """The folder holding one folder per rendered mirror."""
    return os.path.join(root, MIRRORS)


def mirror_dir(root: str, name: str) -> str:
    """The folder holding one mirror's rendered files."""
    return os.path.join(root, MIRRORS, name)


def storage_marker(storage: str) -> str:
    """The marker file that says a mirror's storage is there and prepared."""
    return os.path.join(storage, STORAGE_MARKER)


def state_file(storage: str) -> str:
    """Where a running mirror keeps its state (mode, counters), beside its cache."""
    return os.path.join(storage, STATE_FILE)


def front_spool(storage: str) -> str:
    """Where a mirror's front spools the blobs it is fetching from the upstream."""
    return os.path.join(storage, FRONT_SPOOL)


# Kept beside each mirror's cache for gc and warm; owners: usage.py, gc/result.py, warmresult.py.
USAGE_FILE = ".registry-cache-usage.json"
GC_FILE = ".registry-cache-gc.json"
WARM_FILE = ".registry-cache-warm.json"
# Written by `registry-cache gc` while it needs the mirror read-only; the runner obeys it (owner: hold.py).
READONLY_REQUEST = ".registry-cache-readonly-request"


def usage_file(storage: str) -> str:
    """When each manifest and blob of a mirror was last pulled."""
    return os.path.join(storage, USAGE_FILE)


def gc_file(storage: str) -> str:
    """The result of the last `registry-cache gc` of a mirror."""
    return os.path.join(storage, GC_FILE)


def warm_file(storage: str) -> str:
    """The result of the last `registry-cache warm` of a mirror."""
    return os.path.join(storage, WARM_FILE)


def readonly_request(storage: str) -> str:
    """The file that asks a mirror's runner to serve its cache read-only (for gc)."""
    return os.path.join(storage, READONLY_REQUEST)
