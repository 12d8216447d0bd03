"""The mirror's front (the front package) for as long as the runner lives: started once, its counters kept."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Optional

from registry_cache import paths
from registry_cache.record import Credentials
from registry_cache.runner.keepers import StateKeeper

if TYPE_CHECKING:
    from registry_cache.front import FrontHandle

log = logging.getLogger(__name__)


class FrontKeeper:
    """Starts the front when proxy mode first needs it, and keeps its counters in the mirror's state."""

    def __init__(self, keeper: StateKeeper) -> None:
        """The front of `keeper`'s mirror, not started yet."""
        self.keeper = keeper
        self.record = keeper.record
        self._front: Optional[FrontHandle] = None

    @property
    def url(self) -> Optional[str]:
        """Where the running front listens (the proxy registry's remoteurl); None when it does not run."""
        return self._front.url if self._front is not None else None

    def start(self, credentials: Optional[Credentials]) -> bool:
        """Start the front unless it runs; False when it cannot start."""
        if self._front is not None:
            return True
        from registry_cache import front  # aiohttp is loaded only where a mirror runs, not by `status`

        try:
            spool = paths.front_spool(self.record.storage)
            # blobs in a shared bucket never appear in the local folder, where a reader that
            # comes after the spool's start was released would wait for them: the spool stays whole
            directory = self.record.directory
            on_bucket = directory is not None and os.path.exists(os.path.join(directory, paths.SHARED_BUCKET))
            self._front = front.start_front(
                self.record.upstream,
                credentials,
                spool,
                storage=self.record.storage,
                spool_window=not on_bucket,
            )
        except OSError as exc:
            log.error("mirror %s: its front cannot start: %s", self.record.name, exc)
            return False
        return True

    def stop(self) -> None:
        """Stop the front and keep its final counters in the totals."""
        if self._front is None:
            return
        self._front.stop()
        try:
            final = self._front.counters()
        except Exception as exc:  # a front that would not stop: the mirror's stop goes on
            log.warning("mirror %s: the front's last counters are lost: %s", self.record.name, exc)
            final = {}
        self._front = None
        with self.keeper.lock:
            self.keeper.state.front_stopped(final)
            self.keeper.dirty = True

    def read(self) -> None:
        """Take the running front's counters into the state (written at most once a second)."""
        if self._front is None:
            return
        now = {k: v for k, v in self._front.counters().items() if k != "updated"}
        with self.keeper.lock:
            if now != self.keeper.state.front_now:
                self.keeper.state.front_now = now
                self.keeper.dirty = True
