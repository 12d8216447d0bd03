"""Writes what `apply` leaves on disk: each mirror's folder and cache folder, and the last good config."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from registry_cache import paths
from registry_cache.fsutil import read_json, write_file
from registry_cache.record import has_record

if TYPE_CHECKING:
    from registry_cache.config import CacheConfig
    from registry_cache.render import RenderedMirror

SERVICE_USER = "registry-cache"
_SECRET_FILES_MODE = 0o600


@dataclass(frozen=True)
class Owner:
    """The account a mirror runs as and owns its rendered config."""

    user: str
    uid: int
    gid: int
    group: str


def read_rendered(root: str) -> dict[str, dict[str, str]]:
    """Return the rendered files of every mirror on disk, by mirror name."""
    base = paths.mirrors_dir(root)
    found: dict[str, dict[str, str]] = {}
    if not os.path.isdir(base):
        return found
    for name in sorted(os.listdir(base)):
        directory = os.path.join(base, name)
        if not has_record(directory):
            continue
        files = {}
        for filename in sorted(os.listdir(directory)):
            if filename.startswith("."):
                continue
            with open(os.path.join(directory, filename), encoding="utf-8") as handle:
                files[filename] = handle.read()
        found[name] = files
    return found


def write_rendered(root: str, mirror: RenderedMirror, owner: Optional[Owner]) -> None:
    """Write one mirror's files atomically: configs and credentials 0600, for the mirror's account only."""
    directory = paths.mirror_dir(root, mirror.name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    ids = (owner.uid, owner.gid) if owner and os.geteuid() == 0 else None
    if ids:
        os.chown(directory, *ids)
    for filename, text in mirror.configs.items():
        write_file(os.path.join(directory, filename), text, mode=_SECRET_FILES_MODE, owner=ids)
    for filename, text in mirror.public_files.items():
        write_file(os.path.join(directory, filename), text, mode=0o644, owner=ids)
    mirror.record.write(directory, ids)
    if mirror.credentials is not None:
        mirror.credentials.write(directory, ids)
    for stale in set(os.listdir(directory)) - set(mirror.files):
        if not stale.startswith("."):
            os.unlink(os.path.join(directory, stale))


def remove_rendered(root: str, name: str) -> None:
    """Delete one mirror's rendered files (never its cached data)."""
    shutil.rmtree(paths.mirror_dir(root, name), ignore_errors=True)


def prepare_storage(storage: str, owner: Optional[Owner]) -> None:
    """Create a mirror's cache folder and its marker, so the mirror starts serving from it."""
    os.makedirs(storage, exist_ok=True)
    if owner and os.geteuid() == 0 and os.stat(storage).st_uid == 0:
        os.chown(storage, owner.uid, owner.gid)
    write_file(paths.storage_marker(storage),
               "This folder is a registry-cache mirror's cache. Safe to delete to reset it.\n")


def prepare_cache(storage_root: str, storages: list[str]) -> Owner:
    """Create the cache root and each mirror's cache folder; return the account mirrors run as."""
    os.makedirs(storage_root, exist_ok=True)
    owner = storage_owner(storage_root)
    for storage in storages:
        prepare_storage(storage, owner)
    return owner


def storage_owner(storage_root: str) -> Owner:
    """Pick the account mirrors run as: the cache folder's owner, or the registry-cache user."""
    uid = os.stat(storage_root).st_uid if os.path.exists(storage_root) else os.geteuid()
    if uid == 0:
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            entry = pwd.getpwuid(0)
    else:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return Owner(user=str(uid), uid=uid, gid=uid, group=str(uid))
    try:
        group = grp.getgrgid(entry.pw_gid).gr_name
    except KeyError:
        group = str(entry.pw_gid)
    return Owner(user=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, group=group)


def rendered_fingerprint(root: str) -> str:
    """A digest of every rendered file under `root`."""
    digest = hashlib.sha256()
    for name, files in read_rendered(root).items():
        for filename, text in files.items():
            digest.update(f"{name}\0{filename}\0{text}\0".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Applied:
    """What the last apply recorded (applied.json): its config, mirrors, input and output digests."""

    source: str
    mirrors: tuple[str, ...]
    fingerprint: Optional[str] = None  # config.input_fingerprint of the inputs below
    inputs: tuple[str, ...] = ()  # the files the config was read from
    storage: Optional[str] = None  # the cache root, whose owner the mirrors run as
    rendered: Optional[str] = None  # rendered_fingerprint right after the apply


def save_last_good(
    root: str, config: CacheConfig, text: Optional[str], names: list[str], fingerprint: Optional[str] = None
) -> None:
    """Record the config just applied: the next boot starts these mirrors without /vagrant."""
    record = {
        "source": config.source,
        "mirrors": names,
        "fingerprint": fingerprint,
        "inputs": [path for path, _digest in config.inputs],
        "storage": config.storage,
        "rendered": rendered_fingerprint(root),
    }
    write_file(os.path.join(root, paths.APPLIED), json.dumps(record, indent=2) + "\n")
    if text is not None:
        write_file(os.path.join(root, paths.LAST_GOOD), text, mode=_SECRET_FILES_MODE)


def read_applied(root: str) -> Optional[Applied]:
    """What the last apply recorded; None when nothing was ever applied (or the record is unreadable)."""
    data = read_json(os.path.join(root, paths.APPLIED))
    if data is None or not isinstance(data.get("mirrors"), list):
        return None

    def text(key: str) -> Optional[str]:
        return data[key] if isinstance(data.get(key), str) else None

    inputs = data.get("inputs")
    return Applied(
        source=text("source") or "",
        mirrors=tuple(str(n) for n in data["mirrors"]),
        fingerprint=text("fingerprint"),
        # written by an older agent: no inputs, so the next apply renders again
        inputs=tuple(p for p in inputs if isinstance(p, str)) if isinstance(inputs, list) else (),
        storage=text("storage"),
        rendered=text("rendered"),
    )
