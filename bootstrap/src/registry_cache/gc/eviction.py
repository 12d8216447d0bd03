"""gc's eviction plan (pure): which images go, least recently pulled first, so every size cap is met."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from registry_cache.gc.scan import Image, Inventory
from registry_cache.sizes import format_size

# Eviction starts above 90 % of a cap and stops at 80 %: room for a day of new pulls between
# two runs of the hourly timer without evicting again at every run.
HIGH_WATERMARK = 0.90
LOW_WATERMARK = 0.80
# An image pulled within this many seconds is never evicted: it is in use right now.
DEFAULT_KEEP_RECENT = 600


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
class EvictionPlan:
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
) -> EvictionPlan:
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
    return EvictionPlan(mirrors=ledger.plans, total_cap=total_cap, notes=notes)
