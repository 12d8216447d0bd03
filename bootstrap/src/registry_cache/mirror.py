"""Keeps one mirror serving: proxy mode when its upstream answers, its cache read-only when not.

Distribution 2.8.2 in proxy mode panics at start when its upstream is unreachable, so
after a reboot without internet a plain proxy serves nothing. The runner probes the
upstream first: unreachable -> it starts the registry on the read-only config (same
storage, no proxy section), which serves every cached image, and switches back to proxy
mode once the upstream answers. It also restarts a registry that dies, counts true hits
and misses from the registry's log, and keeps that state beside the cache for `status`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

from registry_cache import counters, net, paths, proc, upstream
from registry_cache.fsutil import write_file
from registry_cache.record import MirrorRecord

log = logging.getLogger(__name__)

REGISTRY_BIN = os.environ.get("REGISTRY_CACHE_REGISTRY_BIN", "/usr/bin/docker-registry")
READY_TIMEOUT = 90.0  # a cold registry start under QEMU TCG takes seconds, not minutes
MAX_BACKOFF = 30.0
STATE_WRITE_INTERVAL = 1.0
STORE_GRACE = 20.0  # how long a stop waits for blobs still being copied into the cache

PROXY = "proxy"
READ_ONLY = "read-only"
WAITING = "waiting-for-storage"
STARTING = "starting"
STOPPED = "stopped"


@dataclass
class MirrorState:
    """What `status` reads: the mode a mirror runs in, why, and its true counters."""

    name: str
    mode: str = STARTING
    since: float = field(default_factory=time.time)
    upstream_reachable: Optional[bool] = None
    upstream_problem: Optional[str] = None
    restarts: int = 0
    pid: Optional[int] = None
    counts: counters.Counts = field(default_factory=counters.Counts)

    def as_dict(self) -> dict[str, Any]:
        """The state as plain data."""
        return {
            "name": self.name,
            "mode": self.mode,
            "since": self.since,
            "updated": time.time(),
            "upstream_reachable": self.upstream_reachable,
            "upstream_problem": self.upstream_problem,
            "restarts": self.restarts,
            "pid": self.pid,
            **self.counts.as_dict(),
        }


def read_state(storage: str) -> Optional[dict[str, Any]]:
    """Return the state a mirror last wrote beside its cache, or None."""
    try:
        with open(paths.state_file(storage), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class MirrorRunner:
    """Runs and supervises the registry process of one rendered mirror until told to stop."""

    def __init__(self, mirror_dir: str, stop: threading.Event, *, out: TextIO = sys.stderr) -> None:
        """Read the mirror rendered in `mirror_dir` (FileNotFoundError or RecordError when none)."""
        self.mirror_dir = mirror_dir
        self.stop_event = stop
        self.out = out
        self.record = MirrorRecord.read(mirror_dir)
        self.name = self.record.name
        self.storage = self.record.storage
        previous = read_state(self.storage) or {}
        self.state = MirrorState(
            name=self.name,
            counts=counters.Counts(
                **{k: int(previous.get(k, 0)) for k in counters.Counts.__dataclass_fields__}
            ),
        )
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._dirty = False
        self._waiting_logged = False

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped: wait for storage, pick the mode, run the registry, restart it."""
        backoff = 1.0
        while not self.stop_event.is_set():
            if not self._storage_ready():
                self.stop_event.wait(2.0)
                continue
            mode = self._choose_mode()
            started = time.monotonic()
            exit_code, switching = self._serve_once(mode)
            if self.stop_event.is_set():
                break
            if switching:
                backoff = 1.0
                continue
            ran_for = time.monotonic() - started
            backoff = 1.0 if ran_for > 60 else min(backoff * 2, MAX_BACKOFF)
            with self._lock:
                self.state.restarts += 1
            log.warning("mirror %s: registry exited with code %s; restarting in %.0f s",
                        self.name, exit_code, backoff)
            self.stop_event.wait(backoff)
        self._set(mode=STOPPED, pid=None)
        self._write_state(force=True)

    def _storage_ready(self) -> bool:
        if self.record.storage_ready:
            self._waiting_logged = False
            return True
        if not self._waiting_logged:
            log.warning(
                "mirror %s: waiting for its storage %s (no %s there yet: a synced folder not "
                "mounted yet, or `registry-cache apply` has not run)",
                self.name, self.storage, paths.STORAGE_MARKER,
            )
            self._waiting_logged = True
        with self._lock:
            self.state.mode = WAITING
        return False

    def _choose_mode(self) -> str:
        credentials = self.record.credentials()
        result = upstream.check(self.record.upstream, credentials=credentials)
        problem = None
        if not result.reachable:
            problem = f"upstream unreachable ({result.error}); serving the cache read-only"
            log.warning("mirror %s: %s", self.name, problem)
        elif result.needs_basic_auth:
            problem = upstream.basic_auth_problem(self.record.upstream)
            log.error("mirror %s: %s", self.name, problem)
        elif result.credentials_rejected and credentials is not None:
            problem = upstream.credentials_problem(self.record.upstream, credentials.username)
            log.error("mirror %s: %s", self.name, problem)
        self._set(upstream_reachable=result.reachable, upstream_problem=problem)
        return PROXY if result.reachable else READ_ONLY

    def _serve_once(self, mode: str) -> tuple[Optional[int], bool]:
        """Run the registry in `mode` until it exits, we stop, or read-only mode can end."""
        config = os.path.join(self.mirror_dir, paths.PROXY_CONFIG if mode == PROXY else paths.READONLY_CONFIG)
        counter = counters.HitCounter(counters.cached_blobs(self.storage), self.state.counts)
        child = proc.spawn([REGISTRY_BIN, "serve", config])
        reader = threading.Thread(target=self._read_log, args=(child, counter), daemon=True)
        reader.start()
        self._set(pid=child.pid, mode=STARTING)
        if self._wait_ready(child):
            log.info("mirror %s: serving on port %s in %s mode (upstream %s)",
                     self.name, self.record.port, mode, self.record.upstream)
            self._set(mode=mode, since=time.time())
        switching = False
        next_probe = time.monotonic() + self.record.reconnect_interval
        next_prune = time.monotonic() + 10
        while not self.stop_event.is_set() and child.poll() is None:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 10
                with self._lock:
                    counter.fetched = [b for b in counter.fetched if not counters.is_stored(self.storage, *b)]
            if mode == READ_ONLY and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.record.reconnect_interval
                if upstream.check(self.record.upstream).reachable:
                    log.info("mirror %s: upstream answers again; switching to proxy mode", self.name)
                    switching = True
                    break
            self._write_state()
            self.stop_event.wait(0.5)
        self._wait_for_cache_writes(counter)
        exit_code = proc.stop(child)
        reader.join(timeout=5)
        self._set(pid=None)
        self._write_state(force=True)
        return exit_code, switching

    def _wait_for_cache_writes(self, counter: counters.HitCounter) -> None:
        """Let the registry finish copying fetched blobs into the cache before it is stopped.

        Distribution streams a missed blob to the client and stores it in the background,
        fetching it again; stopping it right after a pull loses the blobs still in flight.
        """
        deadline = time.monotonic() + STORE_GRACE
        with self._lock:
            pending = list(counter.fetched)
        while pending and time.monotonic() < deadline:
            pending = [b for b in pending if not counters.is_stored(self.storage, *b)]
            if pending:
                time.sleep(0.2)
        if pending:
            log.warning("mirror %s: stopping with %d blob(s) not yet stored in the cache",
                        self.name, len(pending))

    def _wait_ready(self, child: Any) -> bool:
        pending = net.wait_until_serving(
            {self.name: self.record.endpoint}, READY_TIMEOUT, interval=0.2,
            give_up=lambda: child.poll() is not None or self.stop_event.is_set(),
            sleep=self.stop_event.wait,
        )
        return not pending

    def _read_log(self, child: Any, counter: counters.HitCounter) -> None:
        for line in child.stdout:
            self.out.write(f"[{self.name}] {line}")
            self.out.flush()
            entry = counters.parse_log_line(line)
            if entry is None:
                continue
            with self._lock:
                if counter.observe(entry):
                    self._dirty = True

    # -- state ------------------------------------------------------------------------------

    def _set(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.state, key, value)
            self._dirty = True
        self._write_state(force=True)

    def _write_state(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and (not self._dirty or now - self._last_write < STATE_WRITE_INTERVAL):
                return
            data = self.state.as_dict()
            self._dirty = False
            self._last_write = now
        if not self.record.storage_ready:
            return  # never write into a storage that is not there (an unmounted synced folder)
        try:
            write_file(self.record.state_file, json.dumps(data, indent=2) + "\n")
        except OSError as exc:
            log.warning("mirror %s: cannot write its state file: %s", self.name, exc)
