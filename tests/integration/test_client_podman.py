"""The podman registries.conf that client-config prints really sends a containers/image client to the mirror.

skopeo reads the same registries.conf as podman. The client asks for an image of a registry
address where nothing listens; only the generated [[registry.mirror]] table can make the pull
succeed, through a real Distribution proxy in front of a real upstream registry on 127.0.0.1.
"""

import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time

import pytest
import requests
from registry_cache import clientconfig

pytestmark = pytest.mark.integration

REGISTRY = "/usr/bin/docker-registry"
TIMEOUT = 60


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def _registry(tmp_path, name, port, proxy=None):
    lines = [
        "version: 0.1",
        "log: {level: error}",
        f"storage: {{filesystem: {{rootdirectory: {tmp_path / name}}}}}",
        f"http: {{addr: '127.0.0.1:{port}'}}",
    ]
    if proxy:
        lines.append(f"proxy: {{remoteurl: '{proxy}'}}")
    config = tmp_path / f"{name}.yml"
    config.write_text("\n".join(lines) + "\n")
    with open(tmp_path / f"{name}.log", "wb") as log:
        proc = subprocess.Popen([REGISTRY, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"{name} registry did not answer: {(tmp_path / f'{name}.log').read_text()}")


@pytest.fixture
def upstream_and_mirror(tmp_path):
    up_port, mirror_port = _free_port(), _free_port()
    procs = [_registry(tmp_path, "upstream", up_port)]
    try:
        procs.append(_registry(tmp_path, "mirror", mirror_port, proxy=f"http://127.0.0.1:{up_port}"))
        yield up_port, mirror_port
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=TIMEOUT)


def test_podman_registries_conf_pulls_through_the_mirror(tmp_path, upstream_and_mirror):
    up_port, mirror_port = upstream_and_mirror
    image = tmp_path / "image"
    digest = _oci_image(image)
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{image}:latest",
                    f"docker://127.0.0.1:{up_port}/test/hello:latest"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    dead = _free_port()  # a registry address where nothing listens: only the mirror can answer
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
