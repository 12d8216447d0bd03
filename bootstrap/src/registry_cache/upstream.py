"""Asks an upstream registry whether it answers, and how it wants clients to log in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class UpstreamCheck:
    """What an upstream's /v2/ endpoint said (or why it said nothing)."""

    reachable: bool
    status: Optional[int] = None
    auth_scheme: Optional[str] = None  # "basic", "bearer" or None
    error: Optional[str] = None

    @property
    def needs_basic_auth(self) -> bool:
        """True when the upstream wants HTTP basic auth, which Distribution's proxy cannot send."""
        return self.auth_scheme == "basic"


def check(url: str, *, timeout: float = PROBE_TIMEOUT) -> UpstreamCheck:
    """Probe `url`/v2/; any HTTP answer counts as reachable."""
    import requests

    try:
        response = requests.get(url.rstrip("/") + "/v2/", timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        return UpstreamCheck(reachable=False, error=_short_reason(exc))
    challenge = response.headers.get("WWW-Authenticate", "")
    scheme = challenge.split(" ", 1)[0].lower() or None
    return UpstreamCheck(reachable=True, status=response.status_code, auth_scheme=scheme)


def basic_auth_problem(upstream: str) -> str:
    """The plain words for an upstream that wants basic auth."""
    return (
        f"upstream {upstream} asks for HTTP basic auth (htpasswd); the Distribution proxy "
        "can only log in to token-auth registries (Docker Hub, ghcr.io, quay.io), so pulls of "
        "anything not cached yet fail with a misleading '404 manifest unknown'. Use a token-auth "
        "upstream, or make this one readable anonymously."
    )


def _short_reason(exc: Any) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "No route to host", "Network is unreachable", "Temporary failure"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
