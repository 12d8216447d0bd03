"""Publishes boxes to a self-hosted, versioned box catalog that `vagrant box add URL` reads.

Layout of a catalog folder (any static web server or file share can serve it):

    DIR/<name>.json                          Vagrant's box metadata: every version
    DIR/<name>/<version>/<provider>.box      the boxes (amd64, the default architecture)
    DIR/<name>/<version>/<provider>-<arch>.box   the boxes of another architecture (arm64)

Every provider entry carries its `architecture`; the amd64 one is the
`default_architecture` (Vagrant >= 2.4 picks the host's architecture and falls back to
it). Vagrant < 2.4 ignores both and keeps the last entry of a provider name, so the
default architecture's entry comes last: a Vagrant 2.3 client gets the amd64 box. For
such a client on an arm64 host, the folder also carries each other architecture's
catalog alone, DIR/<name>-<arch>.json (the drop-in Vagrantfile points there).

`plan_catalog` is pure: build metadata + the catalog JSON found on disk -> the new
JSON and the copies to make, or a refusal. `apply_catalog_plan` carries the plan out:
boxes first, the JSON last, each written to a temporary file in the same folder,
fsynced and renamed, so a web server never serves a half-written box or a JSON that
points at a box that is not there yet.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from box.boxversion import BoxVersion, VersionError, parse_version
from box.buildinfo import BuildMetadata
from box.files import atomic_copy, atomic_link_or_copy, atomic_write_text
from box.publish.errors import PublishError
from box.publish.published import (
    ARCHITECTURE,
    CHECKSUM_TYPE,
    overwrite_refusal,
    provider_entry_order,
    same_checksum,
)

DEFAULT_DESCRIPTION = (
    "docker-registry-cache: a pull-through cache for Docker/OCI images, "
    "started with `vagrant up`."
)


class CatalogError(PublishError, ValueError):
    """The catalog cannot be published as asked (conflict, unreadable JSON, bad input)."""


@dataclass(frozen=True)
class BoxCopy:
    """Copy one box file from dist/ into the catalog."""

    provider: str
    source: str  # path of the box in dist/
    dest: str  # path relative to the catalog folder
    sha256: str
    size: int


@dataclass(frozen=True)
class CatalogPlan:
    """What publishing would change: the new catalog JSON and the box copies, with reasons."""

    json_path: str  # relative to the catalog folder
    catalog: dict[str, Any]
    copies: tuple[BoxCopy, ...]
    notes: tuple[str, ...]  # one line per provider: what happens and why
    write_json: bool
    # the catalog of each other architecture alone (relative path -> JSON), for Vagrant < 2.4
    arch_catalogs: tuple[tuple[str, dict[str, Any]], ...] = ()


def json_relpath(name: str) -> str:
    """Where the box's catalog JSON lives inside the catalog folder."""
    return f"{name}.json"


def arch_json_relpath(name: str, arch: str) -> str:
    """Where the catalog of one (non-default) architecture alone lives in the catalog folder."""
    return f"{name}-{arch}.json"


def architecture_catalogs(catalog: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The catalog of each non-default architecture alone, by its path in the catalog folder.

    Vagrant < 2.4 cannot choose an architecture from the full catalog (it takes the amd64
    box); given one of these it can only take that architecture's.
    """
    found: dict[str, dict[str, Any]] = {}
    others = sorted({str(p.get("architecture")) for v in catalog.get("versions", [])
                     for p in v.get("providers", [])
                     if p.get("architecture", ARCHITECTURE) != ARCHITECTURE})
    for arch in others:
        versions = []
        for version in catalog.get("versions", []):
            providers = [p for p in version.get("providers", []) if p.get("architecture") == arch]
            if providers:
                versions.append({**version, "providers": providers})
        found[arch_json_relpath(catalog["name"], arch)] = {**catalog, "versions": versions}
    return found


def box_relpath(name: str, version: str, provider: str, arch: str = ARCHITECTURE) -> str:
    """Where one provider's box of one version (and architecture) lives in the catalog folder."""
    suffix = "" if arch == ARCHITECTURE else f"-{arch}"
    return f"{name}/{version}/{provider}{suffix}.box"


def box_url(relpath: str, base_url: Optional[str], catalog_dir: str) -> str:
    """The URL Vagrant downloads a box from: base URL + path, or a file:// URL without one."""
    if base_url:
        return base_url.rstrip("/") + "/" + urllib.parse.quote(relpath)
    return Path(os.path.abspath(os.path.join(catalog_dir, relpath))).as_uri()


def _check_catalog(existing: Any, source: str, name: str) -> None:
    """Check the catalog JSON found on disk, naming the file and key of the first problem."""
    if not isinstance(existing, dict):
        raise CatalogError(f"{source}: expected a JSON object (Vagrant box metadata)")
    found = existing.get("name")
    if found != name:
        raise CatalogError(
            f"{source}: name: this catalog is for box {found!r}, the build is {name!r}; "
            "publish to another folder or fix the build's name"
        )
    versions = existing.get("versions", [])
    if not isinstance(versions, list):
        raise CatalogError(f"{source}: versions: expected a list")
    for i, entry in enumerate(versions):
        key = f"versions[{i}]"
        if not isinstance(entry, dict):
            raise CatalogError(f"{source}: {key}: expected an object")
        try:
            parse_version(entry.get("version"))  # type: ignore[arg-type]
        except VersionError as exc:
            raise CatalogError(f"{source}: {key}.version: {exc}") from None
        providers = entry.get("providers", [])
        if not isinstance(providers, list):
            raise CatalogError(f"{source}: {key}.providers: expected a list")
        for j, provider in enumerate(providers):
            if not isinstance(provider, dict) or not isinstance(provider.get("name"), str):
                raise CatalogError(
                    f"{source}: {key}.providers[{j}]: expected an object with a name"
                )


def plan_catalog(
    meta: BuildMetadata,
    existing: Optional[Mapping[str, Any]],
    *,
    dist_dir: str,
    catalog_dir: str,
    base_url: Optional[str] = None,
    force: bool = False,
    present: Optional[Mapping[str, int]] = None,
    source: str = "catalog",
) -> CatalogPlan:
    """Plan one publish: merge this build's version into the catalog, refuse changed boxes.

    `existing` is the decoded catalog JSON (None when there is none yet), `present` maps
    a box path (relative to the catalog) that already exists to its size in bytes.
    A version+provider already published with the same checksum is left alone; with a
    different checksum it is refused unless `force`.
    """
    present = present or {}
    catalog: dict[str, Any]
    if existing is None:
        catalog = {"name": meta.name, "description": "", "versions": []}
    else:
        _check_catalog(existing, source, meta.name)
        catalog = copy.deepcopy(dict(existing))
        catalog.setdefault("versions", [])
    catalog["description"] = meta.description or catalog.get("description") or DEFAULT_DESCRIPTION

    wanted = parse_version(meta.version)
    entry = next((v for v in catalog["versions"] if BoxVersion(v["version"]) == wanted), None)
    if entry is None:
        entry = {"version": meta.version, "providers": []}
        catalog["versions"].append(entry)
    entry.setdefault("providers", [])

    copies: list[BoxCopy] = []
    notes: list[str] = []
    conflicts: list[str] = []
    for box in meta.boxes:
        dest = box_relpath(meta.name, entry["version"], box.provider, box.architecture)
        new = {
            "name": box.provider,
            "url": box_url(dest, base_url, catalog_dir),
            "checksum_type": CHECKSUM_TYPE,
            "checksum": box.sha256,
            "architecture": box.architecture,
            "default_architecture": box.architecture == ARCHITECTURE,
        }
        old_index = next(
            (
                i
                for i, p in enumerate(entry["providers"])
                if p["name"] == box.provider
                and p.get("architecture", ARCHITECTURE) == box.architecture
            ),
            None,
        )
        copy_box = BoxCopy(
            provider=box.provider,
            source=os.path.join(dist_dir, box.file),
            dest=dest,
            sha256=box.sha256,
            size=box.size,
        )
        arch_label = "" if box.architecture == ARCHITECTURE else f"/{box.architecture}"
        label = f"{meta.name} {entry['version']} {box.provider}{arch_label}"
        if old_index is None:
            entry["providers"].append(new)
            copies.append(copy_box)
            notes.append(f"add {label}: copy {box.file} -> {dest}")
            continue
        old = entry["providers"][old_index]
        same = same_checksum(old, box.sha256)
        if not same and not force:
            conflicts.append(
                f"{label} is already published with checksum "
                f"{old.get('checksum_type')}:{old.get('checksum')}, this build's is "
                f"sha256:{box.sha256}"
            )
            continue
        if not same:
            entry["providers"][old_index] = new
            copies.append(copy_box)
            notes.append(f"replace {label} (--force): copy {box.file} -> {dest}")
            continue
        # Same box: nothing to publish, unless its file went missing or the URL moved.
        if present.get(dest) != box.size:
            copies.append(copy_box)
            notes.append(f"restore {label}: {dest} is missing or truncated, copy it again")
        else:
            notes.append(f"unchanged {label}: already published with the same checksum")
        if old.get("url") != new["url"]:
            entry["providers"][old_index] = {**old, "url": new["url"]}
            notes.append(f"update {label} url -> {new['url']}")
        if old.get("default_architecture") != new["default_architecture"]:
            # an entry published before the catalog carried architectures
            entry["providers"][old_index] = {
                **entry["providers"][old_index], "architecture": box.architecture,
                "default_architecture": new["default_architecture"]}

    if conflicts:
        raise CatalogError(overwrite_refusal(conflicts))

    entry["providers"].sort(key=provider_entry_order)
    catalog["versions"].sort(key=lambda v: BoxVersion(v["version"]))
    # Keep the keys in the order Vagrant's docs show them.
    ordered = {"name": catalog.pop("name"), "description": catalog.pop("description")}
    ordered.update({k: v for k, v in catalog.items() if k != "versions"})
    ordered["versions"] = catalog["versions"]
    write_json = existing is None or ordered != existing
    return CatalogPlan(
        json_path=json_relpath(meta.name),
        catalog=ordered,
        copies=tuple(copies),
        notes=tuple(notes),
        write_json=write_json,
        arch_catalogs=tuple(architecture_catalogs(ordered).items()),
    )


def render_catalog(catalog: Mapping[str, Any]) -> str:
    """The catalog JSON as written to disk: indented, stable, one trailing newline."""
    return json.dumps(catalog, indent=2, ensure_ascii=False) + "\n"


def describe_plan(plan: CatalogPlan, catalog_dir: str) -> list[str]:
    """The plan as lines a person reads before (or instead of, with --dry-run) publishing."""
    lines = list(plan.notes)
    target = os.path.join(catalog_dir, plan.json_path)
    lines.append(f"write {target}" if plan.write_json else f"unchanged {target}")
    for relpath, _ in plan.arch_catalogs:
        lines.append(f"write {os.path.join(catalog_dir, relpath)} (for Vagrant < 2.4)")
    return lines


# --- side effects ---------------------------------------------------------------------------


def read_catalog(path: Path) -> Optional[dict[str, Any]]:
    """Read a catalog JSON from disk, None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{path}:{exc.lineno}: not valid JSON: {exc.msg}; fix or remove it"
        ) from None


def present_boxes(catalog_dir: Path, meta: BuildMetadata) -> dict[str, int]:
    """Sizes of this version's box files already in the catalog (relative path -> bytes)."""
    found = {}
    for box in meta.boxes:
        rel = box_relpath(meta.name, meta.version, box.provider, box.architecture)
        with contextlib.suppress(FileNotFoundError):
            found[rel] = (catalog_dir / rel).stat().st_size
    return found


def apply_catalog_plan(plan: CatalogPlan, catalog_dir: Path, *, link: bool = False) -> None:
    """Carry the plan out: copy the boxes, then write the JSON that points at them.

    `link`: hard-link the boxes instead where the file system allows (build-box's local
    catalog next to dist/, which would otherwise hold every box twice).
    """
    place = atomic_link_or_copy if link else atomic_copy
    for item in plan.copies:
        place(Path(item.source), catalog_dir / item.dest)
    for relpath, alone in plan.arch_catalogs:  # each points at boxes already in place
        path = catalog_dir / relpath
        text = render_catalog(alone)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            atomic_write_text(path, text)
    if plan.write_json:
        atomic_write_text(catalog_dir / plan.json_path, render_catalog(plan.catalog))
