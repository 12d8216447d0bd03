"""`registry-cache metrics` against a real mirror run by `registry-cache serve`, scraped over HTTP."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from box.wait import wait_until
from lab import images, procs
from lab.agent import AGENT, blob_requests, pull_all

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint(cache):
    """Start the metrics endpoint on 127.0.0.1 over the serve process's root; yield its base URL."""
    port = procs.free_port()
    process = procs.start(
        "registry-cache metrics",
        [*AGENT, "--root", str(cache.root), "metrics", "--listen", "127.0.0.1", "--port", str(port)],
        cache.workdir / "metrics.log", env=dict(os.environ),
    )
    url = f"http://127.0.0.1:{port}"
    procs.wait_for_http(f"{url}/metrics", process=process)
    yield url
    process.stop(timeout=10)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, by (name, sorted labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def wait_scrape(url: str, name: str, mirror: str, wanted: float, timeout: float = 30):
    samples: dict = {}

    def reached() -> bool:
        nonlocal samples
        samples = scrape(url)
        return value(samples, name, mirror=mirror) == wanted

    wait_until(reached, f"{name}{{mirror={mirror!r}}} at {wanted}", timeout=timeout, interval=0.3,
               detail=lambda: f"last {value(samples, name, mirror=mirror)}", error=AssertionError)
    return samples


def test_metrics_endpoint_reports_a_real_mirrors_health_and_its_hits_and_misses_after_pulls(
    cache, endpoint, upstream, test_images, tmp_path
):
    cache.write_config({"hub": {"upstream": upstream.url}}, metrics_port=procs.free_port())
    cache.start()  # after the endpoint: it reads the mirrors serve renders on every scrape
    url = endpoint
    cache.wait_state("hub", mode="proxy")
    before = scrape(url)
    assert value(before, "registry_cache_mirror_up", mirror="hub") == 1
    assert value(before, "registry_cache_mirror_mode", mirror="hub", mode="proxy") == 1
    assert value(before, "registry_cache_mirror_mode", mirror="hub", mode="read-only") == 0
    assert value(before, "registry_cache_mirror_misses_total", mirror="hub") == 0
    assert value(before, "registry_cache_mirror_info", mirror="hub", upstream=upstream.url,
                 port=str(cache.ports["hub"])) == 1

    gets, distinct = blob_requests(test_images.all())
    pull_all(cache.host("hub"), test_images.all(), tmp_path / "cold")
    cold = wait_scrape(url, "registry_cache_mirror_misses_total", "hub", distinct)
    assert value(cold, "registry_cache_mirror_misses_total", mirror="hub") == distinct
    assert value(cold, "registry_cache_mirror_hits_total", mirror="hub") == gets - distinct
    served = sum(b.size for img in test_images.all() for b in img.blobs)
    assert value(cold, "registry_cache_mirror_served_bytes_total", mirror="hub") == served
    assert value(cold, "registry_cache_mirror_upstream_bytes_total", mirror="hub") > 0
    assert value(cold, "registry_cache_mirror_cache_bytes", mirror="hub") > 0

    images.pull(test_images.oci.ref(cache.host("hub")), tmp_path / "warm")
    warm_hits = gets - distinct + len(test_images.oci.blobs)
    warm = wait_scrape(url, "registry_cache_mirror_hits_total", "hub", warm_hits)
    assert value(warm, "registry_cache_mirror_hits_total", mirror="hub") == warm_hits
    assert value(warm, "registry_cache_mirror_misses_total", mirror="hub") == distinct

    with urllib.request.urlopen(f"{url}/status", timeout=10) as answer:
        status = json.loads(answer.read())
    assert [(m["name"], m["healthy"], m["misses"]) for m in status] == [("hub", True, distinct)]


def test_metrics_endpoint_says_a_stopped_mirror_is_down(cache, endpoint, upstream):
    cache.write_config({"hub": {"upstream": upstream.url}}, metrics_port=procs.free_port())
    cache.start()
    cache.wait_state("hub", mode="proxy")
    assert value(scrape(endpoint), "registry_cache_mirror_up", mirror="hub") == 1
    cache.stop()
    samples = scrape(endpoint)
    assert value(samples, "registry_cache_mirror_up", mirror="hub") == 0
    assert value(samples, "registry_cache_mirror_mode", mirror="hub", mode="down") == 1



def test_metrics_endpoint_listens_where_the_config_served_says_without_being_told(cache, upstream):
    port = procs.free_port()
    cache.write_config({"hub": {"upstream": upstream.url}}, metrics_port=port)  # listen: 127.0.0.1
    cache.start()
    process = procs.start("registry-cache metrics", [*AGENT, "--root", str(cache.root), "metrics"],
                          cache.workdir / "metrics.log", env=dict(os.environ))
    try:
        procs.wait_for_http(f"http://127.0.0.1:{port}/metrics", process=process, timeout=10)
        # bound to the config's listen address only, not to every interface
        assert procs.http_status(f"http://127.0.0.2:{port}/metrics", timeout=2) is None
    finally:
        process.stop(timeout=10)
