"""Asks an upstream registry whether it answers, and how it wants clients to log in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from registry_cache.record import Credentials

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class UpstreamCheck:
    """What an upstream's /v2/ endpoint said (or why it said nothing)."""

    reachable: bool
    status: Optional[int] = None
    auth_scheme: Optional[str] = None  # "basic", "bearer" or None
    error: Optional[str] = None
    credentials_rejected: bool = False
    login_missing: bool = False  # it wants HTTP basic auth and the mirror has no credentials


def check(
    url: str, *, credentials: Optional[Credentials] = None, timeout: float = PROBE_TIMEOUT
) -> UpstreamCheck:
    """Probe `url`/v2/ (any HTTP answer counts as reachable) and try the credentials, if any.

    Distribution's proxy says nothing when its upstream refuses its credentials: clients just
    get '404 manifest unknown'. So the agent asks the upstream itself: its token service for
    a token-auth upstream, its /v2/ with HTTP basic auth for a basic-auth one (the front logs
    in to those).
    """
    import requests

    try:
        response = requests.get(url.rstrip("/") + "/v2/", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return UpstreamCheck(reachable=False, error=_short_reason(exc))
    challenge = response.headers.get("WWW-Authenticate", "")
    scheme = challenge.split(" ", 1)[0].lower() or None
    rejected = False
    if scheme == "bearer" and credentials is not None:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        try:
            answer = requests.get(
                params.get("realm", ""),
                params={"service": params.get("service", "")},
                auth=credentials.pair(),
                timeout=timeout,
            )
            rejected = answer.status_code in (401, 403)
        except requests.RequestException:
            pass  # the token service is down: the pulls will say so
    if scheme == "basic" and credentials is not None:
        try:
            answer = requests.get(url.rstrip("/") + "/v2/", auth=credentials.pair(), timeout=timeout,
                                  allow_redirects=False)
            rejected = answer.status_code in (401, 403)
        except requests.RequestException:
            pass  # it answered a moment ago: the pulls will say what is wrong
    return UpstreamCheck(
        reachable=True, status=response.status_code, auth_scheme=scheme, credentials_rejected=rejected,
        login_missing=scheme == "basic" and credentials is None,
    )


def login_problem(upstream: str) -> str:
    """The plain words for an upstream that wants a login (HTTP basic auth) the mirror lacks."""
    return (
        f"upstream {upstream} wants a login (HTTP basic auth): set username and password_file "
        "for this mirror; until then pulls of anything not cached fail"
    )


def credentials_problem(upstream: str, username: str) -> str:
    """The plain words for credentials the upstream refused (the secret itself is never shown)."""
    return (
        f"upstream {upstream} refused the credentials of '{username}': fix the password or "
        "password_file; until then pulls of anything not cached fail with '404 manifest unknown'"
    )


def _short_reason(exc: Any) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "No route to host", "Network is unreachable", "Temporary failure"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
