"""Serves an aiohttp app on its own event loop in a daemon thread (the front and the endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from aiohttp import web


async def listen(app: web.Application, host: str, port: int, *, shutdown_timeout: float,
                 ssl_context: Any = None, backlog: int = 128, reuse_address: Optional[bool] = None,
                 **runner_options: Any) -> web.AppRunner:
    """Start serving `app` on `host`:`port`; a failed start (port taken) leaves nothing running."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, shutdown_timeout=shutdown_timeout,
                       backlog=backlog, reuse_address=reuse_address)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class HostedApp:
    """An app listening on the event loop of its own daemon thread; `stop()` ends both."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 runner: web.AppRunner) -> None:
        self.loop = loop
        self.thread = thread
        self.runner = runner

    @property
    def port(self) -> int:
        """The port it listens on (the one picked when asked for port 0)."""
        return self.runner.addresses[0][1]

    def stop(self, cleanup: Callable[[], Awaitable[Any]], timeout: float) -> None:
        """Run `cleanup` on the app's loop (stops listening), then end the loop and its thread."""
        if not self.thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(cleanup(), self.loop)
        with contextlib.suppress(Exception):
            future.result(timeout=timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=timeout)


def host(serve: Callable[[], Awaitable[web.AppRunner]], name: str,
         loop: Optional[asyncio.AbstractEventLoop] = None) -> HostedApp:
    """Run `serve` (see `listen`) on a new loop in a daemon thread; return once it listens.

    The startup error (port taken, certificate unreadable) is raised in the caller's thread.
    """
    loop = loop or asyncio.new_event_loop()
    ready = threading.Event()
    outcome: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            outcome["runner"] = loop.run_until_complete(serve())
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

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait()
    if "error" in outcome:
        thread.join()
        raise outcome["error"]
    return HostedApp(loop, thread, outcome["runner"])
