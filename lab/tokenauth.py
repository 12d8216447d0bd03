"""A token server on 127.0.0.1 that signs registry tokens the way Docker Hub and ghcr.io do.

A client (skopeo, or Distribution's proxy) asks the registry, gets `401` with
`WWW-Authenticate: Bearer realm=".../token",service="...",scope="repository:REPO:pull"`, then
asks `GET /token?service=...&scope=...` here with Basic auth (or anonymously) and gets
`{"token": JWT, "access_token": JWT, "expires_in": ...}`. The upstream registry, configured
with `auth: token` (see `TokenServer.registry_auth`), trusts the self-signed certificate in
`rootcertbundle`.

How Distribution 2.8 verifies (registry/auth/token/token.go): the JWT header's `x5c` chain
must verify against the `rootcertbundle` pool (a self-signed cert is its own chain), or the
header's `kid` must be the libtrust key ID of a public key in that bundle. We send both; the
signature is RS256 over `header.claims` (base64url without padding).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import logging
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from lab.procs import LOOPBACK, free_port

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The libtrust key ID Distribution uses for `kid`: base32 of SHA-256(PKIX DER)[:30], in 4s."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@dataclass(frozen=True)
class SigningIdentity:
    """The token issuer's RSA key and self-signed certificate (what `rootcertbundle` holds)."""

    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @classmethod
    def generate(cls, common_name: str = "registry-cache test token issuer") -> SigningIdentity:
        """Make a fresh 2048-bit RSA key and a self-signed certificate valid ±1 day."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    def cert_pem(self) -> bytes:
        """The certificate, PEM-encoded, for the registry's `rootcertbundle`."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """A compact RS256 JWT of `claims`, with `x5c` and libtrust `kid` in its header."""
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "kid": libtrust_key_id(self.key.public_key()),
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


def parse_scope(scope: str) -> dict[str, Any] | None:
    """`repository:foo/bar:pull,push` → an `access` entry; None when it is not of that form."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not (sep and sep2 and kind and name):
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


@dataclass
class TokenRequest:
    """One request the token server answered (never the password)."""

    account: str | None
    service: str
    scopes: list[str]
    status: int


@dataclass
class TokenServer:
    """A threaded HTTP token server on 127.0.0.1 for one registry `service`.

    `users` may do everything they ask for; anonymous clients get a token granting nothing
    (as Docker Hub does for a private repository), or `pull` only with `anonymous_pull`.
    Wrong credentials get `401`.
    """

    workdir: Path
    users: dict[str, str]
    service: str = "registry-cache-test"
    issuer: str = "registry-cache-test-issuer"
    anonymous_pull: bool = False
    identity: SigningIdentity = field(default_factory=SigningIdentity.generate)
    requests: list[TokenRequest] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def realm(self) -> str:
        """The token endpoint URL (`auth.token.realm`)."""
        return f"http://{LOOPBACK}:{self.port}/token"

    @property
    def cert_path(self) -> Path:
        """The PEM certificate bundle the registry trusts (`auth.token.rootcertbundle`)."""
        return self.workdir / "token-issuer.pem"

    def registry_auth(self) -> dict[str, Any]:
        """The `auth:` section of a registry that accepts this server's tokens."""
        return {
            "token": {
                "realm": self.realm,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    def start(self) -> TokenServer:
        """Write the certificate and start serving on 127.0.0.1:<free port> in a thread."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(self.identity.cert_pem())
        self.port = self.port or free_port()
        server = ThreadingHTTPServer((LOOPBACK, self.port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (bounded: the serve loop polls every 0.1 s)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def issue(self, account: str | None, scopes: list[str]) -> str:
        """Sign a token for `account` (None: anonymous) granting what it may have of `scopes`."""
        access = []
        for scope in scopes:
            entry = parse_scope(scope)
            if entry is None:
                continue
            if account is None:
                entry["actions"] = (
                    ["pull"] if self.anonymous_pull and "pull" in entry["actions"] else []
                )
            if entry["actions"]:
                access.append(entry)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + TOKEN_LIFETIME_S,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        return self.identity.sign_jwt(claims)

    def authenticate(self, authorization: str | None) -> tuple[bool, str | None]:
        """(ok, account) for an `Authorization` header value; no header is anonymous and ok."""
        if not authorization:
            return True, None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        expected = self.users.get(user)
        ok = expected is not None and secrets.compare_digest(expected, password)
        return ok, user if ok else None


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: object) -> None:
            log.debug("token server: " + fmt, *args)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/token":
                self._reply(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            query = urllib.parse.parse_qs(url.query)
            self._token(self.headers.get("Authorization"), query)

        def do_POST(self) -> None:
            # OAuth2 password grant, as containerd and docker use with a refresh token
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            authorization = self.headers.get("Authorization")
            if form.get("grant_type") == ["password"]:
                user = form.get("username", [""])[0]
                password = form.get("password", [""])[0]
                authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            scopes = [s for value in form.get("scope", []) for s in value.split(" ")]
            self._token(authorization, {**form, "scope": scopes})

        def _token(self, authorization: str | None, query: dict[str, list[str]]) -> None:
            service = query.get("service", [""])[0]
            scopes = query.get("scope", [])
            ok, account = server.authenticate(authorization)
            if not ok:
                server.requests.append(TokenRequest(None, service, scopes, 401))
                self._reply(
                    401,
                    {
                        "errors": [
                            {"code": "UNAUTHORIZED", "message": "incorrect username or password"}
                        ]
                    },
                    {"WWW-Authenticate": 'Basic realm="registry-cache-test-token"'},
                )
                return
            token = server.issue(account, scopes)
            server.requests.append(TokenRequest(account, service, scopes, 200))
            self._reply(
                200,
                {
                    "token": token,
                    "access_token": token,
                    "expires_in": TOKEN_LIFETIME_S,
                    "issued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                },
            )

        def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
