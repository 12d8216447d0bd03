"""Test helpers for publishing: real little libvirt boxes, dist/build.json, a loopback server."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import tarfile
import threading
from pathlib import Path

import pytest

from box.run import run


def need_tools(*tools: str) -> None:
    """Skip the test, saying how to install them, when host tools are missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: run `./invoke install-deps --groups vagrant`")


def make_libvirt_box(path: Path, marker: str) -> None:
    """Write a tiny but valid libvirt box: qcow2 disk, metadata.json, Vagrantfile, tar.gz."""
    work = path.parent / f".{path.name}.parts"
    work.mkdir(parents=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(work / "box.img"), "64M"], timeout=60)
    (work / "metadata.json").write_text(
        json.dumps({"provider": "libvirt", "format": "qcow2", "virtual_size": 1})
    )
    # The marker makes each version's box (and so its checksum) different.
    (work / "Vagrantfile").write_text(f'# {marker}\nVagrant.configure("2") do |config|\nend\n')
    with tarfile.open(path, "w:gz") as tar:
        for name in ("metadata.json", "Vagrantfile", "box.img"):
            tar.add(work / name, arcname=name)
    shutil.rmtree(work)


def sha256(path: Path) -> str:
    """The file's sha256, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dist(dist: Path, name: str, version: str, boxes: dict[str, Path]) -> dict:
    """Write dist/build.json for boxes already in dist/, in the format the build writes."""
    data = {
        "name": name,
        "version": version,
        "git_revision": "0123456789abcdef0123456789abcdef01234567",
        "git_dirty": False,
        "created": "2024-05-01T12:00:00Z",
        "tools": {"qemu-img": "test"},
        "description": "registry cache test box",
        "boxes": [
            {"provider": provider, "file": p.name, "sha256": sha256(p), "size": p.stat().st_size}
            for provider, p in boxes.items()
        ],
    }
    (dist / "build.json").write_text(json.dumps(data, indent=2))
    return data


class _CatalogHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".json": "application/json",
        ".box": "application/octet-stream",
    }
    requests: list[str]

    def log_message(self, format, *args):  # record instead of printing to stderr
        type(self).requests.append(self.requestline)


@contextlib.contextmanager
def serve_folder(folder: Path):
    """Serve a folder over HTTP on 127.0.0.1 (ephemeral port) in a thread; yield its URL."""
    handler = type("Handler", (_CatalogHandler,), {"requests": []})

    def factory(*args, **kwargs):
        return handler(*args, directory=str(folder), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
