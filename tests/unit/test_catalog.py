"""Catalog planning: Vagrant's version order, merging, refusals, URLs, atomic writes."""

import json

import pytest

from box.boxversion import BoxVersion, VersionError, sort_versions
from box.buildinfo import BoxFile, BuildMetadata, BuildMetadataError, parse_build_metadata
from box.files import atomic_write_text
from box.publish.catalog import (
    CatalogError,
    apply_catalog_plan,
    box_url,
    plan_catalog,
    read_catalog,
    render_catalog,
)

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64


def meta(version="1.1.0", sha_libvirt=SHA_A, sha_vbox=SHA_B, description=None, name="acme/cache"):
    return BuildMetadata(
        name=name,
        version=version,
        git_revision="0123456789abcdef",
        git_dirty=False,
        created="2024-05-01T12:00:00Z",
        boxes=(
            BoxFile("libvirt", f"cache-{version}-libvirt.box", sha_libvirt, 100),
            BoxFile("virtualbox", f"cache-{version}-virtualbox.box", sha_vbox, 200),
        ),
        description=description,
    )


def provider(name, sha, version="1.0.0", url=None):
    return {
        "name": name,
        "url": url or f"https://boxes.example.test/acme/cache/{version}/{name}.box",
        "checksum_type": "sha256",
        "checksum": sha,
        "architecture": "amd64",
        "default_architecture": True,
    }


def plan(m, existing=None, **kwargs):
    kwargs.setdefault("dist_dir", "dist")
    kwargs.setdefault("catalog_dir", "/srv/boxes")
    kwargs.setdefault("base_url", "https://boxes.example.test")
    return plan_catalog(m, existing, **kwargs)


# --- Vagrant's version order -------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.2.0", "1.10.0"),  # numeric, not lexical
        ("1.0.0.rc1", "1.0.0"),  # pre-release before release
        ("1.0.0-rc.1", "1.0.0"),  # dash pre-release (Gem reads it as 1.0.0.pre.rc.1)
        ("1.0.0.a", "1.0.0.b"),
        ("1.0.0.rc1", "1.0.0.rc2"),
        ("1.0.0", "1.0.1"),
        ("0.9", "1.0.0.rc1"),
        ("2023.1.9", "2023.1.10"),
    ],
)
def test_versions_order_like_vagrant(older, newer):
    assert BoxVersion(older) < BoxVersion(newer)
    assert not BoxVersion(newer) < BoxVersion(older)


def test_trailing_zeros_do_not_make_a_different_version():
    assert BoxVersion("1.0") == BoxVersion("1.0.0")
    assert BoxVersion("1") == BoxVersion("1.0.0.0")


def test_prerelease_is_recognised():
    assert BoxVersion("1.0.0.rc1").prerelease
    assert BoxVersion("1.0.0-rc.1").prerelease
    assert not BoxVersion("1.0.0").prerelease


def test_sort_versions_oldest_first():
    assert sort_versions(["1.10.0", "1.0.0", "1.0.0.rc1", "1.2.0", "0.9.0"]) == [
        "0.9.0",
        "1.0.0.rc1",
        "1.0.0",
        "1.2.0",
        "1.10.0",
    ]


@pytest.mark.parametrize("bad", ["", "v1.0.0", "1.0.0 beta", "1..0", "latest", ".1"])
def test_versions_vagrant_refuses_are_refused(bad):
    with pytest.raises(VersionError, match="not a version Vagrant accepts"):
        BoxVersion(bad)


# --- build metadata ----------------------------------------------------------------------


def good_build_json():
    return {
        "name": "registry-cache",
        "version": "1.0.0",
        "git_revision": "4ecb883",
        "git_dirty": False,
        "created": "2024-05-01T12:00:00Z",
        "tools": {"packer": "1.6.6"},
        "boxes": [
            {"provider": "libvirt", "file": "rc-libvirt.box", "sha256": SHA_A, "size": 10},
        ],
    }


def test_build_metadata_in_the_agreed_format_is_read():
    m = parse_build_metadata(good_build_json(), "dist/build.json")
    assert m.version == "1.0.0"
    assert m.boxes[0].provider == "libvirt"
    assert m.description is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("version"), r"dist/build.json: version: missing"),
        (lambda d: d.update(version="one"), r"version: 'one' is not a version"),
        (lambda d: d.update(boxes=[]), r"boxes: missing or empty"),
        (lambda d: d["boxes"][0].update(provider="vmware"), r"boxes\[0\].provider: 'vmware'"),
        (lambda d: d["boxes"][0].update(sha256="XYZ"), r"boxes\[0\].sha256: expected 64"),
        (lambda d: d["boxes"][0].update(file="../x.box"), r"boxes\[0\].file: expected"),
        (lambda d: d["boxes"][0].update(size=0), r"boxes\[0\].size"),
        (lambda d: d.update(name="../etc"), r"name: '../etc' is not a box name"),
        (lambda d: d.update(git_dirty="no"), r"git_dirty: missing or not true/false"),
    ],
)
def test_bad_build_metadata_names_the_file_and_key(change, message):
    data = good_build_json()
    change(data)
    with pytest.raises(BuildMetadataError, match=message):
        parse_build_metadata(data, "dist/build.json")


# --- planning ----------------------------------------------------------------------------


def test_first_publish_creates_the_catalog_with_both_providers():
    p = plan(meta(description="Team cache"))
    assert p.write_json
    assert p.json_path == "acme/cache.json"
    assert p.catalog["name"] == "acme/cache"
    assert p.catalog["description"] == "Team cache"
    (version,) = p.catalog["versions"]
    assert version["version"] == "1.1.0"
    assert version["providers"] == [
        {
            "name": "libvirt",
            "url": "https://boxes.example.test/acme/cache/1.1.0/libvirt.box",
            "checksum_type": "sha256",
            "checksum": SHA_A,
            "architecture": "amd64",
            "default_architecture": True,
        },
        {
            "name": "virtualbox",
            "url": "https://boxes.example.test/acme/cache/1.1.0/virtualbox.box",
            "checksum_type": "sha256",
            "checksum": SHA_B,
            "architecture": "amd64",
            "default_architecture": True,
        },
    ]
    assert [(c.source, c.dest) for c in p.copies] == [
        ("dist/cache-1.1.0-libvirt.box", "acme/cache/1.1.0/libvirt.box"),
        ("dist/cache-1.1.0-virtualbox.box", "acme/cache/1.1.0/virtualbox.box"),
    ]


def test_without_base_url_the_catalog_uses_file_urls(tmp_path):
    p = plan(meta(), base_url=None, catalog_dir=str(tmp_path / "cat"))
    url = p.catalog["versions"][0]["providers"][0]["url"]
    assert url == (tmp_path / "cat" / "acme/cache/1.1.0/libvirt.box").as_uri()


def test_base_url_paths_are_quoted_and_slashes_collapse():
    assert (
        box_url("a b/1.0/libvirt.box", "http://127.0.0.1:8080/boxes/", "/x")
        == "http://127.0.0.1:8080/boxes/a%20b/1.0/libvirt.box"
    )


def test_without_description_the_old_one_stays_else_a_default():
    existing = {"name": "acme/cache", "description": "Ours", "versions": []}
    assert plan(meta(), existing).catalog["description"] == "Ours"
    assert "docker-registry-cache" in plan(meta()).catalog["description"]


def test_existing_versions_stay_and_are_sorted_as_vagrant_sorts():
    existing = {
        "name": "acme/cache",
        "description": "d",
        "versions": [
            {"version": "1.10.0", "providers": [provider("libvirt", SHA_C, "1.10.0")]},
            {"version": "1.0.0.rc1", "providers": [provider("libvirt", SHA_C, "1.0.0.rc1")]},
            {"version": "1.0.0", "providers": [provider("libvirt", SHA_C)]},
        ],
    }
    p = plan(meta(version="1.2.0"), existing)
    order = [v["version"] for v in p.catalog["versions"]]
    assert order == ["1.0.0.rc1", "1.0.0", "1.2.0", "1.10.0"]
    # the old entries are untouched
    assert p.catalog["versions"][0] == existing["versions"][1]


def test_unknown_keys_of_an_existing_catalog_are_kept():
    existing = {"name": "acme/cache", "description": "d", "x-team": "ops", "versions": []}
    assert plan(meta(), existing).catalog["x-team"] == "ops"


def test_republishing_the_same_boxes_is_a_no_op():
    first = plan(meta())
    present = {c.dest: c.size for c in first.copies}
    again = plan(meta(), first.catalog, present=present)
    assert again.copies == ()
    assert not again.write_json
    assert all(n.startswith("unchanged") for n in again.notes)


def test_republishing_restores_a_box_file_that_went_missing():
    first = plan(meta())
    again = plan(meta(), first.catalog, present={"acme/cache/1.1.0/libvirt.box": 100})
    assert [c.provider for c in again.copies] == ["virtualbox"]
    assert not again.write_json


def test_a_changed_box_for_a_published_version_is_refused():
    first = plan(meta())
    with pytest.raises(CatalogError) as err:
        plan(meta(sha_libvirt=SHA_C), first.catalog)
    text = str(err.value)
    assert "acme/cache 1.1.0 libvirt is already published" in text
    assert SHA_A in text and SHA_C in text
    assert "--force" in text


def test_force_replaces_a_changed_box_and_keeps_the_other():
    first = plan(meta())
    present = {c.dest: c.size for c in first.copies}
    p = plan(meta(sha_libvirt=SHA_C), first.catalog, force=True, present=present)
    assert [c.provider for c in p.copies] == ["libvirt"]
    checksums = {x["name"]: x["checksum"] for x in p.catalog["versions"][0]["providers"]}
    assert checksums == {"libvirt": SHA_C, "virtualbox": SHA_B}


def test_a_new_provider_joins_an_existing_version():
    existing = {
        "name": "acme/cache",
        "description": "d",
        "versions": [{"version": "1.1.0", "providers": [provider("libvirt", SHA_A, "1.1.0")]}],
    }
    p = plan(meta(), existing, present={"acme/cache/1.1.0/libvirt.box": 100})
    assert [c.provider for c in p.copies] == ["virtualbox"]
    assert [x["name"] for x in p.catalog["versions"][0]["providers"]] == ["libvirt", "virtualbox"]


def test_an_equal_version_spelled_differently_is_the_same_entry():
    existing = {
        "name": "acme/cache",
        "description": "d",
        "versions": [{"version": "1.1", "providers": [provider("libvirt", SHA_C, "1.1")]}],
    }
    with pytest.raises(CatalogError, match=r"1\.1 libvirt is already published"):
        plan(meta(version="1.1.0"), existing)


def test_a_catalog_of_another_box_is_refused():
    with pytest.raises(CatalogError, match="this catalog is for box 'other'"):
        plan(meta(), {"name": "other", "versions": []}, source="cat/acme/cache.json")


@pytest.mark.parametrize(
    ("existing", "message"),
    [
        ([], "expected a JSON object"),
        ({"name": "acme/cache", "versions": {}}, "versions: expected a list"),
        ({"name": "acme/cache", "versions": [{"version": "x"}]}, r"versions\[0\].version"),
        (
            {"name": "acme/cache", "versions": [{"version": "1.0", "providers": [{}]}]},
            r"versions\[0\].providers\[0\]",
        ),
    ],
)
def test_a_broken_catalog_is_refused_with_its_key(existing, message):
    with pytest.raises(CatalogError, match="cat.json: " + message):
        plan(meta(), existing, source="cat.json")


def test_planning_does_not_modify_the_catalog_it_was_given():
    existing = {"name": "acme/cache", "description": "d", "versions": []}
    snapshot = json.dumps(existing)
    plan(meta(), existing)
    assert json.dumps(existing) == snapshot


# --- side effects (files only) -----------------------------------------------------------


def test_applying_a_plan_copies_boxes_and_writes_json_without_leftovers(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "cache-1.1.0-libvirt.box").write_bytes(b"L" * 100)
    (dist / "cache-1.1.0-virtualbox.box").write_bytes(b"V" * 200)
    cat = tmp_path / "cat"
    p = plan(meta(), dist_dir=str(dist), catalog_dir=str(cat))
    apply_catalog_plan(p, cat)
    assert (cat / "acme/cache/1.1.0/libvirt.box").read_bytes() == b"L" * 100
    assert (cat / "acme/cache/1.1.0/virtualbox.box").read_bytes() == b"V" * 200
    assert read_catalog(cat / "acme/cache.json") == p.catalog
    leftovers = [f.name for f in cat.rglob(".*")]
    assert leftovers == []


def test_atomic_write_replaces_the_whole_file(tmp_path):
    target = tmp_path / "c.json"
    target.write_text("old")
    atomic_write_text(target, render_catalog({"name": "n", "versions": []}))
    assert json.loads(target.read_text()) == {"name": "n", "versions": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_an_unreadable_catalog_json_names_the_file_and_line(tmp_path):
    target = tmp_path / "c.json"
    target.write_text('{\n  "name": "x",\n  oops\n}\n')
    with pytest.raises(CatalogError, match=r"c.json:3: not valid JSON"):
        read_catalog(target)


# --- dist/ -------------------------------------------------------------------------------


def test_dist_matching_build_json_passes_and_a_changed_or_missing_box_is_named(tmp_path):
    from box.publish.dist import DistError, check_dist, sha256_file

    box = tmp_path / "cache-1.1.0-libvirt.box"
    box.write_bytes(b"x" * 100)
    m = BuildMetadata(name="acme/cache", version="1.1.0", git_revision="0", git_dirty=False,
                      created="2024-05-01T12:00:00Z",
                      boxes=(BoxFile("libvirt", box.name, sha256_file(box), 100),))
    check_dist(m, tmp_path)
    box.write_bytes(b"y" * 100)
    with pytest.raises(DistError, match=f"(?s)a box changed after the build.*{box.name}: sha256"):
        check_dist(m, tmp_path)
    box.unlink()
    with pytest.raises(DistError, match=f"{box.name}: missing .listed in build.json for libvirt"):
        check_dist(m, tmp_path)
