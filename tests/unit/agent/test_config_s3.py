"""`storage:` naming an S3 bucket: checked with FILE:LINE: key, rendered into Distribution's s3 driver."""

from __future__ import annotations

import json

import yaml
from registry_cache import config, paths, render

from tests.unit.agent.configfiles import write

SHARED = """\
storage:
  path: node
  s3:
    endpoint: http://192.168.56.60:7480
    bucket: registry-cache
    access_key: CACHEKEY
    secret_file: s3.secret
    prefix: team
mirrors:
  hub:
    upstream: https://registry-1.docker.io
    port: 5000
"""


def _load(tmp_path, text=SHARED):
    (tmp_path / "s3.secret").write_text("s3-secret-value\n")
    (tmp_path / "s3.secret").chmod(0o600)
    return config.load(write(tmp_path, text), check_storage=False)


def _problems(tmp_path, text):
    (tmp_path / "s3.secret").write_text("s3-secret-value\n")
    try:
        config.load(write(tmp_path, text), check_storage=False)
    except config.ConfigError as exc:
        return [str(p).split(":", 1)[1] for p in exc.problems]
    raise AssertionError("the config was accepted")


def test_an_s3_storage_keeps_each_mirror_below_prefix_slash_name_and_node_files_in_path(tmp_path):
    cfg = _load(tmp_path)
    hub = cfg.mirror("hub")
    assert hub.s3 is not None and cfg.s3 == hub.s3
    assert hub.s3.root("hub") == "/team/hub"
    assert (hub.s3.endpoint, hub.s3.region, hub.s3.path_style) == (
        "http://192.168.56.60:7480", "us-east-1", True)
    assert hub.storage == str(tmp_path / "node" / "hub")
    assert "s3-secret-value" not in repr(cfg)


def test_the_s3_secret_file_is_an_input_so_a_new_secret_is_applied(tmp_path):
    cfg = _load(tmp_path)
    assert str(tmp_path / "s3.secret") in dict(cfg.inputs)


def test_a_shared_mirror_renders_distributions_s3_driver_plain_http_path_style_no_redirects(tmp_path):
    cfg = _load(tmp_path)
    rendered = render.render(cfg)["hub"]
    for name in (paths.PROXY_CONFIG, paths.READONLY_CONFIG):
        storage = yaml.safe_load(rendered.configs[name])["storage"]
        assert "filesystem" not in storage
        assert storage["s3"] == {
            "bucket": "registry-cache", "region": "us-east-1",
            "regionendpoint": "http://192.168.56.60:7480", "accesskey": "CACHEKEY",
            "secretkey": "s3-secret-value", "rootdirectory": "/team/hub",
            "secure": False, "v4auth": True,
        }
        assert storage["redirect"] == {"disable": True}
    shared = json.loads(rendered.configs[paths.SHARED_BUCKET])
    assert shared["root"] == "/team/hub" and shared["bucket"] == "registry-cache"
    assert "s3-secret-value" not in rendered.record.text()


def test_a_mirror_on_a_folder_renders_no_s3_and_no_shared_file(tmp_path):
    cfg = _load(tmp_path, "storage: data\nmirrors:\n  hub: {upstream: https://ghcr.io, port: 5000}\n")
    rendered = render.render(cfg)["hub"]
    assert "s3" not in yaml.safe_load(rendered.configs[paths.PROXY_CONFIG])["storage"]
    assert paths.SHARED_BUCKET not in rendered.configs


def test_s3_storage_problems_are_reported_at_their_line_and_key(tmp_path):
    found = _problems(tmp_path, """\
        storage:
          s3:
            endpoint: ftp://rgw
            bucket: registry-cache
            acces_key: X
            secret_file: missing.secret
        mirrors:
          hub: {upstream: https://ghcr.io, port: 5000}
        """)
    assert ("3: storage.s3.endpoint: 'ftp://rgw' is not an http(s) URL; "
            "e.g. http://192.168.56.60:7480") in found
    assert "5: storage.s3.acces_key: unknown key; did you mean 'access_key'?" in found
    assert any(p.startswith("6: storage.s3.secret_file: ") and "does not exist" in p for p in found)
    assert any(p.startswith("2: storage.s3.access_key: missing") for p in found)


def test_a_ca_file_with_a_plain_http_endpoint_is_refused(tmp_path):
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n")
    found = _problems(tmp_path, SHARED.replace("    prefix: team\n", "    ca_file: ca.crt\n"))
    assert any(p.startswith("8: storage.s3.ca_file: the endpoint is plain http://") for p in found)
