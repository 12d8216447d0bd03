"""A mirror kept in a bucket other nodes share: its settings file (shared.json), read and written only here.

`apply` renders `shared.json` (0600: it holds the S3 secret) into the folder of each mirror whose
`storage:` names an S3 bucket; the runner (its registry's CA), gc (the cluster hold, the
last-pull records) and status (the shared cache's size and holder) read it back here.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from registry_cache import paths
from registry_cache.fsutil import write_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedBucket:
    """Where one mirror's shared cache lives: the bucket, its prefix for this mirror, the keys."""

    endpoint: str
    region: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    root: str = "/"  # Distribution's rootdirectory: /PREFIX/MIRROR
    path_style: bool = True
    ca_file: Optional[str] = None

    @property
    def key_prefix(self) -> str:
        """The object-key prefix of this mirror's cache (no leading slash), e.g. `team/hub/`."""
        return self.root.strip("/") + "/" if self.root.strip("/") else ""

    @property
    def where(self) -> str:
        """How status names it: s3://BUCKET/ROOT at ENDPOINT (no secret)."""
        return f"s3://{self.bucket}/{self.key_prefix} at {self.endpoint}"

    def client(self, timeout: float = 10.0) -> Any:
        """An `s3.Bucket` for the agent's own requests."""
        from registry_cache.s3 import Bucket

        return Bucket(endpoint=self.endpoint, region=self.region, bucket=self.bucket,
                      access_key=self.access_key, secret_key=self.secret_key,
                      path_style=self.path_style, ca_file=self.ca_file, timeout=timeout)

    def cached_blobs(self) -> set[str]:
        """The digests of the blobs the shared cache holds (empty when the bucket cannot be read)."""
        from registry_cache.s3 import S3Error

        base = self.key_prefix + "docker/registry/v2/blobs/sha256/"
        try:
            keys = [key for key, _size in self.client(timeout=5.0).list(base)]
        except S3Error as exc:
            log.warning("cannot list the shared cache: %s", exc)
            return set()
        return {"sha256:" + key[len(base):].split("/")[1] for key in keys
                if key.endswith("/data") and key[len(base):].count("/") == 2}

    def is_stored(self, repo: str, digest: str) -> bool:
        """True once a blob is in the shared cache and linked into its repository."""
        from registry_cache.s3 import S3Error

        hexdigest = digest.split(":", 1)[1]
        base = self.key_prefix + "docker/registry/v2/"
        client = self.client(timeout=5.0)
        try:
            return all(client.request("HEAD", key, ok=(200, 404)).status_code == 200 for key in (
                f"{base}blobs/sha256/{hexdigest[:2]}/{hexdigest}/data",
                f"{base}repositories/{repo}/_layers/sha256/{hexdigest}/link"))
        except S3Error:
            return False

    def text(self) -> str:
        """The content of shared.json."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def from_config(s3: Any, mirror: str) -> SharedBucket:
    """The shared bucket of mirror `mirror` from config.yml's `storage.s3` (config.storage.S3Storage)."""
    return SharedBucket(endpoint=s3.endpoint, region=s3.region, bucket=s3.bucket,
                        access_key=s3.access_key, secret_key=s3.secret_key, root=s3.root(mirror),
                        path_style=s3.path_style, ca_file=s3.ca_file)


def read(directory: Optional[str]) -> Optional[SharedBucket]:
    """The shared bucket of the mirror rendered in `directory`; None when its cache is its own folder.

    None too (with a debug line) when the file cannot be read, e.g. by an unprivileged `status`.
    """
    if directory is None:
        return None
    path = os.path.join(directory, paths.SHARED_BUCKET)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return SharedBucket(**{k: v for k, v in data.items() if k in SharedBucket.__dataclass_fields__})
    except FileNotFoundError:
        return None
    except PermissionError:
        log.debug("cannot read %s: the shared cache is not shown", path)
        return None
    except (OSError, ValueError, TypeError) as exc:
        log.warning("%s is unreadable (%s); run `registry-cache apply`", path, exc)
        return None


def registry_env(directory: Optional[str]) -> dict[str, str]:
    """What a registry on a shared bucket needs in its environment: Go's SSL_CERT_FILE for a private CA."""
    bucket = read(directory)
    if bucket is None or not bucket.ca_file:
        return {}
    return {"SSL_CERT_FILE": bucket.ca_file}


def node_name(root: str) -> str:
    """This node's name in the cluster: in hold objects, node reports and last-pull records.

    $REGISTRY_CACHE_NODE, else the name kept in ROOT/node-id, chosen once as the host name and
    a random suffix: boxes from one Vagrantfile all have the same host name, and two nodes
    under one name would overwrite each other's reports.
    """
    if os.environ.get("REGISTRY_CACHE_NODE"):
        return os.environ["REGISTRY_CACHE_NODE"]
    path = os.path.join(root, paths.NODE_ID)
    try:
        with open(path, encoding="utf-8") as handle:
            name = handle.read().strip()
        if name:
            return name
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read %s (%s): naming this node by its host name", path, exc)
        return socket.gethostname()
    name = f"{socket.gethostname()}-{secrets.token_hex(3)}"
    try:
        write_file(path, name + "\n")
    except OSError as exc:
        log.warning("cannot keep this node's name in %s (%s): naming it by its host name", path, exc)
        return socket.gethostname()
    return name


def root_of(directory: str) -> str:
    """The agent's root above a rendered mirror's folder (ROOT/mirrors/NAME)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(directory)))
