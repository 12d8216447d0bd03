"""Publishes boxes to HCP Vagrant / Vagrant Cloud through its API v2, resuming after failures.

Endpoints used (API v2, relative to the server URL, default https://vagrantcloud.com):

    GET  /api/v2/box/:org/:box                                       box (404: none yet)
    POST /api/v2/boxes                         {"box": {...}}         create the box
    GET  /api/v2/box/:org/:box/version/:v                            version (404: none)
    POST /api/v2/box/:org/:box/versions        {"version": {...}}     create the version
    POST /api/v2/box/:org/:box/version/:v/providers  {"provider": {...}}
    PUT  /api/v2/box/:org/:box/version/:v/provider/:p/:arch  {"provider": {...}}  (--force)
    GET  /api/v2/box/:org/:box/version/:v/provider/:p/:arch/upload/direct
         -> {"upload_path": URL, "callback": URL}
         (boxes over 5 GiB: .../upload -> {"upload_path": URL}, no callback)
    PUT  upload_path   (the box file; storage URL: no Authorization header is sent there)
    PUT  callback      (tells the API the direct upload finished)
    PUT  /api/v2/box/:org/:box/version/:v/release

The token (VAGRANT_CLOUD_TOKEN) goes in `Authorization: Bearer` to the API only; it is
never printed, logged or put in an error message. A provider counts as uploaded when
the API reports a `hosted_token` for it. Connection errors, 5xx and 429 are retried
with exponential backoff (429/503 `Retry-After` honoured, bounded); any other 4xx
stops with the server's `errors` message.

`plan_cloud` is pure: the remote state that was read -> the list of actions.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

import requests

from box.buildinfo import BuildMetadata
from box.catalog import ARCHITECTURE, CHECKSUM_TYPE

log = logging.getLogger(__name__)

DEFAULT_SERVER = "https://vagrantcloud.com"
API_PREFIX = "/api/v2"
# Direct uploads (straight to the storage backend) are limited to 5 GiB; bigger boxes go
# through the API's plain upload URL, which has no callback.
DIRECT_UPLOAD_LIMIT = 5 * 2**30
_TAG = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)$")


class CloudError(RuntimeError):
    """Publishing to Vagrant Cloud failed or was refused; the message is safe to print."""


@dataclass(frozen=True)
class CloudAction:
    """One API step of a publish: what it does and the request that does it."""

    kind: str  # create-box, create-version, create-provider, update-provider, upload, release
    method: str
    path: str  # API path without the /api/v2 prefix
    body: Optional[dict[str, Any]]
    summary: str
    file: Optional[str] = None  # upload: path of the box file
    size: int = 0
    exists_path: Optional[str] = None  # create-*: GET this to tell whether it already exists


@dataclass(frozen=True)
class CloudPlan:
    """The actions a publish would take, plus what it leaves alone and why."""

    actions: tuple[CloudAction, ...]
    skipped: tuple[str, ...]


def parse_tag(tag: str) -> tuple[str, str]:
    """Split `ORG/BOX` into its two parts, or raise CloudError saying what is expected."""
    match = _TAG.match(tag or "")
    if not match:
        raise CloudError(f"--cloud {tag!r}: expected ORG/BOX, e.g. acme/registry-cache")
    return match.group(1), match.group(2)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def box_path(org: str, name: str) -> str:
    """API path of a box."""
    return f"/box/{_q(org)}/{_q(name)}"


def version_path(org: str, name: str, version: str) -> str:
    """API path of one version of a box."""
    return f"{box_path(org, name)}/version/{_q(version)}"


def provider_path(org: str, name: str, version: str, provider: str, arch: str) -> str:
    """API path of one provider+architecture of one version."""
    return f"{version_path(org, name, version)}/provider/{_q(provider)}/{_q(arch)}"


def is_uploaded(provider: dict[str, Any]) -> bool:
    """Tell whether the API reports the provider's box file as uploaded."""
    return bool(provider.get("hosted_token"))


def plan_cloud(
    meta: BuildMetadata,
    *,
    org: str,
    name: str,
    remote_box: Optional[dict[str, Any]],
    remote_version: Optional[dict[str, Any]],
    description: str,
    dist_dir: str,
    force: bool = False,
    release: bool = True,
) -> CloudPlan:
    """Plan the API steps that bring the remote box up to this build; refuse changed boxes.

    `remote_box`/`remote_version` are the API's answers (None for 404). A provider
    already uploaded with the same checksum is skipped; one created but not uploaded
    (an interrupted run) is uploaded; one with a different checksum is refused unless
    `force`.
    """
    actions: list[CloudAction] = []
    skipped: list[str] = []
    tag = f"{org}/{name}"
    short_description = meta.description or "docker-registry-cache box"
    vpath = version_path(org, name, meta.version)
    if remote_box is None:
        actions.append(
            CloudAction(
                kind="create-box",
                method="POST",
                path="/boxes",
                body={
                    "box": {
                        "username": org,
                        "name": name,
                        "short_description": short_description[:120],
                        "is_private": True,
                    }
                },
                summary=f"create box {tag} (private; change its visibility on the web if wanted)",
                exists_path=box_path(org, name),
            )
        )
    if remote_version is None:
        actions.append(
            CloudAction(
                kind="create-version",
                method="POST",
                path=f"{box_path(org, name)}/versions",
                body={"version": {"version": meta.version, "description": description}},
                summary=f"create version {tag} {meta.version}",
                exists_path=vpath,
            )
        )
    remote_providers = (remote_version or {}).get("providers") or []
    conflicts = []
    for box in meta.boxes:
        label = f"{tag} {meta.version} {box.provider}/{ARCHITECTURE}"
        ppath = provider_path(org, name, meta.version, box.provider, ARCHITECTURE)
        fields = {
            "name": box.provider,
            "checksum": box.sha256,
            "checksum_type": CHECKSUM_TYPE,
            "architecture": ARCHITECTURE,
            "default_architecture": True,
        }
        upload = CloudAction(
            kind="upload",
            method="GET",
            path=f"{ppath}/upload/direct" if box.size <= DIRECT_UPLOAD_LIMIT else f"{ppath}/upload",
            body=None,
            summary=f"upload {box.file} ({box.size / 2**20:.1f} MiB) to {label}",
            file=os.path.join(dist_dir, box.file),
            size=box.size,
        )
        found = next(
            (
                p
                for p in remote_providers
                if p.get("name") == box.provider
                and (p.get("architecture") or ARCHITECTURE) == ARCHITECTURE
            ),
            None,
        )
        if found is None:
            actions.append(
                CloudAction(
                    kind="create-provider",
                    method="POST",
                    path=f"{vpath}/providers",
                    body={"provider": fields},
                    summary=f"create provider {label} sha256:{box.sha256[:12]}...",
                    exists_path=ppath,
                )
            )
            actions.append(upload)
            continue
        same = (
            str(found.get("checksum_type") or "").lower() == CHECKSUM_TYPE
            and str(found.get("checksum") or "").lower() == box.sha256
        )
        if not same:
            if not force:
                conflicts.append(
                    f"{label} exists with checksum {found.get('checksum_type')}:"
                    f"{found.get('checksum')}, this build's is sha256:{box.sha256}"
                )
                continue
            actions.append(
                CloudAction(
                    kind="update-provider",
                    method="PUT",
                    path=ppath,
                    body={"provider": fields},
                    summary=f"update provider {label} to sha256:{box.sha256[:12]}... (--force)",
                )
            )
            actions.append(upload)
        elif is_uploaded(found):
            skipped.append(f"{label}: already uploaded with the same checksum")
        else:
            actions.append(upload)  # created by an interrupted run, never uploaded
    if conflicts:
        raise CloudError(
            "refusing to overwrite published boxes:\n  "
            + "\n  ".join(conflicts)
            + "\nbump the version in the build, or pass --force to replace them"
        )
    status = (remote_version or {}).get("status")
    if not release:
        skipped.append(f"{tag} {meta.version}: not released (--no-release)")
    elif status == "active":
        skipped.append(f"{tag} {meta.version}: already released")
    else:
        actions.append(
            CloudAction(
                kind="release",
                method="PUT",
                path=f"{vpath}/release",
                body=None,
                summary=f"release {tag} {meta.version}",
            )
        )
    return CloudPlan(actions=tuple(actions), skipped=tuple(skipped))


def describe_cloud_plan(plan: CloudPlan) -> list[str]:
    """The plan as lines a person reads (what --dry-run prints)."""
    lines = [f"{a.method} {API_PREFIX}{a.path}: {a.summary}" for a in plan.actions]
    lines += [f"skip {s}" for s in plan.skipped]
    return lines


_HEADING = re.compile(r"^##\s+\[?([^\]\s]+)\]?(.*)$")


def changelog_section(text: str, version: str) -> Optional[str]:
    """Return the body of the `## [version]` section of a Keep-a-Changelog file, if any."""
    wanted = version.lower()
    lines = text.splitlines()
    body: Optional[list[str]] = None
    for line in lines:
        match = _HEADING.match(line)
        if match:
            if body is not None:
                break
            if match.group(1).lower().lstrip("v") == wanted.lstrip("v"):
                body = []
            continue
        if body is not None:
            if re.match(r"^\[[^\]]+\]:\s", line):  # link reference definitions at the end
                continue
            body.append(line)
    if body is None:
        return None
    section = "\n".join(body).strip()
    return section or None


def version_description(changelog: Optional[str], version: str) -> tuple[str, str]:
    """Pick the version's description: its CHANGELOG section, else Unreleased, else a line.

    Returns (description, where it came from). Falling back to "Unreleased" covers a box
    built before the CHANGELOG section was renamed to the version; the caller prints
    where the text came from so a wrong pick is visible.
    """
    if changelog:
        section = changelog_section(changelog, version)
        if section:
            return section, f"CHANGELOG.md section {version}"
        section = changelog_section(changelog, "Unreleased")
        if section:
            return section, f"CHANGELOG.md section Unreleased (no section {version})"
    return f"docker-registry-cache {version}", "default text (no CHANGELOG.md section found)"


# --- side effects ---------------------------------------------------------------------------

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


def execute_cloud_plan(
    plan: CloudPlan,
    client: CloudClient,
    *,
    out: Out = _stderr,
    step: Optional[Callable[[str], Any]] = None,
) -> None:
    """Carry the plan out in order; a failure leaves a state the next run resumes from."""
    for line in plan.skipped:
        out(f"skip {line}")
    for action in plan.actions:
        out(action.summary)
        if action.kind == "upload":
            assert action.file is not None
            target = client.api("GET", action.path) or {}
            upload_path = target.get("upload_path")
            if not upload_path:
                raise CloudError(f"GET {API_PREFIX}{action.path}: the answer has no upload_path")
            if step is not None:
                with step(action.summary):
                    client.upload(action.file, upload_path, target.get("callback"))
            else:
                client.upload(action.file, upload_path, target.get("callback"))
        else:
            client.api(action.method, action.path, action.body, exists_path=action.exists_path)

