"""One registry process of a mirror, proxy or read-only, on private loopback ports taken from its record."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from registry_cache import cachelayout, counters, net, paths, proc, shared
from registry_cache.handover import free_port
from registry_cache.record import MirrorRecord
from registry_cache.state import PROXY

log = logging.getLogger(__name__)

READY_TIMEOUT = 90.0  # a cold registry start under QEMU TCG takes seconds, not minutes
STORE_GRACE = 20.0  # how long a stop waits for blobs still being copied into the cache


@dataclass
class Registry:
    """One registry process on duty (or starting), on its private loopback ports."""

    mode: str
    child: Any
    port: int
    debug_port: Optional[int]  # None: the mirror has no debug endpoint
    counter: counters.HitCounter
    reader: threading.Thread


def start(record: MirrorRecord, mode: str, counter: counters.HitCounter,
          read_log: Callable[[Any, counters.HitCounter], None], front_url: Optional[str] = None,
          *, host: str = "127.0.0.1", drain: float = 30.0) -> Registry:
    """Start a registry in `mode` on private ports (the relays, or the kernel, hold the public ones).

    `read_log(child, counter)` runs in a thread over the registry's output; `front_url` is the
    upstream a proxy registry pulls through (the mirror's front). `host` is where its private
    port listens ("" for every address: the kernel handover's redirect from outside arrives at
    the incoming interface's address). On SIGTERM it closes its idle connections at once and
    lets those serving a pull finish for up to `drain` s (Distribution's http.draintimeout).
    """
    if record.directory is None:
        raise ValueError(f"mirror {record.name}: its record was not read from disk")
    rendered = os.path.join(record.directory, paths.PROXY_CONFIG if mode == PROXY else paths.READONLY_CONFIG)
    # The private ports reach Distribution through its environment, which overrides the
    # rendered file: no copy of that file (it may hold the upstream password) is written.
    port = free_port()
    env = {"REGISTRY_HTTP_ADDR": f"{host}:{port}", "REGISTRY_HTTP_DRAINTIMEOUT": f"{drain:.0f}s"}
    debug_port = None
    if record.debug_port:
        debug_port = free_port()
        env["REGISTRY_HTTP_DEBUG_ADDR"] = f"127.0.0.1:{debug_port}"
    # the front's address is known only now (an ephemeral port): Distribution reads it from
    # the environment, over the proxy config's remoteurl. Never in read-only mode (gc's
    # included): the variable alone would make that registry a proxy.
    if mode == PROXY and front_url:
        env["REGISTRY_PROXY_REMOTEURL"] = front_url
    env.update(shared.registry_env(record.directory))  # a private S3 endpoint's CA
    child = proc.spawn([paths.REGISTRY_BIN, "serve", rendered], env)
    reader = threading.Thread(target=read_log, args=(child, counter), daemon=True)
    reader.start()
    return Registry(mode, child, port, debug_port, counter, reader)


def wait_ready(record: MirrorRecord, registry: Registry, stop: threading.Event) -> bool:
    """Wait until the registry serves; False when it died, the runner stops, or it took too long."""
    child = registry.child
    pending = net.wait_until_serving(
        {record.name: record.loopback_endpoint(registry.port)}, READY_TIMEOUT, interval=0.1,
        give_up=lambda: child.poll() is not None or stop.is_set(),
        sleep=stop.wait,
    )
    return not pending


def wait_for_stores(record: MirrorRecord, registry: Registry, lock: threading.Lock,
                    is_stored: Optional[Callable[[str, str], bool]] = None) -> None:
    """Let the registry finish copying fetched blobs into the cache before it is stopped.

    Distribution streams a missed blob to the client and stores it in the background,
    fetching it again; stopping it right after a pull loses the blobs still in flight.
    `lock` guards the registry's hit counter; `is_stored(repo, digest)` looks into a cache
    that is not the record's folder (a shared bucket).
    """
    if is_stored is None:
        is_stored = functools.partial(cachelayout.is_stored, record.storage)
    deadline = time.monotonic() + STORE_GRACE
    with lock:
        pending = list(registry.counter.fetched)
    while pending and time.monotonic() < deadline:
        pending = [b for b in pending if not is_stored(*b)]
        if pending:
            time.sleep(0.2)
    if pending:
        log.warning("mirror %s: stopping with %d blob(s) not yet stored in the cache",
                    record.name, len(pending))


def stop(registry: Registry, grace: float = 10.0) -> Optional[int]:
    """Stop the registry process (SIGKILL after `grace` s) and its log reader; return its exit code."""
    exit_code = proc.stop(registry.child, grace=grace)
    registry.reader.join(timeout=5)
    return exit_code
