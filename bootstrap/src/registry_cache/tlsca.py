"""The mirrors' TLS: a private CA and the server certificate it signs, made, kept and renewed.

Pure where it can be: every decision takes the current time (`now`) and PEM text, so tests
can move the clock; the checks themselves are `certs.py`'s. Only `machine_hosts` (the box's
addresses) and `ensure_auto` (the files in the project folder) touch the machine. Keys are
EC P-256: quick to make even on an emulated (TCG) box, and understood by Go (Distribution,
Docker, containerd) and OpenSSL.
Private keys never reach a log, an error or a repr.
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from registry_cache.certs import (
    TlsError,
    as_ip,
    load_certs,
    load_key,
    not_after,
    pair_problem,
    probe_name,
    signed_by,
    uncovered,
    utc,
    validity_problem,
    x509_module,
)
from registry_cache.fsutil import write_file
from registry_cache.paths import CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY

log = logging.getLogger(__name__)

CA_DAYS = 3650
# 825 days: the longest validity macOS accepts for a TLS server certificate.
SERVER_DAYS = 825
# A box may go months without an apply: re-issue well before the end.
RENEW_BEFORE_DAYS = 90
# The probe reaches a mirror on loopback, so every generated certificate covers it too.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

KEY_MODE = 0o600
CERT_MODE = 0o644

_SIOCGIFADDR = 0x8915


@dataclass(frozen=True)
class ServerTls:
    """What the mirrors serve TLS with: the certificate, its key and the CA clients trust."""

    cert_pem: str
    key_pem: str = field(repr=False)
    ca_pem: str = ""
    # The name the local probe checks the certificate against (it connects to loopback).
    server_name: Optional[str] = None
    # Epoch seconds after which the next apply re-issues the certificate (generated ones only).
    renew_after: Optional[int] = None
    # The machine's own addresses the certificate was made for (generated ones only).
    hosts: tuple[str, ...] = ()


def _new_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(now: float, *, common_name: str = "registry-cache private CA") -> tuple[str, str]:
    """A new private CA valid CA_DAYS from `now`: (certificate PEM, key PEM)."""
    x509 = x509_module()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = utc(now) - datetime.timedelta(hours=1)  # a client clock a little behind still accepts it
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def _san_entries(hosts: Iterable[str]) -> list[Any]:
    x509 = x509_module()
    entries = []
    for host in dict.fromkeys(hosts):
        ip = as_ip(host)
        entries.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(host))
    return entries


def issue_server(ca_cert_pem: str, ca_key_pem: str, hosts: Sequence[str], now: float) -> tuple[str, str]:
    """A new server certificate for `hosts` (names and addresses), signed by the CA: (cert PEM, key PEM)."""
    x509 = x509_module()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = load_certs(ca_cert_pem)[0]
    ca_key = load_key(ca_key_pem)
    key = _new_key()
    start = utc(now) - datetime.timedelta(hours=1)
    end = min(start + datetime.timedelta(days=SERVER_DAYS), not_after(ca_cert))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)


def renew_at(cert_pem: str) -> int:
    """Epoch seconds from which a generated certificate is due for renewal."""
    cert = load_certs(cert_pem)[0]
    return int((not_after(cert) - datetime.timedelta(days=RENEW_BEFORE_DAYS)).timestamp())


def renewal_reason(
    cert_pem: Optional[str], key_pem: Optional[str], ca_cert_pem: str, hosts: Sequence[str], now: float
) -> Optional[str]:
    """Why a generated server certificate must be issued again, or None to keep it.

    Missing or unreadable, not made by this CA, not matching its key, not covering every
    host, or within RENEW_BEFORE_DAYS of its end.
    """
    if cert_pem is None or key_pem is None:
        return "there is none yet"
    try:
        if pair_problem(cert_pem, key_pem):
            return "its key does not match"
        if not signed_by(cert_pem, ca_cert_pem):
            return "it was not signed by this CA"
        missing = uncovered(cert_pem, hosts)
        if missing:
            return "it does not cover " + ", ".join(missing)
        if now >= renew_at(cert_pem):
            return f"it ends within {RENEW_BEFORE_DAYS} days"
    except TlsError:
        return "it cannot be read"
    return None


def ca_problem(ca_cert_pem: Optional[str], ca_key_pem: Optional[str], now: float) -> Optional[str]:
    """Why the generated CA cannot sign (missing, broken, not a pair, expired), or None."""
    if ca_cert_pem is None or ca_key_pem is None:
        return "there is none yet"
    return pair_problem(ca_cert_pem, ca_key_pem) or validity_problem(ca_cert_pem, now)


def machine_hosts() -> list[str]:
    """This machine's name and its own non-loopback IPv4 addresses (the box's private IP among them)."""
    hosts = [socket.gethostname()]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # no IPv4 address on this interface
            address = socket.inet_ntoa(packed[20:24])
            if not ipaddress.ip_address(address).is_loopback:
                hosts.append(address)
    return [h for h in dict.fromkeys(hosts) if h]


def _read(path: str) -> Optional[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _no_write(path: str, text: str, **_kwargs: Any) -> bool:
    return False


def ensure_auto(
    directory: str, hosts: Sequence[str], now: float, owner: Optional[tuple[int, int]] = None,
    *, write: bool = True,
) -> ServerTls:
    """Make (first apply), keep or renew the generated CA and server certificate in `directory`.

    The CA is made once and kept, so clients that trust it keep trusting every certificate it
    signs later. Keys are written 0600 for the mirrors' account (`owner`); nothing is logged
    but what was made and why. With write=False (a dry run) nothing is written: what would be
    made is made in memory only.
    """
    save = write_file if write else _no_write
    if write:
        os.makedirs(directory, exist_ok=True)
    files = {n: os.path.join(directory, n) for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)}
    ca_cert, ca_key = _read(files[CA_CERT]), _read(files[CA_KEY])
    problem = ca_problem(ca_cert, ca_key, now)
    if problem:
        if ca_cert is not None:
            # Replacing a CA clients trust breaks them: say so plainly.
            log.warning("the generated CA in %s cannot be used (%s): making a new one; every "
                        "client must trust the new %s", directory, problem, files[CA_CERT])
        ca_cert, ca_key = make_ca(now)
        save(files[CA_KEY], ca_key, mode=KEY_MODE, owner=owner)
        save(files[CA_CERT], ca_cert, mode=CERT_MODE, owner=owner)
        log.info("made a private CA: %s", files[CA_CERT])
    assert ca_cert is not None and ca_key is not None
    cert, key = _read(files[SERVER_CERT]), _read(files[SERVER_KEY])
    reason = renewal_reason(cert, key, ca_cert, hosts, now)
    if reason:
        cert, key = issue_server(ca_cert, ca_key, hosts, now)
        save(files[SERVER_KEY], key, mode=KEY_MODE, owner=owner)
        save(files[SERVER_CERT], cert, mode=CERT_MODE, owner=owner)
        log.info("issued the mirrors' certificate %s for %s (%s)",
                 files[SERVER_CERT], ", ".join(hosts), reason)
    else:
        # the keys stay 0600 for the mirrors' account even when someone changed them
        for name in (CA_KEY, SERVER_KEY):
            save(files[name], _read(files[name]) or "", mode=KEY_MODE, owner=owner)
    assert cert is not None and key is not None
    return ServerTls(
        cert_pem=cert,
        key_pem=key,
        ca_pem=ca_cert,
        server_name=probe_name(cert, LOOPBACK_HOSTS[1:] + LOOPBACK_HOSTS[:1]),
        renew_after=renew_at(cert),
        hosts=tuple(hosts),
    )
