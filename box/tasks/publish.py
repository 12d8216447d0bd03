"""Publish task: hands the built boxes to colleagues via a box catalog folder or Vagrant Cloud.

Reads `dist/build.json` (format: box/buildinfo.py), never guesses a version or checksum.
Defaults may come from invoke.yaml (`publish: {catalog: DIR, base_url: URL, cloud: ORG/BOX}`);
a flag beats the config.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any, Optional

import requests
from invoke import Context, task
from invoke.exceptions import Exit

from box import catalog as catalog_mod
from box import cloud as cloud_mod
from box.buildinfo import BuildMetadata, BuildMetadataError, load_build_metadata
from box.run import step

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "VAGRANT_CLOUD_TOKEN"
# Vagrant itself reads the server from this variable; we follow it.
SERVER_ENV = "VAGRANT_SERVER_URL"


def _say(line: str) -> None:
    print(line, flush=True)


def _setting(c: Context, key: str, flag: Any) -> Any:
    if flag:
        return flag
    section = c.config.get("publish") or {}
    return section.get(key, flag)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(4 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_dist(meta: BuildMetadata, dist: Path) -> None:
    """Make sure every box build.json lists is in dist/ with the recorded size and sha256."""
    problems = []
    for box in meta.boxes:
        path = dist / box.file
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{path}: missing (listed in build.json for {box.provider})")
            continue
        if size != box.size:
            problems.append(f"{path}: {size} bytes, build.json says {box.size}")
    if problems:
        raise Exit("dist/ does not match build.json; rebuild (`invoke build-box`):\n  "
                   + "\n  ".join(problems))
    with step(f"verify sha256 of {len(meta.boxes)} box(es) in {dist}"):
        for box in meta.boxes:
            actual = sha256_file(dist / box.file)
            if actual != box.sha256:
                problems.append(f"{dist / box.file}: sha256 {actual}, build.json says {box.sha256}")
    if problems:
        raise Exit("a box changed after the build; rebuild (`invoke build-box`):\n  "
                   + "\n  ".join(problems))


def publish_catalog(
    meta: BuildMetadata,
    dist: Path,
    catalog_dir: Path,
    *,
    base_url: Optional[str],
    force: bool,
    dry_run: bool,
) -> catalog_mod.CatalogPlan:
    """Publish to a catalog folder (or print what would change, with `dry_run`)."""
    if dry_run:
        return _publish_catalog(meta, dist, catalog_dir, base_url=base_url, force=force,
                                dry_run=True)
    # Two publishes to one catalog at once would each merge into the JSON they read and
    # the last rename would drop the other's version: take turns.
    # flock on the folder itself: no lock file shows up in what the web server serves.
    catalog_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(catalog_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _publish_catalog(meta, dist, catalog_dir, base_url=base_url, force=force,
                                dry_run=False)
    finally:
        os.close(fd)


def _publish_catalog(
    meta: BuildMetadata,
    dist: Path,
    catalog_dir: Path,
    *,
    base_url: Optional[str],
    force: bool,
    dry_run: bool,
) -> catalog_mod.CatalogPlan:
    json_path = catalog_dir / catalog_mod.json_relpath(meta.name)
    try:
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
    except catalog_mod.CatalogError as exc:
        raise Exit(str(exc)) from None
    _say(f"catalog {catalog_dir}{' (dry run: nothing written)' if dry_run else ''}:")
    for line in catalog_mod.describe_plan(plan, str(catalog_dir)):
        _say(f"  {line}")
    if dry_run:
        return plan
    with step(f"publish {meta.name} {meta.version} to catalog {catalog_dir}"):
        catalog_mod.apply_catalog_plan(plan, catalog_dir)
    url = (
        catalog_mod.box_url(plan.json_path, base_url, str(catalog_dir))
        if base_url
        else json_path.resolve().as_uri()
    )
    _say(f"colleagues add it with: vagrant box add {url}")
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
) -> cloud_mod.CloudPlan:
    """Publish to HCP Vagrant / Vagrant Cloud (or print the plan, with `dry_run`)."""
    org, name = cloud_mod.parse_tag(tag)
    description, origin = cloud_mod.version_description(changelog, meta.version)
    client = cloud_mod.CloudClient(server, token, out=_say, **(client_options or {}))
    try:
        remote_box, remote_version = client.read_state(org, name, meta.version)
        plan = cloud_mod.plan_cloud(
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
        _say(f"cloud {server} {org}/{name}{' (dry run: nothing changed)' if dry_run else ''}:")
        _say(f"  version description: {origin}")
        for line in cloud_mod.describe_cloud_plan(plan):
            _say(f"  {line}")
        if not dry_run:
            with step(f"publish {meta.name} {meta.version} to {org}/{name}"):
                cloud_mod.execute_cloud_plan(plan, client, out=_say, step=step)
    except cloud_mod.CloudError as exc:
        raise Exit(client.scrub(str(exc))) from None
    except requests.RequestException as exc:
        raise Exit(client.scrub(f"{server}: {type(exc).__name__}: {exc}")) from None
    return plan


@task(
    help={
        "catalog": "publish to this catalog folder: DIR/<name>.json + DIR/<name>/<version>/*.box",
        "base-url": "URL the catalog folder is served at (default: file:// URLs)",
        "cloud": "publish to HCP Vagrant / Vagrant Cloud box ORG/BOX (token: $VAGRANT_CLOUD_TOKEN)",
        "cloud-url": "Vagrant Cloud server (default: $VAGRANT_SERVER_URL or "
        "https://vagrantcloud.com)",
        "force": "replace a published version+provider whose checksum differs",
        "dry-run": "print what would be published, change nothing",
        "no-release": "Vagrant Cloud: upload but leave the version unreleased",
        "dist": "folder with build.json and the boxes (default: dist)",
    }
)
def publish(
    c: Context,
    catalog: str = "",
    base_url: str = "",
    cloud: str = "",
    cloud_url: str = "",
    force: bool = False,
    dry_run: bool = False,
    no_release: bool = False,
    dist: str = "dist",
) -> None:
    """Publish the built boxes to a versioned box catalog and/or HCP Vagrant (Vagrant Cloud)."""
    catalog = _setting(c, "catalog", catalog)
    base_url = _setting(c, "base_url", base_url)
    cloud = _setting(c, "cloud", cloud)
    if not catalog and not cloud:
        raise Exit("say where to publish: --catalog DIR (a folder any web server can serve) "
                   "and/or --cloud ORG/BOX (HCP Vagrant / Vagrant Cloud)")
    if base_url and not base_url.startswith(("http://", "https://", "file://")):
        raise Exit(f"--base-url {base_url!r}: expected an http://, https:// or file:// URL")
    token = os.environ.get(TOKEN_ENV) or None
    if cloud:
        try:
            cloud_mod.parse_tag(cloud)
        except cloud_mod.CloudError as exc:
            raise Exit(str(exc)) from None
        if token is None and not dry_run:
            raise Exit(f"--cloud needs an API token in ${TOKEN_ENV} (a Vagrant Cloud access "
                       "token, or for HCP Vagrant: `hcp auth print-access-token`)")
    dist_dir = Path(dist)
    try:
        meta = load_build_metadata(dist_dir / "build.json")
    except BuildMetadataError as exc:
        raise Exit(str(exc)) from None
    _say(f"box {meta.name} {meta.version} ({meta.git_revision[:12]}"
         f"{', built from uncommitted changes' if meta.git_dirty else ''})")
    check_dist(meta, dist_dir)
    if catalog:
        publish_catalog(meta, dist_dir, Path(catalog), base_url=base_url or None,
                        force=force, dry_run=dry_run)
    if cloud:
        changelog_path = PROJECT_ROOT / "CHANGELOG.md"
        changelog = changelog_path.read_text(encoding="utf-8") if changelog_path.exists() else None
        server = cloud_url or os.environ.get(SERVER_ENV) or cloud_mod.DEFAULT_SERVER
        publish_cloud(meta, dist_dir, cloud, server=server, token=token, force=force,
                      dry_run=dry_run, release=not no_release, changelog=changelog)


TASKS = [publish]
