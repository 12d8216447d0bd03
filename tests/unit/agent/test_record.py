"""A mirror's record (mirror.json) and credentials file: the one place that reads and writes them."""

import json
import logging
import os
import stat

import pytest
from registry_cache import paths, record
from registry_cache.record import Credentials, MirrorRecord, RecordError

# mirror.json exactly as the agent of release 0.x wrote it (tests/unit/agent/golden keeps it too)
OLDER_RECORD = """\
{
  "authenticated": true,
  "debug_port": 15000,
  "docker_hub": true,
  "listen": "0.0.0.0",
  "name": "dockerhub",
  "port": 5000,
  "reconnect_interval": 30,
  "source": "config.yml",
  "storage": "/srv/cache/dockerhub",
  "upstream": "https://registry-1.docker.io"
}
"""
SECRET = "dckr_pat_SECRET"


def test_a_record_written_by_an_older_agent_reads_with_every_field():
    got = MirrorRecord.parse(OLDER_RECORD, where="mirror.json")
    assert got == MirrorRecord(
        name="dockerhub", upstream="https://registry-1.docker.io", listen="0.0.0.0", port=5000,
        storage="/srv/cache/dockerhub", debug_port=15000, docker_hub=True, authenticated=True,
        reconnect_interval=30, source="config.yml",
    )
    assert got.text() == OLDER_RECORD  # and writes back byte for byte


def test_unknown_keys_are_ignored_and_optional_ones_defaulted():
    text = json.dumps({"name": "a", "upstream": "https://ghcr.io", "listen": "::", "port": 5001,
                       "storage": "/c/a", "from_a_newer_agent": 1})
    got = MirrorRecord.parse(text, where="mirror.json")
    defaults = (got.debug_port, got.docker_hub, got.authenticated, got.reconnect_interval)
    assert defaults == (None, False, False, 30)
    assert got.url == "http://[::1]:5001"


@pytest.mark.parametrize(("text", "says"), [
    ("{", "not JSON"),
    ("[]", "not a JSON object"),
    ('{"name": "a"}', "missing upstream, listen, port, storage"),
    ('{"name": "a", "upstream": "u", "listen": "l", "port": "five", "storage": "s"}', "wrong type"),
])
def test_a_malformed_record_names_its_file(text, says):
    with pytest.raises(RecordError, match=says) as error:
        MirrorRecord.parse(text, where="/etc/registry-cache/mirrors/a/mirror.json")
    assert str(error.value).startswith("/etc/registry-cache/mirrors/a/mirror.json: ")


def test_read_all_lists_the_rendered_mirrors_and_skips_a_broken_one(tmp_path, caplog):
    for name in ("b", "a"):
        directory = tmp_path / paths.MIRRORS / name
        directory.mkdir(parents=True)
        MirrorRecord(name=name, upstream="https://ghcr.io", listen="127.0.0.1", port=5000,
                     storage=f"/c/{name}").write(str(directory))
    (tmp_path / paths.MIRRORS / "broken").mkdir()
    (tmp_path / paths.MIRRORS / "broken" / paths.MIRROR_RECORD).write_text("{")
    (tmp_path / paths.MIRRORS / "half-written").mkdir()
    with caplog.at_level(logging.WARNING):
        records = record.read_all(str(tmp_path))
    assert [r.name for r in records] == ["a", "b"]
    assert records[0].directory == str(tmp_path / paths.MIRRORS / "a")
    assert "skipping mirror broken" in caplog.text


def test_credentials_are_written_for_the_mirrors_account_only_and_read_back(tmp_path):
    Credentials("alice", SECRET).write(str(tmp_path))
    path = tmp_path / paths.CREDENTIALS
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert record.read_credentials(str(tmp_path)) == Credentials("alice", SECRET)


def test_a_mirror_without_credentials_file_goes_anonymous(tmp_path):
    assert record.read_credentials(str(tmp_path)) is None


def test_a_broken_credentials_file_is_reported_without_its_content(tmp_path, caplog):
    (tmp_path / paths.CREDENTIALS).write_text(json.dumps({"password": SECRET}))
    with caplog.at_level(logging.DEBUG):
        assert record.read_credentials(str(tmp_path)) is None
    assert "lacks a username or password" in caplog.text
    assert SECRET not in caplog.text


def test_the_password_never_shows_in_a_repr():
    assert SECRET not in repr(Credentials("alice", SECRET))


def test_a_record_read_from_disk_finds_its_credentials(tmp_path):
    MirrorRecord(name="a", upstream="https://ghcr.io", listen="0.0.0.0", port=5000, storage="/c/a",
                 authenticated=True).write(str(tmp_path))
    Credentials("alice", SECRET).write(str(tmp_path))
    assert MirrorRecord.read(str(tmp_path)).credentials() == Credentials("alice", SECRET)


def test_a_mirror_not_rendered_has_no_record(tmp_path):
    with pytest.raises(FileNotFoundError):
        MirrorRecord.read(str(tmp_path))


def test_storage_is_ready_only_once_apply_put_its_marker_there(tmp_path):
    mirror = MirrorRecord(name="a", upstream="https://ghcr.io", listen="0.0.0.0", port=5000,
                          storage=str(tmp_path))
    assert not mirror.storage_ready
    (tmp_path / paths.STORAGE_MARKER).write_text("")
    assert mirror.storage_ready


def test_credentials_make_the_basic_auth_header_the_front_sends_upstream():
    creds = Credentials("alice", "s3cr3t")

    assert creds.authorization() == "Basic YWxpY2U6czNjcjN0"
    assert "s3cr3t" not in repr(creds)
