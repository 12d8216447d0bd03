"""`invoke publish --cloud`: the API v2 conversation, resume, retries, refusals, no token leaks."""

import logging
import re

import pytest
from invoke import Context
from invoke.exceptions import Exit

from box.publish.cloud_plan import CloudError
from box.publish.flow import publish_cloud
from box.tasks.publish import publish
from tests.integration.fake_vagrant_cloud import FakeVagrantCloud, Fault
from tests.integration.publish_helpers import sha256, write_dist

pytestmark = pytest.mark.integration

TOKEN = "tok-3f9a1c77e2b54d0e8a6b-SECRET"
CHANGELOG = """# Changelog

## [Unreleased]
- Work in progress.

## [1.0.0] - 2024-05-01
### Added
- The first box.
"""
V = "/api/v2/box/acme/registry-cache/version/1.0.0"


@pytest.fixture
def cloud():
    with FakeVagrantCloud(TOKEN) as server:
        yield server


@pytest.fixture
def dist(tmp_path):
    folder = tmp_path / "dist"
    folder.mkdir()
    boxes = {}
    for provider in ("libvirt", "virtualbox"):
        box = folder / f"registry-cache-1.0.0-{provider}.box"
        box.write_bytes(provider.encode() * 50_000)
        boxes[provider] = box
    write_dist(folder, "registry-cache", "1.0.0", boxes)
    return folder


@pytest.fixture
def sleeps():
    return []


def run_publish(cloud, dist, sleeps, **kwargs):
    from box.buildinfo import load_build_metadata

    meta = load_build_metadata(dist / "build.json")
    options = {"backoff": 0.5, "max_wait": 20.0, "attempts": 4, "sleep": sleeps.append}
    return publish_cloud(
        meta, dist, "acme/registry-cache", server=cloud.url, token=TOKEN,
        force=kwargs.pop("force", False), dry_run=kwargs.pop("dry_run", False),
        release=kwargs.pop("release", True), changelog=CHANGELOG, client_options=options,
    )


FULL_SEQUENCE = [
    "GET /api/v2/box/acme/registry-cache",
    "POST /api/v2/boxes",
    "POST /api/v2/box/acme/registry-cache/versions",
    f"POST {V}/providers",
    f"GET {V}/provider/libvirt/amd64/upload/direct",
    "PUT /storage/*",
    "PUT /api/v2/upload/callback/*",
    f"POST {V}/providers",
    f"GET {V}/provider/virtualbox/amd64/upload/direct",
    "PUT /storage/*",
    "PUT /api/v2/upload/callback/*",
    f"PUT {V}/release",
]


def normalised(calls):
    return [re.sub(r"/[0-9a-f]{8}-[0-9a-f-]{27}$", "/*", c) for c in calls]


def test_first_publish_creates_uploads_and_releases_in_the_documented_order(cloud, dist, sleeps):
    run_publish(cloud, dist, sleeps)
    assert normalised(cloud.calls()) == FULL_SEQUENCE
    version = cloud.version("acme", "registry-cache", "1.0.0")
    assert version["status"] == "active"
    assert version["description"] == "### Added\n- The first box."
    for provider in ("libvirt", "virtualbox"):
        entry = version["providers"][(provider, "amd64")]
        expected = sha256(dist / f"registry-cache-1.0.0-{provider}.box")
        assert entry["checksum"] == expected
        assert entry["checksum_type"] == "sha256"
        assert entry["sha256_received"] == expected  # the bytes that arrived
    # the token goes to the API, never to the storage URL
    for seen in cloud.seen:
        if seen.path.startswith("/storage/"):
            assert seen.authorization is None
        else:
            assert seen.authorization == f"Bearer {TOKEN}"
    assert sleeps == []


def test_publishing_again_changes_nothing(cloud, dist, sleeps, capsys):
    run_publish(cloud, dist, sleeps)
    first = len(cloud.seen)
    run_publish(cloud, dist, sleeps)
    assert cloud.calls()[first:] == [
        "GET /api/v2/box/acme/registry-cache",
        f"GET {V}",
    ]
    out = capsys.readouterr().out
    assert "libvirt/amd64: already uploaded with the same checksum" in out
    assert "already released" in out


def test_an_interrupted_run_resumes_where_it_stopped(cloud, dist, sleeps):
    # The API keeps failing the second upload: the first run gives up part-way.
    cloud.faults.append(Fault("GET", r"virtualbox/amd64/upload/direct$", "status", times=4,
                              status=502))
    with pytest.raises(CloudError, match=r"502 Bad Gateway: .*gave up after 4 attempts; re-run"):
        run_publish(cloud, dist, sleeps)
    version = cloud.version("acme", "registry-cache", "1.0.0")
    assert version["status"] == "unreleased"
    assert version["providers"][("libvirt", "amd64")]["hosted_token"]
    assert not version["providers"][("virtualbox", "amd64")]["hosted_token"]

    first = len(cloud.seen)
    run_publish(cloud, dist, sleeps)
    assert normalised(cloud.calls()[first:]) == [
        "GET /api/v2/box/acme/registry-cache",
        f"GET {V}",
        f"GET {V}/provider/virtualbox/amd64/upload/direct",
        "PUT /storage/*",
        "PUT /api/v2/upload/callback/*",
        f"PUT {V}/release",
    ]
    assert cloud.version("acme", "registry-cache", "1.0.0")["status"] == "active"


def test_a_dropped_upload_connection_is_retried(cloud, dist, sleeps, capsys):
    cloud.faults.append(Fault("PUT", r"^/storage/", "drop", times=1))
    run_publish(cloud, dist, sleeps)
    storage_puts = [c for c in cloud.calls() if c.startswith("PUT /storage/")]
    assert len(storage_puts) == 3  # libvirt twice (dropped, retried), virtualbox once
    assert sleeps == [0.5]
    assert "PUT upload_path: connection failed" in capsys.readouterr().out
    version = cloud.version("acme", "registry-cache", "1.0.0")
    assert all(p["sha256_received"] == p["checksum"] for p in version["providers"].values())


def test_503_and_429_are_retried_honouring_retry_after_within_the_bound(cloud, dist, sleeps):
    cloud.faults += [
        Fault("POST", r"/versions$", "status", status=503, times=2),
        Fault("PUT", r"/release$", "status", status=429, retry_after="7"),
        Fault("POST", r"/providers$", "status", status=429, retry_after="3600"),
    ]
    run_publish(cloud, dist, sleeps)
    assert sleeps == [0.5, 1.0, 20.0, 7.0]  # backoff, backoff, capped Retry-After, Retry-After
    assert cloud.version("acme", "registry-cache", "1.0.0")["status"] == "active"


def test_a_create_whose_answer_was_lost_is_not_done_twice(cloud, dist, sleeps):
    # The server creates the version, then the connection drops before the answer.
    cloud.faults.append(Fault("POST", r"/versions$", "drop-after"))
    run_publish(cloud, dist, sleeps)
    calls = cloud.calls()
    assert calls.count("POST /api/v2/box/acme/registry-cache/versions") == 2
    assert f"GET {V}" in calls  # the refusal of the retry was checked, not trusted blindly
    assert cloud.version("acme", "registry-cache", "1.0.0")["status"] == "active"


def test_a_client_error_stops_with_the_servers_message(cloud, dist, sleeps):
    cloud.faults.append(Fault("POST", r"/providers$", "status", status=422,
                              errors=["Architecture is not supported for this provider"]))
    with pytest.raises(CloudError) as stopped:
        run_publish(cloud, dist, sleeps)
    assert str(stopped.value) == (
        f"POST {V}/providers: 422 Unprocessable Entity: "
        "Architecture is not supported for this provider"
    )
    assert cloud.calls()[-1] == f"POST {V}/providers"  # nothing after the refusal
    assert sleeps == []


def test_a_changed_box_is_refused_unless_forced(cloud, dist, sleeps, tmp_path):
    run_publish(cloud, dist, sleeps)
    box = dist / "registry-cache-1.0.0-libvirt.box"
    box.write_bytes(b"rebuilt" * 1000)
    write_dist(dist, "registry-cache", "1.0.0",
               {"libvirt": box, "virtualbox": dist / "registry-cache-1.0.0-virtualbox.box"})
    before = len(cloud.seen)
    with pytest.raises(CloudError, match="libvirt/amd64 exists with checksum"):
        run_publish(cloud, dist, sleeps)
    assert all(c.startswith("GET ") for c in cloud.calls()[before:])

    run_publish(cloud, dist, sleeps, force=True)
    entry = cloud.version("acme", "registry-cache", "1.0.0")["providers"][("libvirt", "amd64")]
    assert entry["checksum"] == entry["sha256_received"] == sha256(box)
    assert f"PUT {V}/provider/libvirt/amd64" in cloud.calls()


def test_dry_run_only_reads(cloud, dist, sleeps, capsys):
    run_publish(cloud, dist, sleeps, dry_run=True)
    assert cloud.calls() == ["GET /api/v2/box/acme/registry-cache"]
    out = capsys.readouterr().out
    assert "POST /api/v2/boxes: create box acme/registry-cache" in out
    assert f"PUT {V}/release: release acme/registry-cache 1.0.0" in out
    assert "version description: CHANGELOG.md section 1.0.0" in out
    assert cloud.boxes == {}


def test_the_task_publishes_with_the_token_from_the_environment_and_never_shows_it(
    cloud, dist, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("VAGRANT_CLOUD_TOKEN", TOKEN)
    publish(Context(), cloud="acme/registry-cache", cloud_url=cloud.url, dist=str(dist),
            no_release=True)
    version = cloud.version("acme", "registry-cache", "1.0.0")
    assert version["status"] == "unreleased"
    assert all(p["hosted_token"] for p in version["providers"].values())

    # An error that quotes the token back is shown scrubbed.
    cloud.faults.append(Fault("GET", r"/box/acme/registry-cache$", "status", status=403,
                              errors=[f"token {TOKEN} may not read acme"]))
    with pytest.raises(Exit) as stopped:
        publish(Context(), cloud="acme/registry-cache", cloud_url=cloud.url, dist=str(dist))
    assert "403 Forbidden: token *** may not read acme" in stopped.value.message

    captured = capsys.readouterr()
    assert captured.out and "PUT upload_path" not in captured.err
    for text in (captured.out, captured.err, caplog.text, stopped.value.message):
        assert TOKEN not in text


def test_the_task_refuses_to_publish_to_the_cloud_without_a_token(dist, monkeypatch):
    monkeypatch.delenv("VAGRANT_CLOUD_TOKEN", raising=False)
    with pytest.raises(Exit, match=r"--cloud needs an API token in \$VAGRANT_CLOUD_TOKEN"):
        publish(Context(), cloud="acme/registry-cache", cloud_url="http://127.0.0.1:9",
                dist=str(dist))


def test_an_unreachable_server_is_reported_after_bounded_retries(dist, sleeps, tmp_path):
    from box.buildinfo import load_build_metadata

    meta = load_build_metadata(dist / "build.json")
    with pytest.raises(CloudError, match=r"connection failed: ConnectionError, gave up after 3 attempts"):
        publish_cloud(meta, dist, "acme/registry-cache", server="http://127.0.0.1:9",
                      token=TOKEN, force=False, dry_run=False, release=True, changelog=None,
                      client_options={"attempts": 3, "sleep": sleeps.append})
    assert sleeps == [1.0, 2.0]
