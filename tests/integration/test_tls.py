"""TLS and client login through real mirrors: `registry-cache serve`, docker-registry and skopeo on 127.0.0.1.

Every pull here verifies the mirror's certificate, trusting only the CA `client-config
--output-dir` wrote: no TLS check is ever switched off.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time

import pytest
import requests
from registry_cache import tlsca

from box.run import CommandError
from lab import images
from lab.agent import AGENT, TlsCache
from lab.images import push_test_images

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-Pa55word-never-shown"


@pytest.fixture
def tls_cache(tmp_path, upstream, registry_factory):
    second = registry_factory("second-upstream")
    cache = TlsCache(tmp_path / "cache-host", {"one": upstream.url, "two": second.url})
    yield cache, second
    cache.stop()


def test_skopeo_pulls_through_every_mirror_trusting_only_the_ca_client_config_wrote(
    tls_cache, test_images, tmp_path
):
    cache, second = tls_cache
    other = push_test_images(tmp_path / "second-layouts", second.host)
    cache.start()
    certs = cache.client_files(tmp_path / "client")
    for name, imgs in (("one", test_images), ("two", other)):
        cert_dir = certs / cache.host(name)
        assert sorted(p.name for p in cert_dir.iterdir()) == ["ca.crt"]
        for img in imgs.all():
            pulled = images.pull(img.ref(cache.host(name)), tmp_path / f"pull-{name}-{img.kind}",
                                 all_images=img.kind == "index", cert_dir=cert_dir)
            assert pulled.digest == img.digest
    # `registry-cache ca` prints that same CA, and nothing else
    ca = cache.agent("ca")
    assert ca.returncode == 0 and ca.stdout == (certs / cache.host("one") / "ca.crt").read_text()
    status = json.loads(cache.agent("status", "--json", "--no-rate-limit").stdout)
    assert [(s["healthy"], s["url"]) for s in status] == [(True, cache.url("one")), (True, cache.url("two"))]


def test_a_client_that_trusts_another_ca_is_refused(tls_cache, test_images, tmp_path):
    cache, _ = tls_cache
    cache.start()
    cert_dir = tmp_path / "stranger"
    cert_dir.mkdir()
    (cert_dir / "ca.crt").write_text(tlsca.make_ca(time.time(), common_name="another CA")[0])
    with pytest.raises(CommandError) as refused:
        images.pull(test_images.oci.ref(cache.host("one")), tmp_path / "pull", cert_dir=cert_dir)
    assert "certificate" in str(refused.value)


def test_a_renewed_server_certificate_is_trusted_without_client_changes(tls_cache, test_images, tmp_path):
    cache, _ = tls_cache
    cache.start()
    certs = cache.client_files(tmp_path / "client")
    tls_dir = cache.workdir / "tls"
    cache.stop()
    # the certificate the CA issued nearly SERVER_DAYS ago: within the renewal window now
    issued = time.time() - (tlsca.SERVER_DAYS - 10) * 86400
    old_cert, old_key = tlsca.issue_server((tls_dir / "ca.crt").read_text(), (tls_dir / "ca.key").read_text(),
                                           ["127.0.0.1", "localhost"], issued)
    (tls_dir / "server.crt").write_text(old_cert)
    (tls_dir / "server.key").write_text(old_key)
    ca_before = (tls_dir / "ca.crt").read_text()

    cache.start()
    assert (tls_dir / "server.crt").read_text() != old_cert
    assert (tls_dir / "ca.crt").read_text() == ca_before
    assert tlsca.renewal_reason((tls_dir / "server.crt").read_text(), (tls_dir / "server.key").read_text(),
                                ca_before, ["127.0.0.1"], time.time()) is None
    pulled = images.pull(test_images.oci.ref(cache.host("one")), tmp_path / "pull",
                         cert_dir=certs / cache.host("one"))
    assert pulled.digest == test_images.oci.digest


def test_client_login_wrong_password_401_right_password_pulls_and_no_secret_shows(
    tmp_path, upstream, test_images
):
    secrets = tmp_path / "cache-host" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "alice.password").write_text(PASSWORD + "\n")
    cache = TlsCache(tmp_path / "cache-host", {"one": upstream.url},
                     extra="auth:\n  users:\n    alice:\n      password_file: secrets/alice.password")
    try:
        cache.start()
        ca = str(cache.workdir / "tls" / "ca.crt")
        assert requests.get(f"{cache.url('one')}/v2/", verify=ca, timeout=5).status_code == 401
        wrong = requests.get(f"{cache.url('one')}/v2/", auth=("alice", "wrong"), verify=ca, timeout=5)
        assert wrong.status_code == 401
        assert requests.get(f"{cache.url('one')}/v2/", auth=("alice", PASSWORD), verify=ca,
                            timeout=5).status_code == 200
        certs = cache.client_files(tmp_path / "client")
        cert_dir = certs / cache.host("one")
        with pytest.raises(CommandError):
            images.pull(test_images.oci.ref(cache.host("one")), tmp_path / "denied", cert_dir=cert_dir,
                        creds=("alice", "wrong"))
        pulled = images.pull(test_images.oci.ref(cache.host("one")), tmp_path / "pull", cert_dir=cert_dir,
                             creds=("alice", PASSWORD))
        assert pulled.digest == test_images.oci.digest

        login = cache.agent("client-config", "--host", "127.0.0.1", "--format", "docker")
        status = cache.agent("status", "--json", "--no-rate-limit")
        assert json.loads(status.stdout)[0]["healthy"] is True
        mirror_dir = cache.root / "mirrors" / "one"
        rendered = "".join(p.read_text() for p in mirror_dir.iterdir() if p.is_file())
        tls_keys = [(cache.workdir / "tls" / n).read_text() for n in ("ca.key", "server.key")]
        shown = [login.stdout, login.stderr, status.stdout, status.stderr, cache.log(), rendered]
        for secret in [PASSWORD, *tls_keys]:
            assert not any(secret.strip() in text for text in shown[:-1])
        assert PASSWORD not in rendered
        assert "docker login 127.0.0.1:" in login.stderr
        mirrors_account = os.stat(cache.workdir / "cache").st_uid
        for path in [cache.workdir / "tls" / "ca.key", cache.workdir / "tls" / "server.key",
                     mirror_dir / "tls.key", mirror_dir / "htpasswd", mirror_dir / "warm-login.json"]:
            st = path.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, mirrors_account), path
    finally:
        cache.stop()


def test_apply_makes_the_ca_once_and_later_applies_and_dry_runs_keep_every_mirror(tmp_path):
    (tmp_path / "config.yml").write_text(
        "listen: 127.0.0.1\nstorage: cache\ntls: auto\n"
        "mirrors:\n  hub: {upstream: 'http://127.0.0.1:9', port: 5000}\n")
    root = tmp_path / "root"

    def apply(*extra: str) -> str:
        argv = [*AGENT, "--root", str(root), "apply", "--config", str(tmp_path / "config.yml"), *extra]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    first = apply()
    assert "add    hub" in first
    made = {n: (tmp_path / "tls" / n).read_text() for n in ("ca.crt", "ca.key", "server.crt", "server.key")}
    assert not any(made[k].strip() in first for k in ("ca.key", "server.key"))
    assert (root / "mirrors" / "hub" / "tls.crt").read_text() == made["server.crt"]
    assert "keep   hub" in apply("--dry-run")
    assert "keep   hub" in apply()
    assert {n: (tmp_path / "tls" / n).read_text() for n in made} == made
    # the generated files are inputs: a deleted server certificate is issued again, same CA
    (tmp_path / "tls" / "server.crt").unlink()
    assert "update hub" in apply()
    assert (tmp_path / "tls" / "ca.crt").read_text() == made["ca.crt"]
    assert (tmp_path / "tls" / "server.crt").read_text() != made["server.crt"]
