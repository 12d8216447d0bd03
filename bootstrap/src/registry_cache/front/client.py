"""The front's requests to its upstream: redirects followed, a Basic challenge answered, bytes counted."""

from __future__ import annotations

import logging
from typing import Any, Optional

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from registry_cache.front.protocol import (
    MAX_REDIRECTS,
    headers_for_hop,
    redirect_target,
    same_origin,
    should_answer_basic,
    upstream_url,
)
from registry_cache.front.transfer import FrontCounters
from registry_cache.record import Credentials

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0  # an upstream silent this long mid-body counts as failed
ERROR_BODY_LIMIT = 64 * 1024  # a non-200 blob answer is small (JSON error); more is cut


class UpstreamClient:
    """One HTTP session to the upstream (and the servers it redirects to), shared by every request."""

    def __init__(
        self,
        upstream: URL,
        counters: FrontCounters,
        *,
        credentials: Optional[Credentials] = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.upstream = upstream
        self.counters = counters
        self.credentials = credentials
        self.read_timeout = read_timeout
        self._basic_known = False  # the upstream challenged Basic once: send it up front after that
        self._session: Optional[aiohttp.ClientSession] = None

    def open(self) -> None:
        """Open the session (on the loop that will use it)."""
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=self.read_timeout)
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
        self, method: str, raw_path_qs: str, headers: CIMultiDict, data: Any = None
    ) -> aiohttp.ClientResponse:
        """Send one request upstream, following redirects and answering a Basic challenge.

        Returns the final answer, unread: the caller streams its body and releases it.
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
            response.release()
