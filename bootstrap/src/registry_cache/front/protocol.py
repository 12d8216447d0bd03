"""The HTTP rules the front keeps (pure): which paths are blobs, which headers pass, redirects, auth."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Optional

from multidict import CIMultiDict
from yarl import URL

from registry_cache.record import Credentials

MAX_REDIRECTS = 10
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 9110 7.6.1: meaningful for one connection only, never forwarded
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# an auth scheme: a token at the start or after a comma, followed by a space, a comma or the end
# (never by `=`, which makes it an auth parameter such as `realm="..."`)
_CHALLENGE_SCHEME = re.compile(r"(?:^|,)\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?=\s+[^=,\s]|\s*$|\s*,)")
DIGEST_HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
# Distribution's repository name grammar (reference/regexp.go), then the digest
_NAME_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_BLOB_PATH = re.compile(
    rf"^/v2/(?P<name>{_NAME_COMPONENT}(?:/{_NAME_COMPONENT})*)"
    r"/blobs/(?P<digest>(?P<algorithm>sha256|sha384|sha512):(?P<hex>[a-f0-9]+))$"
)


@dataclass(frozen=True)
class BlobRef:
    """A blob request: repository name and content digest (`sha256:<hex>`)."""

    name: str
    digest: str
    algorithm: str
    hex: str


def parse_blob_path(path: str) -> Optional[BlobRef]:
    """The blob a `/v2/<name>/blobs/<digest>` path names, or None for any other path."""
    match = _BLOB_PATH.match(path)
    if match is None:
        return None
    if len(match["hex"]) != DIGEST_HEX_LENGTH[match["algorithm"]]:
        return None
    return BlobRef(match["name"], match["digest"], match["algorithm"], match["hex"])


def same_origin(a: URL, b: URL) -> bool:
    """Whether two URLs reach the same server (scheme, host and port)."""
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def upstream_url(upstream: URL, raw_path_qs: str) -> URL:
    """The upstream URL for a request path (with query) the front received."""
    base = str(upstream).rstrip("/")
    return URL(base + raw_path_qs, encoded=True)


def forward_request_headers(headers: Mapping[str, str], *, blob: bool = False) -> CIMultiDict:
    """The requester's headers as sent upstream: hop-by-hop ones and Host dropped.

    A blob GET asks for the bytes as stored (`Accept-Encoding: identity`): the digest is
    over those, and a re-encoded body would never verify.
    """
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() in HOP_BY_HOP or key.lower() in ("host", "content-length"):
            continue
        out.add(key, value)
    if blob:
        out["Accept-Encoding"] = "identity"
    return out


def forward_response_headers(headers: Mapping[str, str]) -> CIMultiDict:
    """The upstream's answer headers as sent to the requester (length set by the front)."""
    out: CIMultiDict = CIMultiDict()
    for key, value in headers.items():
        if key.lower() in HOP_BY_HOP or key.lower() == "content-length":
            continue
        out.add(key, value)
    return out


def headers_for_hop(headers: CIMultiDict, upstream: URL, target: URL) -> CIMultiDict:
    """The headers to send to `target`: no `Authorization` once a redirect leaves the upstream."""
    if same_origin(upstream, target):
        return headers
    out = CIMultiDict(headers)
    out.popall("Authorization", None)
    return out


def challenge_schemes(values: Iterable[str]) -> set[str]:
    """The auth schemes (lower case) named by `WWW-Authenticate` header values."""
    # several challenges may share one header (`Basic realm="a", Bearer realm="b"`)
    return {m.group(1).lower() for value in values for m in _CHALLENGE_SCHEME.finditer(value)}


def should_answer_basic(
    status: int, challenges: Iterable[str], *, credentials: Optional[Credentials], sent_authorization: bool
) -> bool:
    """Whether the front retries a request with basic auth: a Basic challenge it can answer.

    A requester's own `Authorization` (Distribution's bearer token) is never replaced.
    """
    return (
        status == 401
        and credentials is not None
        and not sent_authorization
        and "basic" in challenge_schemes(challenges)
    )


def redirect_target(current: URL, status: int, location: Optional[str], method: str) -> Optional[URL]:
    """Where a redirect answer sends a GET or HEAD, or None when the front should pass it on."""
    if status not in REDIRECT_STATUSES or not location or method not in ("GET", "HEAD"):
        return None
    return current.join(URL(location, encoded=True))


def range_header(offset: int) -> str:
    """The `Range` header asking for a body from byte `offset` to its end."""
    return f"bytes={offset}-"


def content_range_start(value: Optional[str]) -> Optional[int]:
    """The first byte a `Content-Range: bytes FIRST-LAST/SIZE` answer carries, or None."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(?:\d+|\*)\s*", value or "")
    return int(match[1]) if match else None


def describe(exc: BaseException) -> str:
    """An error for the log, without query strings (CDN redirect URLs carry signatures)."""
    text = re.sub(r"\?\S*", "?…", str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
