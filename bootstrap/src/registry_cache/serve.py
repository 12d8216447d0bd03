"""`registry-cache serve`: the mirrors as child processes in the foreground, for hosts without systemd."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional, TextIO

from registry_cache import config as configmod
from registry_cache import paths, written
from registry_cache.converge import Step, converge
from registry_cache.record import MirrorRecord
from registry_cache.runner import MirrorRunner

log = logging.getLogger(__name__)


class Server:
    """Runs one supervised mirror per configured upstream; SIGHUP re-reads the config."""

    # The metrics endpoint beside `serve` is no unit of ours: it reads metrics.json when it starts.
    restarts_metrics = False

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
        converge(cfg, self.root, self, self.out)

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
        converge(cfg, self.root, self, self.out)
        return True

    def stop(self) -> None:
        """Stop every mirror and wait for their registries to exit."""
        for _, stop in self.runners.values():
            stop.set()
        for thread, _ in self.runners.values():
            thread.join(timeout=30)
        self.runners.clear()

    def carry_out(self, root: str, step: Step, out: TextIO) -> None:
        """Stop the runners of removed and changed mirrors, write the files, start the runners that lack."""
        plan, wanted = step.plan, step.wanted
        for line in plan.lines():
            log.info("%s", line)
        # a mirror rendered by an earlier run but not running in this process starts too
        start = plan.add + plan.update + [n for n in plan.keep + plan.refresh if n not in self.runners]
        for name in plan.remove + plan.update:
            self._stop_runner(name)
        for name in plan.remove:
            written.remove_rendered(root, name)
        for name in start:
            written.write_rendered(root, wanted[name], step.owner)
            self._start_runner(name)
        for name in plan.refresh:  # gc and warm read it; the runner keeps serving
            written.write_rendered(root, wanted[name], step.owner)
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

