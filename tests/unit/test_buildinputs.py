"""build-box reuses dist/ only when it holds the box of exactly the same inputs."""

from pathlib import Path

from box import buildinputs
from box.buildinfo import BoxFile, BuildMetadata
from box.tasks import dist

SETTINGS = {"name": "registry-cache", "version": "1.0.0", "memory": 1024, "cpus": 2}
FILES = {"packer/registry-cache.pkr.hcl.j2": "a" * 64, "bootstrap/src/registry_cache/cli.py": "b" * 64}
BASE = "debian-bookworm-0123456789abcdef.raw"
DIGEST = buildinputs.inputs_digest(FILES, SETTINGS, BASE)


def _built(inputs=DIGEST, name="registry-cache") -> BuildMetadata:
    return BuildMetadata(
        name=name, version="1.0.0", git_revision="abc", git_dirty=False,
        created="2025-01-02T03:04:05+00:00", inputs=inputs,
        boxes=(BoxFile("libvirt", "registry-cache-1.0.0-libvirt.box", "c" * 64, 100),
               BoxFile("virtualbox", "registry-cache-1.0.0-virtualbox.box", "d" * 64, 200)))


PRESENT = {"registry-cache-1.0.0-libvirt.box": 100, "registry-cache-1.0.0-virtualbox.box": 200}


def test_same_inputs_and_both_boxes_in_dist_are_reused_saying_which_build():
    verdict = buildinputs.reuse_verdict(_built(), DIGEST, PRESENT)
    assert verdict.reuse
    assert "registry-cache 1.0.0" in verdict.why
    assert "dist/registry-cache-1.0.0-libvirt.box" in verdict.why


def test_no_earlier_build_is_built():
    assert not buildinputs.reuse_verdict(None, DIGEST, {}).reuse


def test_a_build_json_without_inputs_is_built_again():
    verdict = buildinputs.reuse_verdict(_built(inputs=None), DIGEST, PRESENT)
    assert not verdict.reuse
    assert "does not record its inputs" in verdict.why


def test_a_changed_source_file_builds_again():
    changed = buildinputs.inputs_digest({**FILES, "packer/scripts/20-agent.sh": "e" * 64},
                                        SETTINGS, BASE)
    verdict = buildinputs.reuse_verdict(_built(), changed, PRESENT)
    assert not verdict.reuse
    assert "inputs changed" in verdict.why


def test_a_changed_setting_or_base_image_changes_the_digest():
    assert buildinputs.inputs_digest(FILES, {**SETTINGS, "memory": 2048}, BASE) != DIGEST
    assert buildinputs.inputs_digest(FILES, SETTINGS, "debian-bookworm-fedcba.raw") != DIGEST


def test_the_digest_does_not_depend_on_the_order_files_were_read():
    assert buildinputs.inputs_digest(dict(reversed(list(FILES.items()))), SETTINGS, BASE) == DIGEST


def test_a_missing_or_truncated_box_builds_again():
    for present in ({"registry-cache-1.0.0-libvirt.box": 100},
                    {**PRESENT, "registry-cache-1.0.0-virtualbox.box": 199}):
        verdict = buildinputs.reuse_verdict(_built(), DIGEST, present)
        assert not verdict.reuse
        assert "registry-cache-1.0.0-virtualbox.box is missing" in verdict.why


def test_file_digests_read_sources_and_skip_bytecode(tmp_path: Path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "one.txt").write_text("1")
    found = buildinputs.file_digests(tmp_path, ("pkg", "one.txt", "absent"))
    assert sorted(found) == ["one.txt", "pkg/a.py"]
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert buildinputs.file_digests(tmp_path, ("pkg",))["pkg/a.py"] != found["pkg/a.py"]


def test_the_project_inputs_cover_template_scripts_and_agent():
    found = buildinputs.file_digests(dist.ROOT)
    assert "packer/registry-cache.pkr.hcl.j2" in found
    assert "bootstrap/src/registry_cache/config/model.py" in found
    assert any(name.startswith("packer/scripts/") for name in found)
    assert not any("__pycache__" in name for name in found)


def test_next_steps_name_vagrant_up_here_and_the_drop_in_with_the_local_catalog():
    text = dist.next_steps(_built(), Path("/src/docker-registry-cache"))
    lines = [line.strip() for line in text.splitlines()]
    assert "vagrant up" in lines
    assert "cp /src/docker-registry-cache/Vagrantfile /path/to/your/repository/" in lines
    assert ("REGISTRY_CACHE_BOX_URL=file:///src/docker-registry-cache/dist/catalog/"
            "registry-cache.json vagrant up") in lines


def test_next_steps_name_a_box_that_is_not_the_default():
    text = dist.next_steps(_built(name="acme/cache"), Path("/src/rc"))
    assert "REGISTRY_CACHE_BOX=acme/cache vagrant up" in text
    assert "file:///src/rc/dist/catalog/acme/cache.json" in text


def test_the_local_catalog_links_the_boxes_and_points_at_them_with_file_urls(tmp_path: Path):
    import hashlib
    import json

    from box.publish import flow

    dist = tmp_path / "dist"
    dist.mkdir()
    boxes = []
    for provider in ("libvirt", "virtualbox"):
        path = dist / f"registry-cache-1.0.0-{provider}.box"
        path.write_bytes(provider.encode())
        boxes.append(BoxFile(provider, path.name, hashlib.sha256(path.read_bytes()).hexdigest(),
                             path.stat().st_size))
    meta = BuildMetadata(name="registry-cache", version="1.0.0", git_revision="abc",
                         git_dirty=False, created="now", boxes=tuple(boxes))
    lines: list[str] = []
    flow.publish_catalog(meta, dist, dist / "catalog", base_url=None, force=True, dry_run=False,
                         link=True, out=lines.append)
    linked = dist / "catalog" / "registry-cache" / "1.0.0" / "libvirt.box"
    assert linked.stat().st_ino == (dist / "registry-cache-1.0.0-libvirt.box").stat().st_ino
    catalog = json.loads((dist / "catalog" / "registry-cache.json").read_text())
    urls = [p["url"] for p in catalog["versions"][0]["providers"]]
    assert urls == [linked.as_uri(), linked.with_name("virtualbox.box").as_uri()]
    assert not [p for p in linked.parent.iterdir() if p.name.startswith(".")], "a temporary link stayed"


def test_the_host_code_that_makes_and_packages_the_boxes_counts_as_an_input():
    # a change to how the payload, the VMDK or the OVF are made must not reuse an old box
    root = Path(__file__).resolve().parents[2]
    files = buildinputs.file_digests(root)
    for path in ("box/tasks/build.py", "box/tasks/dist.py", "box/qemu.py", "box/templating.py", "box/ovf.py",
                 "box/package.py", "bootstrap/pyproject.toml"):
        assert path in files, path
