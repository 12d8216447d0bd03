"""The one endpoint's lab: two real upstreams with their images, in a network namespace of the test's own.

The two upstreams listen on 127.0.0.2:80 and 127.0.0.3:80 there, so their registry hosts are
`127.0.0.2` and `127.0.0.3` (valid first components of an image name, as `ghcr.io` is), and
containerd's fallback to a registry's own server (https, port 443) reaches nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import images
from lab.agent import Cache
from lab.netns import NetworkNamespace
from lab.registry import Registry, start_registry

HUB_HOST, OTHER_HOST = "127.0.0.2", "127.0.0.3"
UNKNOWN_HOST = "127.0.0.4"


@dataclass
class Lab:
    """Two upstreams with their images, inside the test's namespace."""

    hub: Registry
    other: Registry
    hub_images: images.TestImages
    other_image: images.TestImage
    workdir: Path


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """The test runs inside its own network namespace, with two upstreams on port 80 there."""
    ns = NetworkNamespace.create(f"ep{id(tmp_path) % 100000}")
    try:
        with ns.entered():
            hub = start_registry(tmp_path / "hub-upstream", "hub-upstream", bind_host=HUB_HOST, port=80)
            other = start_registry(tmp_path / "other-upstream", "other-upstream", bind_host=OTHER_HOST,
                                   port=80)
            try:
                hub_images = images.push_test_images(tmp_path / "hub-layouts", hub.host)
                other_image = images.push_oci_image(tmp_path / "other-layouts", other.host, repo="team/app",
                                                    layer_sizes=(300 * images.KiB, 20 * images.KiB))
                yield Lab(hub, other, hub_images, other_image, tmp_path)
            finally:
                other.stop()
                hub.stop()
    finally:
        ns.delete()


def two_mirrors(cache: Cache, **top: object) -> None:
    """Write `cache`'s config.yml: mirror `hub` (first: its port is the endpoint), then `other`."""
    cache.write_config({"hub": {"upstream": f"http://{HUB_HOST}"}, "other": {"upstream": f"http://{OTHER_HOST}"}},
                       **top)
