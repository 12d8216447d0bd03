"""What apply and serve do with config.yml's `tls:` and `auth:` before rendering.

They make or renew the generated certificate, hash the client passwords and keep the agent's
own login for `registry-cache warm`. The sections' rules live in `config/security.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from registry_cache import certs, clientauth, paths, tlsca
from registry_cache.clientauth import ClientUser
from registry_cache.config.model import AUTO, WARM_USER, AuthSettings, CacheConfig, TlsSettings
from registry_cache.record import Credentials


@dataclass(frozen=True)
class Security:
    """What render needs besides the config: the TLS material and the htpasswd text."""

    root: str  # where the mirrors are rendered: their Distribution configs name files there
    tls: Optional[tlsca.ServerTls] = None
    htpasswd: Optional[str] = field(default=None, repr=False)
    # with client auth: the agent's own login for `registry-cache warm` (in the htpasswd too)
    warm_login: Optional[Credentials] = field(default=None, repr=False)


def _file_digests(paths: Sequence[str]) -> tuple[tuple[str, str], ...]:
    result = []
    for path in paths:
        with open(path, "rb") as handle:
            result.append((path, hashlib.sha256(handle.read()).hexdigest()))
    return tuple(result)


def client_ca(settings: TlsSettings) -> Optional[str]:
    """The CA certificate clients must trust (PEM), from the config; None while not generated yet."""
    if settings.mode == AUTO:
        path: Optional[str] = os.path.join(settings.directory, paths.CA_CERT)
    else:
        path = settings.ca_file
    if path is None:
        assert settings.cert_file is not None
        with open(settings.cert_file, encoding="ascii") as handle:
            return _top_of_chain(handle.read())
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def applied_ca(records: Sequence[Any]) -> Optional[str]:
    """The CA certificate clients must trust, as the applied mirrors serve it; None without TLS."""
    for rec in records:
        if rec.tls and rec.directory is not None:
            with open(os.path.join(rec.directory, paths.MIRROR_CA), encoding="ascii") as handle:
                return handle.read()
    return None


def _top_of_chain(cert_pem: str) -> str:
    """The last certificate of a chain (its root when the file holds one), as PEM."""
    from cryptography.hazmat.primitives import serialization

    return certs.load_certs(cert_pem)[-1].public_bytes(serialization.Encoding.PEM).decode()


def server_tls(settings: TlsSettings, hosts: Sequence[str]) -> tlsca.ServerTls:
    """The user's own certificate, key and CA as the mirrors serve them (checked at config load)."""
    assert settings.cert_file is not None and settings.key_file is not None
    with open(settings.cert_file, encoding="ascii") as handle:
        cert = handle.read()
    with open(settings.key_file, encoding="ascii") as handle:
        key = handle.read()
    # no CA given: hand clients the top of the chain in cert_file (the root when it is there)
    ca = client_ca(settings) or _top_of_chain(cert)
    loopback = [*tlsca.LOOPBACK_HOSTS[1:], tlsca.LOOPBACK_HOSTS[0]]
    name = certs.probe_name(cert, [*loopback, *settings.names, *hosts])
    return tlsca.ServerTls(cert_pem=cert, key_pem=key, ca_pem=ca, server_name=name)


def prepare(
    cfg: CacheConfig,
    root: str,
    owner: Optional[tuple[int, int]],
    previous: Optional[dict[str, dict[str, str]]] = None,
    *,
    now: Optional[float] = None,
    write: bool = True,
) -> tuple[CacheConfig, Security]:
    """Make or renew the generated certificate and hash the client passwords, before rendering.

    Returns the config with the generated files among its inputs (so `apply`'s fast path
    notices when one is deleted or changed) and what render needs. `previous` is the rendered
    mirrors as on disk: an unchanged password keeps its hash. write=False (a dry run) writes
    nothing and leaves the inputs as they are.
    """
    now = time.time() if now is None else now
    tls = None
    settings: Optional[TlsSettings] = getattr(cfg, "tls", None)
    if settings is not None and settings.mode == AUTO:
        hosts = [*tlsca.machine_hosts(), *settings.names, *tlsca.LOOPBACK_HOSTS]
        tls = tlsca.ensure_auto(settings.directory, list(dict.fromkeys(hosts)), now, owner, write=write)
        generated = [os.path.join(settings.directory, n)
                     for n in (paths.CA_CERT, paths.CA_KEY, paths.SERVER_CERT, paths.SERVER_KEY)]
        if write:
            cfg = dataclasses.replace(cfg, inputs=(*cfg.inputs, *_file_digests(generated)))
    elif settings is not None:
        tls = server_tls(settings, tlsca.machine_hosts())
    htpasswd = None
    warm_login = None
    auth: Optional[AuthSettings] = getattr(cfg, "auth", None)
    if auth is not None:
        found = (files.get(paths.HTPASSWD) for files in (previous or {}).values())
        old = next((text for text in found if text), None)
        warm_login = _warm_login(previous)
        users = (*auth.users, ClientUser(WARM_USER, password=warm_login.password))
        htpasswd = clientauth.htpasswd_text(users, old)
    return cfg, Security(root=os.path.abspath(root), tls=tls, htpasswd=htpasswd, warm_login=warm_login)


def _warm_login(previous: Optional[dict[str, dict[str, str]]]) -> Credentials:
    """The warm login of the mirrors as rendered (kept: the htpasswd then stays as it was), else a new one."""
    for files in (previous or {}).values():
        try:
            data = json.loads(files.get(paths.WARM_LOGIN) or "null")
        except ValueError:
            continue
        password = data.get("password") if isinstance(data, dict) else None
        if isinstance(password, str) and data.get("username") == WARM_USER:
            return Credentials(WARM_USER, password)
    return Credentials(WARM_USER, secrets.token_urlsafe(24))


def renewal_due(
    records: Sequence[Any], now: Optional[float] = None, hosts: Optional[Sequence[str]] = None
) -> bool:
    """True when a mirror's generated certificate must be issued again before `apply` may skip work.

    It nears its end, or the box gained an address it does not cover (a new private IP).
    Read from the mirrors' records only: no certificate is parsed on `apply`'s fast path.
    """
    now = time.time() if now is None else now
    generated = [r for r in records if r.tls and r.tls_renew_after is not None]
    if not generated:
        return False
    if any(now >= r.tls_renew_after for r in generated):
        return True
    current = tlsca.machine_hosts() if hosts is None else hosts
    return any(not set(current) <= set(r.tls_hosts) for r in generated)
