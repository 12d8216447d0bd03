"""`registry-cache status`: per mirror, is it serving, in which mode, and its true hits and misses."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Optional

from registry_cache import cachelayout, disk, net, paths, record, routing, shared, warmresult
from registry_cache.gc import result as gc_result
from registry_cache.record import Credentials, MirrorRecord
from registry_cache.sizes import format_size
from registry_cache.state import DOWN, UNKNOWN, WAITING, MirrorState, read_state

if TYPE_CHECKING:
    from registry_cache.config import CacheConfig

DOCKER_HUB_TOKEN_URL = (
    "https://auth.docker.io/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull"
)
DOCKER_HUB_PROBE_URL = "https://registry-1.docker.io/v2/ratelimitpreview/test/manifests/latest"
# How `status` words what holds a mirror's port (MirrorStatus.handover)
HANDOVERS = {
    "kernel": "the kernel (an nftables redirect to the registry on duty)",
    "relay": "the runner's relay (a userspace copy: the kernel handover was unavailable)",
    "endpoint": "the one endpoint",
}

FRONT_KEYS = (
    "upstream_requests",
    "blob_transfers",
    "blob_joins",
    "blob_failures",
    "blob_resumes",
    "blob_unshared",
    "blob_late",
    "blob_late_upstream",
    "blobs_in_flight",
)


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
    max_size: Optional[int] = None  # this mirror's cap; cache_max_size: the whole cache's
    cache_max_size: Optional[int] = None
    gc_last_run: Optional[float] = None
    gc_bytes_freed: int = 0
    gc_images_evicted: int = 0
    gc_problem: Optional[str] = None
    warm_last_run: Optional[float] = None
    warm_images: int = 0
    warm_failures: tuple[str, ...] = ()
    disk_problem: Optional[str] = None
    # what holds the port: "kernel" (an nftables redirect to the registry on duty), "relay" (the
    # runner copies the bytes), "endpoint" (the one endpoint, the first mirror's port)
    handover: Optional[str] = None
    url: Optional[str] = None  # as reached from the box: https:// when the mirror serves TLS
    # the mirror's front (see the front package): what crossed the upstream link and how it was shared
    upstream_requests: int = 0
    blob_transfers: int = 0
    blob_joins: int = 0  # blob requests served by a transfer already under way, not the upstream
    blob_failures: int = 0
    blob_resumes: int = 0  # blob downloads carried on with a `Range` request after their connection dropped
    blob_unshared: int = 0  # blob requests streamed straight from the upstream: no room on disk to spool them
    blob_late: int = 0  # blob requests that came once the start of their download's spool was released
    blob_late_upstream: int = 0  # of those, the ones fetched from the upstream again (not stored in time)
    blobs_in_flight: int = 0
    # a cache in a bucket other nodes share (cluster.py): the counters above are this node's,
    # storage_bytes and the gc fields the whole shared cache's
    shared: Optional[str] = None  # s3://BUCKET/PREFIX/ at ENDPOINT
    shared_nodes: tuple[str, ...] = ()  # "NODE MODE" of every live node
    shared_holder: Optional[str] = None  # the node whose gc holds the shared cache now
    shared_problem: Optional[str] = None  # the bucket cannot be read: what S3 said
    # its port is the one endpoint: "REGISTRY (mirror NAME)" of every registry it answers for
    endpoint_for: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The status as plain data, for --json."""
        return asdict(self)


def collect(root: str, *, rate_limit: bool = True) -> list[MirrorStatus]:
    """Gather the status of every mirror rendered under `root`."""
    return [mirror_status(r, rate_limit=rate_limit) for r in record.read_all(root)]


def collect_config(config: CacheConfig, root: str, *, rate_limit: bool = True) -> list[MirrorStatus]:
    """Gather the status of the mirrors a config names (`status --config`), applied or not."""
    from registry_cache.render import render

    records = [dataclasses.replace(m.record, directory=paths.mirror_dir(root, name))
               for name, m in sorted(render(config).items())]
    return [mirror_status(r, rate_limit=rate_limit) for r in records]


def mirror_status(mirror: MirrorRecord, *, rate_limit: bool = True) -> MirrorStatus:
    """Gather one mirror's status from its /v2/ endpoint, its state file and its storage."""
    storage = mirror.storage
    state = read_state(storage) or MirrorState(name=mirror.name, mode=UNKNOWN)
    healthy = net.serving(mirror.endpoint)
    marker = mirror.storage_ready
    mode = state.mode if healthy else DOWN
    problem = state.upstream_problem
    if not marker:
        mode = WAITING
        problem = (f"its storage {storage} is missing (synced folder not mounted yet?); "
                   "run `registry-cache apply` once it is there")
    last_gc = gc_result.last_result(storage) if marker else None
    last_warm = warmresult.last_outcome(storage) if marker else None
    full = (disk.full_problem(storage) or state.disk_problem) if marker else None
    front = state.front_totals()
    remaining = None
    if rate_limit and mirror.docker_hub:
        remaining = docker_hub_rate_limit(mirror.credentials())
    status = MirrorStatus(
        endpoint_for=_endpoint_for(mirror),
        name=mirror.name,
        upstream=mirror.upstream,
        port=mirror.port,
        healthy=healthy,
        mode=mode,
        hits=state.counts.hits,
        misses=state.counts.misses,
        bytes_served=state.counts.bytes_served,
        bytes_from_upstream=front["bytes_from_upstream"],
        storage=storage,
        storage_bytes=cachelayout.used_bytes(storage) if marker else 0,
        restarts=state.restarts,
        problem=problem,
        rate_limit_remaining=remaining,
        max_size=mirror.max_size,
        cache_max_size=mirror.cache_max_size,
        gc_last_run=last_gc.started if last_gc else None,
        gc_bytes_freed=last_gc.bytes_freed if last_gc else 0,
        gc_images_evicted=last_gc.images_evicted if last_gc else 0,
        gc_problem=last_gc.error if last_gc else None,
        warm_last_run=last_warm.started if last_warm else None,
        warm_images=last_warm.images if last_warm else 0,
        warm_failures=tuple(last_warm.failures) if last_warm else (),
        disk_problem=full,
        handover=state.handover if healthy else None,
        url=mirror.url,
        **{key: front[key] for key in FRONT_KEYS},
    )
    bucket = shared.read(mirror.directory)
    return _with_shared_cache(status, bucket) if bucket is not None else status


def _with_shared_cache(status: MirrorStatus, bucket: shared.SharedBucket) -> MirrorStatus:
    """The status with the shared cache's size, nodes, hold and last gc, read from its bucket."""
    from registry_cache import cluster
    from registry_cache.s3 import S3Error

    try:
        seen = cluster.summary(bucket)
    except S3Error as exc:
        return dataclasses.replace(status, shared=bucket.where, storage_bytes=0, shared_problem=(
            f"the shared cache cannot be read: {exc}; this node serves nothing it cannot read "
            "from the bucket"))
    gc = gc_result.GcResult.from_dict(seen.last_gc) if seen.last_gc else None
    return dataclasses.replace(
        status, shared=seen.where, shared_nodes=seen.nodes, shared_holder=seen.holder,
        storage_bytes=seen.used,
        gc_last_run=gc.started if gc else None, gc_bytes_freed=gc.bytes_freed if gc else 0,
        gc_images_evicted=gc.images_evicted if gc else 0, gc_problem=gc.error if gc else None,
    )


def format_table(statuses: list[MirrorStatus]) -> str:
    """The human-readable status: one line a mirror, then any problem in words."""
    if not statuses:
        return "no mirror is configured: run `registry-cache apply`"
    header = f"{'MIRROR':12} {'PORT':>5} {'HEALTHY':7} {'MODE':20} {'HITS':>6} {'MISSES':>6} " \
             f"{'SERVED':>9} {'CACHE / CAP':>21}  UPSTREAM"
    lines = [header]
    for s in statuses:
        lines.append(
            f"{s.name:12} {s.port:>5} {('yes' if s.healthy else 'NO'):7} {s.mode:20} {s.hits:>6} "
            f"{s.misses:>6} {format_size(s.bytes_served):>9} {_cache(s):>21}  {s.upstream}"
        )
    for s in statuses:
        if s.endpoint_for:
            lines.append(f"{s.name}: port {s.port} is the one endpoint for {', '.join(s.endpoint_for)}; "
                         "names without a registry go to its own")
        if s.rate_limit_remaining is not None:
            lines.append(f"{s.name}: Docker Hub pulls remaining: {s.rate_limit_remaining}")
        if s.bytes_from_upstream or s.blob_transfers or s.blob_failures:
            lines.append(f"{s.name}: {format_size(s.bytes_from_upstream)} from its upstream in "
                         f"{s.blob_transfers} blob transfer(s); {s.blob_joins} request(s) joined a "
                         f"transfer in flight; {s.blob_failures} failed; {s.blobs_in_flight} in flight now")
        if s.problem:
            lines.append(f"{s.name}: {s.problem}")
        if s.handover:
            lines.append(f"{s.name}: port {s.port} held by {HANDOVERS.get(s.handover, s.handover)}")
        lines += _shared_lines(s)
        lines += _gc_warm_disk_lines(s)
    return "\n".join(lines)


def _endpoint_for(mirror: MirrorRecord) -> tuple[str, ...]:
    """The registries the mirror's port answers for when it is the one endpoint (its routing table)."""
    if not mirror.is_endpoint or mirror.directory is None:
        return ()
    try:
        with open(os.path.join(mirror.directory, paths.ENDPOINT), encoding="utf-8") as handle:
            table = routing.Table.from_json(handle.read())
    except (OSError, ValueError):
        return ()
    return tuple(f"{r.registry} (mirror {r.mirror})" for r in table.routes)


def _cache(s: MirrorStatus) -> str:
    cap = s.max_size or s.cache_max_size
    return f"{format_size(s.storage_bytes)} / {format_size(cap) if cap else 'no cap'}"


def _shared_lines(s: MirrorStatus) -> list[str]:
    """The lines about a cache shared with other nodes: where, who serves it, who holds it."""
    if s.shared is None:
        return []
    lines = [f"{s.name}: shared cache {s.shared}; hits, misses and served are this node's"]
    if s.shared_problem:
        return [*lines, f"{s.name}: {s.shared_problem}"]
    lines.append(f"{s.name}: {len(s.shared_nodes)} node(s) serve it: {', '.join(s.shared_nodes) or 'none'}")
    if s.shared_holder:
        lines.append(f"{s.name}: held read-only by the gc of node {s.shared_holder}")
    return lines


def _gc_warm_disk_lines(s: MirrorStatus) -> list[str]:
    """The lines about gc, warming and a full disk (gc/, warm.py, disk.py)."""
    import time

    lines = []
    if s.cache_max_size and s.max_size:
        lines.append(f"{s.name}: the whole cache is capped at {format_size(s.cache_max_size)}")
    if s.gc_last_run:
        ago = (time.time() - s.gc_last_run) / 3600
        lines.append(f"{s.name}: last gc {ago:.1f} h ago: freed {format_size(s.gc_bytes_freed)}, "
                     f"{s.gc_images_evicted} image(s) evicted")
    if s.gc_problem:
        lines.append(f"{s.name}: last gc failed: {s.gc_problem}")
    if s.warm_last_run:
        ago = (time.time() - s.warm_last_run) / 3600
        lines.append(f"{s.name}: last warm {ago:.1f} h ago: {s.warm_images} image(s) warm, "
                     f"{len(s.warm_failures)} failed")
    for failure in s.warm_failures:
        lines.append(f"{s.name}: warm failed: {failure}")
    if s.disk_problem:
        lines.append(f"{s.name}: {s.disk_problem}")
    return lines


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



