"""TLS: the generated CA and certificate (made, kept, renewed; time injected) and the user's own, checked."""

import datetime
import os
import stat
import time

import pytest
from registry_cache import certs, secure, tlsca
from registry_cache import config as configmod
from registry_cache.record import MirrorRecord

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc).timestamp()
DAY = 86400
HOSTS = ["registry-cache", "192.168.56.50", "localhost", "127.0.0.1", "::1"]


@pytest.fixture(scope="module")
def ca():
    # valid for ten years from NOW, which covers the real clock the config checks use too
    return tlsca.make_ca(NOW)


@pytest.fixture(scope="module")
def server(ca):
    return tlsca.issue_server(*ca, HOSTS, NOW)


def test_a_fresh_certificate_covers_every_host_and_is_kept(ca, server):
    cert, key = server
    assert certs.uncovered(cert, HOSTS) == []
    assert tlsca.renewal_reason(cert, key, ca[0], HOSTS, NOW + DAY) is None


def test_a_certificate_is_renewed_ahead_of_its_end_not_before(ca, server):
    cert, key = server
    due = tlsca.renew_at(cert)
    assert tlsca.renewal_reason(cert, key, ca[0], HOSTS, due - 1) is None
    assert "ends within" in tlsca.renewal_reason(cert, key, ca[0], HOSTS, due)
    assert due < NOW + tlsca.SERVER_DAYS * DAY


def test_a_new_address_of_the_box_gets_a_new_certificate(ca, server):
    reason = tlsca.renewal_reason(*server, ca[0], [*HOSTS, "192.168.56.60"], NOW)
    assert reason == "it does not cover 192.168.56.60"


def test_a_certificate_of_another_ca_or_key_is_replaced(ca, server):
    other = tlsca.make_ca(NOW)
    assert tlsca.renewal_reason(*server, other[0], HOSTS, NOW) == "it was not signed by this CA"
    assert tlsca.renewal_reason(server[0], other[1], ca[0], HOSTS, NOW) == "its key does not match"
    assert tlsca.renewal_reason(None, None, ca[0], HOSTS, NOW) == "there is none yet"


def test_coverage_matches_names_exactly_wildcards_one_label_and_ip_addresses(ca):
    cert = certs.load_certs(tlsca.issue_server(*ca, ["*.cache.example", "10.0.0.1"], NOW)[0])[0]
    assert certs.covers(cert, "a.cache.example")
    assert not certs.covers(cert, "a.b.cache.example")
    assert not certs.covers(cert, "cache.example")
    assert certs.covers(cert, "10.0.0.1") and not certs.covers(cert, "10.0.0.2")


def test_ensure_auto_makes_once_keeps_and_renews_with_the_same_ca(tmp_path):
    first = tlsca.ensure_auto(str(tmp_path), HOSTS, NOW)
    for name in ("ca.key", "server.key"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca.crt").st_mode) == 0o644
    again = tlsca.ensure_auto(str(tmp_path), HOSTS, NOW + 30 * DAY)
    assert again.cert_pem == first.cert_pem
    renewed = tlsca.ensure_auto(str(tmp_path), HOSTS, first.renew_after)
    assert renewed.cert_pem != first.cert_pem and renewed.ca_pem == first.ca_pem
    assert certs.signed_by(renewed.cert_pem, first.ca_pem)
    assert "PRIVATE KEY" not in repr(renewed)


def test_apply_skips_work_only_while_no_certificate_is_due(tmp_path):
    record = MirrorRecord("hub", "https://x.io", "0.0.0.0", 5000, str(tmp_path), tls=True,
                          tls_renew_after=int(NOW + DAY), tls_hosts=tuple(HOSTS))
    assert not secure.renewal_due([record], NOW, HOSTS[:2])
    assert secure.renewal_due([record], NOW + DAY, HOSTS[:2])
    assert secure.renewal_due([record], NOW, ["192.168.56.60"])
    plain = MirrorRecord("hub", "https://x.io", "0.0.0.0", 5000, str(tmp_path))
    assert not secure.renewal_due([plain], NOW + 1000 * DAY, ["anything"])


def test_a_record_without_tls_reads_and_writes_as_before():
    record = MirrorRecord("hub", "https://x.io", "0.0.0.0", 5000, "/data/hub")
    assert "tls" not in record.text() and "client_auth" not in record.text()
    assert record.url == "http://127.0.0.1:5000"
    tls = MirrorRecord.parse(MirrorRecord("hub", "https://x.io", "0.0.0.0", 5000, "/d", tls=True,
                                          tls_hosts=("a",)).text(), where="x", directory="/m/hub")
    assert tls.url == "https://127.0.0.1:5000" and tls.tls_hosts == ("a",)
    assert tls.endpoint.ca_file == "/m/hub/ca.crt"


# ---------------------------------------------------------------- the user's own certificate

def _write(path, text):
    path.write_text(text)
    return path.name


def _user_tls(tmp_path, cert, key, extra=""):
    return (f"tls:\n  cert_file: {_write(tmp_path / 'c.pem', cert)}\n"
            f"  key_file: {_write(tmp_path / 'k.pem', key)}{extra}")


def _config(tmp_path, tls_lines, listen="0.0.0.0"):
    text = (f"listen: {listen}\nstorage: {tmp_path / 'data'}\n{tls_lines}\n"
            "mirrors:\n  hub: {upstream: https://registry-1.docker.io, port: 5000}\n")
    (tmp_path / "config.yml").write_text(text)
    return str(tmp_path / "config.yml")


def _problems(path):
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    return [str(p).split(": ", 1)[1] for p in err.value.problems]


def test_a_good_certificate_of_the_user_loads_and_is_served(tmp_path, ca):
    # `check` judges the user's certificate by the real clock
    cert, key = tlsca.issue_server(*ca, ["cache.example", "192.168.56.50"], time.time())
    tls = _user_tls(tmp_path, cert, key,
                    f"\n  ca_file: {_write(tmp_path / 'ca.pem', ca[0])}\n  names: [cache.example]")
    cfg = configmod.load(_config(tmp_path, tls, listen="192.168.56.50"))
    assert cfg.tls.mode == configmod.USER_CERT
    assert str(tmp_path / "c.pem") in dict(cfg.inputs)  # a changed certificate is applied again
    assert secure.client_ca(cfg.tls) == ca[0]
    served = secure.server_tls(cfg.tls, [])
    assert served.server_name == "cache.example"  # the probe checks a name the certificate has


def test_a_mismatched_pair_is_an_error_at_its_key(tmp_path, ca):
    cert, _ = tlsca.issue_server(*ca, ["cache.example"], time.time())
    _, other_key = tlsca.issue_server(*ca, ["cache.example"], time.time())
    tls = _user_tls(tmp_path, cert, other_key)
    problems = _problems(_config(tmp_path, tls))
    assert len(problems) == 1 and problems[0].startswith("tls.key_file: ")
    assert "is not the key of" in problems[0] and "PRIVATE" not in problems[0]


def test_an_unreadable_certificate_and_key_are_errors_at_their_keys(tmp_path):
    tls = f"tls:\n  cert_file: {_write(tmp_path / 'c.pem', 'junk')}\n  key_file: missing.pem"
    problems = _problems(_config(tmp_path, tls))
    assert problems[0].startswith("tls.cert_file: ") and "holds no PEM certificate" in problems[0]
    assert problems[1].startswith("tls.key_file: ") and "does not exist" in problems[1]


def test_an_expired_certificate_or_one_not_covering_the_address_is_refused_with_its_line(tmp_path):
    old_ca = tlsca.make_ca(time.time() - 3000 * DAY)
    cert, key = tlsca.issue_server(*old_ca, ["old.example"], time.time() - 3000 * DAY)
    tls = _user_tls(tmp_path, cert, key, "\n  names: [cache.example]")
    path = _config(tmp_path, tls, listen="192.168.56.50")
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(path)
    texts = [str(p) for p in err.value.problems]
    assert any(t.startswith(f"{path}:4: tls.cert_file: ") and "expired on" in t for t in texts)
    assert any("does not cover cache.example, 192.168.56.50" in t for t in texts)


@pytest.mark.parametrize(("tls", "says"), [
    ("tls: bogus", "tls: 'bogus' is not allowed; use one of: auto, off"),
    ("tls: {cert_file: c.pem}", "tls.key_file: missing"),
    ("tls: {ca_file: ca.pem}", "tls.ca_file: goes with cert_file"),
    ("auth: {users: {alice: {bcrypt: nothash}}}", "auth: needs tls"),
])
def test_bad_tls_and_auth_settings_name_their_key(tmp_path, tls, says):
    assert any(p.startswith(says) for p in _problems(_config(tmp_path, tls)))


def test_a_config_without_tls_stays_plain_http_and_tls_auto_keeps_files_beside_it(tmp_path):
    assert configmod.load(_config(tmp_path, "")).tls is None
    assert configmod.load(_config(tmp_path, "tls: off")).tls is None
    auto = configmod.load(_config(tmp_path, "tls: auto")).tls
    assert (auto.mode, auto.directory) == ("auto", str(tmp_path / "tls"))
