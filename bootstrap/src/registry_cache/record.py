"""One rendered mirror as the programs that run and report it see it: its record and its credentials.

`apply` renders each mirror into its own folder (see paths.py). Two files there belong to this
module, which alone reads and writes them:

- mirror.json, the mirror's public record (no secret, readable by anyone): the same keys
  since the first release, so a record written by an older agent still reads;
- credentials.json, the upstream username and password (0600, owned by the mirrors'
  account), present only for a mirror that logs in to its upstream.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from registry_cache import net, paths
from registry_cache.fsutil import load_json, write_file

log = logging.getLogger(__name__)

RECORD_MODE = 0o644  # the record holds no secret: `status` works for any user
CREDENTIALS_MODE = 0o600
DEFAULT_RECONNECT_INTERVAL = 30


class RecordError(ValueError):
    """A mirror's record is unreadable or malformed; the message says which file (never a secret)."""


@dataclass(frozen=True)
class Credentials:
    """The account a mirror logs in to its upstream with. The password never shows in a repr."""

    username: str
    password: str = field(repr=False)

    def pair(self) -> tuple[str, str]:
        """(username, password), as HTTP clients take them."""
        return self.username, self.password

    def authorization(self) -> str:
        """The `Authorization` header value for HTTP basic auth (the front sends it upstream)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"

    def text(self) -> str:
        """The content of credentials.json."""
        return json.dumps({"username": self.username, "password": self.password}, indent=2) + "\n"

    def write(self, directory: str, owner: Optional[tuple[int, int]] = None) -> bool:
        """Write credentials.json into a mirror's folder (0600); return True when it changed."""
        return write_file(os.path.join(directory, paths.CREDENTIALS), self.text(),
                          mode=CREDENTIALS_MODE, owner=owner)


def read_credentials(directory: str, filename: str = paths.CREDENTIALS) -> Optional[Credentials]:
    """The upstream credentials of the mirror rendered in `directory`; None when it has none.

    None too when the file cannot be read (e.g. `status` run by an unprivileged user): the
    caller then talks to the upstream anonymously. `filename`: another login of that form
    (paths.WARM_LOGIN).
    """
    path = os.path.join(directory, filename)
    try:
        data = load_json(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        log.debug("cannot read %s: going without upstream credentials", path)
        return None
    except (OSError, ValueError):
        log.warning("%s is unreadable; going without upstream credentials until "
                    "`registry-cache apply` rewrites it", path)
        return None
    username = data.get("username") if isinstance(data, dict) else None
    password = data.get("password") if isinstance(data, dict) else None
    if not isinstance(username, str) or not isinstance(password, str):
        log.warning("%s lacks a username or password; going without upstream credentials", path)
        return None
    return Credentials(username, password)


@dataclass(frozen=True)
class MirrorRecord:
    """One mirror's public facts: what it proxies, where it listens, where it caches."""

    name: str
    upstream: str
    listen: str
    port: int
    storage: str
    debug_port: Optional[int] = None
    # where the debug endpoint listens: loopback, but for a seed-format config that says otherwise
    debug_listen: str = "127.0.0.1"
    docker_hub: bool = False
    authenticated: bool = False
    reconnect_interval: int = DEFAULT_RECONNECT_INTERVAL
    source: str = ""
    # TLS (absent in records of older agents: plain HTTP): the name the local probe checks
    # the certificate against, when the next apply renews a generated one (epoch seconds),
    # and the machine's addresses that certificate was made for.
    tls: bool = False
    tls_server_name: Optional[str] = None
    tls_renew_after: Optional[int] = None
    tls_hosts: tuple[str, ...] = ()
    client_auth: bool = False  # clients must log in (htpasswd)
    # Size caps in bytes (gc/): this mirror's own and the whole cache's; None: no cap.
    max_size: Optional[int] = None
    cache_max_size: Optional[int] = None
    # Images `registry-cache warm` pulls through the mirror (warm.py): {"image", "platforms"}.
    warm: tuple[dict[str, Any], ...] = ()
    # Its port is the one endpoint for every mirror (endpoint.py; the first mirror of config.yml).
    is_endpoint: bool = False
    # The mirror's rendered folder, when the record was read from disk (not part of the file).
    directory: Optional[str] = field(default=None, compare=False)

    @property
    def url(self) -> str:
        """The mirror's base URL as reached from this machine (https with TLS)."""
        return net.local_url(self.listen, self.port, tls=self.tls)

    @property
    def endpoint(self) -> net.Endpoint:
        """The mirror as reached from this machine, trusting its CA (kept in its folder) with TLS."""
        if not self.tls:
            return net.Endpoint(self.url)
        if self.directory is None:
            raise RecordError(f"mirror {self.name}: its record was not read from disk")
        # a name to check only when the certificate does not cover the address dialled (loopback)
        dialled = net.connect_host(self.listen)
        name = self.tls_server_name if self.tls_server_name != dialled else None
        return net.Endpoint(self.url, os.path.join(self.directory, paths.MIRROR_CA), name)

    def loopback_endpoint(self, port: int) -> net.Endpoint:
        """The registry on duty behind the mirror's relay (handover/), on 127.0.0.1:`port`.

        Same scheme and CA as the mirror; with TLS its certificate is checked against the name
        the probe uses, which a generated certificate gives 127.0.0.1 itself.
        """
        if not self.tls:
            return net.Endpoint(net.local_url("127.0.0.1", port))
        if self.directory is None:
            raise RecordError(f"mirror {self.name}: its record was not read from disk")
        name = self.tls_server_name if self.tls_server_name != "127.0.0.1" else None
        return net.Endpoint(net.local_url("127.0.0.1", port, tls=True),
                            os.path.join(self.directory, paths.MIRROR_CA), name)

    @property
    def storage_ready(self) -> bool:
        """True when the mirror's storage is there and prepared by `apply` (its marker exists)."""
        return os.path.exists(paths.storage_marker(self.storage))

    def credentials(self) -> Optional[Credentials]:
        """The mirror's upstream credentials, read from its folder; None when it has none."""
        if self.directory is None:
            raise RecordError(f"mirror {self.name}: its record was not read from disk")
        return read_credentials(self.directory)

    def warm_login(self) -> Optional[Credentials]:
        """The login `registry-cache warm` pulls through the mirror with (client auth on); else None."""
        if self.directory is None or not self.client_auth:
            return None
        return read_credentials(self.directory, paths.WARM_LOGIN)

    def text(self) -> str:
        """The content of mirror.json."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "directory"}
        # a mirror without TLS, client login, gc or warm settings (or a debug endpoint off
        # loopback) reads as before they existed:
        # an upgrade restarts nothing
        data = {k: v for k, v in data.items() if k not in _NEW_KEYS or v != _NEW_KEYS[k]}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def write(self, directory: str, owner: Optional[tuple[int, int]] = None) -> bool:
        """Write mirror.json into a mirror's folder; return True when it changed."""
        return write_file(os.path.join(directory, paths.MIRROR_RECORD), self.text(),
                          mode=RECORD_MODE, owner=owner)

    @classmethod
    def parse(cls, text: str, *, where: str, directory: Optional[str] = None) -> MirrorRecord:
        """Read a record's text: unknown keys are ignored, missing optional ones get their default."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise RecordError(f"{where}: not a JSON object")
        known = {f.name: f for f in fields(cls) if f.name != "directory"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        missing = [k for k in ("name", "upstream", "listen", "port", "storage") if k not in values]
        if missing:
            raise RecordError(f"{where}: missing {', '.join(missing)}; run `registry-cache apply`")
        try:
            record = cls(
                name=str(values["name"]),
                upstream=str(values["upstream"]),
                listen=str(values["listen"]),
                port=int(values["port"]),
                storage=str(values["storage"]),
                debug_port=None if values.get("debug_port") is None else int(values["debug_port"]),
                debug_listen=str(values.get("debug_listen", "127.0.0.1")),
                docker_hub=bool(values.get("docker_hub", False)),
                authenticated=bool(values.get("authenticated", False)),
                reconnect_interval=int(values.get("reconnect_interval", DEFAULT_RECONNECT_INTERVAL)),
                source=str(values.get("source", "")),
                tls=bool(values.get("tls", False)),
                tls_server_name=_optional(values.get("tls_server_name"), str),
                tls_renew_after=_optional(values.get("tls_renew_after"), int),
                tls_hosts=tuple(str(h) for h in values.get("tls_hosts") or ()),
                client_auth=bool(values.get("client_auth", False)),
                max_size=_optional(values.get("max_size"), int),
                cache_max_size=_optional(values.get("cache_max_size"), int),
                warm=tuple(w for w in values.get("warm") or () if isinstance(w, dict)),
                is_endpoint=bool(values.get("is_endpoint", False)),
                directory=directory,
            )
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{where}: a value has the wrong type ({exc})") from None
        return record

    @classmethod
    def read(cls, directory: str) -> MirrorRecord:
        """Read the record of the mirror rendered in `directory` (FileNotFoundError when none)."""
        path = os.path.join(directory, paths.MIRROR_RECORD)
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        return cls.parse(text, where=path, directory=directory)


# Record keys only gc and warm read (from the file, each run): a change to them needs the
# record rewritten, not the mirror restarted.
NOT_READ_BY_THE_RUNNER = ("max_size", "cache_max_size", "warm")

# Keys added after the first release, written only when they differ from their default:
# a mirror without TLS, client login, size caps or warm images reads as before they existed.
_NEW_KEYS: dict[str, Any] = {"debug_listen": "127.0.0.1",
                             "tls": False, "tls_server_name": None, "tls_renew_after": None,
                             "tls_hosts": (), "client_auth": False,
                             "max_size": None, "cache_max_size": None, "warm": (), "is_endpoint": False}


def mirror_files(record: MirrorRecord, credentials: Optional[Credentials]) -> dict[str, str]:
    """The record's file, and the credentials' when there are any, by file name, as `apply` compares them."""
    files = {paths.MIRROR_RECORD: record.text()}
    if credentials is not None:
        files[paths.CREDENTIALS] = credentials.text()
    return files


def has_record(directory: str) -> bool:
    """True when `directory` holds a mirror's record (a folder without one is no mirror)."""
    return os.path.isfile(os.path.join(directory, paths.MIRROR_RECORD))


def only_unread_keys_changed(current: dict[str, str], wanted: dict[str, str]) -> bool:
    """True when a mirror's files (by file name) differ only in record keys its runner never reads."""
    others = set(current) | set(wanted)
    others.discard(paths.MIRROR_RECORD)
    if any(current.get(name) != wanted.get(name) for name in others):
        return False
    try:
        old, new = (json.loads(files.get(paths.MIRROR_RECORD, "")) for files in (current, wanted))
    except ValueError:
        return False
    if not isinstance(old, dict) or not isinstance(new, dict):
        return False
    for key in NOT_READ_BY_THE_RUNNER:
        old.pop(key, None)
        new.pop(key, None)
    return old == new


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def read_all(root: str) -> list[MirrorRecord]:
    """The records of every mirror rendered under `root`, by name; unreadable ones are left out."""
    base = paths.mirrors_dir(root)
    records = []
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        try:
            records.append(MirrorRecord.read(os.path.join(base, name)))
        except FileNotFoundError:
            continue  # a folder without a record is no mirror
        except (OSError, RecordError) as exc:
            log.warning("skipping mirror %s: %s", name, exc)
    return records
