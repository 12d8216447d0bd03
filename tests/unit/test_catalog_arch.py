"""The catalog carries both architectures: amd64 stays the default, Vagrant 2.3 still gets it."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from box.buildinfo import BoxFile, BuildMetadata
from box.package import box_entry, write_box
from box.publish.catalog import apply_catalog_plan, plan_catalog, read_catalog
from box.publish.flow import publish_catalog

SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def both(version: str = "1.1.0") -> BuildMetadata:
    return BuildMetadata(
        name="acme/cache", version=version, git_revision="0123456789abcdef", git_dirty=False,
        created="2024-05-01T12:00:00Z",
        boxes=(
            BoxFile("libvirt", f"cache-{version}-libvirt.box", SHA_A, 100),
            BoxFile("virtualbox", f"cache-{version}-virtualbox.box", SHA_B, 200),
            BoxFile("libvirt", f"cache-{version}-libvirt-arm64.box", SHA_C, 300, "arm64"),
        ),
    )


def _plan(m: BuildMetadata, existing=None):
    # the boxes of `existing` are in place in the catalog folder
    present = {p["url"].split("example.test/", 1)[1]: b.size
               for v in (existing or {}).get("versions", []) for p in v["providers"]
               for b in m.boxes if b.sha256 == p["checksum"]}
    return plan_catalog(m, existing, dist_dir="dist", catalog_dir="cat",
                        base_url="https://boxes.example.test", present=present)


def test_each_box_carries_its_architecture_and_amd64_is_the_default():
    providers = _plan(both()).catalog["versions"][0]["providers"]
    found = [(p["name"], p["architecture"], p["default_architecture"], p["url"].rsplit("/", 1)[1])
             for p in providers]
    assert found == [
        ("libvirt", "arm64", False, "libvirt-arm64.box"),
        # Vagrant < 2.4 keeps the last entry of a provider name: the default architecture's
        ("libvirt", "amd64", True, "libvirt.box"),
        ("virtualbox", "amd64", True, "virtualbox.box"),
    ]


def test_an_arm64_box_joins_a_version_published_for_amd64_alone():
    amd64_only = BuildMetadata(**{**both().__dict__, "boxes": both().boxes[:2]})
    first = _plan(amd64_only).catalog
    second = _plan(both(), existing=first)
    assert [c.dest for c in second.copies] == ["acme/cache/1.1.0/libvirt-arm64.box"]
    assert [p["architecture"] for p in second.catalog["versions"][0]["providers"]] == \
        ["arm64", "amd64", "amd64"]


def test_an_entry_published_before_architectures_becomes_the_default_one():
    old = _plan(both()).catalog
    for p in old["versions"][0]["providers"]:
        if p["architecture"] == "amd64":
            del p["architecture"], p["default_architecture"]
    plan = _plan(both(), existing=old)
    assert plan.copies == () and plan.write_json
    amd64 = [p for p in plan.catalog["versions"][0]["providers"] if p["name"] == "virtualbox"]
    assert amd64[0]["architecture"] == "amd64" and amd64[0]["default_architecture"] is True


def test_the_arm64_catalog_alone_lists_every_version_s_arm64_box_only():
    first = _plan(both("1.0.0")).catalog
    catalogs = dict(_plan(both("1.1.0"), existing=first).arch_catalogs)
    assert list(catalogs) == ["acme/cache-arm64.json"]
    alone = catalogs["acme/cache-arm64.json"]
    assert alone["name"] == "acme/cache"
    assert [v["version"] for v in alone["versions"]] == ["1.0.0", "1.1.0"]
    assert all(p["architecture"] == "arm64" for v in alone["versions"] for p in v["providers"])


def test_an_amd64_only_catalog_has_no_other_architecture_catalog():
    amd64_only = BuildMetadata(**{**both().__dict__, "boxes": both().boxes[:2]})
    assert _plan(amd64_only).arch_catalogs == ()


def test_applying_writes_the_arm64_catalog_beside_the_catalog(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    for box in both().boxes:
        (dist / box.file).write_bytes(b"x" * box.size)
    plan = plan_catalog(both(), None, dist_dir=str(dist), catalog_dir=str(tmp_path / "cat"))
    apply_catalog_plan(plan, tmp_path / "cat")
    alone = read_catalog(tmp_path / "cat" / "acme" / "cache-arm64.json")
    assert alone["versions"][0]["providers"][0]["url"].endswith("/1.1.0/libvirt-arm64.box")
    assert (tmp_path / "cat/acme/cache/1.1.0/libvirt-arm64.box").stat().st_size == 300


# --- the real vagrant (Debian's 2.3.4, which reads no architecture) ---------------------------

def _tiny_libvirt_box(folder: Path, arch: str) -> Path:
    """A libvirt box whose only content that matters is a file naming its architecture."""
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}))
    (folder / "box.img").write_bytes(b"\0" * 512)
    (folder / "architecture").write_text(arch + "\n")
    target = folder.parent / f"rc-1.0.0-libvirt{'' if arch == 'amd64' else '-' + arch}.box"
    write_box(target, {n: folder / n for n in ("metadata.json", "box.img", "architecture")})
    return target


def _vagrant_box_add(home: Path, url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAGRANT_")}
    env.update(VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1")
    proc = subprocess.run(["vagrant", "box", "add", "--provider", "libvirt", url], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    added = list(home.glob("boxes/*/1.0.0/libvirt/architecture"))
    assert len(added) == 1, added
    return added[0].read_text().strip()


@pytest.mark.allow_subprocess
@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_vagrant_2_3_adds_the_amd64_box_from_the_catalog_and_arm64_from_its_own(tmp_path):
    dist = tmp_path / "dist"
    boxes = [box_entry("libvirt", _tiny_libvirt_box(dist / arch, arch), arch)
             for arch in ("amd64", "arm64")]
    meta = BuildMetadata(name="rc", version="1.0.0", git_revision="r", git_dirty=False,
                         created="2024-05-01T12:00:00Z",
                         boxes=tuple(BoxFile(**b) for b in boxes))
    catalog = tmp_path / "catalog"
    publish_catalog(meta, dist, catalog, base_url=None, force=False, dry_run=False,
                    out=lambda line: None)
    assert _vagrant_box_add(tmp_path / "home-a", (catalog / "rc.json").as_uri()) == "amd64"
    assert _vagrant_box_add(tmp_path / "home-b", (catalog / "rc-arm64.json").as_uri()) == "arm64"
