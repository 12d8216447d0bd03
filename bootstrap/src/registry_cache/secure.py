"""config.yml's `tls:` and `auth:` sections, checked, and what apply and serve do with them before rendering.

`tls:` is `off` (plain HTTP, what a config without `tls:` gets, as before TLS existed),
`auto` (a private CA and server certificate made on the first apply in the project folder,
`tls/` beside config.yml) or a mapping: `names` (extra names/addresses the generated
certificate covers) or `cert_file` + `key_file` (+ `ca_file`): a certificate the user brings.
`auth:` lists the users clients log in with; it needs TLS (passwords would cross in clear).
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
from typing import TYPE_CHECKING, Any, Callable, Optional

from registry_cache import clientauth, paths, tlsca
from registry_cache.clientauth import ClientUser
from registry_cache.record import Credentials

if TYPE_CHECKING:
    from registry_cache.config import CacheConfig

AUTO = "auto"
USER_CERT = "cert_file"
# With client auth, the agent's own login into the mirrors: `registry-cache warm` pulls with it.
WARM_USER = "registry-cache-warm"

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class TlsSettings:
    """How the mirrors serve TLS: a generated certificate (auto) or the user's own (cert_file)."""

    mode: str
    directory: str = ""  # auto: where the CA and certificate live
    names: tuple[str, ...] = ()
    cert_file: Optional[str] = None
    key_file: Optional[str] = None
    ca_file: Optional[str] = None


@dataclass(frozen=True)
class AuthSettings:
    """Who may pull through the mirrors: users and their bcrypt hash or password."""

    users: tuple[ClientUser, ...] = field(repr=False)


@dataclass(frozen=True)
class Security:
    """What render needs besides the config: the TLS material and the htpasswd text."""

    root: str  # where the mirrors are rendered: their Distribution configs name files there
    tls: Optional[tlsca.ServerTls] = None
    htpasswd: Optional[str] = field(default=None, repr=False)
    # with client auth: the agent's own login for `registry-cache warm` (in the htpasswd too)
    warm_login: Optional[Credentials] = field(default=None, repr=False)


def check_tls(
    doc: Any, value: Any, base_dir: str, listen: Any, now: Optional[float] = None
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


def _read_pem(doc: Any, key: KeyPath, path: str, load: Callable[[str], object]) -> Optional[str]:
    """The PEM text of the file at `path` once `load` accepts it; else None, and why goes to `doc`."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("ascii")
    except FileNotFoundError:
        doc.add(key, f"{path} does not exist; fix the path (relative to this file)")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        doc.add(key, f"cannot read {path}: {getattr(exc, 'strerror', None) or type(exc).__name__}")
        return None
    doc.inputs[path] = hashlib.sha256(raw).hexdigest()
    try:
        load(text)
    except tlsca.TlsError as exc:
        doc.add(key, f"{path} {exc}")
        return None
    return text


def _check_user_cert(doc: Any, settings: TlsSettings, required: Sequence[str], now: float) -> None:
    assert settings.cert_file is not None and settings.key_file is not None
    cert = _read_pem(doc, ("tls", "cert_file"), settings.cert_file, tlsca.load_certs)
    key = _read_pem(doc, ("tls", "key_file"), settings.key_file, tlsca.load_key)
    if cert is None:
        return
    if key is not None and tlsca.pair_problem(cert, key):
        doc.add(("tls", "key_file"), f"{settings.key_file} is not the key of {settings.cert_file} "
                "(their public keys differ); give the matching pair")
    problem = tlsca.validity_problem(cert, now)
    if problem:
        doc.add(("tls", "cert_file"), f"{settings.cert_file} {problem}")
    missing = tlsca.uncovered(cert, required)
    if missing:
        doc.add(("tls", "cert_file"), f"{settings.cert_file} does not cover {', '.join(missing)} "
                "(its subjectAltName); clients reaching the cache there would refuse it")
    if settings.ca_file is not None:
        _read_pem(doc, ("tls", "ca_file"), settings.ca_file, tlsca.load_certs)


def check_auth(
    doc: Any, value: Any, tls: Optional[TlsSettings], read_secret: Callable[[KeyPath, str], Optional[str]]
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
            password = read_secret((*base, "password_file"), password_file)
            if password is not None:
                users.append(ClientUser(str(name), password=password))
    return AuthSettings(tuple(users))


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

    return tlsca.load_certs(cert_pem)[-1].public_bytes(serialization.Encoding.PEM).decode()


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
    name = tlsca.probe_name(cert, [*loopback, *settings.names, *hosts])
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
