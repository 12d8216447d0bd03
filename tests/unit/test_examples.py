"""Every config in examples/ is valid, and each says what it promises."""

from pathlib import Path

import pytest
from registry_cache import config as configmod

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ALL = sorted(p.name for p in EXAMPLES.glob("*.yml"))
SCHEMA = EXAMPLES.parent / "bootstrap" / "src" / "registry_cache" / "schema.json"


def _with_token(tmp_path, token="dckr_pat_example-secret-value"):
    """The credentials example copied to a project folder that holds its token file."""
    config = tmp_path / "config.yml"
    config.write_text((EXAMPLES / "dockerhub-credentials.yml").read_text())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dockerhub.token").write_text(token + "\n")
    (tmp_path / "secrets" / "cache-ci.password").write_text("a-client-password\n")
    return config


def test_the_examples_folder_holds_the_documented_examples():
    assert ALL == [
        "dockerhub-credentials.yml", "dockerhub.yml", "multi-upstream.yml", "public-registries.yml",
        "seed-distribution.yml",
    ]


@pytest.mark.parametrize("name", [n for n in ALL if n != "dockerhub-credentials.yml"])
def test_example_is_valid(name):
    cfg = configmod.load(str(EXAMPLES / name), check_storage=False)
    assert cfg.source == str(EXAMPLES / name), "the file itself was read, not the embedded default"
    assert cfg.mirrors


def test_credentials_example_is_valid_once_its_token_file_exists(tmp_path):
    cfg = configmod.load(str(_with_token(tmp_path)), check_storage=False)
    (hub,) = cfg.mirrors
    assert hub.is_docker_hub
    assert hub.username == "your-docker-id"
    assert hub.password == "dckr_pat_example-secret-value"
    # with upstream credentials, clients log in to the cache (over TLS)
    assert cfg.tls is not None and [u.name for u in cfg.auth.users] == ["ci"]


def test_credentials_example_without_its_token_file_names_the_file_to_create():
    with pytest.raises(configmod.ConfigError) as caught:
        configmod.load(str(EXAMPLES / "dockerhub-credentials.yml"), check_storage=False)
    problems = {p.path: p.message for p in caught.value.problems}
    assert sorted(problems) == ["auth.users.ci.password_file", "mirrors.dockerhub.password_file"]
    assert str(EXAMPLES / "secrets" / "dockerhub.token") + " does not exist" in \
        problems["mirrors.dockerhub.password_file"]


def test_credentials_example_warns_who_can_pull_and_asks_for_a_read_only_token():
    text = (EXAMPLES / "dockerhub-credentials.yml").read_text()
    assert "ANYONE WHO CAN REACH THE CACHE CAN" in text
    assert "read-only" in text


def test_dockerhub_example_is_the_embedded_default_with_the_cache_beside_it():
    cfg = configmod.load(str(EXAMPLES / "dockerhub.yml"), check_storage=False)
    default = configmod.load(None)
    assert [(m.name, m.upstream, m.port) for m in cfg.mirrors] == \
        [(m.name, m.upstream, m.port) for m in default.mirrors]
    assert cfg.storage == str(EXAMPLES / "data"), "relative storage: /vagrant/data as /vagrant/config.yml"


def test_multi_upstream_example_gives_each_registry_its_own_port():
    cfg = configmod.load(str(EXAMPLES / "multi-upstream.yml"), check_storage=False)
    assert {m.upstream: m.port for m in cfg.mirrors} == {
        "https://registry-1.docker.io": 5000,
        "https://ghcr.io": 5001,
        "https://quay.io": 5002,
        "https://registry.k8s.io": 5003,
    }


def test_seed_example_runs_as_one_mirror_as_written():
    cfg = configmod.load(str(EXAMPLES / "seed-distribution.yml"), check_storage=False)
    (mirror,) = cfg.mirrors
    assert mirror.raw is not None and mirror.raw["version"] == 0.1
    assert (mirror.upstream, mirror.port) == ("https://registry-1.docker.io", 5000)


@pytest.mark.parametrize("name", ["dockerhub.yml", "multi-upstream.yml", "dockerhub-credentials.yml"])
def test_example_names_the_schema_for_editors_on_its_first_line(name):
    first = (EXAMPLES / name).read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (EXAMPLES / first[len(prefix):]).resolve() == SCHEMA.resolve()


def test_schema_names_itself_with_an_id_that_points_nowhere_it_is_not():
    import json

    # a URN: it names the schema without sending editors to a server that may not host it
    assert json.loads(SCHEMA.read_text())["$id"] == "urn:docker-registry-cache:config.yml"


def test_the_cluster_example_keeps_the_cache_in_its_bucket_and_node_files_on_the_vm(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text((EXAMPLES / "cluster" / "config.yml").read_text())
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "s3.secret").write_text("an-s3-secret\n")
    cfg = configmod.load(str(config), check_storage=False)
    (hub,) = cfg.mirrors
    assert (hub.s3.endpoint, hub.s3.bucket, hub.s3.root(hub.name)) == (
        "http://192.168.56.60:7480", "registry-cache", "/dockerhub")
    assert hub.storage == "/var/lib/registry-cache/dockerhub"
    assert cfg.max_size == 50_000_000_000
