"""The cluster objects in a shared bucket: the gc hold every node obeys, each node's report and pull times.

Beside a mirror's cache in the bucket (`ROOT/.registry-cache/`, where Distribution never looks):

- `hold.json`: taken by the node whose `registry-cache gc` collects the shared cache. Every
  node's runner serves read-only while it stands. It is a lease: the gc renews it every few
  seconds, and once the bucket's own clock (its `Date` against the object's `Last-Modified`)
  says it is older than its `lease`, it is void: a killed gc node holds nobody for long, and
  no node's clock matters.
- `nodes/NODE.json`: each node's runner reports its mode, whether it obeys the hold, and its
  counters every few seconds; gc waits for every live node to say "read-only for gc".
- `usage/NODE.json`: each node's last-pull times; gc plans its LRU on all of them together.
- `gc.json`: the last gc's result, which `status` shows on every node.

Without conditional writes (Ceph RGW 16 has none), the hold is taken by write, wait, read
back: of two nodes writing at once the later wins and the earlier sees it and backs off.
"""

from __future__ import annotations

import email.utils
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Optional

from registry_cache.s3 import Bucket, S3Error
from registry_cache.shared import SharedBucket

log = logging.getLogger(__name__)

DIRECTORY = ".registry-cache"
DEFAULT_LEASE = 30.0  # seconds a hold stands unless renewed
RENEW_EVERY = 5.0
SETTLE = 1.0  # wait between writing the hold and reading it back
CHECK_EVERY = 1.0  # how often a runner looks at the hold
REPORT_EVERY = 3.0  # how often a runner reports when nothing changed
# A node silent this long is not waited for (stopped or dead); longer than a runner's switch to
# read-only, during which it lets the pulls in flight finish (up to 30 s) and reports nothing.
NODE_GONE_AFTER = 60.0


class HoldTaken(RuntimeError):
    """Another node holds the shared cache (its gc runs); the message names it."""


@dataclass(frozen=True)
class Hold:
    """A cluster hold as read from the bucket: who took it, and how old it is by the bucket's clock."""

    holder: str
    token: str
    lease: float
    age: float

    @property
    def standing(self) -> bool:
        """True while the lease runs."""
        return self.age < self.lease


def _key(bucket: SharedBucket, *parts: str) -> str:
    return bucket.key_prefix + "/".join((DIRECTORY, *parts))


def read_hold(bucket: SharedBucket, client: Optional[Bucket] = None) -> Optional[Hold]:
    """The hold on the shared cache, standing or not; None when nobody took one."""
    client = client or bucket.client()
    resp = client.request("GET", _key(bucket, "hold.json"), ok=(200, 404))
    if resp.status_code == 404:
        return None
    try:
        data = json.loads(resp.content)
        now = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
        written = email.utils.parsedate_to_datetime(resp.headers["Last-Modified"]).timestamp()
        return Hold(str(data["holder"]), str(data["token"]), float(data["lease"]), max(0.0, now - written))
    except (ValueError, KeyError, TypeError):
        return None  # a hold nobody can read holds nobody


class ClusterHold:
    """This node's hold on a shared cache while its gc runs: taken, renewed, released."""

    def __init__(self, bucket: SharedBucket, node: str, lease: float = DEFAULT_LEASE) -> None:
        self.bucket = bucket
        self.client = bucket.client()
        self.lease = lease
        self.token = secrets.token_hex(8)
        self.holder = node
        self._renewed = 0.0

    def _write(self) -> None:
        body = json.dumps({"holder": self.holder, "token": self.token, "lease": self.lease,
                           "taken": time.time()}).encode()
        self.client.put(_key(self.bucket, "hold.json"), body, "application/json")
        self._renewed = time.monotonic()

    def take(self) -> None:
        """Take the hold; HoldTaken when another node's stands (or wins the race for it)."""
        current = read_hold(self.bucket, self.client)
        if current is not None and current.standing and current.token != self.token:
            raise HoldTaken(f"the shared cache is held by {current.holder} (its gc runs)")
        began = time.monotonic()
        self._write()
        if time.monotonic() - began > SETTLE / 2:
            self.release()  # too slow to be sure no other node read "free" meanwhile
            raise HoldTaken("the bucket answered too slowly to take the hold safely; try later")
        time.sleep(SETTLE)
        current = read_hold(self.bucket, self.client)
        if current is None or current.token != self.token:
            holder = current.holder if current else "another node"
            raise HoldTaken(f"the shared cache is held by {holder} (its gc runs)")

    def renew(self) -> None:
        """Keep the hold standing (call often; it writes every RENEW_EVERY s)."""
        if time.monotonic() - self._renewed >= RENEW_EVERY:
            self._write()

    def release(self) -> None:
        """Give the hold up (only if it is still ours)."""
        try:
            current = read_hold(self.bucket, self.client)
            if current is not None and current.token == self.token:
                self.client.delete(_key(self.bucket, "hold.json"))
        except S3Error as exc:
            log.warning("cannot release the cluster hold (it expires by itself): %s", exc)


class RunnerLink:
    """What a mirror's runner does with the bucket: obey the hold, report itself, share pull times."""

    def __init__(self, bucket: SharedBucket, node: str) -> None:
        self.bucket = bucket
        self.client = bucket.client(timeout=5.0)
        self.node = node
        self._held = False
        self._checked = 0.0
        self._reported: tuple[Any, ...] = ()
        self._report_time = 0.0

    def held(self) -> bool:
        """True while another gc's (or this node's) hold stands; looked up at most every second.

        A bucket that cannot be read keeps the last answer: the registry cannot write to it either.
        """
        if time.monotonic() - self._checked >= CHECK_EVERY:
            self._checked = time.monotonic()
            try:
                hold = read_hold(self.bucket, self.client)
                self._held = hold is not None and hold.standing
            except S3Error as exc:
                log.debug("cannot read the cluster hold: %s", exc)
        return self._held

    def report(self, mode: str, on_hold: bool, counts: Optional[dict[str, Any]] = None,
               *, force: bool = False) -> None:
        """Tell the cluster this node's mode (every REPORT_EVERY s, or at once when it changed)."""
        changed = (mode, on_hold) != self._reported
        if not (force or changed or time.monotonic() - self._report_time >= REPORT_EVERY):
            return
        body = json.dumps({"node": self.node, "mode": mode, "hold": on_hold, "at": time.time(),
                           **(counts or {})}).encode()
        try:
            self.client.put(_key(self.bucket, "nodes", f"{self.node}.json"), body, "application/json")
            self._reported = (mode, on_hold)
            self._report_time = time.monotonic()
        except S3Error as exc:
            log.debug("cannot report to the cluster: %s", exc)

    def share_usage(self, text: str) -> None:
        """Put this node's last-pull times in the bucket for the cluster's gc."""
        try:
            self.client.put(_key(self.bucket, "usage", f"{self.node}.json"), text.encode(),
                            "application/json")
        except S3Error as exc:
            log.debug("cannot share the pull times: %s", exc)

    def leave(self) -> None:
        """Say this node stopped (gc waits for it no more)."""
        try:
            self.client.delete(_key(self.bucket, "nodes", f"{self.node}.json"))
        except S3Error as exc:
            log.debug("cannot leave the cluster: %s", exc)


def node_reports(bucket: SharedBucket, client: Optional[Bucket] = None) -> list[dict[str, Any]]:
    """Every node's last report; a node silent for NODE_GONE_AFTER s is left out (stopped or dead)."""
    client = client or bucket.client()
    reports = []
    for key, _size in client.list(_key(bucket, "nodes") + "/"):
        body = client.get(key)
        try:
            data = json.loads(body or b"")
        except ValueError:
            continue
        if isinstance(data, dict) and time.time() - float(data.get("at", 0)) < NODE_GONE_AFTER:
            reports.append(data)
    return sorted(reports, key=lambda r: str(r.get("node")))


def shared_usage(bucket: SharedBucket, client: Optional[Bucket] = None) -> list[str]:
    """The last-pull files every node shared (usage.Usage text), for gc to merge."""
    client = client or bucket.client()
    return [(client.get(key) or b"").decode() for key, _size in client.list(_key(bucket, "usage") + "/")]


def save_result(bucket: SharedBucket, data: dict[str, Any]) -> None:
    """Keep the last gc's result in the bucket, for `status` on every node."""
    bucket.client().put(_key(bucket, "gc.json"), json.dumps(data).encode(), "application/json")


def last_result(bucket: SharedBucket, client: Optional[Bucket] = None) -> Optional[dict[str, Any]]:
    """The last gc's result in the bucket, or None."""
    client = client or bucket.client()
    body = client.get(_key(bucket, "gc.json"))
    try:
        data = json.loads(body) if body else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class SharedSummary:
    """The shared cache as `status` shows it on any node: its size, its nodes, the hold, the last gc."""

    where: str
    used: int
    nodes: tuple[str, ...]  # "NODE MODE", each live node
    holder: Optional[str]  # the node whose gc holds the cache now, or None
    last_gc: Optional[dict[str, Any]]


def summary(bucket: SharedBucket) -> SharedSummary:
    """Read the shared cache's size, nodes, hold and last gc from the bucket (S3Error when it cannot)."""
    client = bucket.client(timeout=5.0)
    used = sum(size for key, size in client.list(bucket.key_prefix + "docker/registry/v2/blobs/")
               if key.endswith("/data"))
    hold = read_hold(bucket, client)
    nodes = tuple(f"{r.get('node')} {r.get('mode')}" for r in node_reports(bucket, client))
    return SharedSummary(where=bucket.where, used=used, nodes=nodes,
                         holder=hold.holder if hold is not None and hold.standing else None,
                         last_gc=last_result(bucket, client))
