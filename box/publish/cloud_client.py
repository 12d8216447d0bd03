"""Talks to the HCP Vagrant / Vagrant Cloud API v2 with retries, keeping the token secret.

The token (VAGRANT_CLOUD_TOKEN) goes in `Authorization: Bearer` to the API only; it is
never printed, logged or put in an error message. Connection errors, 5xx and 429 are
retried with exponential backoff (429/503 `Retry-After` honoured, bounded); any other
4xx stops with the server's `errors` message.
"""

from __future__ import annotations

import email.utils
import logging
import sys
import time
import urllib.parse
from typing import Any, Callable, Optional

import requests

from box.publish.cloud_plan import API_PREFIX, DEFAULT_SERVER, CloudError, box_path, version_path

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]
Out = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class CloudClient:
    """Talks to the Vagrant Cloud API v2 with retries; keeps the token out of every message."""

    RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: Optional[str] = None,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        timeout: float = 60.0,
        sleep: Sleep = time.sleep,
        out: Out = _stderr,
    ) -> None:
        self.server = server.rstrip("/")
        self._token = token
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.max_wait = max_wait
        self.timeout = timeout
        self.sleep = sleep
        self.out = out
        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:  # never show the token, even in a debugger or traceback
        return f"CloudClient(server={self.server!r}, token={'***' if self._token else None})"

    def scrub(self, text: str) -> str:
        """Remove the token from any text that might be shown."""
        if self._token:
            text = text.replace(self._token, "***")
        return text

    def _auth(self, url: str) -> dict[str, str]:
        # Only the API server gets the token: upload_path points at a storage backend.
        ours = urllib.parse.urlsplit(self.server)
        theirs = urllib.parse.urlsplit(url)
        if self._token and (ours.scheme, ours.netloc) == (theirs.scheme, theirs.netloc):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    def _wait(self, attempt: int, response: Optional[requests.Response]) -> float:
        wait = self.backoff * (2 ** (attempt - 1))
        header = response.headers.get("Retry-After") if response is not None else None
        if header:
            if header.strip().isdigit():
                wait = float(header.strip())
            else:
                try:
                    when = email.utils.parsedate_to_datetime(header)
                    wait = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    pass
        return max(0.0, min(wait, self.max_wait))

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Optional[dict[str, Any]] = None,
        file: Optional[str] = None,
        what: str,
        authorize: bool = True,
    ) -> tuple[requests.Response, bool]:
        """Send with retries; return the final response and whether an attempt was ambiguous."""
        ambiguous = False
        for attempt in range(1, self.attempts + 1):
            response: Optional[requests.Response] = None
            reason = ""
            try:
                log.debug("%s %s (attempt %d)", method, self.scrub(url), attempt)
                headers = self._auth(url) if authorize else {}
                if file is not None:
                    headers["Content-Type"] = "application/octet-stream"
                    with open(file, "rb") as body:
                        response = self.session.request(
                            method, url, data=body, headers=headers, timeout=self.timeout
                        )
                else:
                    response = self.session.request(
                        method, url, json=json_body, headers=headers, timeout=self.timeout
                    )
            except (requests.ConnectionError, requests.Timeout) as exc:
                ambiguous = True
                reason = f"connection failed: {type(exc).__name__}"
            else:
                if response.status_code not in self.RETRY_STATUS:
                    return response, ambiguous
                reason = f"{response.status_code} {response.reason}"
                if response.status_code >= 500:
                    ambiguous = True
            if attempt == self.attempts:
                if response is not None:
                    return response, ambiguous
                raise CloudError(
                    self.scrub(f"{what}: {reason}, gave up after {self.attempts} attempts; "
                               "re-run to resume")
                )
            wait = self._wait(attempt, response)
            self.out(f"    {what}: {reason}; retrying in {wait:.1f} s "
                     f"(attempt {attempt + 1}/{self.attempts})")
            self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, what: str, response: requests.Response) -> CloudError:
        detail = ""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("errors"):
            errors = data["errors"]
            if not isinstance(errors, list):
                errors = [errors]
            parts = []
            for err in errors:
                if isinstance(err, dict):
                    parts += [f"{k} {v}" for k, v in err.items()]
                else:
                    parts.append(str(err))
            detail = "; ".join(parts)
        elif response.text:
            detail = response.text.strip()[:300]
        message = f"{what}: {response.status_code} {response.reason}"
        if detail:
            message += f": {detail}"
        if response.status_code in self.RETRY_STATUS:
            message += f" (gave up after {self.attempts} attempts; re-run to resume)"
        return CloudError(self.scrub(message))

    def api(
        self,
        method: str,
        path: str,
        body: Optional[dict[str, Any]] = None,
        *,
        missing_ok: bool = False,
        exists_path: Optional[str] = None,
    ) -> Optional[dict[str, Any]]:
        """Call the API; return its JSON (None for a 404 when `missing_ok`).

        `exists_path`: for a create whose first attempt may have reached the server
        before the connection dropped, a refusal on the retry is checked against a GET.
        """
        what = f"{method} {API_PREFIX}{path}"
        response, ambiguous = self._send(
            method, self.server + API_PREFIX + path, json_body=body, what=what
        )
        if missing_ok and response.status_code == 404:
            return None
        if response.status_code >= 400:
            if ambiguous and exists_path and 400 <= response.status_code < 500:
                found = self.api("GET", exists_path, missing_ok=True)
                if found is not None:
                    return found
            raise self._error(what, response)
        if not response.content:
            return {}
        try:
            data = response.json()
        except ValueError:
            raise CloudError(f"{what}: the server answered {response.status_code} "
                             "but not with JSON") from None
        return data if isinstance(data, dict) else {"data": data}

    def upload(self, file: str, upload_path: str, callback: Optional[str]) -> None:
        """PUT the box file to the upload URL, then PUT the callback that confirms it."""
        what = "PUT upload_path"
        # upload_path is a storage URL: it is signed, and never gets the API token.
        response, _ = self._send("PUT", upload_path, file=file, what=what, authorize=False)
        if response.status_code >= 400:
            raise self._error(what, response)
        if callback:
            what = "PUT callback"
            response, _ = self._send("PUT", callback, what=what)
            if response.status_code >= 400:
                raise self._error(what, response)

    def read_state(
        self, org: str, name: str, version: str
    ) -> tuple[Optional[dict[str, Any]], Optional[dict[str, Any]]]:
        """Read the remote box and version (None where the API answers 404)."""
        remote_box = self.api("GET", box_path(org, name), missing_ok=True)
        if remote_box is None:
            return None, None
        remote_version = self.api("GET", version_path(org, name, version), missing_ok=True)
        return remote_box, remote_version
