"""Files the agent keeps: atomic writes (no half-written file, unchanged ones untouched), JSON read back."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Optional


def write_file(path: str, text: str, *, mode: int = 0o644, owner: Optional[tuple[int, int]] = None) -> bool:
    """Write `text` to `path` atomically with `mode`; return False when it already said that."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text and _stat_matches(path, mode, owner):
                return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            with contextlib.suppress(PermissionError):
                os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def _stat_matches(path: str, mode: int, owner: Optional[tuple[int, int]]) -> bool:
    st = os.stat(path)
    if (st.st_mode & 0o7777) != mode:
        return False
    return owner is None or (st.st_uid, st.st_gid) == owner or os.geteuid() != 0


def load_json(path: str) -> Any:
    """The JSON document in `path` (OSError when it cannot be read, ValueError when it is no JSON)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json(path: str) -> Optional[dict[str, Any]]:
    """The JSON object kept in `path`; None when the file is missing, unreadable or holds no object."""
    try:
        data = load_json(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def number(data: dict[str, Any], key: str) -> float:
    """A number read from a JSON object; 0 when it is missing or of another type."""
    value = data.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def text(data: dict[str, Any], key: str) -> Optional[str]:
    """A string read from a JSON object; None when it is missing or of another type."""
    value = data.get(key)
    return value if isinstance(value, str) else None


def texts(data: dict[str, Any], key: str) -> list[str]:
    """A list of strings read from a JSON object; empty when it is missing or of another type."""
    value = data.get(key)
    return [str(v) for v in value] if isinstance(value, list) else []


def tree_size(path: str) -> int:
    """Return the bytes used by the files below `path` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total
