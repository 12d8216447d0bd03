"""`registry-cache client-config`: golden files per example and format, each parsed back."""

import dataclasses
import json
import os
from pathlib import Path

import pytest
import tomllib
import yaml
from registry_cache import cli, clientconfig, paths, record, render, written
from registry_cache import config as configmod

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).parent / "golden" / "client"
HOST = "192.168.56.50"
# UPDATE_GOLDEN=1 rewrites the golden files from the current output; review the diff.
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


CA = "-----BEGIN CERTIFICATE-----\nTHE-CACHE-CA\n-----END CERTIFICATE-----\n"


def _mirrors(example, tls=False):
    """The example's mirrors; the examples say `tls: auto`, so tls=False gives their plain-HTTP setup."""
    cfg = configmod.load(str(EXAMPLES / f"{example}.yml"), check_storage=False)
    return [dataclasses.replace(m, tls=tls) for m in clientconfig.mirrors_from_config(cfg)]


def _plain_example(tmp_path, example):
    """A copy of the example serving plain HTTP (`tls: auto` removed), as a config from before TLS."""
    text = "".join(line for line in (EXAMPLES / f"{example}.yml").read_text().splitlines(keepends=True)
                   if not line.startswith("tls: auto") and not line.startswith(" " * 25 + "#"))
    path = tmp_path / f"{example}.yml"
    path.write_text(text)
    return str(path)


def _setup(example, fmt, host=HOST):
    return clientconfig.client_setup(_mirrors(example), host, fmt)


def _tls_setup(example, fmt, auth=False):
    return clientconfig.client_setup(_mirrors(example, tls=True), HOST, fmt, ca_pem=CA, auth=auth)


@pytest.mark.parametrize("fmt", clientconfig.FORMATS)
@pytest.mark.parametrize("example", ["dockerhub", "multi-upstream"])
def test_client_config_matches_its_golden_file(example, fmt):
    text = _setup(example, fmt).text()
    golden = GOLDEN / example / f"{fmt}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


@pytest.mark.parametrize("fmt", clientconfig.FORMATS)
@pytest.mark.parametrize("example", ["dockerhub", "multi-upstream"])
def test_tls_client_config_matches_its_golden_file(example, fmt):
    text = _tls_setup(example, fmt).text()
    golden = GOLDEN / f"{example}-tls" / f"{fmt}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_examples_say_tls_auto_and_their_mirrors_serve_tls():
    for example in ("dockerhub", "multi-upstream", "dockerhub-credentials"):
        cfg = configmod.load(str(EXAMPLES / f"{example}.yml"), check_storage=False) \
            if example != "dockerhub-credentials" else None
        if cfg is not None:
            assert all(m.tls for m in clientconfig.mirrors_from_config(cfg)), example
        assert "\ntls: auto" in (EXAMPLES / f"{example}.yml").read_text()


def test_tls_docker_trusts_the_ca_per_mirror_and_lists_nothing_insecure():
    setup = _tls_setup("multi-upstream", "docker")
    daemon, *cas = setup.files
    assert json.loads(daemon.text) == {"registry-mirrors": ["https://192.168.56.50:5000"]}
    assert [(f.path, f.text) for f in cas] == [
        (f"/etc/docker/certs.d/192.168.56.50:{port}/ca.crt", CA) for port in (5000, 5001, 5002, 5003)]


def test_tls_containerd_hosts_name_the_ca_file_written_beside_them():
    files = _tls_setup("dockerhub", "containerd").files
    hosts = tomllib.loads(files[0].text)
    assert hosts["host"]["https://192.168.56.50:5000"]["ca"] == files[-1].path
    assert files[-1].text == CA


def test_tls_k3s_gives_each_mirror_a_ca_file():
    registries, ca = _tls_setup("multi-upstream", "k3s").files
    data = yaml.safe_load(registries.text)
    assert data["mirrors"]["docker.io"]["endpoint"] == ["https://192.168.56.50:5000"]
    assert data["configs"] == {"192.168.56.50:5000": {"tls": {"ca_file": ca.path}}}
    assert ca.text == CA


def test_tls_podman_has_no_insecure_mirror_and_a_certs_d_ca():
    conf, *cas = _tls_setup("dockerhub", "podman").files
    assert "insecure" not in tomllib.loads(conf.text)["registry"][0]["mirror"][0]
    assert [c.path for c in cas] == ["/etc/containers/certs.d/192.168.56.50:5000/ca.crt"]


def test_mirrors_serving_tls_without_a_ca_yet_say_to_apply_first():
    with pytest.raises(clientconfig.ClientConfigError, match="registry-cache apply"):
        clientconfig.client_setup(_mirrors("dockerhub", tls=True), HOST, "docker")


@pytest.mark.parametrize(("fmt", "says"), [("docker", "docker login 192.168.56.50:5000"),
                                            ("podman", "podman login 192.168.56.50:5000"),
                                            ("k3s", 'configs."192.168.56.50:5000" add auth'),
                                            ("containerd", "imagePullSecret")])
def test_with_client_login_each_runtime_is_told_how_to_log_in(fmt, says):
    assert any(says in note for note in _tls_setup("dockerhub", fmt, auth=True).notes)
    assert not any("login" in note for note in _tls_setup("dockerhub", fmt).notes)


def test_output_dir_gets_every_file_at_its_client_path(tmp_path):
    written = _tls_setup("dockerhub", "docker").write(str(tmp_path))
    assert written == [str(tmp_path / "etc/docker/daemon.json"),
                       str(tmp_path / "etc/docker/certs.d/192.168.56.50:5000/ca.crt")]
    assert (tmp_path / "etc/docker/certs.d/192.168.56.50:5000/ca.crt").read_text() == CA


def test_docker_mirrors_docker_hub_and_pulls_the_others_by_prefix_through_the_one_endpoint():
    setup = _setup("multi-upstream", "docker")
    (daemon,) = setup.files
    assert daemon.path == "/etc/docker/daemon.json"
    data = json.loads(daemon.text)
    assert data == {
        "registry-mirrors": ["http://192.168.56.50:5000"],
        "insecure-registries": ["192.168.56.50:5000"],
    }
    assert any("docker pull 192.168.56.50:5000/ghcr.io/NAME:TAG" in note for note in setup.notes)


def test_docker_hub_behind_another_mirrors_endpoint_is_mirrored_by_its_own_port():
    mirrors = [clientconfig.ClientMirror("ghcr", "https://ghcr.io", 5000, docker_hub=False, endpoint=True),
               clientconfig.ClientMirror("hub", "https://registry-1.docker.io", 5001, docker_hub=True)]
    data = json.loads(clientconfig.client_setup(mirrors, HOST, "docker").text())
    # Docker asks its mirror for unprefixed names, which the endpoint gives its own mirror (ghcr)
    assert data["registry-mirrors"] == ["http://192.168.56.50:5001"]
    assert data["insecure-registries"] == ["192.168.56.50:5000", "192.168.56.50:5001"]


def test_docker_without_a_docker_hub_mirror_gets_no_registry_mirrors():
    mirrors = [clientconfig.ClientMirror("ghcr", "https://ghcr.io", 5001, docker_hub=False)]
    setup = clientconfig.client_setup(mirrors, HOST, "docker")
    data = json.loads(setup.text())
    assert "registry-mirrors" not in data
    assert data["insecure-registries"] == ["192.168.56.50:5001"]
    assert any("no mirror proxies Docker Hub" in note for note in setup.notes)


def test_containerd_gets_a_default_hosts_toml_and_one_per_registry_all_through_the_endpoint():
    setup = _setup("multi-upstream", "containerd")
    parsed = {f.path: tomllib.loads(f.text) for f in setup.files}
    endpoint = {"http://192.168.56.50:5000": {"capabilities": ["pull", "resolve"]}}
    assert parsed == {
        "/etc/containerd/certs.d/docker.io/hosts.toml": {"server": "https://registry-1.docker.io",
                                                          "host": endpoint},
        "/etc/containerd/certs.d/ghcr.io/hosts.toml": {"server": "https://ghcr.io", "host": endpoint},
        "/etc/containerd/certs.d/quay.io/hosts.toml": {"server": "https://quay.io", "host": endpoint},
        "/etc/containerd/certs.d/registry.k8s.io/hosts.toml": {"server": "https://registry.k8s.io",
                                                                "host": endpoint},
        # every other registry: the endpoint first (it refuses what it does not cache), no server
        "/etc/containerd/certs.d/_default/hosts.toml": {"host": endpoint},
    }
    for f in setup.files:
        assert f.text.startswith(f"# {f.path}\n"), "each file says where it goes"


def test_k3s_registries_yaml_sends_every_registry_and_the_wildcard_to_the_endpoint():
    (registries,) = _setup("multi-upstream", "k3s").files
    assert registries.path == "/etc/rancher/k3s/registries.yaml"
    one = {"endpoint": ["http://192.168.56.50:5000"]}
    assert yaml.safe_load(registries.text) == {
        "mirrors": {"docker.io": one, "ghcr.io": one, "quay.io": one, "registry.k8s.io": one, "*": one}
    }


def test_podman_registries_conf_is_version_2_with_insecure_mirrors():
    (conf,) = _setup("multi-upstream", "podman").files
    assert conf.path.startswith("/etc/containers/registries.conf.d/") and conf.path.endswith(".conf")
    data = tomllib.loads(conf.text)
    assert data["registry"][1] == {
        "prefix": "ghcr.io",
        "location": "ghcr.io",
        "mirror": [{"location": "192.168.56.50:5000/ghcr.io", "insecure": True}],
    }
    assert [r["prefix"] for r in data["registry"]] == ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]
    assert all(m["insecure"] is True for r in data["registry"] for m in r["mirror"])


def test_a_registry_whose_name_cannot_lead_an_image_name_keeps_its_own_port_for_podman():
    mirrors = [
        clientconfig.ClientMirror("hub", "https://registry-1.docker.io", 5000, docker_hub=True,
                                  endpoint=True),
        clientconfig.ClientMirror("corp", "https://registry.corp.example:8443", 5005, docker_hub=False),
    ]
    data = tomllib.loads(clientconfig.client_setup(mirrors, HOST, "podman").text())
    assert [r["mirror"][0]["location"] for r in data["registry"]] == \
        ["192.168.56.50:5000/docker.io", "192.168.56.50:5005"]


def test_two_mirrors_of_one_registry_are_both_listed_in_port_order():
    mirrors = [
        clientconfig.ClientMirror("hub-b", "https://registry-1.docker.io", 5010, docker_hub=True),
        clientconfig.ClientMirror("hub-a", "https://registry-1.docker.io", 5000, docker_hub=True),
    ]
    data = yaml.safe_load(clientconfig.client_setup(mirrors, HOST, "k3s").text())
    assert data["mirrors"]["docker.io"]["endpoint"] == ["http://192.168.56.50:5000", "http://192.168.56.50:5010"]


def test_an_upstream_with_a_port_keeps_it_in_the_registry_name():
    corp = clientconfig.ClientMirror("corp", "https://registry.corp.example:8443", 5005, docker_hub=False)
    mirrors = [corp]
    (hosts,) = clientconfig.client_setup(mirrors, HOST, "containerd").files
    assert hosts.path == "/etc/containerd/certs.d/registry.corp.example:8443/hosts.toml"
    assert tomllib.loads(hosts.text)["server"] == "https://registry.corp.example:8443"


def test_an_ipv6_host_is_bracketed_in_every_address():
    data = json.loads(_setup("dockerhub", "docker", host="fd00::50").text())
    assert data == {
        "registry-mirrors": ["http://[fd00::50]:5000"],
        "insecure-registries": ["[fd00::50]:5000"],
    }


def test_the_seed_format_mirrors_docker_hub_too():
    data = json.loads(_setup("seed-distribution", "docker").text())
    assert data["registry-mirrors"] == ["http://192.168.56.50:5000"]


@pytest.mark.parametrize(
    ("host", "says"),
    [
        ("http://192.168.56.50", "without scheme or path"),
        ("192.168.56.50:5000", "must not carry a port"),
        ("0.0.0.0", "clients cannot dial"),
        ("", "is empty"),
    ],
)
def test_a_host_clients_cannot_use_is_refused_with_the_fix(host, says):
    with pytest.raises(clientconfig.ClientConfigError, match=says):
        _setup("dockerhub", "docker", host=host)


def test_the_applied_mirrors_give_the_same_setup_as_their_config(tmp_path):
    cfg = configmod.load(_plain_example(tmp_path, "multi-upstream"), check_storage=False)
    for rendered in render.render(cfg).values():
        written.write_rendered(str(tmp_path), rendered, owner=None)
    from_records = clientconfig.mirrors_from_records(record.read_all(str(tmp_path)))
    for fmt in clientconfig.FORMATS:
        expected = clientconfig.client_setup(clientconfig.mirrors_from_config(cfg), HOST, fmt)
        assert clientconfig.client_setup(from_records, HOST, fmt) == expected


def test_cli_prints_the_files_on_stdout_and_advice_on_stderr(tmp_path, capsys):
    status = cli.main(["client-config", "--host", HOST, "--format", "docker",
                       "--config", _plain_example(tmp_path, "dockerhub")])
    out, err = capsys.readouterr()
    assert status == 0
    assert out == (GOLDEN / "dockerhub" / "docker.txt").read_text()
    assert "note: merge this into /etc/docker/daemon.json" in err


def test_cli_without_config_reads_the_applied_mirrors(tmp_path, capsys):
    cfg = configmod.load(_plain_example(tmp_path, "multi-upstream"), check_storage=False)
    for rendered in render.render(cfg).values():
        written.write_rendered(str(tmp_path), rendered, owner=None)
    status = cli.main(["--root", str(tmp_path), "client-config", "--host", HOST, "--format", "k3s"])
    assert status == 0
    assert capsys.readouterr().out == (GOLDEN / "multi-upstream" / "k3s.txt").read_text()


def test_cli_without_config_or_applied_mirrors_says_what_to_do(tmp_path, capsys):
    status = cli.main(["--root", str(tmp_path), "client-config", "--host", HOST])
    assert status == cli.EXIT_FAILURE
    assert "run `registry-cache apply` first, or give --config" in capsys.readouterr().err


def test_cli_with_a_missing_config_file_refuses_rather_than_use_the_default(tmp_path, capsys):
    status = cli.main(["client-config", "--host", HOST, "--config", str(tmp_path / "nope.yml")])
    assert status == cli.EXIT_INVALID
    assert "nope.yml:1: (file): does not exist" in capsys.readouterr().err


def test_cli_with_an_invalid_config_lists_its_problems(tmp_path, capsys):
    bad = tmp_path / "config.yml"
    bad.write_text("mirrors:\n  hub:\n    upstream: https://registry-1.docker.io\n    prot: 5000\n")
    status = cli.main(["client-config", "--host", HOST, "--config", str(bad)])
    assert status == cli.EXIT_INVALID
    assert f"{bad}:4: mirrors.hub.prot: unknown key; did you mean 'port'?" in capsys.readouterr().err


def test_cli_as_an_unprivileged_user_falls_back_to_the_system_mirrors(tmp_path, monkeypatch, capsys):
    system = tmp_path / "etc-registry-cache"
    cfg = configmod.load(str(EXAMPLES / "dockerhub.yml"), check_storage=False)
    for rendered in render.render(cfg).values():
        written.write_rendered(str(system), rendered, owner=None)
    monkeypatch.setattr(paths, "SYSTEM_ROOT", str(system))
    monkeypatch.delenv("REGISTRY_CACHE_ROOT", raising=False)
    monkeypatch.setattr(paths, "default_root", lambda: str(tmp_path / "empty-user-state"))
    status = cli.main(["client-config", "--host", HOST, "--format", "docker"])
    assert status == 0
    assert capsys.readouterr().out == (GOLDEN / "dockerhub" / "docker.txt").read_text()
