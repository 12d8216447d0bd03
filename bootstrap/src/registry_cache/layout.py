"""Where the agent keeps rendered mirror configs and the last good config, and how it reads them."""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
from dataclasses import dataclass
from typing import Optional

import yaml

from registry_cache.fsutil import write_file
from registry_cache.render import MIRROR_INFO, PROXY_CONFIG, STORAGE_MARKER, RenderedMirror

SYSTEM_ROOT = "/etc/registry-cache"
SERVICE_USER = "registry-cache"
APPLIED = "applied.json"
LAST_GOOD = "last-good.yml"
_SECRET_FILES_MODE = 0o600


def default_root() -> str:
    """Where rendered configs live: $REGISTRY_CACHE_ROOT, else /etc/registry-cache or ~/.local/state."""
    if os.environ.get("REGISTRY_CACHE_ROOT"):
        return os.environ["REGISTRY_CACHE_ROOT"]
    if os.geteuid() == 0 or os.path.isdir(SYSTEM_ROOT):
        return SYSTEM_ROOT  # in the box, `registry-cache status` works for the vagrant user too
    state_home = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state_home, "registry-cache")


@dataclass(frozen=True)
class Owner:
    """The account a mirror runs as and owns its rendered config."""

    user: str
    uid: int
    gid: int
    group: str


def mirror_dir(root: str, name: str) -> str:
    """The folder holding one mirror's rendered files."""
    return os.path.join(root, "mirrors", name)


def read_rendered(root: str) -> dict[str, dict[str, str]]:
    """Return the rendered files of every mirror on disk, by mirror name."""
    base = os.path.join(root, "mirrors")
    found: dict[str, dict[str, str]] = {}
    if not os.path.isdir(base):
        return found
    for name in sorted(os.listdir(base)):
        directory = os.path.join(base, name)
        if not os.path.isfile(os.path.join(directory, MIRROR_INFO)):
            continue
        files = {}
        for filename in sorted(os.listdir(directory)):
            if filename.startswith("."):
                continue
            with open(os.path.join(directory, filename), encoding="utf-8") as handle:
                files[filename] = handle.read()
        found[name] = files
    return found


def rendered_infos(root: str) -> list[dict]:
    """Return the public facts (mirror.json, readable by anyone) of every rendered mirror."""
    base = os.path.join(root, "mirrors")
    infos = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            with open(os.path.join(base, name, MIRROR_INFO), encoding="utf-8") as handle:
                infos.append(json.load(handle))
        except (OSError, ValueError):
            continue
    return infos


def write_rendered(root: str, mirror: RenderedMirror, owner: Optional[Owner]) -> None:
    """Write one mirror's files atomically: configs 0600, readable by the mirror's account only."""
    directory = mirror_dir(root, mirror.name)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    ids = (owner.uid, owner.gid) if owner and os.geteuid() == 0 else None
    if ids:
        os.chown(directory, *ids)
    for filename, text in mirror.files.items():
        mode = 0o644 if filename == MIRROR_INFO else _SECRET_FILES_MODE  # the facts hold no secret
        write_file(os.path.join(directory, filename), text, mode=mode, owner=ids)
    for stale in set(os.listdir(directory)) - set(mirror.files):
        if not stale.startswith("."):
            os.unlink(os.path.join(directory, stale))


def proxy_credentials(directory: str) -> Optional[tuple[str, str]]:
    """The upstream username and password in a rendered mirror's proxy config, if any."""
    try:
        with open(os.path.join(directory, PROXY_CONFIG), encoding="utf-8") as handle:
            proxy = (yaml.safe_load(handle) or {}).get("proxy") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if proxy.get("username") and proxy.get("password"):
        return str(proxy["username"]), str(proxy["password"])
    return None


def remove_rendered(root: str, name: str) -> None:
    """Delete one mirror's rendered files (never its cached data)."""
    shutil.rmtree(mirror_dir(root, name), ignore_errors=True)


def prepare_storage(storage: str, owner: Optional[Owner]) -> None:
    """Create a mirror's cache folder and its marker, so the mirror starts serving from it."""
    os.makedirs(storage, exist_ok=True)
    if owner and os.geteuid() == 0 and os.stat(storage).st_uid == 0:
        os.chown(storage, owner.uid, owner.gid)
    marker = os.path.join(storage, STORAGE_MARKER)
    write_file(marker, "This folder is a registry-cache mirror's cache. Safe to delete to reset it.\n")


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


def save_last_good(
    root: str, source: str, text: Optional[str], names: list[str], fingerprint: Optional[str] = None
) -> None:
    """Record the config just applied: the next boot starts these mirrors without /vagrant."""
    record = {
        "source": source,
        "mirrors": names,
        "fingerprint": fingerprint,
        "rendered": rendered_fingerprint(root),
    }
    write_file(os.path.join(root, APPLIED), json.dumps(record, indent=2) + "\n")
    if text is not None:
        write_file(os.path.join(root, LAST_GOOD), text, mode=_SECRET_FILES_MODE)


def applied_record(root: str) -> dict:
    """What the last apply recorded (mirrors, input and output digests); empty when none."""
    try:
        with open(os.path.join(root, APPLIED), encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def applied_mirrors(root: str) -> Optional[list[str]]:
    """The mirrors of the last good config, or None when nothing was ever applied."""
    names = applied_record(root).get("mirrors")
    return list(names) if isinstance(names, list) else None
