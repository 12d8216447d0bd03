"""Reads every line a mirror's registry logs: echoes it, counts hits and misses, stamps pull times."""

from __future__ import annotations

from typing import Any, TextIO

from registry_cache import counters
from registry_cache.runner.diskwatch import DiskWatch
from registry_cache.runner.keepers import StateKeeper, UsageKeeper


class LogReader:
    """Turns the registry's log into the mirror's counters, pull times and disk-full notices."""

    def __init__(self, keeper: StateKeeper, usage: UsageKeeper, disk: DiskWatch, out: TextIO) -> None:
        """Count into `keeper`'s state and `usage`; echo each line to `out`, prefixed with the mirror."""
        self.keeper = keeper
        self.usage = usage
        self.disk = disk
        self.out = out
        self.name = keeper.record.name

    def read(self, child: Any, counter: counters.HitCounter) -> None:
        """Read the log of one registry process until it ends (a thread's target)."""
        for line in child.stdout:
            self.line(line, counter)

    def line(self, line: str, counter: counters.HitCounter) -> None:
        """Take in one log line."""
        self.out.write(f"[{self.name}] {line}")
        self.out.flush()
        self.disk.saw_line(line)
        entry = counters.parse_log_line(line)
        if entry is not None:
            self.entry(entry, counter)

    def entry(self, entry: dict[str, Any], counter: counters.HitCounter) -> None:
        """Count one request the mirror answered: a registry log entry, or its like from the endpoint."""
        with self.keeper.lock:
            if counter.observe(entry):
                self.keeper.dirty = True
        self.usage.observe(entry)
