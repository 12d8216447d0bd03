"""The podman registries.conf that client-config prints really sends a containers/image client to the mirror.

skopeo reads the same registries.conf as podman. The client asks for an image of a registry
address where nothing listens; only the generated [[registry.mirror]] table can make the pull
succeed, through a real Distribution proxy in front of a real upstream registry on 127.0.0.1.
"""

import hashlib
import subprocess

import pytest
from registry_cache import clientconfig

from box.sizes import KiB
from lab import images
from lab.procs import free_port

pytestmark = pytest.mark.integration

TIMEOUT = 60


@pytest.fixture
def upstream_and_mirror(registry_factory):
    """A plain upstream registry and a Distribution proxy of it, both on 127.0.0.1: (upstream, mirror)."""
    up = registry_factory("upstream")
    mirror = registry_factory("mirror", proxy={"remoteurl": up.url})
    return up.port, mirror.port


def test_podman_registries_conf_pulls_through_the_mirror(tmp_path, upstream_and_mirror):
    up_port, mirror_port = upstream_and_mirror
    digest = images.push_oci_image(tmp_path / "layouts", f"127.0.0.1:{up_port}", repo="test/hello",
                                   tag="latest", layer_sizes=(16 * KiB,)).digest
    dead = free_port()  # a registry address where nothing listens: only the mirror can answer
    mirrors = [clientconfig.ClientMirror("team", f"https://127.0.0.1:{dead}", mirror_port, docker_hub=False)]
    (conf,) = clientconfig.client_setup(mirrors, "127.0.0.1", "podman").files
    registries_conf = tmp_path / "registries.conf"
    registries_conf.write_text(conf.text)
    ref = f"docker://127.0.0.1:{dead}/test/hello:latest"

    # --registries-conf: skopeo's (hidden) flag to read this file instead of /etc/containers/registries.conf
    pulled = subprocess.run(["skopeo", "--registries-conf", str(registries_conf), "copy", ref,
                             f"dir:{tmp_path / 'pulled'}"],
                            capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert pulled.returncode == 0, pulled.stderr
    manifest = (tmp_path / "pulled" / "manifest.json").read_bytes()
    assert f"sha256:{hashlib.sha256(manifest).hexdigest()}" == digest, "the pulled image is the pushed one"

    empty = tmp_path / "empty.conf"
    empty.write_text("")
    without = subprocess.run(["skopeo", "--registries-conf", str(empty), "inspect", "--raw", ref],
                             capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert without.returncode != 0, "without the generated file the same pull must fail"
