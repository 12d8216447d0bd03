"""Plans a publish to HCP Vagrant / Vagrant Cloud: the API v2 steps that bring a box up to a build.

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

A provider counts as uploaded when the API reports a `hosted_token` for it.
`plan_cloud` is pure: the remote state that was read -> the list of actions; the
client (cloud_client.py) talks to the API and the flow (flow.py) carries the plan out.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Optional

from box.buildinfo import BuildMetadata
from box.publish.errors import PublishError
from box.publish.published import ARCHITECTURE, CHECKSUM_TYPE, overwrite_refusal, same_checksum
from box.sizes import format_size

DEFAULT_SERVER = "https://vagrantcloud.com"
API_PREFIX = "/api/v2"
# Direct uploads (straight to the storage backend) are limited to 5 GiB; bigger boxes go
# through the API's plain upload URL, which has no callback.
DIRECT_UPLOAD_LIMIT = 5 * 2**30
_TAG = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)/([A-Za-z0-9][A-Za-z0-9._-]*)$")


class CloudError(PublishError, RuntimeError):
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
        label = f"{tag} {meta.version} {box.provider}/{box.architecture}"
        ppath = provider_path(org, name, meta.version, box.provider, box.architecture)
        fields = {
            "name": box.provider,
            "checksum": box.sha256,
            "checksum_type": CHECKSUM_TYPE,
            "architecture": box.architecture,
            # amd64: what a client gets whose host architecture has no box of its own
            "default_architecture": box.architecture == ARCHITECTURE,
        }
        upload = CloudAction(
            kind="upload",
            method="GET",
            path=f"{ppath}/upload/direct" if box.size <= DIRECT_UPLOAD_LIMIT else f"{ppath}/upload",
            body=None,
            summary=f"upload {box.file} ({format_size(box.size)}) to {label}",
            file=os.path.join(dist_dir, box.file),
            size=box.size,
        )
        found = next(
            (
                p
                for p in remote_providers
                if p.get("name") == box.provider
                and (p.get("architecture") or ARCHITECTURE) == box.architecture
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
        if not same_checksum(found, box.sha256):
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
        raise CloudError(overwrite_refusal(conflicts))
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
