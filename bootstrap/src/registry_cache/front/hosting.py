"""A front on its own event loop in a daemon thread, as the mirror runner embeds it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, Optional

from aiohttp import web
from yarl import URL

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
        loop: asyncio.AbstractEventLoop,
        runner: web.AppRunner,
        host: str,
        port: int,
        thread: threading.Thread,
    ) -> None:
        self.front = front
        self.host = host
        self.port = port
        self._loop = loop
        self._runner = runner
        self._thread = thread

    @property
    def url(self) -> str:
        """The front's root URL, for Distribution's `proxy.remoteurl` (`REGISTRY_PROXY_REMOTEURL`)."""
        return f"http://{self.host}:{self.port}"

    def counters(self) -> dict[str, Any]:
        """The front's counters right now (see `FrontCounters`) plus `blobs_in_flight`."""
        if not self._thread.is_alive():
            return self.front.stats()
        # read on the front's own loop: the transfers table changes there
        future = asyncio.run_coroutine_threadsafe(_call(self.front.stats), self._loop)
        return future.result(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and delete the spools."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)


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
    )
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(front.app(), access_log=None, handle_signals=False)
        await runner.setup()
        # a stop must not wait a minute for readers of a long blob: they are cut
        site = web.TCPSite(runner, host, port, shutdown_timeout=2.0)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        outcome["runner"] = runner
        outcome["port"] = runner.addresses[0][1]

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=f"front-{URL(upstream_url).host}", daemon=True)
    thread.start()
    ready.wait()
    if "error" in outcome:
        thread.join()
        raise outcome["error"]
    log.info("front: %s listens on %s:%d, spool %s", front.upstream.host, host, outcome["port"], spool_dir)
    return FrontHandle(front, loop, outcome["runner"], host, outcome["port"], thread)
