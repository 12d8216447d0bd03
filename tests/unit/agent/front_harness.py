"""An upstream and a front as aiohttp apps on one event loop, for the front's unit tests.

No process is started: each test can hold the upstream mid-body and look at what the
readers got meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from typing import Callable

import aiohttp
from aiohttp import web
from registry_cache.front import Front

BODY = bytes(range(256)) * 4096  # 1 MiB
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
REPO = "team/app"
BLOB = f"/v2/{REPO}/blobs/{DIGEST}"
HALF = len(BODY) // 2

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """An upstream whose answer a test sets (`handler`); it records every request."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, str, str | None]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path, request.headers.get("Authorization")))
        return await self.handler(request)

    def gets(self, path: str = BLOB) -> int:
        return sum(1 for method, p, _ in self.seen if method == "GET" and p == path)


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def run_front(scenario: Callable[..., Awaitable[None]], tmp_path, handler: Handler, **front_kwargs) -> None:
    """Run `scenario(front_url, upstream, front, client)` with a front in front of `handler`."""

    async def main() -> None:
        upstream = Upstream(handler)
        up_runner, up_url = await serve(upstream.app)
        front = Front(up_url, str(tmp_path / "spool"), **front_kwargs)
        front_runner, front_url = await serve(front.app())
        try:
            async with aiohttp.ClientSession() as client:
                await asyncio.wait_for(scenario(front_url, upstream, front, client), 20)
        finally:
            await front_runner.cleanup()
            await up_runner.cleanup()

    asyncio.run(main())


async def emptied(folder, within: float = 2.0) -> bool:
    """Whether `folder` is empty, or becomes so `within` seconds (spools are deleted off the loop)."""
    deadline = asyncio.get_running_loop().time() + within
    while list(folder.iterdir()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    return not list(folder.iterdir())


async def whole_blob(request: web.Request) -> web.StreamResponse:
    return web.Response(body=BODY, content_type="application/octet-stream")


async def first_half(request: web.Request) -> web.StreamResponse:
    """Start answering with the whole blob's length and send its first half (the test sends the rest)."""
    response = web.StreamResponse()
    response.content_length = len(BODY)
    await response.prepare(request)
    await response.write(BODY[:HALF])
    return response
