"""What the front answers on the upstream's behalf: the upstream's own answer passed through, a 502, a cut."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from registry_cache.front.client import UpstreamClient
from registry_cache.front.protocol import (
    describe,
    forward_request_headers,
    forward_response_headers,
    parse_blob_path,
)

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # bytes per read/write: memory stays a few chunks per request


class BodilessAnswer(web.StreamResponse):
    """An answer that has no body (to a HEAD, a 204 or 304) with the upstream's headers as they are.

    aiohttp would add `Transfer-Encoding: chunked` (or `Content-Length: 0`) to an answer
    without a length; a HEAD answered without `Content-Length` must stay that way.
    """

    _length_check = False


async def pass_through(client: UpstreamClient, request: web.Request) -> web.StreamResponse:
    """Forward a request upstream and stream the answer back as it comes."""
    data = request.content if request.body_exists else None
    blob = parse_blob_path(request.path) is not None
    headers = forward_request_headers(request.headers, blob=blob)
    try:
        upstream = await client.send(request.method, request.raw_path, headers, data)
    except Exception as exc:  # a bad redirect (yarl's ValueError) too: an answer, never a hang
        log.warning("front: %s %s: upstream unreachable: %s", request.method, request.path, describe(exc))
        return bad_gateway(exc)
    try:
        length = upstream.headers.get("Content-Length")
        bodiless = request.method == "HEAD" or upstream.status in (204, 304)
        answer = BodilessAnswer if bodiless and not (length or "").isdigit() else web.StreamResponse
        response = answer(
            status=upstream.status,
            reason=upstream.reason,
            headers=forward_response_headers(upstream.headers),
        )
        if length is not None and length.isdigit():
            response.content_length = int(length)
        await response.prepare(request)
        if bodiless:
            return response
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                client.counters.upstream_bytes += len(chunk)
                await response.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("front: %s %s: upstream broke off: %s", request.method, request.path, describe(exc))
            cut(request)
        except ConnectionResetError:  # Distribution often closes before reading a small body
            log.debug("front: %s %s: the requester left", request.method, request.path)
        return response
    finally:
        upstream.release()


def cut(request: web.Request) -> None:
    """Abort the requester's connection mid-body, so it cannot mistake a part for the whole."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def bad_gateway(exc: BaseException) -> web.Response:
    """A 502 answer in the registry's error format, naming what went wrong upstream."""
    body = {"errors": [{"code": "UNAVAILABLE", "message": f"upstream: {describe(exc)}"}]}
    return web.json_response(body, status=502)
