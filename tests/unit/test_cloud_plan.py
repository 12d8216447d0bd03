"""Vagrant Cloud planning: which API steps run, resume, refusals, descriptions, no token leaks."""

import dataclasses

import pytest

from box.buildinfo import BoxFile, BuildMetadata
from box.publish.changelog import changelog_section, version_description
from box.publish.cloud_client import CloudClient
from box.publish.cloud_plan import CloudError, describe_cloud_plan, parse_tag, plan_cloud

SHA_A = "a" * 64
SHA_B = "b" * 64
SHA_C = "c" * 64

META = BuildMetadata(
    name="registry-cache",
    version="1.1.0",
    git_revision="0123456789abcdef",
    git_dirty=False,
    created="2024-05-01T12:00:00Z",
    boxes=(
        BoxFile("libvirt", "rc-1.1.0-libvirt.box", SHA_A, 100),
        BoxFile("virtualbox", "rc-1.1.0-virtualbox.box", SHA_B, 200),
    ),
)


def remote_provider(name, sha, uploaded=True):
    return {
        "name": name,
        "architecture": "amd64",
        "checksum_type": "sha256",
        "checksum": sha,
        "hosted": True,
        "hosted_token": "ht-1" if uploaded else None,
    }


def plan(remote_box=None, remote_version=None, **kwargs):
    return plan_cloud(
        META,
        org="acme",
        name="cache",
        remote_box=remote_box,
        remote_version=remote_version,
        description="notes",
        dist_dir="dist",
        **kwargs,
    )


def steps(p):
    return [(a.kind, a.method, a.path) for a in p.actions]


def test_a_new_box_is_created_then_versioned_uploaded_and_released():
    p = plan()
    assert steps(p) == [
        ("create-box", "POST", "/boxes"),
        ("create-version", "POST", "/box/acme/cache/versions"),
        ("create-provider", "POST", "/box/acme/cache/version/1.1.0/providers"),
        ("upload", "GET", "/box/acme/cache/version/1.1.0/provider/libvirt/amd64/upload/direct"),
        ("create-provider", "POST", "/box/acme/cache/version/1.1.0/providers"),
        ("upload", "GET", "/box/acme/cache/version/1.1.0/provider/virtualbox/amd64/upload/direct"),
        ("release", "PUT", "/box/acme/cache/version/1.1.0/release"),
    ]
    assert p.actions[0].body == {
        "box": {
            "username": "acme",
            "name": "cache",
            "short_description": "docker-registry-cache box",
            "is_private": True,
        }
    }
    assert p.actions[1].body == {"version": {"version": "1.1.0", "description": "notes"}}
    assert p.actions[2].body == {
        "provider": {
            "name": "libvirt",
            "checksum": SHA_A,
            "checksum_type": "sha256",
            "architecture": "amd64",
            "default_architecture": True,
        }
    }
    assert p.actions[3].file == "dist/rc-1.1.0-libvirt.box"


def test_an_existing_box_gets_only_the_new_version():
    p = plan(remote_box={"tag": "acme/cache"})
    assert [a.kind for a in p.actions][:1] == ["create-version"]


def test_publish_shows_a_box_size_in_the_unit_the_build_printed():
    big = dataclasses.replace(META, boxes=(BoxFile("libvirt", "rc.box", SHA_A, 131_700_000),))
    uploads = [a.summary for a in plan_cloud(big, org="acme", name="cache", remote_box=None,
                                             remote_version=None, description="", dist_dir="dist").actions
               if a.kind == "upload"]
    assert uploads == ["upload rc.box (131.7 MB) to acme/cache 1.1.0 libvirt/amd64"]


def test_a_provider_created_but_not_uploaded_is_uploaded_on_resume():
    version = {
        "version": "1.1.0",
        "status": "unreleased",
        "providers": [
            remote_provider("libvirt", SHA_A, uploaded=True),
            remote_provider("virtualbox", SHA_B, uploaded=False),
        ],
    }
    p = plan(remote_box={}, remote_version=version)
    assert steps(p) == [
        ("upload", "GET", "/box/acme/cache/version/1.1.0/provider/virtualbox/amd64/upload/direct"),
        ("release", "PUT", "/box/acme/cache/version/1.1.0/release"),
    ]
    assert any("libvirt/amd64: already uploaded" in s for s in p.skipped)


def test_everything_published_and_released_is_a_no_op():
    version = {
        "version": "1.1.0",
        "status": "active",
        "providers": [remote_provider("libvirt", SHA_A), remote_provider("virtualbox", SHA_B)],
    }
    p = plan(remote_box={}, remote_version=version)
    assert p.actions == ()
    assert any("already released" in s for s in p.skipped)


def test_no_release_leaves_the_version_unreleased():
    p = plan(release=False)
    assert "release" not in [a.kind for a in p.actions]
    assert any("--no-release" in s for s in p.skipped)


def test_a_changed_box_is_refused_without_force():
    version = {"version": "1.1.0", "status": "active",
               "providers": [remote_provider("libvirt", SHA_C)]}
    with pytest.raises(CloudError) as err:
        plan(remote_box={}, remote_version=version)
    assert "acme/cache 1.1.0 libvirt/amd64 exists with checksum sha256:" + SHA_C in str(err.value)
    assert "--force" in str(err.value)


def test_cloud_and_catalog_refuse_a_changed_box_in_the_same_words():
    from box.publish.catalog import CatalogError, plan_catalog

    version = {"version": "1.1.0", "status": "active",
               "providers": [remote_provider("libvirt", SHA_C)]}
    with pytest.raises(CloudError) as cloud:
        plan(remote_box={}, remote_version=version)
    catalog = {"name": META.name, "versions": [{"version": "1.1.0", "providers": [
        {"name": "libvirt", "checksum_type": "sha256", "checksum": SHA_C}]}]}
    with pytest.raises(CatalogError) as local:
        plan_catalog(META, catalog, dist_dir="dist", catalog_dir="c")
    for err in (cloud.value, local.value):
        first, *_, last = str(err).splitlines()
        assert first == "refusing to overwrite published boxes:"
        assert last == "bump the version in the build, or pass --force to replace them"


@pytest.mark.parametrize(
    ("published", "same"),
    [({"checksum_type": "SHA256", "checksum": SHA_A.upper()}, True),
     ({"checksum_type": "sha256", "checksum": SHA_B}, False),
     ({"checksum_type": "md5", "checksum": SHA_A}, False),
     ({"checksum_type": None, "checksum": None}, False)],
)
def test_a_published_checksum_matches_only_a_sha256_of_the_same_value(published, same):
    from box.publish.published import same_checksum

    assert same_checksum(published, SHA_A) is same


def test_force_updates_the_provider_then_uploads_again():
    version = {"version": "1.1.0", "status": "unreleased",
               "providers": [remote_provider("libvirt", SHA_C)]}
    p = plan(remote_box={}, remote_version=version, force=True)
    assert steps(p)[:2] == [
        ("update-provider", "PUT", "/box/acme/cache/version/1.1.0/provider/libvirt/amd64"),
        ("upload", "GET", "/box/acme/cache/version/1.1.0/provider/libvirt/amd64/upload/direct"),
    ]


def test_a_provider_of_another_architecture_is_not_ours():
    other = {**remote_provider("libvirt", SHA_C), "architecture": "arm64"}
    version = {"version": "1.1.0", "status": "unreleased", "providers": [other]}
    p = plan(remote_box={}, remote_version=version)
    assert ("create-provider", "POST", "/box/acme/cache/version/1.1.0/providers") in steps(p)


def test_the_dry_run_lines_show_method_path_and_what_it_does():
    lines = describe_cloud_plan(plan())
    assert lines[0] == "POST /api/v2/boxes: create box acme/cache (private; change its " \
        "visibility on the web if wanted)"
    assert lines[-1] == "PUT /api/v2/box/acme/cache/version/1.1.0/release: release acme/cache 1.1.0"


@pytest.mark.parametrize("bad", ["", "acme", "acme/", "/box", "a/b/c", "acme/../x", "ac me/x"])
def test_cloud_tag_must_be_org_slash_box(bad):
    with pytest.raises(CloudError, match="expected ORG/BOX"):
        parse_tag(bad)


CHANGELOG = """# Changelog

## [Unreleased]

### Added
- Something new.

## [1.1.0] - 2024-05-01

### Added
- `invoke publish`.

## [1.0.0] - 2024-04-01
- First.

[1.1.0]: https://example.test/compare/1.0.0...1.1.0
"""


def test_the_changelog_section_of_the_version_is_its_description():
    assert changelog_section(CHANGELOG, "1.1.0") == "### Added\n- `invoke publish`."
    assert changelog_section(CHANGELOG, "1.0.0") == "- First."
    assert changelog_section(CHANGELOG, "2.0.0") is None


def test_without_a_section_the_description_falls_back_to_unreleased_then_a_line():
    text, origin = version_description(CHANGELOG, "1.2.0")
    assert text == "### Added\n- Something new."
    assert "Unreleased" in origin
    text, origin = version_description(None, "1.2.0")
    assert text == "docker-registry-cache 1.2.0"
    assert "default" in origin


def test_the_client_never_shows_its_token():
    client = CloudClient("https://cloud.example.test", "s3cr3t-token")
    assert "s3cr3t-token" not in repr(client)
    assert client.scrub("Bearer s3cr3t-token failed") == "Bearer *** failed"


def test_the_token_goes_to_the_api_server_only():
    client = CloudClient("https://cloud.example.test", "s3cr3t-token")
    assert client._auth("https://cloud.example.test/api/v2/box/a/b") == {
        "Authorization": "Bearer s3cr3t-token"
    }
    assert client._auth("https://storage.example.test/upload/123") == {}


class FakeResponse:
    def __init__(self, headers):
        self.headers = headers


def test_retry_waits_back_off_and_honour_retry_after_within_a_bound():
    client = CloudClient("https://cloud.example.test", backoff=1.0, max_wait=30.0)
    assert [client._wait(n, None) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert client._wait(1, FakeResponse({"Retry-After": "7"})) == 7.0
    assert client._wait(1, FakeResponse({"Retry-After": "3600"})) == 30.0
    assert client._wait(9, None) == 30.0


def test_a_box_over_the_direct_upload_limit_uses_the_plain_upload_url():
    big = BuildMetadata(
        name="registry-cache", version="1.1.0", git_revision="0", git_dirty=False,
        created="2024-05-01T12:00:00Z",
        boxes=(BoxFile("libvirt", "big.box", SHA_A, 6 * 2**30),),
    )
    p = plan_cloud(big, org="acme", name="cache", remote_box={}, remote_version=None,
                   description="d", dist_dir="dist")
    uploads = [a.path for a in p.actions if a.kind == "upload"]
    assert uploads == ["/box/acme/cache/version/1.1.0/provider/libvirt/amd64/upload"]
