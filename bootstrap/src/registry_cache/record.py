"""One rendered mirror as the programs that run and report it see it: its record and its credentials.

`apply` renders each mirror into its own folder (see paths.py). Two files there belong to this
module, which alone reads and writes them:

- mirror.json, the mirror's public record (no secret, readable by anyone): the same keys
  since the first release, so a record written by an older agent still reads;
- credentials.json, the upstream username and password (0600, owned by the mirrors'
  account), present only for a mirror that logs in to its upstream.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from registry_cache import net, paths
from registry_cache.fsutil import write_file

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

    def text(self) -> str:
        """The content of credentials.json."""
        return json.dumps({"username": self.username, "password": self.password}, indent=2) + "\n"

    def write(self, directory: str, owner: Optional[tuple[int, int]] = None) -> bool:
        """Write credentials.json into a mirror's folder (0600); return True when it changed."""
        return write_file(os.path.join(directory, paths.CREDENTIALS), self.text(),
                          mode=CREDENTIALS_MODE, owner=owner)


def read_credentials(directory: str) -> Optional[Credentials]:
    """The upstream credentials of the mirror rendered in `directory`; None when it has none.

    None too when the file cannot be read (e.g. `status` run by an unprivileged user): the
    caller then talks to the upstream anonymously.
    """
    path = os.path.join(directory, paths.CREDENTIALS)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
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
    docker_hub: bool = False
    authenticated: bool = False
    reconnect_interval: int = DEFAULT_RECONNECT_INTERVAL
    source: str = ""
    # Size caps in bytes (gc.py): this mirror's own and the whole cache's; None: no cap.
    max_size: Optional[int] = None
    cache_max_size: Optional[int] = None
    # Images `registry-cache warm` pulls through the mirror (warm.py): {"image", "platforms"}.
    warm: tuple[dict[str, Any], ...] = ()
    # The mirror's rendered folder, when the record was read from disk (not part of the file).
    directory: Optional[str] = field(default=None, compare=False)

    @property
    def url(self) -> str:
        """The mirror's base URL as reached from this machine."""
        return net.local_url(self.listen, self.port)

    @property
    def state_file(self) -> str:
        """Where the running mirror keeps its state beside its cache."""
        return paths.state_file(self.storage)

    @property
    def storage_ready(self) -> bool:
        """True when the mirror's storage is there and prepared by `apply` (its marker exists)."""
        return os.path.exists(paths.storage_marker(self.storage))

    def credentials(self) -> Optional[Credentials]:
        """The mirror's upstream credentials, read from its folder; None when it has none."""
        if self.directory is None:
            raise RecordError(f"mirror {self.name}: its record was not read from disk")
        return read_credentials(self.directory)

    def text(self) -> str:
        """The content of mirror.json."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "directory"}
        for key in _OPTIONAL_KEYS:
            if not data[key]:
                del data[key]  # a record without gc or warm settings reads as before them
        if "warm" in data:
            data["warm"] = list(data["warm"])
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
                docker_hub=bool(values.get("docker_hub", False)),
                authenticated=bool(values.get("authenticated", False)),
                reconnect_interval=int(values.get("reconnect_interval", DEFAULT_RECONNECT_INTERVAL)),
                source=str(values.get("source", "")),
                max_size=_optional_int(values.get("max_size")),
                cache_max_size=_optional_int(values.get("cache_max_size")),
                warm=tuple(w for w in values.get("warm") or () if isinstance(w, dict)),
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


_OPTIONAL_KEYS = ("max_size", "cache_max_size", "warm")


def _optional_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)


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
