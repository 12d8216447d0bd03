"""What the box tests share besides fixtures: the ports and config.yml they use, what fixtures hand over.

A plain module (test modules import it; no test module imports a conftest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import images
from lab.machines import Machine
from lab.netns import NetworkNamespace
from lab.registry import Registry
from lab.vagrant import Vagrant

MIRROR_PORT, SECOND_PORT = 5000, 5001
SSH_FORWARD = 2222


@dataclass
class Lab:
    """The namespace, its upstream registries and the images they hold."""

    workdir: Path
    namespace: NetworkNamespace
    upstream: Registry
    second_upstream: Registry
    image: images.TestImage  # on `upstream`
    docker_image: images.TestImage  # on `upstream`
    second_image: images.TestImage  # on `second_upstream`
    accel: str


@dataclass
class LibvirtVM:
    """The libvirt box up through Vagrant, and the handles the lifecycle tests need."""

    machine: Machine
    vagrant: Vagrant
    project: Path
    up_seconds: float
    box_add_output: str


def box_test_config(upstream_url: str, storage: str) -> dict[str, Any]:
    """The config.yml the tests apply: one mirror over TLS (auto), with a password kept in a file.

    The other tests' pulls skip certificate checks (skopeo's --src-tls-verify=false still speaks
    HTTPS); test_appliance's TLS test checks the certificate against the box's own CA.
    """
    return {
        "listen": "0.0.0.0",
        "storage": storage,
        "tls": "auto",
        "mirrors": {
            "team": {
                "upstream": upstream_url,
                "port": MIRROR_PORT,
                "username": "robot",
                "password_file": "secrets/upstream.password",
            },
        },
    }
