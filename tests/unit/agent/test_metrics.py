"""The metrics endpoint's content and settings, without a server: families from statuses."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from registry_cache import config as configmod
from registry_cache import metrics, paths, systemd
from registry_cache.status import MirrorStatus

UNIT = Path(__file__).resolve().parents[3] / "bootstrap" / "systemd" / "registry-cache-metrics.service"


def a_status(**changes) -> MirrorStatus:
    values = dict(name="hub", upstream="https://registry-1.docker.io", port=5000, healthy=True,
                  mode="proxy", hits=7, misses=3, bytes_served=1000, bytes_from_upstream=400,
                  storage="/srv/cache/hub", storage_bytes=4096, restarts=2, problem=None)
    values.update(changes)
    return MirrorStatus(**values)


def exposition(statuses) -> dict:
    class Fixed:
        def collect(self):
            return metrics.families(statuses)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_mirror_gets_up_mode_counters_cache_size_and_restarts():
    samples = exposition([a_status(), a_status(name="ghcr", healthy=False, mode="down", hits=0)])
    hub = (("mirror", "hub"),)
    assert samples[("registry_cache_mirror_up", hub)] == 1
    assert samples[("registry_cache_mirror_up", (("mirror", "ghcr"),))] == 0
    assert samples[("registry_cache_mirror_hits_total", hub)] == 7
    assert samples[("registry_cache_mirror_misses_total", hub)] == 3
    assert samples[("registry_cache_mirror_served_bytes_total", hub)] == 1000
    assert samples[("registry_cache_mirror_upstream_bytes_total", hub)] == 400
    assert samples[("registry_cache_mirror_cache_bytes", hub)] == 4096
    assert samples[("registry_cache_mirror_restarts_total", hub)] == 2
    assert samples[("registry_cache_mirror_mode", (("mirror", "hub"), ("mode", "proxy")))] == 1
    assert samples[("registry_cache_mirror_mode", (("mirror", "hub"), ("mode", "read-only")))] == 0
    assert samples[("registry_cache_mirror_mode", (("mirror", "ghcr"), ("mode", "down")))] == 1


def test_the_size_cap_last_gc_and_a_full_disk_show_and_no_cap_means_no_sample():
    samples = exposition([a_status(max_size=10**9, gc_last_run=1700000000.0, gc_bytes_freed=5000,
                                   gc_images_evicted=2, disk_problem="disk full"),
                          a_status(name="ghcr")])
    hub, ghcr = (("mirror", "hub"),), (("mirror", "ghcr"),)
    assert samples[("registry_cache_mirror_max_bytes", hub)] == 10**9
    assert ("registry_cache_mirror_max_bytes", ghcr) not in samples
    assert samples[("registry_cache_mirror_last_gc_timestamp_seconds", hub)] == 1700000000.0
    assert samples[("registry_cache_mirror_last_gc_freed_bytes", hub)] == 5000
    assert samples[("registry_cache_mirror_last_gc_evicted_images", hub)] == 2
    assert samples[("registry_cache_mirror_disk_full", hub)] == 1
    assert samples[("registry_cache_mirror_disk_full", ghcr)] == 0


def test_the_fronts_upstream_requests_transfers_joins_and_failures_are_counters():
    samples = exposition([a_status(upstream_requests=40, blob_transfers=12, blob_joins=30, blob_failures=1)])
    hub = (("mirror", "hub"),)
    assert samples[("registry_cache_mirror_upstream_requests_total", hub)] == 40
    assert samples[("registry_cache_mirror_blob_transfers_total", hub)] == 12
    assert samples[("registry_cache_mirror_blob_joins_total", hub)] == 30
    assert samples[("registry_cache_mirror_blob_failures_total", hub)] == 1


def test_a_mode_the_endpoint_does_not_know_still_shows():
    samples = exposition([a_status(mode="evicting")])
    assert samples[("registry_cache_mirror_mode", (("mirror", "hub"), ("mode", "evicting")))] == 1


def test_every_counter_row_names_a_status_field():
    fields = MirrorStatus.__dataclass_fields__
    assert all(field in fields for field, _name, _help in metrics.COUNTERS)


def test_the_status_json_carries_no_secret_field():
    assert not {"password", "username", "credentials"} & set(a_status().as_dict())


def test_settings_default_to_every_address_on_9110_before_any_apply(tmp_path):
    assert metrics.MetricsSettings.read(str(tmp_path)) == metrics.MetricsSettings("0.0.0.0", 9110)


def _config(tmp_path, **top) -> configmod.CacheConfig:
    text = "".join(f"{k}: {v}\n" for k, v in top.items())
    text += "storage: cache\nmirrors:\n  hub: {upstream: 'https://ghcr.io', port: 5000}\n"
    return configmod.parse(text, "config.yml", base_dir=str(tmp_path), check_storage=False)


@pytest.fixture
def systemctl(monkeypatch):
    calls = []
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setattr(systemd, "systemctl", lambda *args: calls.append(args))
    return calls


def test_apply_records_the_endpoints_address_and_restarts_it_only_when_it_changed(tmp_path, systemctl):
    root = str(tmp_path / "root")
    assert metrics.apply_settings(root, _config(tmp_path, listen="192.168.56.50"), io.StringIO())
    assert json.loads((tmp_path / "root" / paths.METRICS_SETTINGS).read_text()) == {
        "listen": "192.168.56.50", "port": 9110}
    assert systemctl == [("try-restart", "registry-cache-metrics.service")]
    assert not metrics.apply_settings(root, _config(tmp_path, listen="192.168.56.50"), io.StringIO())
    assert len(systemctl) == 1
    out = io.StringIO()
    assert metrics.apply_settings(root, _config(tmp_path, metrics_port=9200), out)
    assert metrics.MetricsSettings.read(root) == metrics.MetricsSettings("0.0.0.0", 9200)
    assert len(systemctl) == 2
    assert "metrics endpoint: 0.0.0.0:9200" in out.getvalue()


def test_the_unit_runs_the_metrics_command_as_the_mirrors_account_not_root():
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/registry-cache --root /etc/registry-cache metrics\n" in text
    assert "User=registry-cache\n" in text and "NoNewPrivileges=yes" in text
    assert "WantedBy=multi-user.target" in text


def test_a_mirror_on_a_shared_bucket_exports_its_nodes_the_gc_hold_and_whether_the_bucket_answers():
    shared = a_status(shared="s3://cache/hub/ at http://rgw:7480", shared_nodes=("a proxy", "b read-only"),
                      shared_holder="b", storage_bytes=10_000)
    down = a_status(name="ghcr", shared="s3://cache/ghcr/ at http://rgw:7480", shared_problem="refused")
    samples = exposition([shared, down, a_status(name="local")])
    hub, ghcr = (("mirror", "hub"),), (("mirror", "ghcr"),)
    assert samples[("registry_cache_mirror_shared_nodes", hub)] == 2
    assert samples[("registry_cache_mirror_shared_held", hub)] == 1
    assert samples[("registry_cache_mirror_shared_reachable", hub)] == 1
    assert samples[("registry_cache_mirror_cache_bytes", hub)] == 10_000  # the whole bucket's
    assert samples[("registry_cache_mirror_shared_reachable", ghcr)] == 0
    assert ("registry_cache_mirror_shared_nodes", ghcr) not in samples
    assert ("registry_cache_mirror_shared_reachable", (("mirror", "local"),)) not in samples
