"""The rules of config.yml's `tls:` and `auth:` sections: who may pull, and over which certificate.

`tls:` is `off` (plain HTTP, what a config without `tls:` gets, as before TLS existed),
`auto` (a private CA and server certificate made on the first apply in the project folder,
`tls/` beside config.yml) or a mapping: `names` (extra names/addresses the generated
certificate covers) or `cert_file` + `key_file` (+ `ca_file`): a certificate the user brings.
`auth:` lists the users clients log in with; it needs TLS (passwords would cross in clear).
What apply and serve then do with these settings is `secure.py`'s job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Optional

from registry_cache import certs, clientauth, paths
from registry_cache.clientauth import ClientUser
from registry_cache.config.document import Document, KeyPath
from registry_cache.config.files import read_pem, read_secret
from registry_cache.config.model import AUTO, USER_CERT, WARM_USER, AuthSettings, TlsSettings


def check_tls(
    doc: Document, value: Any, base_dir: str, listen: Any, now: Optional[float] = None
) -> Optional[TlsSettings]:
    """The `tls:` section as settings (None: plain HTTP); problems go to `doc` as FILE:LINE: key."""
    if value is None or value is False or value == "off":
        return None
    directory = os.path.join(base_dir, paths.TLS_DIR)
    if value == AUTO:
        return TlsSettings(AUTO, directory=directory)
    if not isinstance(value, dict):
        return None  # the schema said what is wrong
    names = tuple(str(n) for n in value.get("names") or () if isinstance(n, str))
    cert_file, key_file, ca_file = (value.get(k) for k in ("cert_file", "key_file", "ca_file"))
    if cert_file is None and key_file is None:
        if ca_file is not None:
            doc.add(("tls", "ca_file"), "goes with cert_file and key_file (your own certificate); "
                    "the generated CA is tls/ca.crt")
        return TlsSettings(AUTO, directory=directory, names=names)
    if not isinstance(cert_file, str) or not isinstance(key_file, str):
        missing = "key_file" if isinstance(cert_file, str) else "cert_file"
        doc.add(("tls", missing), "missing; give cert_file and key_file together (PEM files, "
                "relative to this file)")
        return None
    settings = TlsSettings(
        USER_CERT,
        names=names,
        cert_file=os.path.normpath(os.path.join(base_dir, cert_file)),
        key_file=os.path.normpath(os.path.join(base_dir, key_file)),
        ca_file=os.path.normpath(os.path.join(base_dir, ca_file)) if isinstance(ca_file, str) else None,
    )
    required = list(names)
    if isinstance(listen, str) and listen not in ("0.0.0.0", "::", ""):
        required.append(listen)
    _check_user_cert(doc, settings, required, time.time() if now is None else now)
    return settings


def _check_user_cert(doc: Document, settings: TlsSettings, required: Sequence[str], now: float) -> None:
    assert settings.cert_file is not None and settings.key_file is not None
    cert = read_pem(doc, ("tls", "cert_file"), settings.cert_file, certs.load_certs)
    key = read_pem(doc, ("tls", "key_file"), settings.key_file, certs.load_key)
    if cert is None:
        return
    if key is not None and certs.pair_problem(cert, key):
        doc.add(("tls", "key_file"), f"{settings.key_file} is not the key of {settings.cert_file} "
                "(their public keys differ); give the matching pair")
    problem = certs.validity_problem(cert, now)
    if problem:
        doc.add(("tls", "cert_file"), f"{settings.cert_file} {problem}")
    missing = certs.uncovered(cert, required)
    if missing:
        doc.add(("tls", "cert_file"), f"{settings.cert_file} does not cover {', '.join(missing)} "
                "(its subjectAltName); clients reaching the cache there would refuse it")
    if settings.ca_file is not None:
        read_pem(doc, ("tls", "ca_file"), settings.ca_file, certs.load_certs)


def check_auth(
    doc: Document, value: Any, tls: Optional[TlsSettings], base_dir: str
) -> Optional[AuthSettings]:
    """The `auth:` section as settings (None: anyone may pull); problems go to `doc`."""
    if not isinstance(value, dict):
        return None
    if tls is None:
        doc.add(("auth",), "needs tls (auto or your certificate): without it, passwords would "
                "cross the network in clear; add 'tls: auto'")
    users = []
    specs = value.get("users")
    for name, spec in specs.items() if isinstance(specs, dict) else ():
        if not isinstance(spec, dict):
            continue
        base: KeyPath = ("auth", "users", str(name))
        if ":" in str(name) or not str(name).isprintable() or " " in str(name):
            doc.add(base, "a user name must not hold ':' or spaces (htpasswd lines are NAME:HASH)")
            continue
        if str(name) == WARM_USER:
            doc.add(base, f"{WARM_USER} is the agent's own login for `registry-cache warm`; "
                    "choose another name")
            continue
        hashed, password_file = spec.get("bcrypt"), spec.get("password_file")
        if (hashed is None) == (password_file is None):
            doc.add(base, "give either bcrypt (a hash) or password_file, one of them")
            continue
        if isinstance(hashed, str):
            problem = clientauth.hash_problem(hashed)
            if problem:
                doc.add((*base, "bcrypt"), problem)
                continue
            users.append(ClientUser(str(name), bcrypt_hash=hashed))
        elif isinstance(password_file, str):
            password = read_secret(doc, base_dir, (*base, "password_file"), password_file)
            if password is not None:
                users.append(ClientUser(str(name), password=password))
    return AuthSettings(tuple(users))
