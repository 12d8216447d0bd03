"""`invoke publish --catalog`: the real Vagrant installs, updates and verifies published boxes."""

import json
import os

import pytest
import requests
from invoke import Context
from invoke.exceptions import Exit

from box.run import run
from box.tasks.publish import publish
from tests.integration.publish_helpers import make_libvirt_box, need_tools, serve_folder, write_dist

pytestmark = pytest.mark.integration

NAME = "acme/registry-cache"


def build(tmp_path, version, marker=None):
    """A dist/ folder with one libvirt box of `version`, as the build task leaves it."""
    dist = tmp_path / f"dist-{version}-{marker or 'a'}"
    dist.mkdir()
    box = dist / f"registry-cache-{version}-libvirt.box"
    make_libvirt_box(box, marker or f"version {version}")
    write_dist(dist, NAME, version, {"libvirt": box})
    return dist


def vagrant(tmp_path, *args, check=True):
    """Run the real vagrant with a private VAGRANT_HOME and no network calls of its own."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")
    }
    env.update(
        VAGRANT_HOME=str(tmp_path / "vagrant-home"),
        VAGRANT_CWD=str(project),
        VAGRANT_CHECKPOINT_DISABLE="1",
        VAGRANT_BOX_UPDATE_CHECK_DISABLE="1",
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        VAGRANT_NO_COLOR="1",
    )
    return run(["vagrant", *args], capture=True, check=check, env=env, cwd=str(project),
               timeout=300)


@pytest.fixture
def tools():
    need_tools("vagrant", "qemu-img")


def test_vagrant_installs_updates_and_verifies_boxes_from_a_served_catalog(tmp_path, tools):
    catalog = tmp_path / "catalog"
    with serve_folder(catalog) as (base_url, served):
        publish(Context(), catalog=str(catalog), base_url=base_url,
                dist=str(build(tmp_path, "1.0.0")))
        url = f"{base_url}/{NAME}.json"
        answer = requests.get(url, timeout=10)
        assert answer.headers["Content-Type"] == "application/json"

        vagrant(tmp_path, "box", "add", url)
        listed = vagrant(tmp_path, "box", "list").stdout
        assert f"{NAME} (libvirt, 1.0.0)" in listed
        assert any(f"/{NAME}/1.0.0/libvirt.box" in line for line in served)

        publish(Context(), catalog=str(catalog), base_url=base_url,
                dist=str(build(tmp_path, "1.1.0")))
        outdated = vagrant(tmp_path, "box", "outdated", "--global").stdout
        assert f"'{NAME}' for 'libvirt' is outdated! Current: 1.0.0. Latest: 1.1.0" in outdated

        # Someone alters the published box: Vagrant's checksum check refuses it.
        with open(catalog / NAME / "1.1.0" / "libvirt.box", "ab") as box:
            box.write(b"tampered")
        refused = vagrant(tmp_path, "box", "add", url, "--box-version", "1.1.0", check=False)
        assert refused.returncode != 0
        assert "checksum of the downloaded box did not match" in refused.stderr.replace("\n", " ")
        assert f"{NAME} (libvirt, 1.1.0)" not in vagrant(tmp_path, "box", "list").stdout


def test_catalog_keeps_every_version_in_vagrant_order_with_file_urls(tmp_path, tools):
    catalog = tmp_path / "catalog"
    for version in ("1.10.0", "1.2.0", "1.2.0.rc1"):
        publish(Context(), catalog=str(catalog), dist=str(build(tmp_path, version)))
    data = json.loads((catalog / f"{NAME}.json").read_text())
    assert [v["version"] for v in data["versions"]] == ["1.2.0.rc1", "1.2.0", "1.10.0"]
    entry = data["versions"][1]["providers"][0]
    assert entry["url"] == (catalog / NAME / "1.2.0" / "libvirt.box").resolve().as_uri()
    assert entry["architecture"] == "amd64"
    assert entry["checksum_type"] == "sha256"

    # and the file:// catalog works for vagrant too
    vagrant(tmp_path, "box", "add", (catalog / f"{NAME}.json").as_uri())
    assert f"{NAME} (libvirt, 1.10.0)" in vagrant(tmp_path, "box", "list").stdout


def test_republishing_is_a_no_op_and_a_changed_box_is_refused_unless_forced(tmp_path, tools,
                                                                             capsys):
    catalog = tmp_path / "catalog"
    dist = build(tmp_path, "1.0.0")
    publish(Context(), catalog=str(catalog), dist=str(dist))
    json_path = catalog / f"{NAME}.json"
    before = json_path.stat().st_mtime_ns, json_path.read_text()

    publish(Context(), catalog=str(catalog), dist=str(dist))
    assert (json_path.stat().st_mtime_ns, json_path.read_text()) == before
    assert "unchanged acme/registry-cache 1.0.0 libvirt" in capsys.readouterr().out

    rebuilt = build(tmp_path, "1.0.0", marker="rebuilt")
    with pytest.raises(Exit) as refused:
        publish(Context(), catalog=str(catalog), dist=str(rebuilt))
    assert "already published" in str(refused.value.message)
    assert json_path.read_text() == before[1]

    publish(Context(), catalog=str(catalog), dist=str(rebuilt), force=True)
    data = json.loads(json_path.read_text())
    new_sha = json.loads((rebuilt / "build.json").read_text())["boxes"][0]["sha256"]
    assert data["versions"][0]["providers"][0]["checksum"] == new_sha
    assert not [p for p in catalog.rglob(".*")], "no temporary files left behind"


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, tools, capsys):
    catalog = tmp_path / "catalog"
    publish(Context(), catalog=str(catalog), dist=str(build(tmp_path, "1.0.0")), dry_run=True)
    out = capsys.readouterr().out
    assert "add acme/registry-cache 1.0.0 libvirt: copy" in out
    assert f"write {catalog}/{NAME}.json" in out
    assert not catalog.exists()


def test_a_box_changed_in_dist_after_the_build_is_refused(tmp_path, tools):
    dist = build(tmp_path, "1.0.0")
    box = dist / "registry-cache-1.0.0-libvirt.box"
    data = bytearray(box.read_bytes())
    data[-1] ^= 0xFF
    box.write_bytes(bytes(data))
    with pytest.raises(Exit, match="a box changed after the build"):
        publish(Context(), catalog=str(tmp_path / "catalog"), dist=str(dist))
    assert not (tmp_path / "catalog").exists()


def test_missing_build_metadata_says_how_to_fix_it(tmp_path):
    with pytest.raises(Exit, match=r"build.json: not found: build the boxes first"):
        publish(Context(), catalog=str(tmp_path / "c"), dist=str(tmp_path / "nothing"))
