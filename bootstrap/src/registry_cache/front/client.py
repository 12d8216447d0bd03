"""The front's requests to its upstream: redirects followed, a Basic challenge answered, bytes counted."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from registry_cache.front.protocol import (
    MAX_REDIRECTS,
    content_range_start,
    headers_for_hop,
    range_header,
    redirect_target,
    same_origin,
    should_answer_basic,
    upstream_url,
)
from registry_cache.front.transfer import FrontCounters
from registry_cache.record import Credentials

log = logging.getLogger(__name__)

# Every wait on the upstream is bounded, so no pull hangs on it (nginx: proxy_connect_timeout,
# proxy_read_timeout): at worst CONNECT_TIMEOUT + STALL_TIMEOUT for an answer, STALL_TIMEOUT
# of silence mid-body.
CONNECT_TIMEOUT = 15.0  # getting a connection to the upstream (or a server it redirects to)
STALL_TIMEOUT = 20.0  # no byte from the upstream this long (answer or body) fails the request
ERROR_BODY_LIMIT = 64 * 1024  # a non-200 blob answer is small (JSON error); more is cut


class UpstreamRefused(Exception):
    """The upstream would not carry on a blob from where it broke off."""


class UpstreamClient:
    """One HTTP session to the upstream (and the servers it redirects to), shared by every request."""

    def __init__(
        self,
        upstream: URL,
        counters: FrontCounters,
        *,
        credentials: Optional[Credentials] = None,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.upstream = upstream
        self.counters = counters
        self.credentials = credentials
        self.stall_timeout = stall_timeout
        self._basic_known = False  # the upstream challenged Basic once: send it up front after that
        self._session: Optional[aiohttp.ClientSession] = None

    def open(self) -> None:
        """Open the session (on the loop that will use it)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=self.stall_timeout)
        # auto_decompress off: bytes pass as the upstream sent them (the digest is over those);
        # trust_env: HTTPS_PROXY/NO_PROXY apply as they did to Distribution itself
        self._session = aiohttp.ClientSession(
            timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), trust_env=True
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        method: str,
        raw_path_qs: str,
        headers: CIMultiDict,
        data: Any = None,
        *,
        on_answer: Optional[Callable[[], None]] = None,
    ) -> aiohttp.ClientResponse:
        """Send one request upstream, following redirects and answering a Basic challenge.

        Returns the final answer, unread: the caller streams its body and releases it.
        `on_answer` is called at every answer (each redirect hop): the upstream is alive.
        """
        assert self._session is not None
        url = upstream_url(self.upstream, raw_path_qs)
        sent_authorization = "Authorization" in headers
        use_basic = self.credentials is not None and self._basic_known and not sent_authorization
        for _hop in range(MAX_REDIRECTS + 2):
            hop_headers = headers_for_hop(headers, self.upstream, url)
            if use_basic and same_origin(self.upstream, url):
                assert self.credentials is not None
                hop_headers = CIMultiDict(hop_headers)
                hop_headers["Authorization"] = self.credentials.authorization()
            self.counters.upstream_requests += 1
            response = await self._session.request(
                method, url, headers=hop_headers, data=data, allow_redirects=False
            )
            if on_answer is not None:
                on_answer()
            if (
                not use_basic
                and data is None
                and same_origin(self.upstream, url)
                and should_answer_basic(
                    response.status,
                    response.headers.getall("WWW-Authenticate", []),
                    credentials=self.credentials,
                    sent_authorization=sent_authorization,
                )
            ):
                await self.discard(response)
                self._basic_known = use_basic = True
                continue
            target = redirect_target(url, response.status, response.headers.get("Location"), method)
            if target is None:
                return response
            log.debug("front: %s %s redirected to %s", method, url.path, target.host)
            await self.discard(response)
            url = target
        raise aiohttp.TooManyRedirects(response.request_info, response.history)

    async def get_from(
        self,
        raw_path_qs: str,
        headers: CIMultiDict,
        offset: int,
        *,
        on_answer: Optional[Callable[[], None]] = None,
    ) -> tuple[aiohttp.ClientResponse, int]:
        """GET a blob from byte `offset` on (`Range`): the answer, and how many of its bytes to skip.

        An upstream that ignores `Range` answers 200 with the whole body: the first `offset`
        bytes are then to be skipped. Anything else raises UpstreamRefused.
        """
        if offset:
            headers = CIMultiDict(headers)
            headers["Range"] = range_header(offset)
        response = await self.send("GET", raw_path_qs, headers, on_answer=on_answer)
        if response.status == 200:
            return response, offset
        start = content_range_start(response.headers.get("Content-Range"))
        if offset and response.status == 206 and start == offset:
            return response, 0
        await self.discard(response)
        raise UpstreamRefused(f"asked for bytes {offset}- the upstream answered {response.status}")

    async def abandon(self, response: aiohttp.ClientResponse) -> None:
        """Give up an answer's body: its connection is closed, or drained when all of it is here.

        aiohttp 3.8 hands a connection back to its pool as soon as the whole body has arrived,
        with reading still paused when the body filled its buffer; the next request on that
        connection then never sees its answer (aio-libs/aiohttp#10169). Reading what is
        buffered resumes it.
        """
        if response.content.is_eof():
            body = await response.content.read()
            self.counters.upstream_bytes += len(body)
        response.close()

    async def read_small(self, response: aiohttp.ClientResponse) -> bytes:
        """The start of a small answer's body (an error, a redirect), counted."""
        body = await response.content.read(ERROR_BODY_LIMIT)
        self.counters.upstream_bytes += len(body)
        return body

    async def discard(self, response: aiohttp.ClientResponse) -> None:
        """Read away a small answer (a redirect, a challenge) so its connection is reused."""
        try:
            await self.read_small(response)
        finally:
            await self.abandon(response)
