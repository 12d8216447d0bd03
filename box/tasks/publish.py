"""Publish task: hands the built boxes to colleagues via a box catalog folder or Vagrant Cloud.

Reads `dist/build.json` (format: box/buildinfo.py), never guesses a version or checksum.
Defaults may come from invoke.yaml (`publish: {catalog: DIR, base_url: URL, cloud: ORG/BOX}`);
a flag beats the config. The work is in box/publish/; this module parses flags, calls it
and turns its errors into exits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from invoke import Context, task
from invoke.exceptions import Exit

from box.buildinfo import BuildMetadataError, load_build_metadata
from box.publish import flow
from box.publish.cloud_plan import DEFAULT_SERVER, parse_tag
from box.publish.dist import check_dist
from box.publish.errors import PublishError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "VAGRANT_CLOUD_TOKEN"
# Vagrant itself reads the server from this variable; we follow it.
SERVER_ENV = "VAGRANT_SERVER_URL"


def _setting(c: Context, key: str, flag: Any) -> Any:
    if flag:
        return flag
    section = c.config.get("publish") or {}
    return section.get(key, flag)


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
    try:
        if cloud:
            parse_tag(cloud)
            if token is None and not dry_run:
                raise Exit(f"--cloud needs an API token in ${TOKEN_ENV} (a Vagrant Cloud access "
                           "token, or for HCP Vagrant: `hcp auth print-access-token`)")
        dist_dir = Path(dist)
        meta = load_build_metadata(dist_dir / "build.json")
        flow.say(f"box {meta.name} {meta.version} ({meta.git_revision[:12]}"
                 f"{', built from uncommitted changes' if meta.git_dirty else ''})")
        check_dist(meta, dist_dir)
        if catalog:
            flow.publish_catalog(meta, dist_dir, Path(catalog), base_url=base_url or None,
                                 force=force, dry_run=dry_run)
        if cloud:
            changelog_path = PROJECT_ROOT / "CHANGELOG.md"
            changelog = (changelog_path.read_text(encoding="utf-8")
                         if changelog_path.exists() else None)
            server = cloud_url or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
            flow.publish_cloud(meta, dist_dir, cloud, server=server, token=token, force=force,
                               dry_run=dry_run, release=not no_release, changelog=changelog)
    except (PublishError, BuildMetadataError) as exc:
        raise Exit(str(exc)) from None


TASKS = [publish]
