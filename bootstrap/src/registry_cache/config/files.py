"""The rules that look at the disk: the cache folder can be written, a secret file is there and private."""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Callable, Optional

from registry_cache.config.document import Document, KeyPath, os_reason
from registry_cache.config.fingerprint import digest


def storage_problem(directory: str) -> Optional[str]:
    """Say why the cache cannot be kept in `directory`, or None when it can be created/written."""
    probe = directory
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a directory, so {directory} cannot be created; pick another path"
    try:
        # a real write: os.access() says yes to root even on a read-only file system
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        verb = "written" if probe == directory else "created"
        hint = ("fix its permissions or pick another path" if not (probe + "/").startswith("/vagrant/")
                else "on the host, the account QEMU runs as (libvirt-qemu on Debian) must be "
                     "able to write the project folder: `vagrant up` grants it when setfacl is "
                     "installed (apt-get install acl), see the README's libvirt notes")
        return f"{directory} cannot be {verb}: {probe} is not writable ({os_reason(exc)}); {hint}"
    return None


def check_storage(doc: Document, path: KeyPath, directory: str) -> None:
    """Report to `doc`, at key `path`, why the cache cannot be kept in `directory`."""
    problem = storage_problem(directory)
    if problem:
        doc.add(path, problem)


def read_secret(doc: Document, base_dir: str, path: KeyPath, relative: str) -> Optional[str]:
    """The secret in the file named at key `path` (relative to the config), or None and why to `doc`.

    The file becomes one of the config's inputs; one its group or others can read is a warning.
    """
    full = os.path.normpath(os.path.join(base_dir, relative))
    try:
        with open(full, "rb") as handle:
            raw = handle.read()
        secret = raw.decode("utf-8").strip()
    except FileNotFoundError:
        doc.add(path, f"{full} does not exist; put the password or token in it "
                      "(chmod 600), or fix the path (relative to this file)")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        doc.add(path, f"cannot read {full}: {os_reason(exc)}")
        return None
    if not secret:
        doc.add(path, f"{full} is empty; put the password or token in it")
        return None
    doc.inputs[full] = digest(raw)
    _check_private(doc, path, full, relative)
    return secret


def _check_private(doc: Document, path: KeyPath, full: str, relative: str) -> None:
    """Warn when a secret file can be read by its group or others."""
    try:
        mode = stat.S_IMODE(os.stat(full).st_mode)
    except OSError:
        return
    if mode & 0o077:
        doc.warn(path, f"{full} can be read by its group or others (mode {mode:04o}) though it holds "
                       f"a secret; run `chmod 600 {relative}` in the folder of "
                       f"{os.path.basename(doc.filename)}")


def read_pem(doc: Document, key: KeyPath, path: str, load: Callable[[str], object]) -> Optional[str]:
    """The PEM text of the file at `path` once `load` accepts it; else None, and why goes to `doc`."""
    from registry_cache import certs

    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("ascii")
    except FileNotFoundError:
        doc.add(key, f"{path} does not exist; fix the path (relative to this file)")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        doc.add(key, f"cannot read {path}: {os_reason(exc)}")
        return None
    doc.inputs[path] = digest(raw)
    try:
        load(text)
    except certs.TlsError as exc:
        doc.add(key, f"{path} {exc}")
        return None
    return text
