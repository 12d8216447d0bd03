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

    @property
    def needs_basic_auth(self) -> bool:
        """True when the upstream wants HTTP basic auth, which Distribution's proxy cannot send."""
        return self.auth_scheme == "basic"


def check(
    url: str, *, credentials: Optional[Credentials] = None, timeout: float = PROBE_TIMEOUT
) -> UpstreamCheck:
    """Probe `url`/v2/ (any HTTP answer counts as reachable) and try the credentials, if any.

    Distribution's proxy says nothing when its upstream refuses its credentials: clients just
    get '404 manifest unknown'. So the agent asks the upstream's token service itself.
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
    return UpstreamCheck(
        reachable=True, status=response.status_code, auth_scheme=scheme, credentials_rejected=rejected
    )


def basic_auth_problem(upstream: str) -> str:
    """The plain words for an upstream that wants basic auth."""
    return (
        f"upstream {upstream} asks for HTTP basic auth (htpasswd); the Distribution proxy "
        "can only log in to token-auth registries (Docker Hub, ghcr.io, quay.io), so pulls of "
        "anything not cached yet fail with a misleading '404 manifest unknown'. Use a token-auth "
        "upstream, or make this one readable anonymously."
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
