"""Reads and checks PEM certificates and keys: what a certificate covers, when it ends, what pairs with it.

Pure: every check takes PEM text (and the time, `now`), so tests can move the clock. A key
never reaches a message, an error or a repr.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any, Optional


class TlsError(ValueError):
    """A certificate or key cannot be used; the message says why (never the key)."""


def x509_module() -> Any:
    """cryptography's x509 module, imported when first needed (it is slow to import)."""
    from cryptography import x509

    return x509


def utc(now: float) -> datetime.datetime:
    """Epoch seconds as an aware UTC datetime (whole seconds, as certificates keep them)."""
    return datetime.datetime.fromtimestamp(int(now), tz=datetime.timezone.utc)


def load_certs(pem: str) -> list[Any]:
    """Every certificate of a PEM text, leaf first; TlsError when there is none or one is broken."""
    x509 = x509_module()
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


def not_after(cert: Any) -> datetime.datetime:
    """When the certificate ends (UTC), whatever the cryptography version."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def _not_before(cert: Any) -> datetime.datetime:
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def covered_hosts(cert: Any) -> tuple[list[str], list[Any]]:
    """The DNS names and IP addresses a certificate's subjectAltName covers."""
    x509 = x509_module()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)], san.get_values_for_type(x509.IPAddress)


def covers(cert: Any, host: str) -> bool:
    """True when the certificate is valid for `host` (a name, wildcard-matched, or an IP address)."""
    names, ips = covered_hosts(cert)
    ip = as_ip(host)
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
    moment = utc(now)
    if moment > not_after(cert):
        return f"expired on {not_after(cert):%Y-%m-%d}; renew it"
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


def probe_name(cert_pem: str, candidates: Sequence[str]) -> Optional[str]:
    """The first of `candidates` the certificate covers (the name the local probe checks), or None."""
    cert = load_certs(cert_pem)[0]
    return next((c for c in candidates if covers(cert, c)), None)


def as_ip(text: str) -> Optional[Any]:
    """`text` as an IP address (brackets allowed), or None when it is a name."""
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
