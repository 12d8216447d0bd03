"""A cache on a shared bucket: where its objects go, how long a gc hold stands, what its registries see."""

from __future__ import annotations

from registry_cache import cluster, proc, shared
from registry_cache.config.model import S3Storage


def _storage(prefix: str = "", ca_file: str | None = None) -> S3Storage:
    return S3Storage(endpoint="https://rgw.example:7480", bucket="cache", access_key="AK",
                     secret_key="SK", prefix=prefix, ca_file=ca_file)


def test_each_mirror_keeps_its_cache_below_prefix_slash_mirror_in_the_bucket():
    assert shared.from_config(_storage(), "hub").key_prefix == "hub/"
    team = shared.from_config(_storage("team-a"), "hub")
    assert (team.root, team.key_prefix) == ("/team-a/hub", "team-a/hub/")
    assert team.where == "s3://cache/team-a/hub/ at https://rgw.example:7480"
    assert cluster._key(team, "hold.json") == "team-a/hub/.registry-cache/hold.json"


def test_a_hold_stands_until_its_lease_runs_out_by_the_buckets_clock():
    assert cluster.Hold("node-a", "t", lease=30.0, age=29.0).standing
    assert not cluster.Hold("node-a", "t", lease=30.0, age=30.5).standing


def test_registries_never_get_aws_ca_bundle_and_get_a_private_endpoints_ca(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    assert "AWS_CA_BUNDLE" not in proc.registry_environment({"REGISTRY_HTTP_ADDR": "127.0.0.1:1"})
    bucket = shared.from_config(_storage(ca_file=str(tmp_path / "ca.crt")), "hub")
    (tmp_path / shared.paths.SHARED_BUCKET).write_text(bucket.text())
    assert shared.registry_env(str(tmp_path)) == {"SSL_CERT_FILE": str(tmp_path / "ca.crt")}
    assert shared.read(str(tmp_path)) == bucket


def test_a_mirror_on_a_folder_has_no_shared_bucket(tmp_path):
    assert shared.read(str(tmp_path)) is None
    assert shared.registry_env(str(tmp_path)) == {}


def test_a_nodes_name_is_its_host_name_with_a_suffix_chosen_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("REGISTRY_CACHE_NODE", raising=False)
    monkeypatch.setattr(shared.socket, "gethostname", lambda: "registry-cache")
    first = shared.node_name(str(tmp_path))
    assert first.startswith("registry-cache-") and first != "registry-cache"
    assert shared.node_name(str(tmp_path)) == first
    other = tmp_path / "other-box"
    other.mkdir()
    assert shared.node_name(str(other)) != first  # two boxes of one Vagrantfile: two names
    monkeypatch.setenv("REGISTRY_CACHE_NODE", "cache-1")
    assert shared.node_name(str(tmp_path)) == "cache-1"
    assert shared.root_of(str(tmp_path / "mirrors" / "hub")) == str(tmp_path)
