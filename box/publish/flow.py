"""Publishes one build: read the target's state, plan, print the plan, then carry it out.

Each function prints through `out` what it plans and does; errors are PublishError
subclasses whose messages are safe to show (the cloud token is scrubbed from them).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Optional

import requests

from box.buildinfo import BuildMetadata
from box.publish import catalog as catalog_mod
from box.publish import cloud_plan
from box.publish.changelog import version_description
from box.publish.cloud_client import CloudClient
from box.publish.cloud_plan import API_PREFIX, CloudError, CloudPlan
from box.publish.lock import folder_lock
from box.run import step

Out = Callable[[str], None]


def say(line: str) -> None:
    """Print one line of progress at once (publishing is slow; output must not lag)."""
    print(line, flush=True)


def publish_catalog(
    meta: BuildMetadata,
    dist: Path,
    catalog_dir: Path,
    *,
    base_url: Optional[str],
    force: bool,
    dry_run: bool,
    link: bool = False,
    out: Out = say,
) -> catalog_mod.CatalogPlan:
    """Publish to a catalog folder (or print what would change, with `dry_run`).

    `link`: hard-link the boxes into the catalog instead of copying them, where possible.
    """
    # a dry run writes nothing, not even the folder the lock would create
    with contextlib.nullcontext() if dry_run else folder_lock(catalog_dir):
        json_path = catalog_dir / catalog_mod.json_relpath(meta.name)
        existing = catalog_mod.read_catalog(json_path)
        plan = catalog_mod.plan_catalog(
            meta,
            existing,
            dist_dir=str(dist),
            catalog_dir=str(catalog_dir),
            base_url=base_url,
            force=force,
            present=catalog_mod.present_boxes(catalog_dir, meta),
            source=str(json_path),
        )
        out(f"catalog {catalog_dir}{' (dry run: nothing written)' if dry_run else ''}:")
        for line in catalog_mod.describe_plan(plan, str(catalog_dir)):
            out(f"  {line}")
        if dry_run:
            return plan
        with step(f"publish {meta.name} {meta.version} to catalog {catalog_dir}"):
            catalog_mod.apply_catalog_plan(plan, catalog_dir, link=link)
        url = (
            catalog_mod.box_url(plan.json_path, base_url, str(catalog_dir))
            if base_url
            else json_path.resolve().as_uri()
        )
        out(f"colleagues add it with: vagrant box add {url}")
        return plan


def publish_cloud(
    meta: BuildMetadata,
    dist: Path,
    tag: str,
    *,
    server: str,
    token: Optional[str],
    force: bool,
    dry_run: bool,
    release: bool,
    changelog: Optional[str],
    client_options: Optional[dict[str, Any]] = None,
    out: Out = say,
) -> CloudPlan:
    """Publish to HCP Vagrant / Vagrant Cloud (or print the plan, with `dry_run`)."""
    org, name = cloud_plan.parse_tag(tag)
    description, origin = version_description(changelog, meta.version)
    client = CloudClient(server, token, out=out, **(client_options or {}))
    try:
        remote_box, remote_version = client.read_state(org, name, meta.version)
        plan = cloud_plan.plan_cloud(
            meta,
            org=org,
            name=name,
            remote_box=remote_box,
            remote_version=remote_version,
            description=description,
            dist_dir=str(dist),
            force=force,
            release=release,
        )
        out(f"cloud {server} {org}/{name}{' (dry run: nothing changed)' if dry_run else ''}:")
        out(f"  version description: {origin}")
        for line in cloud_plan.describe_cloud_plan(plan):
            out(f"  {line}")
        if not dry_run:
            with step(f"publish {meta.name} {meta.version} to {org}/{name}"):
                execute_cloud_plan(plan, client, out=out)
    except CloudError as exc:
        raise CloudError(client.scrub(str(exc))) from None
    except requests.RequestException as exc:
        raise CloudError(client.scrub(f"{server}: {type(exc).__name__}: {exc}")) from None
    return plan


def execute_cloud_plan(plan: CloudPlan, client: CloudClient, *, out: Out = say) -> None:
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
            with step(action.summary):
                client.upload(action.file, upload_path, target.get("callback"))
        else:
            client.api(action.method, action.path, action.body, exists_path=action.exists_path)
