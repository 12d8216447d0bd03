"""`registry-cache gc`: keep each mirror's cache under its size cap, least recently pulled images first.

Pure planning apart from side effects: `scan` reads a Distribution filesystem storage into an
`Inventory` (images, their manifests and blobs, when each was last pulled), `plan` decides
what to evict from a high watermark down to a low one, and `collect` carries it out:

1. it asks the mirror's runner to serve read-only (paths.READONLY_REQUEST) and waits until the
   runner says so: from then on nothing is written into the cache, and pulls of cached images
   keep being served (the runner hands its port over without closing it, see handover.py);
2. it scans and plans again on the quiet cache, deletes the evicted images' tag, revision and
   layer links (a blob any kept manifest uses keeps its links), then runs Distribution's own
   `docker-registry garbage-collect`, which removes every blob no manifest references;
3. it lets the mirror go back to proxy mode and records what it freed beside the cache.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, TextIO

from registry_cache import hold, paths, proc
from registry_cache.counters import blob_path, blob_sizes, v2_root
from registry_cache.fsutil import write_file
from registry_cache.record import MirrorRecord
from registry_cache.sizes import format_size
from registry_cache.usage import Usage

log = logging.getLogger(__name__)

# Eviction starts above 90 % of a cap and stops at 80 %: room for a day of new pulls between
# two runs of the hourly timer without evicting again at every run.
HIGH_WATERMARK = 0.90
LOW_WATERMARK = 0.80
# An image pulled within this many seconds is never evicted: it is in use right now.
DEFAULT_KEEP_RECENT = 600
READ_ONLY_WAIT = 120.0  # the runner lets stores in flight finish and drains connections first
GC_TIMEOUT = 6 * 3600


class GcError(RuntimeError):
    """A mirror could not be collected; the message says why and what to do."""


@dataclass(frozen=True)
class Image:
    """One image in a mirror's cache: a manifest (an index with its platforms) and its tags."""

    mirror: str
    repo: str
    digest: str
    tags: tuple[str, ...]
    manifests: frozenset[str]  # the top manifest and the platform manifests of an index
    blobs: frozenset[str]  # every blob it needs: manifests, configs, layers
    last_pull: float

    @property
    def name(self) -> str:
        """`repo:tag` (the first tag), or `repo@digest` for an image pulled by digest only."""
        return f"{self.repo}:{self.tags[0]}" if self.tags else f"{self.repo}@{self.digest}"


@dataclass
class Inventory:
    """What one mirror's storage holds: its images and the size of every blob."""

    mirror: str
    storage: str
    images: list[Image] = field(default_factory=list)
    blob_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def used(self) -> int:
        """Bytes of blob data in the cache."""
        return sum(self.blob_sizes.values())

    def orphan_bytes(self) -> int:
        """Bytes of blobs no image uses (garbage-collect removes them whenever it runs)."""
        used = set().union(*(i.blobs for i in self.images)) if self.images else set()
        return sum(size for digest, size in self.blob_sizes.items() if digest not in used)


@dataclass
class MirrorPlan:
    """What gc does to one mirror."""

    mirror: str
    used: int
    cap: Optional[int]
    evict: list[Image] = field(default_factory=list)
    frees: int = 0

    @property
    def after(self) -> int:
        """Bytes the cache holds once the plan is carried out."""
        return self.used - self.frees


@dataclass
class Plan:
    """What gc does to every mirror, and whether the caps are met afterwards."""

    mirrors: dict[str, MirrorPlan]
    total_cap: Optional[int] = None
    notes: list[str] = field(default_factory=list)

    @property
    def evict(self) -> list[Image]:
        """Every image to evict, least recently pulled first."""
        return sorted((i for p in self.mirrors.values() for i in p.evict), key=lambda i: i.last_pull)

    def lines(self) -> list[str]:
        """The plan in words, one line a mirror and one an evicted image."""
        lines = []
        for plan in self.mirrors.values():
            cap = f" of {format_size(plan.cap)}" if plan.cap else ""
            if plan.evict:
                lines.append(f"{plan.mirror}: {format_size(plan.used)}{cap} used; evicting "
                             f"{len(plan.evict)} image(s) frees {format_size(plan.frees)}")
            else:
                lines.append(f"{plan.mirror}: {format_size(plan.used)}{cap} used; nothing to evict")
            for image in plan.evict:
                idle = time.time() - image.last_pull
                lines.append(f"  evict {image.name} (last pulled {idle / 3600:.1f} h ago)")
        return lines + self.notes


# -- reading a storage -----------------------------------------------------------------------


def _read_link(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return text if text.startswith("sha256:") else None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def _references(storage: str, digest: str) -> tuple[list[str], list[str]]:
    """(platform manifests, other blobs) a stored manifest refers to."""
    try:
        with open(blob_path(storage, digest), "rb") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return [], []
    if not isinstance(doc, dict):
        return [], []
    children = [m.get("digest") for m in doc.get("manifests") or [] if isinstance(m, dict)]
    blobs = [d.get("digest") for d in [doc.get("config"), *list(doc.get("layers") or [])]
             if isinstance(d, dict)]
    blobs += [d.get("blobSum") for d in doc.get("fsLayers") or [] if isinstance(d, dict)]  # schema 1
    return [c for c in children if isinstance(c, str)], [b for b in blobs if isinstance(b, str)]


def _repositories(storage: str) -> list[str]:
    base = os.path.join(v2_root(storage), "repositories")
    repos = []
    for top, dirs, _files in os.walk(base):
        if "_manifests" in dirs:
            repos.append(os.path.relpath(top, base))
        dirs[:] = [d for d in dirs if not d.startswith("_")]
    return sorted(repos)


def scan(mirror: str, storage: str, usage: Optional[Usage] = None) -> Inventory:
    """Read a mirror's storage: every image with the blobs it needs and when it was last pulled.

    The last pull is the latest of: the stamps the runner took from the registry's log, the
    time the manifest was stored, and the time a tag was last refreshed from the upstream
    (Distribution rewrites a tag's link at every proxied pull of it).
    """
    usage = usage or Usage()
    inventory = Inventory(mirror=mirror, storage=storage, blob_sizes=blob_sizes(storage))
    for repo in _repositories(storage):
        manifests_dir = os.path.join(v2_root(storage), "repositories", repo, "_manifests")
        revisions_dir = os.path.join(manifests_dir, "revisions", "sha256")
        stored = {}
        for hexdigest in sorted(os.listdir(revisions_dir)) if os.path.isdir(revisions_dir) else []:
            link = os.path.join(revisions_dir, hexdigest, "link")
            if os.path.exists(link):
                stored["sha256:" + hexdigest] = _mtime(link)
        tags: dict[str, list[str]] = {}
        tag_times: dict[str, float] = {}
        tags_dir = os.path.join(manifests_dir, "tags")
        for tag in sorted(os.listdir(tags_dir)) if os.path.isdir(tags_dir) else []:
            current = os.path.join(tags_dir, tag, "current", "link")
            digest = _read_link(current)
            if digest in stored:
                tags.setdefault(digest, []).append(tag)
                tag_times[digest] = max(tag_times.get(digest, 0.0), _mtime(current))
        refs = {d: _references(storage, d) for d in stored}
        children = {c for d in stored for c in refs[d][0]}
        for digest in stored:
            if digest in children and digest not in tags:
                continue  # a platform of an index: evicted with its index
            platforms = [c for c in refs[digest][0] if c in stored]
            manifests = frozenset([digest, *platforms])
            blobs = set(manifests) | set(refs[digest][1])
            for child in platforms:
                blobs |= set(refs[child][1])
            pulled = usage.last_pull(repo, [*tags.get(digest, []), *manifests])
            last = max([stored[d] for d in manifests] + [tag_times.get(digest, 0.0), pulled or 0.0])
            inventory.images.append(Image(
                mirror=mirror, repo=repo, digest=digest, tags=tuple(tags.get(digest, [])),
                manifests=manifests, blobs=frozenset(blobs), last_pull=last,
            ))
    return inventory


# -- planning ----------------------------------------------------------------------------------


class _Ledger:
    """Bytes each mirror holds as images are evicted one by one."""

    def __init__(self, inventories: dict[str, Inventory]) -> None:
        self.inventories = inventories
        self.users: dict[str, Counter[str]] = {
            name: Counter(b for i in inv.images for b in i.blobs) for name, inv in inventories.items()
        }
        self.plans = {name: MirrorPlan(name, inv.used, None) for name, inv in inventories.items()}

    def evict(self, image: Image) -> None:
        plan = self.plans[image.mirror]
        inventory = self.inventories[image.mirror]
        if not plan.evict:
            plan.frees += inventory.orphan_bytes()  # garbage-collect takes them along
        plan.evict.append(image)
        users = self.users[image.mirror]
        for blob in image.blobs:
            users[blob] -= 1
            if users[blob] == 0:
                plan.frees += inventory.blob_sizes.get(blob, 0)

    def total(self) -> int:
        return sum(p.after for p in self.plans.values())


def plan(
    inventories: dict[str, Inventory],
    caps: dict[str, Optional[int]],
    total_cap: Optional[int] = None,
    *,
    now: Optional[float] = None,
    keep_recent: float = DEFAULT_KEEP_RECENT,
) -> Plan:
    """Decide which images to evict, least recently pulled first, so every cap is met.

    A mirror above HIGH_WATERMARK of its own cap is brought down to LOW_WATERMARK of it; then,
    when all mirrors together are above HIGH_WATERMARK of the whole cache's cap, the least
    recently pulled images of any mirror go until the total is at LOW_WATERMARK. An image
    pulled within `keep_recent` seconds stays.
    """
    now = time.time() if now is None else now
    ledger = _Ledger(inventories)
    notes = []
    candidates = {
        name: sorted((i for i in inv.images if now - i.last_pull >= keep_recent),
                     key=lambda i: (i.last_pull, i.name))
        for name, inv in inventories.items()
    }
    for name, cap in caps.items():
        ledger.plans[name].cap = cap
        mirror_plan = ledger.plans[name]
        if cap is None or mirror_plan.used <= cap * HIGH_WATERMARK:
            continue
        while mirror_plan.after > cap * LOW_WATERMARK and candidates[name]:
            ledger.evict(candidates[name].pop(0))
        if mirror_plan.after > cap * LOW_WATERMARK:
            notes.append(f"{name}: still above {LOW_WATERMARK:.0%} of its cap: everything left "
                         f"was pulled within the last {keep_recent:.0f} s")
    if total_cap is not None and ledger.total() > total_cap * HIGH_WATERMARK:
        pool = sorted((i for c in candidates.values() for i in c), key=lambda i: (i.last_pull, i.name))
        while ledger.total() > total_cap * LOW_WATERMARK and pool:
            ledger.evict(pool.pop(0))
        if ledger.total() > total_cap * LOW_WATERMARK:
            notes.append(f"the cache is still above {LOW_WATERMARK:.0%} of max_size: everything "
                         f"left was pulled within the last {keep_recent:.0f} s")
    return Plan(mirrors=ledger.plans, total_cap=total_cap, notes=notes)


# -- acting ------------------------------------------------------------------------------------


def unlink(inventory: Inventory, evict: list[Image]) -> None:
    """Delete the evicted images' tags, manifests and layer links; what a kept image uses stays."""
    gone = {(i.repo, i.digest) for i in evict}
    kept_by_repo: dict[str, set[str]] = {}
    for image in inventory.images:
        if (image.repo, image.digest) not in gone:
            kept_by_repo.setdefault(image.repo, set()).update(image.blobs)
    for image in evict:
        kept = kept_by_repo.get(image.repo, set())
        repo_dir = os.path.join(v2_root(inventory.storage), "repositories", image.repo)
        for tag in image.tags:
            shutil.rmtree(os.path.join(repo_dir, "_manifests", "tags", tag), ignore_errors=True)
        for digest in image.manifests - kept:
            shutil.rmtree(os.path.join(repo_dir, "_manifests", "revisions", "sha256",
                                       digest.split(":", 1)[1]), ignore_errors=True)
        for digest in image.blobs - kept:
            shutil.rmtree(os.path.join(repo_dir, "_layers", "sha256", digest.split(":", 1)[1]),
                          ignore_errors=True)


def garbage_collect(config_path: str) -> None:
    """Run Distribution's own garbage-collect: remove every blob no manifest references.

    Without --delete-untagged: an image pulled by digest has no tag and must stay.
    """
    proc.run([paths.REGISTRY_BIN, "garbage-collect", config_path], timeout=GC_TIMEOUT)


def runner_alive(storage: str) -> bool:
    """True when a runner serves this mirror now (its state names a live registry process)."""
    from registry_cache.state import STOPPED, read_state

    state = read_state(storage) or {}
    pid = state.get("pid")
    if state.get("mode") in (None, STOPPED) or not isinstance(pid, int):
        return False
    return proc.exists(pid)


class ReadOnly:
    """Asks a mirror's runner to serve read-only while the cache is collected, then to go back."""

    def __init__(self, record: MirrorRecord, timeout: float = READ_ONLY_WAIT) -> None:
        self.record = record
        self.timeout = timeout
        self.requested = False

    def __enter__(self) -> ReadOnly:
        from registry_cache.state import GC_HOLD, read_state

        if not runner_alive(self.record.storage):
            return self  # nothing serves, so nothing writes: collect as it is
        hold.ask(self.record.storage,
                 hold.HoldRequest(by="registry-cache gc", pid=os.getpid(), until=time.time() + GC_TIMEOUT))
        self.requested = True
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = read_state(self.record.storage) or {}
            if state.get("hold") == GC_HOLD:
                return self
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise GcError(f"mirror {self.record.name} did not switch to read-only within "
                      f"{self.timeout:.0f} s; nothing was deleted (see its log)")

    def __exit__(self, *exc: object) -> None:
        if self.requested:
            hold.withdraw(self.record.storage)
            self.requested = False


@dataclass
class Result:
    """What one gc run did to one mirror, as `status` shows it."""

    mirror: str
    started: float
    duration: float
    bytes_freed: int
    images_evicted: int
    used: int
    evicted: list[str] = field(default_factory=list)
    error: Optional[str] = None

    def save(self, storage: str) -> None:
        """Keep the result beside the mirror's cache for `status`."""
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["evicted"] = data["evicted"][:100]
        write_file(paths.gc_file(storage), json.dumps(data, indent=2) + "\n")


def last_result(storage: str) -> Optional[dict]:
    """The result of the last gc of a mirror, or None."""
    try:
        with open(paths.gc_file(storage), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def collect(
    records: list[MirrorRecord],
    out: TextIO,
    *,
    dry_run: bool = False,
    keep_recent: float = DEFAULT_KEEP_RECENT,
    clock: Callable[[], float] = time.monotonic,
) -> Plan:
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
                Result(mirror=record.name, started=time.time(), duration=clock() - begun, bytes_freed=0,
                       images_evicted=0, used=first.mirrors[record.name].used).save(record.storage)
        return first
    targets = [r for r in ready if first.mirrors[r.name].evict]
    started = time.time()
    holds = [ReadOnly(r) for r in targets]
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
            result = Result(
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
                Result(mirror=record.name, started=started, duration=clock() - begun, bytes_freed=0,
                       images_evicted=0, used=final.mirrors[record.name].used).save(record.storage)
    finally:
        for hold in holds:
            hold.__exit__(None, None, None)
    return final


def _record_dir(record: MirrorRecord) -> str:
    if record.directory is None:
        raise GcError(f"mirror {record.name}: its record was not read from disk")
    return record.directory
