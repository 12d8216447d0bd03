"""The one endpoint's routing: registry host -> configured mirror, by `ns` and by path prefix."""

from __future__ import annotations

import json

import pytest
from registry_cache import routing

TABLE = routing.table_for(
    [("dockerhub", "https://registry-1.docker.io", 5000), ("ghcr", "https://ghcr.io", 5001),
     ("private", "http://registry.example:5443", 5002)],
    home="dockerhub",
)


@pytest.mark.parametrize("ns", ["docker.io", "index.docker.io", "registry-1.docker.io", "Docker.IO"])
def test_every_docker_hub_name_in_ns_routes_to_the_docker_hub_mirror(ns):
    decision = routing.route(TABLE, "/v2/library/alpine/manifests/3.19", f"ns={ns}")
    assert (decision.mirror, decision.path, decision.prefix) == \
        ("dockerhub", "/v2/library/alpine/manifests/3.19", "")


def test_ns_routes_to_its_mirror_with_the_path_unchanged():
    blob = "/v2/owner/image/blobs/sha256:" + "a" * 64
    decision = routing.route(TABLE, blob, "ns=ghcr.io")
    assert (decision.mirror, decision.path, decision.ns) == ("ghcr", blob, "ghcr.io")


def test_a_path_prefix_routes_to_its_mirror_and_is_taken_out_of_the_path():
    decision = routing.route(TABLE, "/v2/GHCR.io/owner/image/manifests/v1")
    assert (decision.mirror, decision.path, decision.prefix) == \
        ("ghcr", "/v2/owner/image/manifests/v1", "/GHCR.io")


def test_a_registry_with_a_port_matches_by_ns_and_prefix():
    assert routing.route(TABLE, "/v2/x/manifests/1", "ns=registry.example:5443").mirror == "private"
    assert routing.route(TABLE, "/v2/registry.example:5443/x/manifests/1").mirror == "private"


@pytest.mark.parametrize("path", ["/v2/library/alpine/manifests/3.19", "/v2/owner/image/tags/list", "/v2/",
                                  "/v2/_catalog", "/v2/quay/image/manifests/1"])
def test_an_unprefixed_name_goes_to_the_endpoints_own_mirror_unchanged(path):
    decision = routing.route(TABLE, path)
    assert (decision.mirror, decision.path, decision.refusal) == ("dockerhub", path, None)


def test_a_one_component_docker_hub_name_under_the_prefix_is_a_library_image():
    assert routing.route(TABLE, "/v2/docker.io/alpine/manifests/3").path == "/v2/library/alpine/manifests/3"
    assert routing.route(TABLE, "/v2/docker.io/bitnami/redis/manifests/7").path == \
        "/v2/bitnami/redis/manifests/7"


@pytest.mark.parametrize("path,query", [("/v2/quay.io/x/y/manifests/1", ""),
                                        ("/v2/x/y/manifests/1", "ns=quay.io"),
                                        ("/v2/", "ns=evil.example"),
                                        ("/v2/localhost/x/manifests/1", "")])
def test_an_unknown_registry_is_refused_naming_the_configured_ones(path, query):
    decision = routing.route(TABLE, path, query)
    assert decision.mirror is None
    assert "docker.io (mirror dockerhub)" in decision.refusal and "ghcr.io (mirror ghcr)" in decision.refusal
    body = json.loads(routing.refusal_body(decision))
    assert body["errors"][0]["code"] == "NAME_UNKNOWN"


@pytest.mark.parametrize("value,url", [("ghcr.io", "https://ghcr.io"), ("docker.io", "https://registry-1.docker.io"),
                                        ("index.docker.io", "https://registry-1.docker.io"),
                                        ("quay.io/", "https://quay.io"), ("http://r:5000", "http://r:5000")])
def test_an_upstream_given_by_host_alone_means_its_https_root(value, url):
    assert routing.upstream_url(value) == url


@pytest.mark.parametrize("upstream,names", [("https://registry-1.docker.io", routing.DOCKER_HUB_NAMES),
                                            ("https://GHCR.IO:443", ("ghcr.io",)),
                                            ("http://r.example:80", ("r.example",)),
                                            ("http://r.example:5000", ("r.example:5000",))])
def test_a_mirror_answers_for_the_hosts_of_its_upstream(upstream, names):
    assert routing.registry_names(upstream) == names


@pytest.mark.parametrize("component,prefix", [("ghcr.io", True), ("localhost", True), ("r:5000", True),
                                              ("library", False), ("quay", False)])
def test_a_registry_prefix_follows_dockers_rule(component, prefix):
    assert routing.is_registry_prefix(component) is prefix


def test_location_and_link_urls_get_the_prefix_and_ns_back():
    prefixed = routing.route(TABLE, "/v2/ghcr.io/o/i/tags/list")
    assert routing.client_url("/v2/o/i/blobs/uploads/1?x=2", prefixed) == \
        "/v2/ghcr.io/o/i/blobs/uploads/1?x=2"
    assert routing.client_url("https://h:5000/v2/o/i/x", prefixed) == "https://h:5000/v2/ghcr.io/o/i/x"
    assert routing.client_url("https://cdn.example/blob?sig=1", prefixed) == "https://cdn.example/blob?sig=1"
    assert routing.client_link('</v2/o/i/tags/list?last=a&n=1>; rel="next"', prefixed) == \
        '</v2/ghcr.io/o/i/tags/list?last=a&n=1>; rel="next"'
    by_ns = routing.route(TABLE, "/v2/o/i/tags/list", "ns=ghcr.io")
    assert routing.client_url("/v2/o/i/tags/list?n=1", by_ns) == "/v2/o/i/tags/list?n=1&ns=ghcr.io"


def test_the_table_reads_back_what_it_writes():
    assert routing.Table.from_json(TABLE.to_json()) == TABLE
    with pytest.raises(ValueError):
        routing.Table.from_json('{"home": "x", "routes": []}')


def test_the_tables_redirect_switch_survives_its_json_and_is_on_by_default():
    assert routing.Table.from_json(TABLE.to_json()).redirects
    off = routing.table_for([("hub", "https://registry-1.docker.io", 5000)], "hub", redirects=False)
    assert not routing.Table.from_json(off.to_json()).redirects
    legacy = json.loads(TABLE.to_json())
    del legacy["redirects"]  # a table an older apply wrote
    assert routing.Table.from_json(json.dumps(legacy)).redirects
