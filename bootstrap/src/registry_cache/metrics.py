"""`registry-cache metrics`: every mirror's health and counters for Prometheus, read fresh on each scrape.

The endpoint reads what `status` reads (each mirror's record, state file and storage), so it
keeps no state of its own and survives mirror restarts. It serves:

- /metrics: the Prometheus text format (names below, one `mirror` label each);
- /status:  the same JSON as `registry-cache status --json` (without Docker Hub's rate limit).

`apply` and `serve` write the address and port it should listen on (config.yml's `listen` and
`metrics_port`) to metrics.json under the root; `apply` restarts its unit when they change.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from socketserver import ThreadingMixIn
from typing import Any, Callable, Optional, TextIO
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from registry_cache import paths
from registry_cache.config import DEFAULT_LISTEN, DEFAULT_METRICS_PORT, CacheConfig
from registry_cache.fsutil import load_json, write_file
from registry_cache.state import MODES

log = logging.getLogger(__name__)

# The counters a mirror's state file keeps: (MirrorStatus field, metric name, help). A new
# counter (e.g. the upstream bytes the front (#11) counts) is one more row, under its own name.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("hits", "registry_cache_mirror_hits", "Blob downloads served from the mirror's cache."),
    ("misses", "registry_cache_mirror_misses", "Blob downloads the mirror fetched from its upstream."),
    ("bytes_served", "registry_cache_mirror_served_bytes", "Bytes of blobs the mirror served to clients."),
    ("bytes_from_upstream", "registry_cache_mirror_upstream_bytes",
     "Bytes the mirror fetched from its upstream (as its front counts them)."),
    ("restarts", "registry_cache_mirror_restarts",
     "Times the mirror's registry restarted since its unit started."),
    # the mirror's front (the front package): how the upstream link was used and shared
    ("upstream_requests", "registry_cache_mirror_upstream_requests",
     "Requests the mirror's front sent to its upstream."),
    ("blob_transfers", "registry_cache_mirror_blob_transfers",
     "Blob downloads from the upstream the mirror's front made."),
    ("blob_joins", "registry_cache_mirror_blob_joins",
     "Blob requests served by a download already under way, not by a new one from the upstream."),
    ("blob_failures", "registry_cache_mirror_blob_failures",
     "Blob downloads from the upstream that failed (cut, short or with the wrong digest)."),
    ("blob_resumes", "registry_cache_mirror_blob_resumes",
     "Blob downloads carried on with a Range request after their upstream connection dropped."),
    ("blob_unshared", "registry_cache_mirror_blob_unshared",
     "Blob requests streamed straight from the upstream, unshared and not stored: no room on disk."),
    ("blob_late", "registry_cache_mirror_blob_late",
     "Blob requests that came once the start of their download's spool was released (served once stored)."),
    ("blob_late_upstream", "registry_cache_mirror_blob_late_upstream",
     "Late blob requests fetched from the upstream again: the blob was not stored in time."),
)
# Size cap, gc and disk (gc/, disk.py): (metric name, help, value of a MirrorStatus; None: no sample).
GAUGES: tuple[tuple[str, str, Callable[[Any], Optional[float]]], ...] = (
    ("registry_cache_mirror_max_bytes", "The mirror's size cap (its own max_size, else the whole cache's).",
     lambda s: s.max_size or s.cache_max_size),
    ("registry_cache_mirror_last_gc_timestamp_seconds", "When the last gc of the mirror began (epoch s).",
     lambda s: s.gc_last_run),
    ("registry_cache_mirror_last_gc_freed_bytes", "Bytes the last gc of the mirror freed.",
     lambda s: s.gc_bytes_freed),
    ("registry_cache_mirror_last_gc_evicted_images", "Images the last gc of the mirror evicted.",
     lambda s: s.gc_images_evicted),
    ("registry_cache_mirror_kernel_handover",
     "1 while the kernel (an nftables redirect) holds the mirror's port, 0 for the relay or the endpoint.",
     lambda s: None if s.handover is None else (1 if s.handover == "kernel" else 0)),
    ("registry_cache_mirror_disk_full", "1 while the disk under the mirror's cache is full, else 0.",
     lambda s: 1 if s.disk_problem else 0),
    # a cache in a bucket other nodes share (cluster.py); cache_bytes is then the whole bucket's
    ("registry_cache_mirror_shared_nodes", "Nodes serving the mirror's shared cache (one bucket).",
     lambda s: len(s.shared_nodes) if s.shared and not s.shared_problem else None),
    ("registry_cache_mirror_shared_held", "1 while a gc holds the shared cache read-only, else 0.",
     lambda s: (1 if s.shared_holder else 0) if s.shared and not s.shared_problem else None),
    ("registry_cache_mirror_shared_reachable", "1 when this node can read the shared cache's bucket, else 0.",
     lambda s: (0 if s.shared_problem else 1) if s.shared else None),
)


@dataclass(frozen=True)
class MetricsSettings:
    """Where the metrics endpoint listens: the mirrors' address and the config's metrics_port."""

    listen: str = DEFAULT_LISTEN
    port: int = DEFAULT_METRICS_PORT

    def text(self) -> str:
        """The content of metrics.json."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, root: str) -> MetricsSettings:
        """The settings `apply` wrote under `root`; the defaults before any apply."""
        try:
            data = load_json(os.path.join(root, paths.METRICS_SETTINGS))
            return cls(listen=str(data["listen"]), port=int(data["port"]))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s); listening on the defaults until the next apply",
                        paths.METRICS_SETTINGS, exc)
            return cls()


def apply_settings(root: str, config: CacheConfig, out: TextIO, *, restart: bool = True) -> bool:
    """Record where the endpoint listens for this config; restart its unit (`restart`) when that changed.

    `serve` records them too, with restart=False: a `registry-cache metrics` beside it reads
    them when it starts.
    """
    from registry_cache import systemd

    settings = MetricsSettings(listen=config.listen, port=config.metrics_port)
    if not write_file(os.path.join(root, paths.METRICS_SETTINGS), settings.text()):
        return False
    if restart and systemd.running():
        systemd.systemctl("try-restart", paths.METRICS_UNIT)
    print(f"metrics endpoint: {settings.listen}:{settings.port} (/metrics, /status)", file=out)
    return True


def families(statuses: Iterable[Any]) -> list[Any]:
    """The Prometheus metric families of these mirror statuses (status.MirrorStatus)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    info = GaugeMetricFamily("registry_cache_mirror_info", "A mirror: its upstream and port (always 1).",
                             labels=["mirror", "upstream", "port"])
    up = GaugeMetricFamily("registry_cache_mirror_up", "1 when the mirror answers /v2/, else 0.",
                           labels=["mirror"])
    mode = GaugeMetricFamily("registry_cache_mirror_mode",
                             "1 for the mode the mirror runs in (proxy, read-only, ...), 0 for the others.",
                             labels=["mirror", "mode"])
    cache = GaugeMetricFamily("registry_cache_mirror_cache_bytes", "Bytes the mirror's cache holds on disk.",
                              labels=["mirror"])
    counters = [(field, CounterMetricFamily(name, text, labels=["mirror"])) for field, name, text in COUNTERS]
    gauges = [(value, GaugeMetricFamily(name, text, labels=["mirror"])) for name, text, value in GAUGES]
    for s in statuses:
        info.add_metric([s.name, s.upstream, str(s.port)], 1)
        up.add_metric([s.name], 1 if s.healthy else 0)
        for each in sorted(set(MODES) | {s.mode}):  # a 0/1 series a mode: dashboards see changes
            mode.add_metric([s.name, each], 1 if each == s.mode else 0)
        cache.add_metric([s.name], s.storage_bytes)
        for field, family in counters:
            family.add_metric([s.name], getattr(s, field))
        for value, gauge in gauges:
            number = value(s)
            if number is not None:
                gauge.add_metric([s.name], number)
    return [info, up, mode, cache, *(family for _, family in counters), *(gauge for _, gauge in gauges)]


class MirrorCollector:
    """A Prometheus collector that reads every mirror rendered under `root` on each scrape."""

    def __init__(self, root: str) -> None:
        self.root = root

    def statuses(self) -> list[Any]:
        """Every mirror's status, as `status` gathers it (never asking Docker Hub)."""
        from registry_cache import status

        return status.collect(self.root, rate_limit=False)

    def collect(self) -> Iterator[Any]:
        """What Prometheus' registry asks for."""
        yield from families(self.statuses())


def app(root: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI application: /metrics for Prometheus, /status as JSON."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    collector = MirrorCollector(root)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    def answer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body, kind, code = generate_latest(registry), CONTENT_TYPE_LATEST, "200 OK"
        elif path == "/status":
            data = [s.as_dict() for s in collector.statuses()]
            body, kind, code = (json.dumps(data, indent=2) + "\n").encode(), "application/json", "200 OK"
        elif path == "/":
            body, kind, code = b"registry-cache: /metrics (Prometheus), /status (JSON)\n", "text/plain", \
                "200 OK"
        else:
            body, kind, code = b"not found: try /metrics or /status\n", "text/plain", "404 Not Found"
        start_response(code, [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return answer


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scrape never holds up a stop


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes come every few seconds: keep them out of the journal."""


def server(root: str, settings: MetricsSettings) -> WSGIServer:
    """Bind the endpoint (OSError when the port is taken); `serve_forever()` runs it."""
    server_class = _Server
    if ":" in settings.listen:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    return make_server(settings.listen, settings.port, app(root),
                       server_class=server_class, handler_class=_QuietHandler)


def serve(root: str, settings: Optional[MetricsSettings] = None) -> None:
    """Serve /metrics and /status until the process is stopped."""
    settings = settings or MetricsSettings.read(root)
    httpd = server(root, settings)
    log.info("metrics endpoint on %s:%d: /metrics (Prometheus), /status (JSON)",
             settings.listen, settings.port)
    httpd.serve_forever()
