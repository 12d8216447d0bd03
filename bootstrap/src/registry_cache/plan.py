"""Decides what `apply` must change, from the rendered mirrors wanted and those on disk: pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from registry_cache import paths
from registry_cache.record import only_unread_keys_changed

if TYPE_CHECKING:
    from registry_cache.render import RenderedMirror


@dataclass(frozen=True)
class Plan:
    """Which mirrors to start, restart, rewrite without a restart, leave alone and stop."""

    add: list[str] = field(default_factory=list)
    update: list[str] = field(default_factory=list)
    refresh: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    @property
    def changes(self) -> bool:
        """True when applying this plan changes anything."""
        return bool(self.add or self.update or self.refresh or self.remove)

    def lines(self) -> list[str]:
        """The plan in words, one line a mirror, for `apply --dry-run` and the apply summary."""
        words = [
            (self.add, "add", "render its config and start it"),
            (self.update, "update", "config changed: rewrite it and restart the mirror"),
            (self.refresh, "refresh", "size cap, warm list or the endpoint's routes changed: rewritten, "
                                      "left running"),
            (self.keep, "keep", "unchanged: left running"),
            (self.remove, "remove", "not in this config (it came from an earlier config or the "
                                    "box's built-in default): stopped; its cached data stays"),
        ]
        return [f"{verb:6} {name}: {why}" for names, verb, why in words for name in names]


def make_plan(wanted: dict[str, RenderedMirror], current: dict[str, dict[str, str]]) -> Plan:
    """Compare the mirrors wanted with the rendered files found on disk."""
    plan = Plan()
    for name in sorted(wanted):
        if name not in current:
            plan.add.append(name)
        elif current[name] == wanted[name].files:
            plan.keep.append(name)
        elif _needs_no_restart(current[name], wanted[name].files):
            plan.refresh.append(name)
        else:
            plan.update.append(name)
    plan.remove.extend(sorted(set(current) - set(wanted)))
    return plan


def _needs_no_restart(current: dict[str, str], wanted: dict[str, str]) -> bool:
    """True when the files differ only in record keys the running mirror never reads.

    Or in the endpoint's routing table, which the running endpoint reads again by itself.
    """
    if paths.ENDPOINT in current and paths.ENDPOINT in wanted:
        current = {k: v for k, v in current.items() if k != paths.ENDPOINT}
        wanted = {k: v for k, v in wanted.items() if k != paths.ENDPOINT}
    return only_unread_keys_changed(current, wanted)
