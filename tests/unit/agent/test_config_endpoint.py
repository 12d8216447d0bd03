"""config.yml's rules for the one endpoint: upstreams by host alone, one mirror per registry."""

from __future__ import annotations

import pytest
from registry_cache import config


def _parse(mirrors: str) -> config.CacheConfig:
    text = "storage: cache\nmirrors:\n" + mirrors
    return config.parse(text, "config.yml", base_dir="/tmp", check_storage=False)


@pytest.mark.parametrize("value,url", [("ghcr.io", "https://ghcr.io"), ("docker.io", "https://registry-1.docker.io"),
                                        ("registry.corp.example:8443", "https://registry.corp.example:8443")])
def test_an_upstream_given_by_its_host_alone_is_its_https_root(value, url):
    (mirror,) = _parse(f"  m: {{upstream: {value}, port: 5000}}\n").mirrors
    assert mirror.upstream == url


def test_docker_hub_by_host_alone_is_docker_hub():
    (mirror,) = _parse("  hub: {upstream: docker.io, port: 5000}\n").mirrors
    assert mirror.is_docker_hub


@pytest.mark.parametrize("second", ["https://ghcr.io", "ghcr.io", "https://GHCR.io:443"])
def test_two_mirrors_of_one_registry_are_refused_at_the_later_one(second):
    with pytest.raises(config.ConfigError) as caught:
        _parse(f"  a: {{upstream: 'https://ghcr.io', port: 5000}}\n"
               f"  b: {{upstream: '{second}', port: 5001}}\n")
    (problem,) = caught.value.problems
    assert (problem.line, problem.path) == (4, "mirrors.b.upstream")
    assert "registry ghcr.io already has a mirror, mirrors.a (line 3)" in problem.message


def test_docker_hub_under_two_of_its_names_is_one_registry():
    with pytest.raises(config.ConfigError) as caught:
        _parse("  a: {upstream: docker.io, port: 5000}\n"
               "  b: {upstream: 'https://index.docker.io', port: 5001}\n")
    assert "registry docker.io already has a mirror, mirrors.a" in str(caught.value)


def test_one_registry_on_two_ports_of_a_host_is_two_registries():
    cfg = _parse("  a: {upstream: 'http://r.example:5000', port: 5000}\n"
                 "  b: {upstream: 'http://r.example:5001', port: 5001}\n")
    assert [m.name for m in cfg.mirrors] == ["a", "b"]


def test_a_registry_that_could_be_a_docker_hub_organisation_is_warned_about_not_refused():
    cfg = _parse("  hub: {upstream: docker.io, port: 5000}\n"
                 "  nexus: {upstream: 'http://nexus', port: 5001}\n")
    (warning,) = cfg.warnings
    assert (warning.line, warning.path) == (4, "mirrors.nexus.upstream")
    assert "Docker Hub organisation 'nexus'" in warning.message and "?ns=" in warning.message


def test_endpoint_redirects_are_on_unless_the_config_turns_them_off():
    assert _parse("  hub: {upstream: docker.io, port: 5000}\n").endpoint_redirects
    text = "storage: cache\nendpoint_redirects: false\nmirrors:\n  hub: {upstream: docker.io, port: 5000}\n"
    assert not config.parse(text, "config.yml", base_dir="/tmp", check_storage=False).endpoint_redirects


def test_endpoint_redirects_must_be_a_boolean_and_the_error_names_its_line():
    text = "storage: cache\nendpoint_redirects: maybe\nmirrors:\n  hub: {upstream: docker.io, port: 5000}\n"
    with pytest.raises(config.ConfigError) as caught:
        config.parse(text, "config.yml", base_dir="/tmp", check_storage=False)
    assert "config.yml:2: endpoint_redirects" in str(caught.value)
