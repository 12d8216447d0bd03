"""The mirrors' TLS: a private CA and the server certificate it signs, made, checked and renewed.

Pure where it can be: every decision takes the current time (`now`) and PEM text, so tests
can move the clock. Only `machine_hosts` (the box's addresses) and `ensure_auto` (the files
in the project folder) touch the machine. Keys are EC P-256: quick to make even on an
emulated (TCG) box, and understood by Go (Distribution, Docker, containerd) and OpenSSL.
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


class TlsError(ValueError):
    """A certificate or key cannot be used; the message says why (never the key)."""


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


def _x509() -> Any:
    from cryptography import x509

    return x509


def _utc(now: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc)


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


def load_certs(pem: str) -> list[Any]:
    """Every certificate of a PEM text, leaf first; TlsError when there is none or one is broken."""
    x509 = _x509()
    marker = "-----BEGIN CERTIFICATE-----"
    parts = [marker + p for p in pem.split(marker)[1:]]
    if not parts:
        raise TlsError("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        return [x509.load_pem_x509_certificate(p.encode()) for p in parts]
    except ValueError:
        raise TlsError("holds a PEM certificate that cannot be read") from None


def load_key(pem: str) -> Any:
    """A PEM private key (unencrypted); TlsError, never showing the key, when it cannot be read."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise TlsError("is not an unencrypted PEM private key") from None


def _public_der(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def make_ca(now: float, *, common_name: str = "registry-cache private CA") -> tuple[str, str]:
    """A new private CA valid CA_DAYS from `now`: (certificate PEM, key PEM)."""
    x509 = _x509()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = _utc(now) - datetime.timedelta(hours=1)  # a client clock a little behind still accepts it
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
    x509 = _x509()
    entries = []
    for host in dict.fromkeys(hosts):
        ip = _ip(host)
        entries.append(x509.IPAddress(ip) if ip is not None else x509.DNSName(host))
    return entries


def issue_server(ca_cert_pem: str, ca_key_pem: str, hosts: Sequence[str], now: float) -> tuple[str, str]:
    """A new server certificate for `hosts` (names and addresses), signed by the CA: (cert PEM, key PEM)."""
    x509 = _x509()
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = load_certs(ca_cert_pem)[0]
    ca_key = load_key(ca_key_pem)
    key = _new_key()
    start = _utc(now) - datetime.timedelta(hours=1)
    end = min(start + datetime.timedelta(days=SERVER_DAYS), _not_after(ca_cert))
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


def _not_after(cert: Any) -> datetime.datetime:
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _not_before(cert: Any) -> datetime.datetime:
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def covered_hosts(cert: Any) -> tuple[list[str], list[Any]]:
    """The DNS names and IP addresses a certificate's subjectAltName covers."""
    x509 = _x509()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)], san.get_values_for_type(x509.IPAddress)


def covers(cert: Any, host: str) -> bool:
    """True when the certificate is valid for `host` (a name, wildcard-matched, or an IP address)."""
    names, ips = covered_hosts(cert)
    ip = _ip(host)
    if ip is not None:
        return ip in ips
    host = host.lower().rstrip(".")
    for name in names:
        if name == host:
            return True
        # a wildcard covers exactly one label: *.example.com covers a.example.com only
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def uncovered(cert_pem: str, hosts: Iterable[str]) -> list[str]:
    """The hosts the (leaf) certificate does not cover, in order."""
    cert = load_certs(cert_pem)[0]
    return [h for h in hosts if not covers(cert, h)]


def pair_problem(cert_pem: str, key_pem: str) -> Optional[str]:
    """Say why the key does not belong to the certificate, or None when they match."""
    try:
        cert = load_certs(cert_pem)[0]
        key = load_key(key_pem)
    except TlsError as exc:
        return str(exc)
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        return "the key does not belong to the certificate (their public keys differ)"
    return None


def validity_problem(cert_pem: str, now: float) -> Optional[str]:
    """Say why the certificate is not valid at `now` (expired, not yet valid), or None."""
    cert = load_certs(cert_pem)[0]
    moment = _utc(now)
    if moment > _not_after(cert):
        return f"expired on {_not_after(cert):%Y-%m-%d}; renew it"
    if moment < _not_before(cert):
        return f"is not valid before {_not_before(cert):%Y-%m-%d} (check the clock)"
    return None


def signed_by(cert_pem: str, ca_cert_pem: str) -> bool:
    """True when the (leaf) certificate was signed by the CA's key."""
    from cryptography.exceptions import InvalidSignature

    cert = load_certs(cert_pem)[0]
    ca = load_certs(ca_cert_pem)[0]
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except AttributeError:  # cryptography < 40 (Debian 12 ships 38): check the signature itself
        return _verify_signature(ca, cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _verify_signature(ca: Any, cert: Any) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def renew_at(cert_pem: str) -> int:
    """Epoch seconds from which a generated certificate is due for renewal."""
    cert = load_certs(cert_pem)[0]
    return int((_not_after(cert) - datetime.timedelta(days=RENEW_BEFORE_DAYS)).timestamp())


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


def probe_name(cert_pem: str, candidates: Sequence[str]) -> Optional[str]:
    """The first of `candidates` the certificate covers (the name the local probe checks), or None."""
    cert = load_certs(cert_pem)[0]
    return next((c for c in candidates if covers(cert, c)), None)


def _ip(text: str) -> Optional[Any]:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


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
