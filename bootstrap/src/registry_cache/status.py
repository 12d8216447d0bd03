"""`registry-cache status`: per mirror, is it serving, in which mode, and its true hits and misses."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

from registry_cache import net, record
from registry_cache.fsutil import tree_size
from registry_cache.mirror import WAITING, read_state
from registry_cache.record import Credentials, MirrorRecord

DOCKER_HUB_TOKEN_URL = (
    "https://auth.docker.io/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull"
)
DOCKER_HUB_PROBE_URL = "https://registry-1.docker.io/v2/ratelimitpreview/test/manifests/latest"


@dataclass
class MirrorStatus:
    """One mirror as `status` reports it. Carries no secret."""

    name: str
    upstream: str
    port: int
    healthy: bool
    mode: str
    hits: int
    misses: int
    bytes_served: int
    bytes_from_upstream: int
    storage: str
    storage_bytes: int
    restarts: int
    problem: Optional[str]
    rate_limit_remaining: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """The status as plain data, for --json."""
        return asdict(self)


def collect(root: str, *, rate_limit: bool = True) -> list[MirrorStatus]:
    """Gather the status of every mirror rendered under `root`."""
    return [mirror_status(r, rate_limit=rate_limit) for r in record.read_all(root)]


def mirror_status(mirror: MirrorRecord, *, rate_limit: bool = True) -> MirrorStatus:
    """Gather one mirror's status from its /v2/ endpoint, its state file and its storage."""
    storage = mirror.storage
    state = read_state(storage) or {}
    healthy = net.serving(mirror.url)
    marker = mirror.storage_ready
    mode = state.get("mode", "unknown") if healthy else "down"
    problem = state.get("upstream_problem")
    if not marker:
        mode = WAITING
        problem = (f"its storage {storage} is missing (synced folder not mounted yet?); "
                   "run `registry-cache apply` once it is there")
    remaining = None
    if rate_limit and mirror.docker_hub:
        remaining = docker_hub_rate_limit(mirror.credentials())
    return MirrorStatus(
        name=mirror.name,
        upstream=mirror.upstream,
        port=mirror.port,
        healthy=healthy,
        mode=mode,
        hits=int(state.get("hits", 0)),
        misses=int(state.get("misses", 0)),
        bytes_served=int(state.get("bytes_served", 0)),
        bytes_from_upstream=int(state.get("bytes_from_upstream", 0)),
        storage=storage,
        storage_bytes=tree_size(os.path.join(storage, "docker")) if marker else 0,
        restarts=int(state.get("restarts", 0)),
        problem=problem,
        rate_limit_remaining=remaining,
    )


def format_table(statuses: list[MirrorStatus]) -> str:
    """The human-readable status: one line a mirror, then any problem in words."""
    if not statuses:
        return "no mirror is configured: run `registry-cache apply`"
    header = f"{'MIRROR':12} {'PORT':>5} {'HEALTHY':7} {'MODE':20} {'HITS':>6} {'MISSES':>6} " \
             f"{'SERVED':>9} {'CACHE':>9}  UPSTREAM"
    lines = [header]
    for s in statuses:
        lines.append(
            f"{s.name:12} {s.port:>5} {('yes' if s.healthy else 'NO'):7} {s.mode:20} {s.hits:>6} "
            f"{s.misses:>6} {_size(s.bytes_served):>9} {_size(s.storage_bytes):>9}  {s.upstream}"
        )
    for s in statuses:
        if s.rate_limit_remaining is not None:
            lines.append(f"{s.name}: Docker Hub pulls remaining: {s.rate_limit_remaining}")
        if s.problem:
            lines.append(f"{s.name}: {s.problem}")
    return "\n".join(lines)


def docker_hub_rate_limit(credentials: Optional[Credentials]) -> Optional[str]:
    """Ask Docker Hub how many pulls remain (HEAD requests do not count); None when unreachable."""
    import requests  # only when asked: two seconds of imports under TCG

    auth = credentials.pair() if credentials is not None else None
    try:
        token = requests.get(DOCKER_HUB_TOKEN_URL, auth=auth, timeout=5).json()["token"]
        answer = requests.head(
            DOCKER_HUB_PROBE_URL, headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
    except (requests.RequestException, ValueError, KeyError):
        return None
    remaining = answer.headers.get("ratelimit-remaining")
    limit = answer.headers.get("ratelimit-limit")
    if remaining is None:
        return "unlimited"
    return f"{remaining.split(';')[0]} of {limit.split(';')[0] if limit else '?'}"


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"

