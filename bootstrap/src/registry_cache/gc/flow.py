"""`registry-cache gc` from start to end: plan, hold mirrors read-only, unlink, garbage-collect, record."""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Callable, TextIO

from registry_cache import cachelayout, paths, proc
from registry_cache.gc import GcError
from registry_cache.gc.eviction import DEFAULT_KEEP_RECENT, EvictionPlan, plan
from registry_cache.gc.handshake import GC_TIMEOUT, ReadOnlyHold
from registry_cache.gc.result import GcResult
from registry_cache.gc.scan import Image, Inventory, scan
from registry_cache.record import MirrorRecord
from registry_cache.sizes import format_size
from registry_cache.usage import Usage

log = logging.getLogger(__name__)


def unlink(inventory: Inventory, evict: list[Image]) -> None:
    """Delete the evicted images' tags, manifests and layer links; what a kept image uses stays."""
    gone = {(i.repo, i.digest) for i in evict}
    kept_by_repo: dict[str, set[str]] = {}
    for image in inventory.images:
        if (image.repo, image.digest) not in gone:
            kept_by_repo.setdefault(image.repo, set()).update(image.blobs)
    for image in evict:
        kept = kept_by_repo.get(image.repo, set())
        storage, repo = inventory.storage, image.repo
        for tag in image.tags:
            shutil.rmtree(cachelayout.tag_dir(storage, repo, tag), ignore_errors=True)
        for digest in image.manifests - kept:
            shutil.rmtree(cachelayout.revision_dir(storage, repo, digest), ignore_errors=True)
        for digest in image.blobs - kept:
            shutil.rmtree(cachelayout.layer_dir(storage, repo, digest), ignore_errors=True)


def garbage_collect(config_path: str) -> None:
    """Run Distribution's own garbage-collect: remove every blob no manifest references.

    Without --delete-untagged: an image pulled by digest has no tag and must stay.
    """
    proc.run([paths.REGISTRY_BIN, "garbage-collect", config_path], timeout=GC_TIMEOUT)


def enforce_caps(
    records: list[MirrorRecord],
    out: TextIO,
    *,
    dry_run: bool = False,
    keep_recent: float = DEFAULT_KEEP_RECENT,
    clock: Callable[[], float] = time.monotonic,
) -> EvictionPlan:
    """Plan, print and (unless `dry_run`) carry out the eviction on `records`' mirrors."""
    ready = [r for r in records if r.storage_ready]
    for record in records:
        if not record.storage_ready:
            print(f"{record.name}: its storage {record.storage} is not there; skipped", file=out)
    caps = {r.name: r.max_size for r in ready}
    total_cap = next((r.cache_max_size for r in ready if r.cache_max_size), None)

    def inventories() -> dict[str, Inventory]:
        return {r.name: scan(r.name, r.storage, Usage.read(r.storage)) for r in ready}

    begun = clock()
    first = plan(inventories(), caps, total_cap, keep_recent=keep_recent)
    if dry_run or not first.evict:
        for line in first.lines():
            print(line, file=out)
        if not dry_run:
            for record in ready:
                GcResult(mirror=record.name, started=time.time(), duration=clock() - begun, bytes_freed=0,
                         images_evicted=0, used=first.mirrors[record.name].used).save(record.storage)
        return first
    targets = [r for r in ready if first.mirrors[r.name].evict]
    started = time.time()
    holds = [ReadOnlyHold(r) for r in targets]
    try:
        for hold in holds:
            hold.__enter__()
        # again, on the quiet cache: what is on disk now is what gets deleted
        final = plan(inventories(), caps, total_cap, keep_recent=keep_recent)
        for line in final.lines():
            print(line, file=out)
        for record in targets:
            mirror_plan = final.mirrors[record.name]
            inventory = scan(record.name, record.storage)
            before = inventory.used
            error = None
            if mirror_plan.evict:
                unlink(inventory, mirror_plan.evict)
                try:
                    garbage_collect(os.path.join(_record_dir(record), paths.READONLY_CONFIG))
                except proc.CommandError as exc:
                    error = str(exc)
                    log.error("mirror %s: garbage-collect failed: %s", record.name, exc)
            after = scan(record.name, record.storage).used
            result = GcResult(
                mirror=record.name, started=started, duration=clock() - begun,
                bytes_freed=max(0, before - after), images_evicted=len(mirror_plan.evict),
                used=after, evicted=[i.name for i in mirror_plan.evict], error=error,
            )
            result.save(record.storage)
            print(f"{record.name}: freed {format_size(result.bytes_freed)} "
                  f"({result.images_evicted} image(s)) in {result.duration:.1f} s; "
                  f"{format_size(after)} used now", file=out)
            log.info("mirror %s: gc freed %d bytes, evicted %d image(s) in %.1f s",
                     record.name, result.bytes_freed, result.images_evicted, result.duration)
        for record in ready:
            if record not in targets:  # measured, nothing to evict: `status` shows the run
                GcResult(mirror=record.name, started=started, duration=clock() - begun, bytes_freed=0,
                         images_evicted=0, used=final.mirrors[record.name].used).save(record.storage)
    finally:
        for hold in holds:
            hold.__exit__(None, None, None)
    return final


def _record_dir(record: MirrorRecord) -> str:
    if record.directory is None:
        raise GcError(f"mirror {record.name}: its record was not read from disk")
    return record.directory
