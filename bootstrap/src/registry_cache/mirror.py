"""Keeps one mirror serving: proxy mode when its upstream answers, its cache read-only when not.

Distribution 2.8.2 in proxy mode panics at start when its upstream is unreachable, so
after a reboot without internet a plain proxy serves nothing. The runner probes the
upstream first: unreachable -> it starts the registry on the read-only config (same
storage, no proxy section), which serves every cached image, and switches back to proxy
mode once the upstream answers. It also restarts a registry that dies, counts true hits
and misses from the registry's log, and keeps that state beside the cache for `status`.

The runner holds the mirror's ports itself and relays connections to the registry on duty
(handover.py), so switching modes never refuses a pull. `registry-cache gc` asks for read-only
mode with a request file beside the cache (gc.ReadOnly); the runner records each pull's time
for gc's LRU (usage.py) and says when the disk under the cache is full (disk.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional, TextIO

import yaml

from registry_cache import counters, disk, net, paths, proc, upstream
from registry_cache.fsutil import write_file
from registry_cache.handover import Relay, free_port
from registry_cache.record import MirrorRecord
from registry_cache.usage import Usage

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
GC_HOLD = "gc"  # `hold` while the mirror serves read-only for `registry-cache gc`
DRAIN_TIMEOUT = 30.0  # how long a retired registry may finish the pulls it serves
USAGE_WRITE_INTERVAL = 5.0


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
    hold: Optional[str] = None
    disk_problem: Optional[str] = None
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
            "hold": self.hold,
            "disk_problem": self.disk_problem,
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


@dataclass
class _Registry:
    """One registry process on duty (or starting), on its private loopback ports."""

    mode: str
    child: Any
    port: int
    debug_port: Optional[int]
    counter: counters.HitCounter
    reader: threading.Thread
    workdir: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


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
        self.usage = Usage.read(self.storage)
        self._usage_dirty = False
        self._usage_written = 0.0
        self._enospc = False
        self.relays: list[Relay] = []

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped: wait for storage, pick the mode, run the registry, switch or restart it."""
        backoff = 1.0
        current: Optional[_Registry] = None
        while not self.stop_event.is_set():
            if not self._storage_ready():
                self.stop_event.wait(2.0)
                continue
            mode = self._choose_mode()
            started = time.monotonic()
            successor = self._start_registry(mode)
            if self._wait_ready(successor):
                self._go_live(successor)
                if current is not None:
                    self._retire(current)
                current = successor
                if self._hold_requested() and mode == READ_ONLY:
                    self._save_usage(force=True)  # gc plans on the latest pull times
                    self._set(hold=GC_HOLD)
                elif self.state.hold is not None:
                    self._set(hold=None)
                exit_code, switching = self._watch(current)
                if self.stop_event.is_set():
                    break
                if switching:
                    backoff = 1.0
                    continue  # `current` serves on until its successor does
                self._retire(current)
                current = None
            else:
                exit_code = self._retire(successor)
                if self.stop_event.is_set():
                    break
            ran_for = time.monotonic() - started
            backoff = 1.0 if ran_for > 60 else min(backoff * 2, MAX_BACKOFF)
            with self._lock:
                self.state.restarts += 1
                self.state.pid = None
                self.state.mode = STARTING
            log.warning("mirror %s: registry exited with code %s; restarting in %.0f s",
                        self.name, exit_code, backoff)
            self.stop_event.wait(backoff)
        for relay in self.relays:
            relay.close()
        if current is not None:
            self._retire(current)
        self._save_usage(force=True)
        self._set(mode=STOPPED, pid=None, hold=None)
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
        if self._hold_requested():
            return READ_ONLY  # for gc: the upstream's state is probed again once it is done
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

    def _hold_requested(self) -> bool:
        """True while `registry-cache gc` asks for read-only mode (its request has not expired)."""
        try:
            with open(paths.readonly_request(self.storage), encoding="utf-8") as handle:
                request = json.load(handle)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            return True  # being written: obey it
        until = request.get("until") if isinstance(request, dict) else None
        return not isinstance(until, (int, float)) or until > time.time()

    def _start_registry(self, mode: str) -> _Registry:
        """Start a registry in `mode` on private loopback ports (the relays hold the public ones)."""
        name = paths.PROXY_CONFIG if mode == PROXY else paths.READONLY_CONFIG
        rendered = os.path.join(self.mirror_dir, name)
        with open(rendered, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        port = free_port()
        http = config.setdefault("http", {})
        http["addr"] = f"127.0.0.1:{port}"
        debug_port = None
        if isinstance(http.get("debug"), dict) and http["debug"].get("addr"):
            debug_port = free_port()
            http["debug"]["addr"] = f"127.0.0.1:{debug_port}"
        # the proxy config may hold the upstream password: a private folder, a 0600 file
        workdir = tempfile.mkdtemp(prefix=f"registry-cache-{self.name}-")
        path = os.path.join(workdir, "config.yml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)
        counter = counters.HitCounter(counters.cached_blobs(self.storage), self.state.counts)
        child = proc.spawn([REGISTRY_BIN, "serve", path])
        reader = threading.Thread(target=self._read_log, args=(child, counter), daemon=True)
        reader.start()
        return _Registry(mode, child, port, debug_port, counter, reader, workdir)

    def _go_live(self, registry: _Registry) -> None:
        """Point the mirror's ports at `registry` (listening on them the first time)."""
        if not self.relays:
            self.relays = [Relay(self.record.listen, self.record.port)]
            if registry.debug_port is not None and self.record.debug_port:
                self.relays.append(Relay("127.0.0.1", self.record.debug_port))
        self.relays[0].point_to(registry.port)
        if registry.debug_port is not None and len(self.relays) > 1:
            self.relays[1].point_to(registry.debug_port)
        log.info("mirror %s: serving on port %s in %s mode (upstream %s)",
                 self.name, self.record.port, registry.mode, self.record.upstream)
        self._set(mode=registry.mode, since=time.time(), pid=registry.child.pid)

    def _retire(self, registry: _Registry) -> Optional[int]:
        """Stop a registry once its stores and the pulls it serves have finished."""
        if registry.child.poll() is None:
            self._wait_for_cache_writes(registry.counter)
            if self.relays and not self.relays[0].wait_idle(registry.port, DRAIN_TIMEOUT):
                log.warning("mirror %s: stopping the %s registry with pulls still open",
                            self.name, registry.mode)
        exit_code = proc.stop(registry.child)
        registry.reader.join(timeout=5)
        shutil.rmtree(registry.workdir, ignore_errors=True)
        self._write_state(force=True)
        return exit_code

    def _watch(self, registry: _Registry) -> tuple[Optional[int], bool]:
        """Serve until the registry exits, we stop, or another mode is due (then True)."""
        mode = registry.mode
        child = registry.child
        counter = registry.counter
        next_probe = time.monotonic() + self.record.reconnect_interval
        next_prune = time.monotonic() + 10
        while not self.stop_event.is_set() and child.poll() is None:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + 10
                with self._lock:
                    counter.fetched = [b for b in counter.fetched if not counters.is_stored(self.storage, *b)]
                self._check_disk()
            on_hold = self.state.hold == GC_HOLD
            if mode == PROXY and self._hold_requested():
                log.info("mirror %s: serving read-only while `registry-cache gc` runs", self.name)
                return None, True
            if on_hold and not self._hold_requested():
                log.info("mirror %s: gc is done; leaving read-only mode", self.name)
                return None, True
            if mode == READ_ONLY and not on_hold and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.record.reconnect_interval
                if upstream.check(self.record.upstream).reachable:
                    log.info("mirror %s: upstream answers again; switching to proxy mode", self.name)
                    return None, True
            self._write_state()
            self._save_usage()
            self.stop_event.wait(0.5)
        return child.poll(), False

    def _check_disk(self) -> None:
        problem = disk.full_problem(self.storage, seen_enospc=self._enospc)
        if problem and not self.state.disk_problem:
            log.error("mirror %s: %s", self.name, problem)
        elif not problem and self.state.disk_problem:
            log.info("mirror %s: disk space is back; new images are stored again", self.name)
            self._enospc = False
        if problem != self.state.disk_problem:
            self._set(disk_problem=problem)

    def _save_usage(self, *, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._usage_dirty or (not force and now - self._usage_written < USAGE_WRITE_INTERVAL):
                return
            text_usage = Usage(dict(self.usage.manifests), dict(self.usage.blobs))
            self._usage_dirty = False
            self._usage_written = now
        if not self.record.storage_ready:
            return
        try:
            text_usage.save(self.storage)
        except OSError as exc:
            log.warning("mirror %s: cannot keep the pull times for gc: %s", self.name, exc)

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

    def _wait_ready(self, registry: _Registry) -> bool:
        child = registry.child
        pending = net.wait_until_serving(
            {self.name: registry.url}, READY_TIMEOUT, interval=0.1,
            give_up=lambda: child.poll() is not None or self.stop_event.is_set(),
            sleep=self.stop_event.wait,
        )
        return not pending

    def _read_log(self, child: Any, counter: counters.HitCounter) -> None:
        for line in child.stdout:
            self.out.write(f"[{self.name}] {line}")
            self.out.flush()
            if "no space left on device" in line.lower() and not self._enospc:
                self._enospc = True
                problem = disk.full_problem(self.storage, seen_enospc=True) or (
                    "disk full: the registry could not store a blob (no space left on device)")
                log.error("mirror %s: %s", self.name, problem)
                self._set(disk_problem=problem)
            entry = counters.parse_log_line(line)
            if entry is None:
                continue
            with self._lock:
                if counter.observe(entry):
                    self._dirty = True
                if self.usage.observe(entry):
                    self._usage_dirty = True

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
