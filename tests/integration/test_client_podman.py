"""The podman registries.conf that client-config prints really sends a containers/image client to the mirror.

skopeo reads the same registries.conf as podman. The client asks for an image of a registry
address where nothing listens; only the generated [[registry.mirror]] table can make the pull
succeed, through a real Distribution proxy in front of a real upstream registry on 127.0.0.1.
"""

import gzip
import hashlib
import io
import json
import subprocess
import tarfile

import pytest
from registry_cache import clientconfig

from lab.procs import free_port

pytestmark = pytest.mark.integration

TIMEOUT = 60


def _blob(directory, data):
    digest = hashlib.sha256(data).hexdigest()
    path = directory / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _oci_image(directory):
    """A one-layer OCI image layout made from scratch (no network, no image to download)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = b"hello from the cache\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    layer_tar = raw.getvalue()
    layer = _blob(directory, gzip.compress(layer_tar, mtime=0))
    config = _blob(directory, json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }).encode())
    manifest = _blob(directory, json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }]}))
    return manifest["digest"]


@pytest.fixture
def upstream_and_mirror(registry_factory):
    """A plain upstream registry and a Distribution proxy of it, both on 127.0.0.1: (upstream, mirror)."""
    up = registry_factory("upstream")
    mirror = registry_factory("mirror", proxy={"remoteurl": up.url})
    return up.port, mirror.port


def test_podman_registries_conf_pulls_through_the_mirror(tmp_path, upstream_and_mirror):
    up_port, mirror_port = upstream_and_mirror
    image = tmp_path / "image"
    digest = _oci_image(image)
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{image}:latest",
                    f"docker://127.0.0.1:{up_port}/test/hello:latest"],
                   check=True, capture_output=True, timeout=TIMEOUT)
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
