"""The runner's loop: wait for storage, serve in the mode due, switch modes with no pull refused, restart."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, Optional, TextIO

from registry_cache import cachelayout, cluster, counters, hold, paths, shared
from registry_cache.handover import Relay, kernel, raise_fd_limit
from registry_cache.record import MirrorRecord
from registry_cache.runner import modes, registry
from registry_cache.runner.diskwatch import DiskWatch
from registry_cache.runner.frontkeeper import FrontKeeper
from registry_cache.runner.keepers import StateKeeper, UsageKeeper
from registry_cache.runner.logreader import LogReader
from registry_cache.runner.registry import Registry
from registry_cache.state import GC_HOLD, PROXY, READ_ONLY, STARTING, STOPPED, WAITING, MirrorState

log = logging.getLogger(__name__)

MAX_BACKOFF = 30.0
DRAIN_TIMEOUT = 30.0  # how long a retired registry may finish the pulls it serves
# When the mirror itself stops, clients' idle keep-alive connections (Docker keeps them ~90 s)
# would hold the drain for its whole timeout and past systemd's TimeoutStopSec: wait briefly.
STOP_DRAIN_TIMEOUT = 5.0
USAGE_SHARE_INTERVAL = 15.0  # how often a node on a shared bucket puts its pull times there
PRUNE_INTERVAL = 10.0  # how often stored blobs leave the list of stores in flight, and the disk is checked


class MirrorRunner:
    """Runs and supervises the registry process of one rendered mirror until told to stop."""

    def __init__(self, mirror_dir: str, stop: threading.Event, *, out: TextIO = sys.stderr) -> None:
        """Read the mirror rendered in `mirror_dir` (FileNotFoundError or RecordError when none)."""
        self.mirror_dir = mirror_dir
        self.stop_event = stop
        self.record = MirrorRecord.read(mirror_dir)
        self.name = self.record.name
        self.storage = self.record.storage
        self.keeper = StateKeeper(self.record)
        self.usage = UsageKeeper(self.record)
        self.disk = DiskWatch(self.keeper)
        self.front = FrontKeeper(self.keeper)
        self.log_reader = LogReader(self.keeper, self.usage, self.disk, out)
        self.relays: list[Relay] = []
        self._counter: Optional[counters.HitCounter] = None  # the hit counter of the registry on duty
        self.kernel: Optional[kernel.KernelHandover] = None  # the kernel holds the public port
        self._waiting_logged = False
        # a mirror in a bucket other nodes share also obeys the cluster's gc hold (cluster.py)
        self.bucket = shared.read(mirror_dir)
        self.cluster = None
        if self.bucket is not None:
            self.cluster = cluster.RunnerLink(self.bucket, shared.node_name(shared.root_of(mirror_dir)))
        self._usage_shared = 0.0

    @property
    def state(self) -> MirrorState:
        """The mirror's state as `status` will read it (state.MirrorState)."""
        return self.keeper.state

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped: wait for storage, pick the mode, run the registry, switch or restart it."""
        raise_fd_limit()  # each relayed connection holds two file descriptors
        try:
            self._choose_handover()
            self._run()
        finally:
            self._close_ports()
            self.front.stop()  # after the registry: it may still be storing what the front fetched
        self.usage.save(force=True)
        self.keeper.set(mode=STOPPED, pid=None, hold=None)
        if self.cluster is not None:
            self._share_usage(force=True)
            self.cluster.leave()

    def _run(self) -> None:
        backoff = 1.0
        current: Optional[Registry] = None
        while not self.stop_event.is_set():
            if not self._storage_ready():
                self.stop_event.wait(2.0)
                continue
            mode = self._choose_mode()
            started = time.monotonic()
            successor = registry.start(self.record, mode, self._new_counter(), self.log_reader.read,
                                       self.front.url if mode == PROXY else None,
                                       host=self._private_host(), drain=DRAIN_TIMEOUT)
            if registry.wait_ready(self.record, successor, self.stop_event):
                self._go_live(successor)
                if current is not None:
                    self._retire(current)
                current = successor
                if self._gc_holds() and mode == READ_ONLY:
                    self._hold_for_gc()
                elif self.keeper.state.hold is not None:
                    self.keeper.set(hold=None)
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
            with self.keeper.lock:
                self.keeper.state.restarts += 1
                self.keeper.state.pid = None
                self.keeper.state.mode = STARTING
            log.warning("mirror %s: registry exited with code %s; restarting in %.0f s",
                        self.name, exit_code, backoff)
            self.stop_event.wait(backoff)
        self._close_ports()  # no new pulls; those open finish before the registry stops
        if current is not None:
            self._retire(current)

    def _choose_handover(self) -> None:
        """Let the kernel hold the mirror's public port where it can (nftables), else the relay.

        The first mirror's port is the one endpoint's (an HTTP router): not handed to the kernel.
        Creating the port's table is the test (nft installed, CAP_NET_ADMIN, nat in the kernel),
        and it replaces a stale table a killed runner left for this port.
        """
        if self.record.is_endpoint:
            self.keeper.set(handover="endpoint")
            return
        if kernel.wanted():
            held = kernel.KernelHandover(self.record.listen, self.record.port)
            try:
                held.claim()
                self.kernel = held
            except (kernel.KernelHandoverError, ValueError) as exc:  # ValueError: listen is no address
                log.warning("mirror %s: the relay holds port %s (a userspace copy of every byte); "
                            "the kernel handover is unavailable: %s", self.name, self.record.port, exc)
        else:
            log.info("mirror %s: the relay holds port %s (%s=%s)", self.name, self.record.port,
                     kernel.HANDOVER_ENV, kernel.RELAY)
        if self.kernel is not None:
            log.info("mirror %s: the kernel holds port %s (nftables table inet %s redirects it "
                     "to the registry on duty)", self.name, self.record.port,
                     kernel.table_name(self.record.port))
        self.keeper.set(handover=kernel.KERNEL if self.kernel is not None else kernel.RELAY)

    def _private_host(self) -> str:
        """Where a registry's private port listens: loopback, or every address under the kernel handover."""
        if self.kernel is None or self.record.listen == "127.0.0.1":
            return "127.0.0.1"
        return ""  # the input rule of the port's table keeps it from outside clients

    def _close_ports(self) -> None:
        """Stop taking new connections on the mirror's ports (those open run on)."""
        if self.kernel is not None:
            self.kernel.close()  # it still says how to retire the registries it sent clients to
        for relay in self.relays:
            relay.close()

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
        with self.keeper.lock:
            self.keeper.state.mode = WAITING
        return False

    def _choose_mode(self) -> str:
        if self._gc_holds():
            return READ_ONLY  # for gc: the upstream's state is probed again once it is done
        choice = modes.choose(self.record, self.front.start)
        self.keeper.set(upstream_reachable=choice.reachable, upstream_problem=choice.problem)
        return choice.mode

    def _new_counter(self) -> counters.HitCounter:
        cached = self.bucket.cached_blobs() if self.bucket else cachelayout.cached_blobs(self.storage)
        return counters.HitCounter(cached, self.keeper.state.counts)

    def _is_stored(self, repo: str, digest: str) -> bool:
        """True once a fetched blob is in the cache (the shared bucket, or the cache folder)."""
        if self.bucket is not None:
            return self.bucket.is_stored(repo, digest)
        return cachelayout.is_stored(self.storage, repo, digest)

    def _gc_holds(self) -> bool:
        """True while a gc asks for read-only: this node's (beside the cache) or the cluster's."""
        return hold.requested(self.storage) or (self.cluster is not None and self.cluster.held())

    def _hold_for_gc(self) -> None:
        """Say gc may go ahead: the mirror serves read-only and the latest pull times are on disk."""
        self.usage.save(force=True)  # gc plans on the latest pull times
        self.keeper.set(hold=GC_HOLD)
        if self.cluster is not None:
            self._share_usage(force=True)
            self._report(force=True)

    def _report(self, *, force: bool = False) -> None:
        """Tell the cluster this node's mode and counters (a shared bucket only)."""
        if self.cluster is None:
            return
        state = self.keeper.state
        self.cluster.report(str(state.mode), state.hold == GC_HOLD, state.counts.as_dict(), force=force)

    def _share_usage(self, *, force: bool = False) -> None:
        """Put this node's pull times in the bucket (every USAGE_SHARE_INTERVAL s, or now)."""
        due = force or time.monotonic() - self._usage_shared >= USAGE_SHARE_INTERVAL
        if self.cluster is None or not due:
            return
        self._usage_shared = time.monotonic()
        self.cluster.share_usage(self.usage.usage.text())

    def _go_live(self, successor: Registry) -> None:
        """Point the mirror's ports at `successor` (listening on them the first time)."""
        if not self.relays:
            self.relays = [self._public_port()]
            if successor.debug_port is not None and self.record.debug_port:
                self.relays.append(Relay(self.record.debug_listen, self.record.debug_port))
        self._counter = successor.counter
        self.relays[0].point_to(successor.port)  # under the kernel handover: the safety net
        if self.kernel is not None:
            try:
                self.kernel.point_to(successor.port)
            except kernel.KernelHandoverError as exc:
                log.warning("mirror %s: the relay takes over port %s: %s", self.name, self.record.port, exc)
                self.kernel.close()
                self.kernel = None
                self.keeper.set(handover=kernel.RELAY)
        if successor.debug_port is not None and len(self.relays) > 1:
            self.relays[1].point_to(successor.debug_port)
        log.info("mirror %s: serving on port %s in %s mode (upstream %s)",
                 self.name, self.record.port, successor.mode, self.record.upstream)
        self.keeper.set(mode=successor.mode, since=time.time(), pid=successor.child.pid)

    def _public_port(self) -> Any:
        """What holds the mirror's port: the one endpoint for the first mirror, else a plain relay."""
        if self.record.is_endpoint:
            from registry_cache import endpoint  # aiohttp, like the front: only where a mirror runs

            table = endpoint.read_table(self.mirror_dir)
            if table is not None:
                # warm blobs straight from the cache, where Distribution would serve them the same:
                # a local folder (not a shared bucket), and no password to check
                cache = None
                if self.bucket is None and not self.record.client_auth:
                    cache = endpoint.CachedBlobs(self.storage, self._served_by_endpoint)
                # other mirrors' blobs by redirect, but not with a client login: skopeo (containers/
                # image) drops the password on a redirect to another port (containerd logs in again)
                return endpoint.Endpoint(table, self.record.listen, self.record.port,
                                         mirror_dir=self.mirror_dir, tls=self.record.tls, cache=cache,
                                         redirects=not self.record.client_auth)
        return Relay(self.record.listen, self.record.port)

    def _served_by_endpoint(self, entry: dict[str, Any]) -> None:
        """Count a blob the endpoint sent from the cache as the registry on duty's log line would be."""
        if self._counter is not None:
            self.log_reader.entry(entry, self._counter)

    def _retire(self, retiring: Registry) -> Optional[int]:
        """Stop a registry once its stores and the pulls it serves have finished."""
        grace = 10.0
        if retiring.child.poll() is None:
            registry.wait_for_stores(self.record, retiring, self.keeper.lock, self._is_stored)
            drain = STOP_DRAIN_TIMEOUT if self.stop_event.is_set() else DRAIN_TIMEOUT
            if self.relays and not self.relays[0].wait_idle(retiring.port, drain):
                log.warning("mirror %s: stopping the %s registry with pulls still open",
                            self.name, retiring.mode)
            if self.kernel is not None:
                # the kernel sent its clients straight to it: it drains them itself on SIGTERM,
                # closing idle keep-alives at once and finishing the pulls under way
                open_now = kernel.established(retiring.port)
                if open_now:
                    log.info("mirror %s: the retired %s registry finishes its %d open connection(s) "
                             "(at most %.0f s)", self.name, retiring.mode, open_now, drain)
                grace = drain
        began = time.monotonic()
        exit_code = registry.stop(retiring, grace=grace)
        if self.kernel is not None:
            self.kernel.forget(retiring.port)
            log.info("mirror %s: the retired %s registry stopped after %.1f s of draining",
                     self.name, retiring.mode, time.monotonic() - began)
        self.front.read()
        self.keeper.write(force=True)
        return exit_code

    def _watch(self, on_duty: Registry) -> tuple[Optional[int], bool]:
        """Serve until the registry exits, we stop, or another mode is due (then True)."""
        mode = on_duty.mode
        child = on_duty.child
        counter = on_duty.counter
        next_probe = time.monotonic() + self.record.reconnect_interval
        next_prune = time.monotonic() + PRUNE_INTERVAL
        while not self.stop_event.is_set() and child.poll() is None:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_INTERVAL
                with self.keeper.lock:
                    counter.fetched = [b for b in counter.fetched
                                       if not self._is_stored(*b)]
                self.disk.check()
            on_hold = self.keeper.state.hold == GC_HOLD
            if mode == READ_ONLY and not on_hold and self._gc_holds():
                self._hold_for_gc()  # already read-only (its upstream is away): gc may go ahead at once
                on_hold = True
            if mode == PROXY and self._gc_holds():
                log.info("mirror %s: serving read-only while `registry-cache gc` runs", self.name)
                return None, True
            if on_hold and not self._gc_holds():
                log.info("mirror %s: gc is done; leaving read-only mode", self.name)
                return None, True
            if mode == READ_ONLY and not on_hold and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.record.reconnect_interval
                if modes.upstream_back(self.record, self.front.start):
                    log.info("mirror %s: upstream answers again; switching to proxy mode", self.name)
                    return None, True
            self.front.read()
            self.keeper.write()
            self.usage.save()
            self._report()
            self._share_usage()
            self.stop_event.wait(0.5)
        return child.poll(), False
