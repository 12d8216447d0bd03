"""Talks to an S3 bucket (AWS S3, Ceph RGW, MinIO): requests signed with SigV4, errors that name the endpoint.

Debian ships no boto3 for the box, so the few calls the agent needs (probe, put, get, delete,
list) are signed here by hand (AWS Signature Version 4 with hashlib/hmac) and sent with
requests. An `S3Error` names the endpoint, the bucket and S3's own error code, never the secret.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# How long one S3 request may take before it counts as "cannot be reached".
DEFAULT_TIMEOUT = 10.0


class S3Error(RuntimeError):
    """An S3 request failed: `code` is S3's error code (NoSuchBucket, ...) or a network word."""

    def __init__(self, endpoint: str, bucket: str, code: str, detail: str = "", status: int = 0) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.code = code
        self.status = status
        extra = f" ({detail})" if detail else ""
        super().__init__(f"S3 endpoint {endpoint}, bucket {bucket}: {code}{extra}")


@dataclass(frozen=True)
class Bucket:
    """One S3 bucket and how to reach it: endpoint URL, region, credentials, CA, addressing style."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    path_style: bool = True
    ca_file: Optional[str] = None
    timeout: float = DEFAULT_TIMEOUT

    def _url(self, key: str = "") -> tuple[str, str, str]:
        """(url, host header, canonical path) of `key` (the bucket itself when empty)."""
        parts = urlsplit(self.endpoint.rstrip("/"))
        path_key = quote(key, safe="/-_.~")
        if self.path_style:
            host = parts.netloc
            path = f"/{self.bucket}/{path_key}" if key else f"/{self.bucket}"
        else:
            host = f"{self.bucket}.{parts.netloc}"
            path = f"/{path_key}" if key else "/"
        return f"{parts.scheme}://{host}{path}", host, path or "/"

    def request(
        self,
        method: str,
        key: str = "",
        *,
        query: Optional[Mapping[str, str]] = None,
        body: bytes = b"",
        headers: Optional[Mapping[str, str]] = None,
        ok: tuple[int, ...] = (200, 204),
    ) -> requests.Response:
        """Send one signed request; raise S3Error unless its status is in `ok`."""
        import requests

        url, host, path = self._url(key)
        query = dict(query or {})
        now = datetime.datetime.now(datetime.timezone.utc)
        signed = sign_v4(
            method=method, host=host, path=path, query=query, headers=dict(headers or {}),
            payload_sha256=hashlib.sha256(body).hexdigest(), region=self.region,
            access_key=self.access_key, secret_key=self.secret_key, now=now,
        )
        canonical_query = _canonical_query(query)
        try:
            resp = requests.request(
                method, url + (f"?{canonical_query}" if canonical_query else ""),
                data=body if body else None, headers=signed, timeout=self.timeout,
                verify=self.ca_file or True, allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise S3Error(self.endpoint, self.bucket, "TLSError", _reason(exc)) from None
        except requests.exceptions.Timeout:
            raise S3Error(self.endpoint, self.bucket, "Timeout",
                          f"no answer within {self.timeout:g} s") from None
        except requests.exceptions.ConnectionError as exc:
            raise S3Error(self.endpoint, self.bucket, "ConnectionError", _reason(exc)) from None
        if resp.status_code not in ok:
            raise S3Error(self.endpoint, self.bucket, _error_code(resp), f"HTTP {resp.status_code}",
                          status=resp.status_code)
        return resp

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        """Write the object `key`."""
        self.request("PUT", key, body=body, headers={"content-type": content_type})

    def get(self, key: str) -> Optional[bytes]:
        """The bytes of object `key`, or None when it does not exist."""
        resp = self.request("GET", key, ok=(200, 404))
        if resp.status_code == 404:
            if _error_code(resp) == "NoSuchBucket":
                raise S3Error(self.endpoint, self.bucket, "NoSuchBucket", "HTTP 404", status=404)
            return None
        return resp.content

    def delete(self, key: str) -> None:
        """Delete the object `key` (no error when it is gone already)."""
        self.request("DELETE", key, ok=(200, 204, 404))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every object under `prefix` as (key, size), in key order, page by page."""
        for key, size, _modified in self.list_objects(prefix):
            yield key, size

    def list_objects(self, prefix: str = "") -> Iterator[tuple[str, int, float]]:
        """Every object under `prefix` as (key, size, last modified in epoch seconds), in key order."""
        token: Optional[str] = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.request("GET", query=query).content)
            for item in root.iter(f"{_NS}Contents"):
                modified = item.findtext(f"{_NS}LastModified", "")
                yield (item.findtext(f"{_NS}Key", ""), int(item.findtext(f"{_NS}Size", "0")),
                       _epoch(modified))
            if root.findtext(f"{_NS}IsTruncated") != "true":
                return
            token = root.findtext(f"{_NS}NextContinuationToken")

    def create(self) -> None:
        """Create the bucket (nothing happens when this account has it already)."""
        try:
            self.request("PUT", ok=(200,))
        except S3Error as exc:
            if exc.code != "BucketAlreadyOwnedByYou":
                raise

    def probe_write(self, prefix: str = "") -> None:
        """Prove the bucket can be read, written and cleaned: write, read back, delete a probe object.

        Raises S3Error naming the endpoint and S3's error code (NoSuchBucket,
        InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, ConnectionError, ...).
        """
        key = f"{prefix.strip('/')}/.registry-cache-probe-{secrets.token_hex(6)}".lstrip("/")
        payload = b"registry-cache write probe\n"
        self.put(key, payload, "text/plain")
        try:
            if self.get(key) != payload:
                raise S3Error(self.endpoint, self.bucket, "ProbeMismatch",
                              "the object read back differs from the one written")
        finally:
            self.delete(key)


def sign_v4(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    region: str,
    access_key: str,
    secret_key: str,
    now: datetime.datetime,
    service: str = "s3",
) -> dict[str, str]:
    """The headers of a request signed with AWS Signature Version 4 (Authorization included)."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    all_headers = {k.lower(): str(v).strip() for k, v in headers.items()}
    all_headers.update({"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_sha256})
    names = sorted(all_headers)
    canonical_headers = "".join(f"{name}:{all_headers[name]}\n" for name in names)
    signed_headers = ";".join(names)
    canonical_request = "\n".join([
        method, path or "/", _canonical_query(query), canonical_headers, signed_headers, payload_sha256,
    ])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest(),
    ])
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    del all_headers["host"]  # requests sends it from the URL
    return all_headers


def _epoch(iso: str) -> float:
    """Seconds since the epoch of S3's ISO 8601 time (2026-12-02T10:50:22.064Z); 0 when unreadable."""
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(
        f"{quote(k, safe='-_.~')}={quote(str(v), safe='-_.~')}" for k, v in sorted(query.items())
    )


def _error_code(resp: object) -> str:
    """S3's error code from an error response's XML body (or the HTTP reason without one)."""
    content = getattr(resp, "content", b"") or b""
    try:
        code = ET.fromstring(content).findtext("Code") if content else None
    except ET.ParseError:
        code = None
    return code or f"HTTP{getattr(resp, 'status_code', '')}"


def _reason(exc: BaseException) -> str:
    """The innermost reason of a requests error in a few words (no URL, no secret)."""
    text = str(exc)
    for words in ("Connection refused", "Name or service not known", "No route to host",
                  "Network is unreachable", "certificate verify failed", "timed out",
                  "Connection reset by peer", "Temporary failure in name resolution"):
        if words in text:
            return words
    return type(exc).__name__
