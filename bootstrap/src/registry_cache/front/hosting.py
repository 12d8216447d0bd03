"""A front on its own event loop in a daemon thread, as the mirror runner embeds it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from aiohttp import web
from yarl import URL

from registry_cache import apphost
from registry_cache.front.client import STALL_TIMEOUT
from registry_cache.front.server import Front
from registry_cache.front.transfer import KEEP_SECONDS
from registry_cache.record import Credentials

log = logging.getLogger(__name__)


class FrontHandle:
    """A front running on its own event loop in a daemon thread; `stop()` ends it."""

    def __init__(
        self,
        front: Front,
        hosted: apphost.HostedApp,
        host: str,
    ) -> None:
        self.front = front
        self.host = host
        self.port = hosted.port
        self._hosted = hosted

    @property
    def url(self) -> str:
        """The front's root URL, for Distribution's `proxy.remoteurl` (`REGISTRY_PROXY_REMOTEURL`)."""
        return f"http://{self.host}:{self.port}"

    def counters(self) -> dict[str, Any]:
        """The front's counters right now (see `FrontCounters`) plus `blobs_in_flight`."""
        if not self._hosted.thread.is_alive():
            return self.front.stats()
        # read on the front's own loop: the transfers table changes there
        future = asyncio.run_coroutine_threadsafe(_call(self.front.stats), self._hosted.loop)
        return future.result(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and delete the spools."""
        self._hosted.stop(self._hosted.runner.cleanup, timeout)


async def _call(func: Any) -> Any:
    return func()


def start_front(
    upstream_url: str,
    credentials: Optional[Credentials],
    spool_dir: str,
    *,
    storage: Optional[str] = None,
    host: str = "127.0.0.1",
    port: int = 0,
    keep_seconds: float = KEEP_SECONDS,
    stall_timeout: float = STALL_TIMEOUT,
    spool_window: bool = True,
) -> FrontHandle:
    """Start a front for `upstream_url` in a daemon thread; return once it listens.

    `port` 0 picks a free one (`handle.port`). With `storage` (the mirror's cache) a spool is
    deleted as soon as Distribution has stored its blob. Raises the startup error (port taken,
    spool folder not writable) in the caller's thread.
    """
    front = Front(
        upstream_url,
        spool_dir,
        credentials=credentials,
        storage=storage,
        keep_seconds=keep_seconds,
        stall_timeout=stall_timeout,
        spool_window=spool_window,
    )

    async def serve() -> web.AppRunner:
        # a stop must not wait a minute for readers of a long blob: they are cut
        return await apphost.listen(front.app(), host, port, shutdown_timeout=2.0)

    hosted = apphost.host(serve, name=f"front-{URL(upstream_url).host}")
    log.info("front: %s listens on %s:%d, spool %s", front.upstream.host, host, hosted.port, spool_dir)
    return FrontHandle(front, hosted, host)
