"""The one endpoint's rules: an upstream named by its host alone, and one mirror per registry."""

from __future__ import annotations

from typing import Optional

from registry_cache import routing
from registry_cache.config.document import Document, KeyPath


def upstream_url(value: str) -> str:
    """The upstream a config value names: `ghcr.io` alone is https://ghcr.io, `docker.io` Docker Hub's API."""
    return routing.upstream_url(value)


def check_registries(doc: Document, upstreams: list[tuple[str, str]]) -> None:
    """Each registry has one mirror, so the one endpoint knows where a request goes.

    `upstreams`: (mirror name, upstream URL) in file order. Two mirrors of one registry (Docker
    Hub under any of its names included) are reported at the later one. A registry whose name
    could be a Docker Hub organisation's (no '.', no ':', not `localhost`) is never taken from
    an image name's first part (Docker's rule): a warning says how it is reached instead.
    """
    claimed: dict[str, str] = {}
    for name, upstream in upstreams:
        path: KeyPath = ("mirrors", name, "upstream")
        registry = routing.registry_host(upstream)
        first = claimed.get(registry)
        if first is not None:
            doc.add(path, f"registry {registry} already has a mirror, mirrors.{first} (line "
                          f"{doc.line_of(('mirrors', first, 'upstream'))}): one port answers for every "
                          "registry and sends each to its one mirror; remove one of the two")
            continue
        claimed[registry] = name
        problem = prefix_problem(registry)
        if problem:
            doc.warn(path, problem)


def prefix_problem(registry: str) -> Optional[str]:
    """Why image names cannot lead with `registry` at the one endpoint, or None when they can."""
    if routing.is_registry_prefix(registry):
        return None
    return (f"registry '{registry}' has no '.' or ':' in its name, so HOST:PORT/{registry}/NAME "
            f"means the Docker Hub organisation '{registry}', as in Docker's own image names: "
            "pull it through this mirror's own port, or with containerd (which names the registry "
            "by ?ns=); or give its upstream by a fully qualified name")
