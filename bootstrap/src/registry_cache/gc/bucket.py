"""`registry-cache gc` of a cache in a shared bucket: one cap, one LRU and one gc for every node on it.

Same plan as a cache on disk (eviction.plan, least recently pulled first, 90 % -> 80 %), with three
differences: the images and blob sizes are read from the bucket's listing; the last pulls are
every node's (each runner shares its own, cluster.py); and read-only mode is asked of every
node at once with the cluster hold, which gc keeps renewed until it is done and which lapses
by itself if this node dies. Evicted images' links are deleted from the bucket, then
Distribution's own `garbage-collect` (run with the mirror's read-only config, i.e. the s3
driver) removes the blobs nothing references any more.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, TextIO

from registry_cache import cluster, paths, proc, shared
from registry_cache.gc import GcError
from registry_cache.gc.eviction import DEFAULT_KEEP_RECENT, EvictionPlan, MirrorPlan, plan
from registry_cache.gc.flow import garbage_collect
from registry_cache.gc.result import KEPT_NAMES, GcResult
from registry_cache.gc.scan import Image, Inventory, repo_images
from registry_cache.record import MirrorRecord
from registry_cache.s3 import Bucket, S3Error
from registry_cache.shared import SharedBucket
from registry_cache.sizes import format_size
from registry_cache.usage import Usage

log = logging.getLogger(__name__)

V2 = "docker/registry/v2/"
NODES_WAIT = 120.0  # how long gc waits for every node to serve read-only


@dataclass
class Listing:
    """One mirror's objects in the bucket: key below its docker/registry/v2/ -> size, and -> time."""

    sizes: dict[str, int] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


def list_storage(bucket: SharedBucket, client: Bucket) -> Listing:
    """Every object of Distribution's layout of one mirror in the bucket, with its size and time."""
    listing = Listing()
    base = bucket.key_prefix + V2
    for key, size, modified in client.list_objects(base):
        rel = key[len(base):]
        listing.sizes[rel] = size
        listing.times[rel] = modified
    return listing


def _link(client: Bucket, bucket: SharedBucket, rel: str) -> Optional[str]:
    text = (client.get(bucket.key_prefix + V2 + rel) or b"").decode(errors="replace").strip()
    return text if text.startswith("sha256:") else None


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _blob_rel(digest: str) -> str:
    hexdigest = digest.split(":", 1)[1]
    return f"blobs/sha256/{hexdigest[:2]}/{hexdigest}/data"


def _references(client: Bucket, bucket: SharedBucket, digest: str) -> tuple[list[str], list[str]]:
    """(platform manifests, other blobs) a stored manifest refers to."""
    try:
        doc = json.loads(client.get(bucket.key_prefix + V2 + _blob_rel(digest)) or b"")
    except ValueError:
        return [], []
    if not isinstance(doc, dict):
        return [], []
    children = [m.get("digest") for m in doc.get("manifests") or [] if isinstance(m, dict)]
    described = [doc.get("config"), *list(doc.get("layers") or [])]
    blobs = [d.get("digest") for d in described if isinstance(d, dict)]
    blobs += [d.get("blobSum") for d in doc.get("fsLayers") or [] if isinstance(d, dict)]
    return [c for c in children if isinstance(c, str)], [b for b in blobs if isinstance(b, str)]


def scan(record: MirrorRecord, bucket: SharedBucket, usage: Usage, client: Optional[Bucket] = None,
         ) -> tuple[Inventory, Listing]:
    """The mirror's images in the bucket (Inventory, for gc.plan) and the listing they came from."""
    client = client or bucket.client()
    listing = list_storage(bucket, client)
    inventory = Inventory(mirror=record.name, storage=record.storage)
    stored: dict[str, dict[str, float]] = {}
    tags: dict[str, dict[str, list[str]]] = {}
    tag_times: dict[str, dict[str, float]] = {}
    for rel, size in listing.sizes.items():
        parts = rel.split("/")
        if parts[0] == "blobs" and parts[-1] == "data" and len(parts) == 5:
            inventory.blob_sizes[f"sha256:{parts[3]}"] = size
        if parts[0] != "repositories" or "_manifests" not in parts:
            continue
        at = parts.index("_manifests")
        repo, rest = "/".join(parts[1:at]), parts[at + 1:]
        if rest[:2] == ["revisions", "sha256"] and rest[-1] == "link" and len(rest) == 4:
            stored.setdefault(repo, {})[f"sha256:{rest[2]}"] = listing.times[rel]
        elif rest[:1] == ["tags"] and rest[2:] == ["current", "link"]:
            digest = _link(client, bucket, rel)
            if digest:
                tags.setdefault(repo, {}).setdefault(digest, []).append(rest[1])
                times = tag_times.setdefault(repo, {})
                times[digest] = max(times.get(digest, 0.0), listing.times[rel])
    for repo, manifests_stored in sorted(stored.items()):
        repo_tags = {d: sorted(t) for d, t in tags.get(repo, {}).items()}
        inventory.images += repo_images(record.name, repo, manifests_stored, repo_tags,
                                        tag_times.get(repo, {}),
                                        lambda d: _references(client, bucket, d), usage)
    return inventory, listing


def merged_usage(bucket: SharedBucket, client: Optional[Bucket] = None) -> Usage:
    """Every node's last pulls together: the latest stamp of each manifest and blob."""
    merged = Usage()
    for text in cluster.shared_usage(bucket, client):
        try:
            data = json.loads(text)
        except ValueError:
            continue
        for kind in ("manifests", "blobs"):
            stamps = getattr(merged, kind)
            for key, stamp in (data.get(kind) or {}).items():
                if isinstance(stamp, (int, float)):
                    stamps[key] = max(stamps.get(key, 0.0), float(stamp))
    return merged


def unlink(bucket: SharedBucket, client: Bucket, inventory: Inventory, listing: Listing,
           evict: list[Image]) -> int:
    """Delete the evicted images' tag, revision and layer links from the bucket; return objects deleted."""
    gone = {(i.repo, i.digest) for i in evict}
    kept_by_repo: dict[str, set[str]] = {}
    for image in inventory.images:
        if (image.repo, image.digest) not in gone:
            kept_by_repo.setdefault(image.repo, set()).update(image.blobs)
    prefixes = []
    for image in evict:
        kept = kept_by_repo.get(image.repo, set())
        base = f"repositories/{image.repo}/"
        prefixes += [f"{base}_manifests/tags/{tag}/" for tag in image.tags]
        prefixes += [f"{base}_manifests/revisions/sha256/{_hex(d)}/" for d in image.manifests - kept]
        prefixes += [f"{base}_layers/sha256/{_hex(d)}/" for d in image.blobs - kept]
    doomed = [rel for rel in listing.sizes if any(rel.startswith(p) for p in prefixes)]
    for rel in doomed:
        client.delete(bucket.key_prefix + V2 + rel)
    return len(doomed)


class _Renewer(threading.Thread):
    """Keeps the cluster hold standing while gc works."""

    def __init__(self, hold: cluster.ClusterHold) -> None:
        super().__init__(daemon=True, name="cluster-hold")
        self.hold = hold
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                self.hold.renew()
            except S3Error as exc:
                log.warning("cannot renew the cluster hold: %s", exc)


def wait_for_nodes(bucket: SharedBucket, since: float, timeout: float = NODES_WAIT,
                   sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Wait until every live node serves read-only for gc (reported after `since`); return their names."""
    deadline = time.monotonic() + timeout
    while True:
        reports = cluster.node_reports(bucket)
        waiting = [str(r.get("node")) for r in reports
                   if not (r.get("hold") and float(r.get("at", 0)) >= since)]
        if not waiting:
            return [str(r.get("node")) for r in reports]
        if time.monotonic() >= deadline:
            raise GcError(f"node(s) {', '.join(waiting)} did not switch to read-only within "
                             f"{timeout:.0f} s; nothing was deleted (see their logs)")
        sleep(0.3)


def collect(records: list[MirrorRecord], buckets: dict[str, SharedBucket], out: TextIO, *,
            dry_run: bool = False, keep_recent: float = DEFAULT_KEEP_RECENT,
            lease: float = cluster.DEFAULT_LEASE) -> EvictionPlan:
    """Plan, print and (unless `dry_run`) carry out the eviction of mirrors kept in shared buckets."""
    caps = {r.name: r.max_size for r in records}
    total_cap = next((r.cache_max_size for r in records if r.cache_max_size), None)
    clients = {name: b.client(timeout=30.0) for name, b in buckets.items()}

    def inventories() -> dict[str, tuple[Inventory, Listing]]:
        return {r.name: scan(r, buckets[r.name], merged_usage(buckets[r.name], clients[r.name]),
                             clients[r.name]) for r in records}

    begun = time.monotonic()
    first = plan({k: v[0] for k, v in inventories().items()}, caps, total_cap, keep_recent=keep_recent)
    if dry_run or not first.evict:
        for line in first.lines():
            print(line, file=out)
        if not dry_run:
            for record in records:
                _save(record, buckets[record.name], GcResult(
                    mirror=record.name, started=time.time(), duration=time.monotonic() - begun,
                    bytes_freed=0, images_evicted=0, used=first.mirrors[record.name].used))
        return first
    # one hold a bucket: every mirror in it is quiet while any of them is collected
    holds = {}
    for record in records:
        bucket = buckets[record.name]
        holds.setdefault((bucket.endpoint, bucket.bucket, bucket.root),
                         cluster.ClusterHold(bucket, node_name(record), lease))
    renewers = []
    started = time.time()
    try:
        for hold in holds.values():
            try:
                hold.take()
            except cluster.HoldTaken as exc:
                # every node's timer runs gc: the node that holds the cache does it for all
                print(f"{hold.bucket.where}: {exc}; nothing to do here", file=out)
                return first
            renewer = _Renewer(hold)
            renewer.start()
            renewers.append(renewer)
        for hold in holds.values():
            nodes = wait_for_nodes(hold.bucket, started)
            print(f"{hold.bucket.where}: read-only on {len(nodes)} node(s): {', '.join(nodes) or 'none'}",
                  file=out)
        current = inventories()  # again, on the quiet cache: what is there now is what goes
        final = plan({k: v[0] for k, v in current.items()}, caps, total_cap, keep_recent=keep_recent)
        for line in final.lines():
            print(line, file=out)
        for record in records:
            _collect_one(record, buckets[record.name], clients[record.name], current[record.name],
                         final.mirrors[record.name], started, begun, out)
    finally:
        for renewer in renewers:
            renewer.done.set()
        for hold in holds.values():
            hold.release()
    return final


def _collect_one(record: MirrorRecord, bucket: SharedBucket, client: Bucket,
                 scanned: tuple[Inventory, Listing], mirror_plan: MirrorPlan,
                 started: float, begun: float, out: TextIO) -> None:
    inventory, listing = scanned
    error = None
    if mirror_plan.evict:
        unlink(bucket, client, inventory, listing, mirror_plan.evict)
        try:
            garbage_collect(os.path.join(record.directory or "", paths.READONLY_CONFIG))
        except proc.CommandError as exc:
            error = str(exc)
            log.error("mirror %s: garbage-collect failed: %s", record.name, exc)
    after = sum(size for rel, size in list_storage(bucket, client).sizes.items()
                if rel.startswith("blobs/") and rel.endswith("/data"))
    result = GcResult(mirror=record.name, started=started, duration=time.monotonic() - begun,
                       bytes_freed=max(0, inventory.used - after), images_evicted=len(mirror_plan.evict),
                       used=after, evicted=[i.name for i in mirror_plan.evict], error=error)
    _save(record, bucket, result)
    print(f"{record.name}: freed {format_size(result.bytes_freed)} ({result.images_evicted} image(s)) "
          f"in {result.duration:.1f} s; {format_size(after)} used now in {bucket.where}", file=out)


def node_name(record: MirrorRecord) -> str:
    """This node's name in the cluster (kept under the agent's root above the mirror's folder)."""
    return shared.node_name(shared.root_of(record.directory or "."))


def _save(record: MirrorRecord, bucket: SharedBucket, result: GcResult) -> None:
    """Keep the result beside this node's cache files and in the bucket, for every node's status."""
    if record.storage_ready:
        result.save(record.storage)
    data = asdict(result)
    data["evicted"] = data["evicted"][:KEPT_NAMES]
    try:
        cluster.save_result(bucket, {**data, "node": node_name(record)})
    except S3Error as exc:
        log.warning("cannot keep the gc result in the bucket: %s", exc)
