"""Which mirror answers a request at the one endpoint: a closed-world lookup of registry hosts (pure).

One port serves every configured upstream. A request names its registry in one of two ways:

- containerd's `ns` query parameter (`GET /v2/library/alpine/manifests/3.19?ns=docker.io`),
  sent on every request to a mirror since containerd 1.4;
- a path prefix, the registry host as the first component of the repository name
  (`/v2/ghcr.io/OWNER/IMAGE/manifests/TAG`), which any client can send as the image name
  `HOST:5000/ghcr.io/OWNER/IMAGE:TAG`.

A first component counts as a registry host only when it contains a '.' or a ':' or is
`localhost` — Docker's own rule for telling a registry from a Docker Hub organisation (an
organisation name has neither), so `HOST:5000/library/alpine` and `HOST:5000/OWNER/IMAGE`
go to the endpoint's own mirror (Docker Hub in every example) as they always did.

The lookup is closed-world: only the registry hosts of configured mirrors match (Docker Hub
under all its names, host names case-insensitive). Anything else is refused with an OCI error
naming the configured registries; nothing is ever dialled from a name taken from a request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, urlsplit

# Docker Hub: the name in image references, its other names, and the host of its registry API.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_NAMES = (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API)
DEFAULT_PORTS = {"https": 443, "http": 80}
NS_PARAMETER = "ns"
# one component of an image name (distribution/reference's grammar)
_NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def is_docker_hub(host: str) -> bool:
    """Whether a registry host (any case) is one of Docker Hub's names."""
    return host.lower() in DOCKER_HUB_NAMES


def upstream_url(value: str) -> str:
    """The upstream URL a config value means: a host alone is `https://HOST`; Docker Hub's names its API.

    `ghcr.io` -> `https://ghcr.io`; `docker.io` (or `index.docker.io`) ->
    `https://registry-1.docker.io`. A value with a scheme is returned as it is.
    """
    if "://" in value:
        return value
    host = value.strip().rstrip("/")
    if is_docker_hub(host):
        return f"https://{DOCKER_HUB_API}"
    return f"https://{host}"


def registry_host(upstream: str) -> str:
    """The registry host image names use for an upstream URL (lower case): `docker.io` for Docker Hub."""
    parts = urlsplit(upstream)
    host = (parts.hostname or "").lower()
    if is_docker_hub(host):
        return DOCKER_HUB
    port = parts.port
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme):
        return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    return host


def registry_names(upstream: str) -> tuple[str, ...]:
    """Every registry host a mirror of `upstream` answers for: Docker Hub's three names, else its host."""
    host = registry_host(upstream)
    return DOCKER_HUB_NAMES if host == DOCKER_HUB else (host,)


def is_registry_prefix(component: str) -> bool:
    """Whether the first component of an image name is a registry host, by Docker's rule.

    It contains a '.' or a ':' or is `localhost`; a Docker Hub organisation never does.
    """
    return "." in component or ":" in component or component.lower() == "localhost"


def is_repository_name(name: str) -> bool:
    """Whether `name` is a repository name by Distribution's grammar (`library/alpine`; nothing else).

    Components of lower-case letters and digits joined by '.', '_', '__' or dashes, split by
    '/', 255 characters at most: no '..', no percent-encoding, nothing a path could escape with.
    """
    return 0 < len(name) <= 255 and all(_NAME_COMPONENT.fullmatch(part) for part in name.split("/"))


def is_path_prefix(host: str) -> bool:
    """Whether a registry host can lead an image name (`HOST:5000/ghcr.io/OWNER/IMAGE`).

    It must be a registry prefix by Docker's rule and a valid name component: lower case, no
    port (a ':' is not allowed inside an image name's path). `ns` reaches every registry.
    """
    return is_registry_prefix(host) and _NAME_COMPONENT.fullmatch(host) is not None


@dataclass(frozen=True)
class Route:
    """One mirror as the endpoint reaches it: the registry hosts it answers for, and its own port."""

    mirror: str
    hosts: tuple[str, ...]
    port: int = 0

    @property
    def registry(self) -> str:
        """The name clients use for its registry (`docker.io` for Docker Hub)."""
        return self.hosts[0]


@dataclass(frozen=True)
class Table:
    """Every mirror the endpoint routes to, and `home`: the mirror of the endpoint's own port.

    `redirects`: other mirrors' blob GETs get a redirect to their own port (config.yml's
    `endpoint_redirects`).
    """

    routes: tuple[Route, ...]
    home: str
    redirects: bool = True

    def lookup(self, host: str) -> Optional[Route]:
        """The route of a registry host (any case), or None when no mirror is configured for it."""
        wanted = host.lower()
        for route in self.routes:
            if wanted in route.hosts:
                return route
        return None

    def home_route(self) -> Route:
        """The endpoint's own mirror."""
        for route in self.routes:
            if route.mirror == self.home:
                return route
        raise KeyError(self.home)

    def describe(self) -> str:
        """The configured registries in words, for an error message."""
        return ", ".join(f"{r.registry} (mirror {r.mirror})" for r in self.routes)

    def to_json(self) -> str:
        """The table as the endpoint reads it (rendered into its mirror's folder)."""
        routes = [{"mirror": r.mirror, "hosts": list(r.hosts), "port": r.port} for r in self.routes]
        data = {"home": self.home, "routes": routes, "redirects": self.redirects}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Table:
        """Read a table written by `to_json` (ValueError when malformed)."""
        data = json.loads(text)
        try:
            routes = tuple(Route(str(r["mirror"]), tuple(str(h).lower() for h in r["hosts"]), int(r["port"]))
                           for r in data["routes"])
            table = cls(routes, str(data["home"]), bool(data.get("redirects", True)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an endpoint table: {exc}") from exc
        if table.home not in {r.mirror for r in routes}:
            raise ValueError(f"not an endpoint table: its own mirror {table.home!r} has no route")
        return table


def table_for(mirrors: list[tuple[str, str, int]], home: str, *, redirects: bool = True) -> Table:
    """The table of (mirror name, upstream URL, port) in config order; `home` answers unprefixed names."""
    return Table(tuple(Route(name, registry_names(upstream), port) for name, upstream, port in mirrors), home,
                 redirects)


@dataclass(frozen=True)
class Decision:
    """Where the endpoint sends one request, or why it refuses it.

    `path` is the path the mirror gets (the registry prefix taken out), `prefix` what was taken
    out (`/ghcr.io`, put back into `Location` and `Link` headers), `ns` the registry named by
    containerd's parameter (kept on those headers' URLs). `refusal` is set when no mirror
    serves the registry named; then `mirror` is None.
    """

    mirror: Optional[str]
    path: str
    registry: str = ""
    prefix: str = ""
    ns: str = ""
    refusal: Optional[str] = None


def route(table: Table, path: str, query: str = "") -> Decision:
    """Decide which mirror answers `path` (as received, percent-encoded) with `query` (no '?')."""
    ns = ""
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == NS_PARAMETER:
            ns = value
    if ns:
        found = table.lookup(ns)
        if found is None:
            return _refuse(table, ns, path)
        return Decision(found.mirror, _docker_hub_name(path, found), found.registry, ns=ns)
    if not path.startswith("/v2/"):
        return Decision(table.home, path, table.home_route().registry)
    first, slash, rest = path[len("/v2/"):].partition("/")
    if not slash or not rest or not is_registry_prefix(first):
        return Decision(table.home, path, table.home_route().registry)
    found = table.lookup(first)
    if found is None:
        return _refuse(table, first, path)
    return Decision(found.mirror, _docker_hub_name("/v2/" + rest, found), found.registry,
                    prefix="/" + first)


def _docker_hub_name(path: str, found: Route) -> str:
    """`/v2/alpine/manifests/x` means `library/alpine` on Docker Hub, as `docker pull alpine` does."""
    if found.registry != DOCKER_HUB or not path.startswith("/v2/"):
        return path
    parts = path[len("/v2/"):].split("/")
    # NAME/(manifests|blobs|tags)/... with a one-component NAME
    if len(parts) >= 3 and parts[1] in ("manifests", "blobs", "tags") and parts[0] not in ("", "_catalog"):
        return f"/v2/library/{path[len('/v2/'):]}"
    return path


def _refuse(table: Table, host: str, path: str) -> Decision:
    shown = host if len(host) <= 253 else host[:253] + "…"
    return Decision(None, path, shown, refusal=(
        f"registry {shown!r} is not cached here: this cache serves {table.describe()}. "
        "Add a mirror for it to config.yml, or pull it from its registry directly"))


def refusal_body(decision: Decision) -> bytes:
    """The OCI error body of a refused request (code NAME_UNKNOWN)."""
    body = {"errors": [{"code": "NAME_UNKNOWN", "message": decision.refusal,
                        "detail": {"registry": decision.registry}}]}
    return json.dumps(body).encode()


def client_url(value: str, decision: Decision) -> str:
    """A `Location` or `Link` URL from a mirror, as the client must see it: prefix and `ns` put back.

    Only URLs on this server's `/v2/` API change (relative, or absolute on any host: the mirror
    knows only the Host header the client sent); others (a storage redirect) pass as they are.
    """
    parts = urlsplit(value)
    if not parts.path.startswith("/v2/") or (parts.scheme and parts.scheme not in ("http", "https")):
        return value
    path = parts.path
    if decision.prefix:
        path = "/v2" + decision.prefix + path[len("/v2"):]
    query = parts.query
    if decision.ns and not any(k == NS_PARAMETER for k, _ in parse_qsl(query, keep_blank_values=True)):
        query = f"{query}&{NS_PARAMETER}={decision.ns}" if query else f"{NS_PARAMETER}={decision.ns}"
    head = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return head + path + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def client_link(value: str, decision: Decision) -> str:
    """A `Link` header (`<URL>; rel="next"`: tags and catalog pages) with its URLs made by `client_url`."""
    out = []
    for item in value.split(","):
        head, sep, tail = item.partition(">")
        start = head.find("<")
        if not sep or start < 0:
            out.append(item)
            continue
        out.append(head[:start + 1] + client_url(head[start + 1:], decision) + ">" + tail)
    return ",".join(out)
