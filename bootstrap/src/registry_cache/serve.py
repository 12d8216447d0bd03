"""`registry-cache serve`: the mirrors as child processes in the foreground, for hosts without systemd."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional, TextIO

from registry_cache import config as configmod
from registry_cache import layout, paths, secure
from registry_cache.plan import make_plan
from registry_cache.record import MirrorRecord
from registry_cache.render import RenderedMirror, render
from registry_cache.runner import MirrorRunner

log = logging.getLogger(__name__)


class Server:
    """Runs one supervised mirror per configured upstream; SIGHUP re-reads the config."""

    def __init__(
        self, config_path: Optional[str], root: str, out: TextIO, *, default_if_missing: bool = False
    ) -> None:
        self.config_path = config_path
        self.default_if_missing = default_if_missing
        self.root = root
        self.out = out
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.runners: dict[str, tuple[threading.Thread, threading.Event]] = {}

    def start(self) -> None:
        """Validate the config (ConfigError when invalid) and start every mirror."""
        cfg = configmod.load(self.config_path, default_if_missing=self.default_if_missing)
        self._converge(*self._render(cfg))

    def run_forever(self) -> None:
        """Serve until SIGTERM or SIGINT; on SIGHUP apply the config file's changes, if valid."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        signal.signal(signal.SIGHUP, lambda *_: self.reload_requested.set())
        while not self.stopping.is_set():
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            self.stopping.wait(0.5)
        self.stop()

    def reload(self) -> bool:
        """Re-read the config; an invalid one is reported and changes nothing."""
        try:
            cfg = configmod.load(self.config_path, default_if_missing=self.default_if_missing)
        except configmod.ConfigError as exc:
            log.error("config not applied; the mirrors keep serving as they are:\n%s", exc)
            return False
        self._converge(*self._render(cfg))
        return True

    def stop(self) -> None:
        """Stop every mirror and wait for their registries to exit."""
        for _, stop in self.runners.values():
            stop.set()
        for thread, _ in self.runners.values():
            thread.join(timeout=30)
        self.runners.clear()

    def _render(self, cfg: configmod.CacheConfig) -> tuple[configmod.CacheConfig, dict[str, RenderedMirror]]:
        """Make or renew the TLS certificate and hash client passwords, then render (as apply does)."""
        owner = layout.prepare_cache(cfg.storage, [m.storage for m in cfg.mirrors])
        ids = (owner.uid, owner.gid) if os.geteuid() == 0 else None
        cfg, security = secure.prepare(cfg, self.root, ids, layout.read_rendered(self.root))
        return cfg, render(cfg, security)

    def _converge(self, cfg: configmod.CacheConfig, wanted: dict[str, RenderedMirror]) -> None:
        plan = make_plan(wanted, layout.read_rendered(self.root))
        for line in plan.lines():
            log.info("%s", line)
        # a mirror rendered by an earlier run but not running in this process starts too
        start = plan.add + plan.update + [n for n in plan.keep + plan.refresh if n not in self.runners]
        for name in plan.remove + plan.update:
            self._stop_runner(name)
        for name in plan.remove:
            layout.remove_rendered(self.root, name)
        owner = layout.prepare_cache(cfg.storage, [m.storage for m in cfg.mirrors])
        for name in start:
            layout.write_rendered(self.root, wanted[name], owner)
            self._start_runner(name)
        for name in plan.refresh:  # gc and warm read it; the runner keeps serving
            layout.write_rendered(self.root, wanted[name], owner)
        warmed = [wanted[n].record for n in start + plan.refresh if wanted[n].record.warm]
        if warmed:
            threading.Thread(target=self._warm, args=(warmed,), name="warm", daemon=True).start()

    def _warm(self, records: list[MirrorRecord]) -> None:
        """Pull the `warm:` images once their mirrors serve (warm.py); a failure is only logged."""
        from registry_cache import warm

        warm.warm(records, lambda line: log.info("warm: %s", line))

    def _start_runner(self, name: str) -> None:
        if name in self.runners:
            return
        stop = threading.Event()
        runner = MirrorRunner(paths.mirror_dir(self.root, name), stop, out=self.out)
        thread = threading.Thread(target=runner.run, name=f"mirror-{name}", daemon=True)
        thread.start()
        self.runners[name] = (thread, stop)

    def _stop_runner(self, name: str) -> None:
        entry = self.runners.pop(name, None)
        if entry:
            thread, stop = entry
            stop.set()
            thread.join(timeout=30)

