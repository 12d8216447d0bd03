"""Rendering: each mirror's Distribution configs, compared with golden files."""

import os
import pathlib

import pytest
import yaml
from registry_cache import config, paths, render

GOLDEN = pathlib.Path(__file__).parent / "golden"
CONFIG = """\
listen: 0.0.0.0
storage: /srv/cache
mirrors:
  dockerhub:
    upstream: https://registry-1.docker.io
    port: 5000
    username: alice
    password: "p@ss: w'rd\\"<&>"
  ghcr:
    upstream: https://ghcr.io/
    port: 5001
    debug_port: 5101
"""


@pytest.fixture
def rendered():
    cfg = config.parse(CONFIG, "config.yml", base_dir="/", check_storage=False)
    return render.render(cfg)


def check_golden(name, text):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("mirror", ["dockerhub", "ghcr"])
@pytest.mark.parametrize("filename", [paths.PROXY_CONFIG, paths.READONLY_CONFIG, paths.MIRROR_RECORD])
def test_rendered_files_match_golden(rendered, mirror, filename):
    check_golden(f"{mirror}-{filename}", rendered[mirror].files[filename])


def test_proxy_config_carries_upstream_and_credentials_exactly(rendered):
    doc = yaml.safe_load(rendered["dockerhub"].files[paths.PROXY_CONFIG])
    assert doc["proxy"] == {
        "remoteurl": "https://registry-1.docker.io",
        "username": "alice",
        "password": "p@ss: w'rd\"<&>",
    }
    assert doc["http"]["addr"] == "0.0.0.0:5000"
    assert doc["http"]["debug"]["addr"] == "127.0.0.1:15000"
    assert doc["storage"]["filesystem"]["rootdirectory"] == "/srv/cache/dockerhub"
    assert doc["log"]["formatter"] == "json"


def test_read_only_config_serves_the_same_storage_without_proxy(rendered):
    proxy = yaml.safe_load(rendered["ghcr"].files[paths.PROXY_CONFIG])
    readonly = yaml.safe_load(rendered["ghcr"].files[paths.READONLY_CONFIG])
    assert "proxy" not in readonly
    assert readonly["storage"]["maintenance"]["readonly"] == {"enabled": True}
    assert readonly["storage"]["filesystem"] == proxy["storage"]["filesystem"]
    assert readonly["http"]["addr"] == proxy["http"]["addr"]


def test_mirror_record_holds_no_secret(rendered):
    assert "p@ss" not in rendered["dockerhub"].files[paths.MIRROR_RECORD]
    assert rendered["dockerhub"].record.authenticated is True


def test_credentials_file_carries_the_upstream_login_exactly_and_only_when_there_is_one(rendered):
    creds = rendered["dockerhub"].credentials
    assert (creds.username, creds.password) == ("alice", "p@ss: w'rd\"<&>")
    assert paths.CREDENTIALS in rendered["dockerhub"].files
    assert rendered["ghcr"].credentials is None
    assert paths.CREDENTIALS not in rendered["ghcr"].files
    assert "p@ss" not in repr(rendered["dockerhub"])


def test_seed_config_credentials_go_to_the_credentials_file_too():
    seed = "version: 0.1\nstorage: {filesystem: {rootdirectory: /srv/hub}}\nhttp: {addr: ':5000'}\n" \
           "proxy: {remoteurl: 'https://registry-1.docker.io', username: bob, password: s3cret}\n"
    cfg = config.parse(seed, "seed.yml", base_dir="/", check_storage=False)
    mirror = render.render(cfg)["default"]
    assert mirror.credentials.pair() == ("bob", "s3cret")
    assert yaml.safe_load(mirror.configs[paths.PROXY_CONFIG])["proxy"]["password"] == "s3cret"


def test_ipv6_listen_address_is_bracketed():
    cfg = config.parse(
        "listen: '::'\nmirrors:\n  a: {upstream: 'https://ghcr.io', port: 5000}\n",
        "c.yml", base_dir="/", check_storage=False,
    )
    doc = yaml.safe_load(render.render(cfg)["a"].files[paths.PROXY_CONFIG])
    assert doc["http"]["addr"] == "[::]:5000"


def test_seed_config_is_rendered_as_written_apart_from_the_log_format():
    seed = {
        "version": 0.1,
        "log": {"level": "debug"},
        "storage": {
            "filesystem": {"rootdirectory": "/var/lib/registry"},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {"addr": ":5000", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "proxy": {"remoteurl": "https://registry-1.docker.io"},
    }
    cfg = config.parse(yaml.safe_dump(seed), "seed.yml", base_dir="/", check_storage=False)
    files = render.render(cfg)["default"].files
    proxy = yaml.safe_load(files[paths.PROXY_CONFIG])
    readonly = yaml.safe_load(files[paths.READONLY_CONFIG])
    expected = {**seed, "log": {"level": "debug", "formatter": "json", "accesslog": {"disabled": True}}}
    assert proxy == expected
    assert "proxy" not in readonly
    assert readonly["storage"]["maintenance"] == {"readonly": {"enabled": True}}
    assert readonly["storage"]["cache"] == {"blobdescriptor": "inmemory"}


def test_rendering_is_deterministic(rendered):
    cfg = config.parse(CONFIG, "config.yml", base_dir="/", check_storage=False)
    assert render.render(cfg) == rendered


def test_seed_config_with_a_relative_storage_path_is_rendered_absolute():
    seed = "version: 0.1\nstorage: {filesystem: {rootdirectory: data/hub}}\nhttp: {addr: ':5000'}\n" \
           "proxy: {remoteurl: 'https://registry-1.docker.io'}\n"
    cfg = config.parse(seed, "/vagrant/config.yml", base_dir="/vagrant", check_storage=False)
    for filename in (paths.PROXY_CONFIG, paths.READONLY_CONFIG):
        doc = yaml.safe_load(render.render(cfg)["default"].files[filename])
        assert doc["storage"]["filesystem"]["rootdirectory"] == "/vagrant/data/hub"


def test_the_record_says_where_the_debug_endpoint_listens_so_the_runner_reads_no_yaml(rendered):
    seed = ("version: 0.1\nstorage: {filesystem: {rootdirectory: /srv/hub}}\n"
            "http: {addr: ':5000', debug: {addr: ':5001'}}\nproxy: {remoteurl: 'https://quay.io'}\n")
    cfg = config.parse(seed, "seed.yml", base_dir="/", check_storage=False)
    record = render.render(cfg)["default"].record
    assert (record.debug_listen, record.debug_port) == ("0.0.0.0", 5001)
    # the registry-cache format keeps its debug endpoint on loopback: the record reads as before
    for mirror in rendered.values():
        assert mirror.record.debug_listen == "127.0.0.1"
        assert "debug_listen" not in mirror.record.text()
