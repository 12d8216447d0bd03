"""`registry-cache client-config`: the ready-to-paste setup that points a client at the mirrors.

Pure: mirrors and the cache's address in, file texts out. Each client format is a
template file `templates/client-<format>.j2`; this module only decides the data.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlsplit

from registry_cache.net import host_port

if TYPE_CHECKING:  # every `registry-cache` command imports FORMATS: keep this module light
    from registry_cache.config import CacheConfig
    from registry_cache.record import MirrorRecord

FORMATS = ("docker", "containerd", "k3s", "podman")

DOCKER_HUB = "docker.io"
DEFAULT_HOSTS = "_default"  # containerd's hosts.toml folder for every registry without its own
# The file name the cache's CA gets on a client (docker and podman want exactly ca.crt in certs.d).
CA_NAME = "ca.crt"
CA_FILES = {
    "containerd": "/etc/containerd/certs.d/registry-cache-ca.crt",
    "k3s": "/etc/rancher/k3s/registry-cache-ca.crt",
}

class ClientConfigError(ValueError):
    """The host or the mirrors cannot make a client setup; the message says how to fix it."""


class CaNotMadeError(ClientConfigError):
    """The mirrors serve TLS but `apply` has not made their CA yet: not a usage mistake."""


def _templates() -> Any:
    from registry_cache.render import templates

    return templates()


@dataclass(frozen=True)
class ClientMirror:
    """What a client needs to know of one mirror: which registry it stands in for, and its port."""

    name: str
    upstream: str
    port: int
    docker_hub: bool
    tls: bool = False
    endpoint: bool = False  # its port is the one endpoint for every mirror

    @property
    def registry(self) -> str:
        """The registry host that image names use for this upstream: docker.io for Docker Hub."""
        if self.docker_hub:
            return DOCKER_HUB
        return urlsplit(self.upstream).netloc


@dataclass(frozen=True)
class Registry:
    """One upstream registry as clients name it, and the mirror addresses that stand in for it.

    `mirrors`: what containerd and k3s pull it through (with the one endpoint: the endpoint
    alone, which they tell the registry by `ns`); `locations`: podman's mirror locations (the
    endpoint with the registry as a path prefix, where the registry's name can be one).
    """

    host: str
    server: Optional[str]
    mirrors: tuple[str, ...]
    locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClientFile:
    """One file to write on the client machine: where it goes and what it says."""

    path: str
    text: str


@dataclass(frozen=True)
class ClientSetup:
    """Everything `client-config` prints: the files, and notes for the person applying them."""

    format: str
    files: tuple[ClientFile, ...]
    notes: tuple[str, ...] = field(default=())

    def text(self) -> str:
        """The files as one text; each file but daemon.json opens with its path as a comment."""
        return "\n".join(f.text if f.path.endswith(_CONFIG_ENDINGS) else f"# {f.path}\n{f.text}"
                         for f in self.files)

    def write(self, directory: str) -> list[str]:
        """Write every file under `directory` at its path on the client (ready to copy); return the paths."""
        written = []
        for f in self.files:
            path = os.path.join(directory, f.path.lstrip("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(f.text)
            written.append(path)
        return written


# Config files carry their path as a comment themselves; a CA certificate is printed under one.
_CONFIG_ENDINGS = (".json", ".toml", ".yaml", ".conf")


def mirrors_from_config(config: CacheConfig) -> list[ClientMirror]:
    """The client's view of every mirror of a validated config."""
    from registry_cache.render import endpoint_mirror

    tls = getattr(config, "tls", None) is not None
    endpoint = endpoint_mirror(config)
    return [ClientMirror(m.name, m.upstream, m.port, m.is_docker_hub, tls and m.raw is None,
                         m.name == endpoint) for m in config.mirrors]


def mirrors_from_records(records: list[MirrorRecord]) -> list[ClientMirror]:
    """The client's view of the mirrors `apply` rendered (their records)."""
    return [
        ClientMirror(r.name, r.upstream, r.port, r.docker_hub, r.tls, r.is_endpoint)
        for r in sorted(records, key=lambda r: r.port)
    ]


def endpoint_address(mirrors: list[ClientMirror], host: str) -> Optional[str]:
    """HOST:PORT of the one endpoint, or None when no mirror's port is one (the seed format)."""
    found = next((m for m in mirrors if m.endpoint), None)
    return host_port(host, found.port) if found else None


def check_host(host: str) -> str:
    """Return the host clients reach the cache at, or raise ClientConfigError saying what is wrong."""
    text = host.strip().strip("[]")
    if not text:
        raise ClientConfigError("--host is empty; give the cache's address, e.g. --host 192.168.56.50")
    if "://" in text or "/" in text:
        raise ClientConfigError(
            f"--host '{host}' must be a bare address without scheme or path, e.g. --host 192.168.56.50"
        )
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        if ":" in text:
            raise ClientConfigError(
                f"--host '{host}' must not carry a port: each mirror has its own port in config.yml"
            ) from None
        return text
    if ip.is_unspecified:
        raise ClientConfigError(
            f"--host {host} is the bind-everything address, which clients cannot dial; "
            "give the address they reach the cache at, e.g. --host 192.168.56.50"
        )
    return str(ip)


def registries(mirrors: list[ClientMirror], host: str) -> list[Registry]:
    """Group mirrors by the registry they stand in for, keeping the order of their ports.

    With the one endpoint every registry is reached through it; podman names the registry as a
    path prefix of the endpoint (`HOST:5000/ghcr.io`) where its name can be one, else (a
    registry with a port) it keeps the mirror's own port.
    """
    from registry_cache.routing import is_path_prefix

    endpoint = endpoint_address(mirrors, host)
    grouped: dict[str, list[ClientMirror]] = {}
    for mirror in sorted(mirrors, key=lambda m: m.port):
        grouped.setdefault(mirror.registry, []).append(mirror)
    result = []
    for name, group in grouped.items():
        upstream = urlsplit(group[0].upstream)
        own = tuple(host_port(host, m.port) for m in group)
        prefixed = endpoint is not None and is_path_prefix(name)
        result.append(Registry(
            host=name,
            server=f"{upstream.scheme}://{upstream.netloc}",
            mirrors=(endpoint,) if endpoint else own,
            locations=(f"{endpoint}/{name}",) if prefixed else own,
        ))
    return result


def client_setup(
    mirrors: list[ClientMirror], host: str, fmt: str, *, ca_pem: Optional[str] = None, auth: bool = False
) -> ClientSetup:
    """Render the setup of one client format for the cache reachable at `host`.

    With TLS (`ca_pem`, the CA clients must trust) the setup holds the trust step: the CA
    file where the runtime looks for it, and no "insecure" anywhere. With `auth`, the notes
    say how each runtime logs in.
    """
    if fmt not in FORMATS:
        raise ClientConfigError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if not mirrors:
        raise ClientConfigError("no mirror is configured, so there is nothing to point a client at")
    host = check_host(host)
    if any(m.tls for m in mirrors) and ca_pem is None:
        raise CaNotMadeError("the mirrors serve TLS but their CA is not there yet: run "
                                "`registry-cache apply` first (it makes tls/ca.crt)")
    regs = registries(mirrors, host)
    setup = _BUILDERS[fmt](regs, mirrors, host, ca_pem)
    if auth:
        setup = replace(setup, notes=(*setup.notes, *_login_notes(fmt, mirrors, host)))
    return setup


def _scheme(mirrors: list[ClientMirror]) -> str:
    return "https" if any(m.tls for m in mirrors) else "http"


def _cert_dirs(base: str, mirrors: list[ClientMirror], host: str, ca_pem: Optional[str]) -> list[ClientFile]:
    """The CA in BASE/HOST:PORT/ca.crt for each mirror: where Docker, podman and CRI-O look for it."""
    if ca_pem is None:
        return []
    return [ClientFile(f"{base}/{host_port(host, m.port)}/{CA_NAME}", ca_pem)
            for m in sorted(mirrors, key=lambda m: m.port)]


def _login_notes(fmt: str, mirrors: list[ClientMirror], host: str) -> list[str]:
    addresses = [host_port(host, m.port) for m in sorted(mirrors, key=lambda m: m.port)]
    if fmt in ("docker", "podman"):
        return [f"the mirrors ask for a login: {fmt} login {a} (it asks for the password)" for a in addresses]
    if fmt == "k3s":
        return [f"the mirrors ask for a login: under configs.\"{a}\" add auth: {{username: USER, "
                "password: PASSWORD}} in registries.yaml (root-only file)" for a in addresses]
    return [f"the mirrors ask for a login: give the kubelet an imagePullSecret for {a}, or "
            "`ctr images pull --user USER` (containerd's hosts.toml holds no credentials)"
            for a in addresses]


def _docker(
    regs: list[Registry], mirrors: list[ClientMirror], host: str, ca_pem: Optional[str]
) -> ClientSetup:
    hub = next((r for r in regs if r.host == DOCKER_HUB), None)
    endpoint = endpoint_address(mirrors, host)
    scheme = _scheme(mirrors)
    # Docker mirrors only Docker Hub, and asks its mirror for unprefixed names: the endpoint
    # when the Docker Hub mirror owns it, else the Docker Hub mirror's own port.
    hub_mirrors = [m for m in sorted(mirrors, key=lambda m: m.port) if m.docker_hub]
    hub_addresses = [endpoint] if endpoint and any(m.endpoint for m in hub_mirrors) else \
        [host_port(host, m.port) for m in hub_mirrors]
    if endpoint:
        used = list(dict.fromkeys([endpoint, *hub_addresses]))
    else:
        used = [host_port(host, m.port) for m in sorted(mirrors, key=lambda m: m.port)]
    data = {
        "registry_mirrors": [f"{scheme}://{a}" for a in hub_addresses] if hub else [],
        "insecure_registries": used if scheme == "http" else [],
    }
    text = _templates().get_template("client-docker.j2").render(**data)
    notes = ["merge this into /etc/docker/daemon.json (create it if missing), then restart Docker: "
             "sudo systemctl restart docker"]
    if hub is None:
        notes.append("no mirror proxies Docker Hub, so Docker gets no registry-mirrors entry")
    for reg in regs:
        if reg.host == DOCKER_HUB:
            continue
        through = reg.locations[0]
        notes.append(f"Docker mirrors only Docker Hub: pull {reg.host}/NAME:TAG through the cache "
                     f"as docker pull {through}/NAME:TAG")
    if ca_pem is not None:
        notes.append("Docker trusts the cache's CA from /etc/docker/certs.d/HOST:PORT/ca.crt "
                     "(no restart needed for those)")
    files = (ClientFile("/etc/docker/daemon.json", text), *_cert_dirs("/etc/docker/certs.d", mirrors,
                                                                      host, ca_pem))
    return ClientSetup("docker", files, tuple(notes))


def _containerd(
    regs: list[Registry], mirrors: list[ClientMirror], host: str, ca_pem: Optional[str]
) -> ClientSetup:
    template = _templates().get_template("client-containerd.j2")
    ca_file = CA_FILES["containerd"] if ca_pem is not None else None
    files = []
    endpoint = endpoint_address(mirrors, host)
    # `_default`: every registry without a folder of its own goes to the endpoint first, which
    # refuses those it does not cache (containerd then pulls them from their own server)
    every = [*regs, Registry(DEFAULT_HOSTS, None, (endpoint,))] if endpoint else regs
    for reg in every:
        # One folder per registry host namespace; host:port names are valid folder names on Linux.
        path = f"/etc/containerd/certs.d/{reg.host}/hosts.toml"
        files.append(ClientFile(path, template.render(path=path, registry=reg, scheme=_scheme(mirrors),
                                                      ca_file=ca_file)))
    if ca_file is not None and ca_pem is not None:
        files.append(ClientFile(ca_file, ca_pem))
    notes = ["containerd reads these only when its registry config_path is /etc/containerd/certs.d "
             "(see the comment in each file); no restart is needed for changes under certs.d"]
    return ClientSetup("containerd", tuple(files), tuple(notes))


def _k3s(regs: list[Registry], mirrors: list[ClientMirror], host: str, ca_pem: Optional[str]) -> ClientSetup:
    path = "/etc/rancher/k3s/registries.yaml"
    ca_file = CA_FILES["k3s"] if ca_pem is not None else None
    endpoint = endpoint_address(mirrors, host)
    # "*": every other registry through the endpoint too (k3s writes it as containerd's `_default`)
    every = [*regs, Registry("*", None, (endpoint,))] if endpoint else regs
    addresses = list(dict.fromkeys(a for reg in every for a in reg.mirrors))
    text = _templates().get_template("client-k3s.j2").render(path=path, registries=every, addresses=addresses,
                                                            scheme=_scheme(mirrors), ca_file=ca_file)
    files = [ClientFile(path, text)]
    if ca_file is not None and ca_pem is not None:
        files.append(ClientFile(ca_file, ca_pem))
    return ClientSetup("k3s", tuple(files), ("restart k3s on each node to apply it",))


def _podman(
    regs: list[Registry], mirrors: list[ClientMirror], host: str, ca_pem: Optional[str]
) -> ClientSetup:
    path = "/etc/containers/registries.conf.d/50-registry-cache.conf"
    text = _templates().get_template("client-podman.j2").render(path=path, registries=regs,
                                                               tls=ca_pem is not None)
    files = (ClientFile(path, text), *_cert_dirs("/etc/containers/certs.d", mirrors, host, ca_pem))
    notes = ("podman, skopeo, buildah and CRI-O trust the cache's CA from "
             "/etc/containers/certs.d/HOST:PORT/ca.crt",) if ca_pem is not None else ()
    return ClientSetup("podman", files, notes)


_BUILDERS = {"docker": _docker, "containerd": _containerd, "k3s": _k3s, "podman": _podman}
