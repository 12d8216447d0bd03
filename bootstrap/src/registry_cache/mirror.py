"""Keeps one mirror serving: proxy through its front while the upstream answers, else its cache read-only.

In proxy mode the registry's `remoteurl` is the mirror's front (the `front` package, on an ephemeral
loopback port, `REGISTRY_PROXY_REMOTEURL`), which fetches each blob from the real upstream
once however many requests want it, and logs in to basic-auth upstreams. The front lives as
long as the runner; its counters are the mirror's upstream traffic in `status`.

The runner probes the upstream first: unreachable -> it starts the registry on the read-only
config (same storage, no proxy section), which serves every cached image, and switches to
proxy mode once the upstream answers. Why still read-only: Distribution 2.8.2 learns which
token service its credentials are for only at start (`getAuthURLs`), so a proxy started while
the upstream is away would pull anonymously ever after. (Behind the front it would at least
not panic.) A front that cannot start also leaves the cache read-only. The runner restarts a
registry that dies, counts true hits and misses from the registry's log, and keeps that state
beside the cache for `status`.

The runner holds the mirror's ports itself and relays connections to the registry on duty
(handover.py), so switching modes never refuses a pull. `registry-cache gc` asks for read-only
mode with a request file beside the cache (gc.ReadOnly); the runner records each pull's time
for gc's LRU (usage.py) and says when the disk under the cache is full (disk.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, TextIO

import yaml

from registry_cache import counters, disk, net, paths, proc, upstream
from registry_cache.fsutil import write_file
from registry_cache.handover import Relay, free_port
from registry_cache.record import Credentials, MirrorRecord
from registry_cache.state import GC_HOLD, PROXY, READ_ONLY, STARTING, STOPPED, WAITING, read_state
from registry_cache.usage import Usage

if TYPE_CHECKING:
    from registry_cache.front import FrontHandle

log = logging.getLogger(__name__)

REGISTRY_BIN = os.environ.get("REGISTRY_CACHE_REGISTRY_BIN", "/usr/bin/docker-registry")
READY_TIMEOUT = 90.0  # a cold registry start under QEMU TCG takes seconds, not minutes
MAX_BACKOFF = 30.0
STATE_WRITE_INTERVAL = 1.0
STORE_GRACE = 20.0  # how long a stop waits for blobs still being copied into the cache

DRAIN_TIMEOUT = 30.0  # how long a retired registry may finish the pulls it serves
# When the mirror itself stops, clients' idle keep-alive connections (Docker keeps them ~90 s)
# would hold the drain for its whole timeout and past systemd's TimeoutStopSec: wait briefly.
STOP_DRAIN_TIMEOUT = 5.0
REQUEST_WRITE_GRACE = 10.0  # how long an unreadable gc request counts as one being written
USAGE_WRITE_INTERVAL = 5.0

# The front's counters kept in the state file, as (front counter, state key); totals since
# the cache was created, like the hit/miss counts.
FRONT_TOTALS = (
    ("upstream_bytes", "bytes_from_upstream"),
    ("upstream_requests", "upstream_requests"),
    ("blob_transfers", "blob_transfers"),
    ("blob_joins", "blob_joins"),
    ("blob_failures", "blob_failures"),
)


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
    front_before: dict[str, int] = field(default_factory=dict)  # totals of earlier runs, by state key
    front_now: dict[str, Any] = field(default_factory=dict)  # the running front's counters

    def front_totals(self) -> dict[str, int]:
        """The front's totals by state key: earlier runs plus the running front."""
        totals = {key: self.front_before.get(key, 0) + int(self.front_now.get(name, 0))
                  for name, key in FRONT_TOTALS}
        totals["blobs_in_flight"] = int(self.front_now.get("blobs_in_flight", 0))
        return totals

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
            **self.front_totals(),
        }


@dataclass
class _Registry:
    """One registry process on duty (or starting), on its private loopback ports."""

    mode: str
    child: Any
    port: int
    debug_port: Optional[int]
    counter: counters.HitCounter
    reader: threading.Thread
    debug_listen: str = "127.0.0.1"  # where the mirror's debug endpoint is reached


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
            front_before={key: int(previous.get(key, 0)) for _, key in FRONT_TOTALS},
        )
        self._front: Optional[FrontHandle] = None
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
        try:
            self._run()
        finally:
            for relay in self.relays:
                relay.close()
            self._stop_front()  # after the registry: it may still be storing what the front fetched
        self._save_usage(force=True)
        self._set(mode=STOPPED, pid=None, hold=None)
        self._write_state(force=True)

    def _run(self) -> None:
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
            relay.close()  # no new pulls; those open finish before the registry stops
        if current is not None:
            self._retire(current)

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
        elif result.login_missing:
            problem = upstream.login_problem(self.record.upstream)
            log.error("mirror %s: %s", self.name, problem)
        elif result.credentials_rejected and credentials is not None:
            problem = upstream.credentials_problem(self.record.upstream, credentials.username)
            log.error("mirror %s: %s", self.name, problem)
        mode = PROXY if result.reachable else READ_ONLY
        if mode == PROXY and not self._start_front(credentials):
            problem = "its front cannot start (see the log); serving the cache read-only"
            mode = READ_ONLY
        self._set(upstream_reachable=result.reachable, upstream_problem=problem)
        return mode

    def _start_front(self, credentials: Optional[Credentials]) -> bool:
        """Start the mirror's front unless it runs; False when it cannot start."""
        if self._front is not None:
            return True
        from registry_cache import front  # aiohttp is loaded only where a mirror runs, not by `status`

        try:
            spool = paths.front_spool(self.storage)
            self._front = front.start_front(self.record.upstream, credentials, spool)
        except OSError as exc:
            log.error("mirror %s: its front cannot start: %s", self.name, exc)
            return False
        return True

    def _stop_front(self) -> None:
        """Stop the front and keep its final counters in the totals."""
        if self._front is None:
            return
        self._front.stop()
        try:
            final = self._front.counters()
        except Exception as exc:  # a front that would not stop: the mirror's stop goes on
            log.warning("mirror %s: the front's last counters are lost: %s", self.name, exc)
            final = {}
        self._front = None
        with self._lock:
            for name, key in FRONT_TOTALS:
                self.state.front_before[key] = self.state.front_before.get(key, 0) + int(final.get(name, 0))
            self.state.front_now = {}
            self._dirty = True

    def _read_front(self) -> None:
        """Take the running front's counters into the state (written at most once a second)."""
        if self._front is None:
            return
        now = {k: v for k, v in self._front.counters().items() if k != "updated"}
        with self._lock:
            if now != self.state.front_now:
                self.state.front_now = now
                self._dirty = True

    def _hold_requested(self) -> bool:
        """True while `registry-cache gc` asks for read-only mode (its request has not expired)."""
        path = paths.readonly_request(self.storage)
        try:
            with open(path, encoding="utf-8") as handle:
                request = json.load(handle)
        except FileNotFoundError:
            return False
        except (OSError, ValueError):
            # being written: obey it; a file that stays unreadable is no request
            with contextlib.suppress(OSError):
                return time.time() - os.stat(path).st_mtime < REQUEST_WRITE_GRACE
            return False
        if not isinstance(request, dict):
            return False
        until, pid = request.get("until"), request.get("pid")
        if isinstance(pid, int) and not proc.exists(pid):
            return False  # left by a gc that was killed (a stop or halt mid-run): stale
        return not isinstance(until, (int, float)) or until > time.time()

    def _start_registry(self, mode: str) -> _Registry:
        """Start a registry in `mode` on private loopback ports (the relays hold the public ones)."""
        name = paths.PROXY_CONFIG if mode == PROXY else paths.READONLY_CONFIG
        rendered = os.path.join(self.mirror_dir, name)
        with open(rendered, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        # The private ports reach Distribution through its environment, which overrides the
        # rendered file: no copy of that file (it may hold the upstream password) is written.
        port = free_port()
        env = {"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"}
        debug_port = None
        debug_listen = "127.0.0.1"
        debug = (config.get("http") or {}).get("debug")
        if isinstance(debug, dict) and debug.get("addr"):
            debug_listen = str(debug["addr"]).rpartition(":")[0].strip("[]") or "0.0.0.0"
            debug_port = free_port()
            env["REGISTRY_HTTP_DEBUG_ADDR"] = f"127.0.0.1:{debug_port}"
        counter = counters.HitCounter(counters.cached_blobs(self.storage), self.state.counts)
        # the front's address is known only now (an ephemeral port): Distribution reads it from
        # the environment, over the proxy config's remoteurl. Never in read-only mode (gc's
        # included): the variable alone would make that registry a proxy.
        if mode == PROXY and self._front:
            env["REGISTRY_PROXY_REMOTEURL"] = self._front.url
        child = proc.spawn([REGISTRY_BIN, "serve", rendered], env)
        reader = threading.Thread(target=self._read_log, args=(child, counter), daemon=True)
        reader.start()
        return _Registry(mode, child, port, debug_port, counter, reader, debug_listen)

    def _go_live(self, registry: _Registry) -> None:
        """Point the mirror's ports at `registry` (listening on them the first time)."""
        if not self.relays:
            self.relays = [Relay(self.record.listen, self.record.port)]
            if registry.debug_port is not None and self.record.debug_port:
                self.relays.append(Relay(registry.debug_listen, self.record.debug_port))
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
            drain = STOP_DRAIN_TIMEOUT if self.stop_event.is_set() else DRAIN_TIMEOUT
            if self.relays and not self.relays[0].wait_idle(registry.port, drain):
                log.warning("mirror %s: stopping the %s registry with pulls still open",
                            self.name, registry.mode)
        exit_code = proc.stop(registry.child)
        registry.reader.join(timeout=5)
        self._read_front()
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
            if mode == READ_ONLY and not on_hold and self._hold_requested():
                # already read-only (its upstream is away): gc may go ahead at once
                self._save_usage(force=True)
                self._set(hold=GC_HOLD)
                on_hold = True
            if mode == PROXY and self._hold_requested():
                log.info("mirror %s: serving read-only while `registry-cache gc` runs", self.name)
                return None, True
            if on_hold and not self._hold_requested():
                log.info("mirror %s: gc is done; leaving read-only mode", self.name)
                return None, True
            if mode == READ_ONLY and not on_hold and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.record.reconnect_interval
                answers = upstream.check(self.record.upstream).reachable
                if answers and self._start_front(self.record.credentials()):
                    log.info("mirror %s: upstream answers again; switching to proxy mode", self.name)
                    return None, True
            self._read_front()
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
            {self.name: self.record.loopback_endpoint(registry.port)}, READY_TIMEOUT, interval=0.1,
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
