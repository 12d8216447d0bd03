"""What the one endpoint changes on the way: headers, the query, `Location` and `Link`; its own answers."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Optional

from aiohttp import web
from multidict import CIMultiDict

from registry_cache import paths, routing
from registry_cache.counters import BLOB_URI
from registry_cache.net import host_port

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
# a `Host` header: a DNS name or IPv4 address, or an IPv6 one in brackets; a port
_HOST = re.compile(r"(?:(?P<name>[A-Za-z0-9.\-]+)|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::[0-9]+)?")


def read_table(directory: str) -> Optional[routing.Table]:
    """The endpoint's table rendered into a mirror's folder; None when that mirror is no endpoint."""
    try:
        with open(os.path.join(directory, paths.ENDPOINT), encoding="utf-8") as handle:
            return routing.Table.from_json(handle.read())
    except FileNotFoundError:
        return None


def forward_request_headers(headers: Any) -> CIMultiDict:
    """A client's request headers as sent to a mirror: hop-by-hop ones dropped, Host kept."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
            out.add(key, value)
    return out


def forward_response_headers(headers: Any, decision: routing.Decision) -> CIMultiDict:
    """A mirror's answer headers as the client gets them: `Location` and `Link` under the client's name."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower == "content-length":
            continue
        if lower == "location":
            value = routing.client_url(value, decision)
        elif lower == "link":
            value = routing.client_link(value, decision)
        out.add(key, value)
    return out


def backend_query(query: str) -> str:
    """The query string a mirror gets: containerd's `ns` is the endpoint's, not the mirror's."""
    kept = [part for part in query.split("&") if part and part.split("=", 1)[0] != routing.NS_PARAMETER]
    return "&".join(kept)

def redirect(request: web.Request, decision: routing.Decision, port: Optional[int],
             scheme: str) -> Optional[web.Response]:
    """A 307 that sends another mirror's blob GET to that mirror's own port; None to forward it.

    Docker Hub sends blobs to its CDN the same way: the bytes never cross the endpoint. The
    client gets the host name it used (its `Host`), the mirror's port and the endpoint's
    scheme, and the path and query the mirror would have got (no prefix, no `ns`). Every
    mirror listens on config.yml's one `listen` address with the same TLS and client login,
    so its own port is reachable wherever the endpoint's is.
    """
    if port is None or request.method != "GET" or BLOB_URI.match(decision.path) is None:
        return None
    host = _HOST.fullmatch(request.headers.get("Host", ""))
    if host is None:
        return None
    name = host.group("name") or host.group("ipv6")
    kept = backend_query(request.raw_path.partition("?")[2])
    location = f"{scheme}://{host_port(name, port)}{decision.path}" + (f"?{kept}" if kept else "")
    return web.Response(status=307, headers={**API_VERSION, "Location": location})


def cut(request: web.Request) -> None:
    """Abort the client's connection mid-body, so it cannot take a part for the whole."""
    if request.transport is not None:
        request.transport.abort()


def unavailable(message: str) -> web.Response:
    """The OCI error a client gets when the mirror a request goes to does not answer."""
    body = {"errors": [{"code": "UNAVAILABLE", "message": message}]}
    return web.Response(status=503, body=json.dumps(body).encode(), content_type="application/json",
                        headers=API_VERSION)
