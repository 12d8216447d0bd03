"""gc and warm on a mirror with TLS and client login: the relay's probe, and warm's own login."""

import bcrypt
import pytest
from registry_cache import config as configmod
from registry_cache import net, paths, render, secure
from registry_cache.record import MirrorRecord
from registry_cache.warm import Warmer


def _record(**changes):
    values = dict(name="hub", upstream="https://x.io", listen="192.168.56.50", port=5000, storage="/d")
    values.update(changes)
    return MirrorRecord(**values, directory="/m/hub")


def test_the_registry_behind_the_relay_is_probed_over_plain_http_without_tls():
    assert _record().loopback_endpoint(4000) == net.Endpoint("http://127.0.0.1:4000")


@pytest.mark.parametrize("name, checked", [("127.0.0.1", None), ("cache.example", "cache.example")])
def test_the_registry_behind_the_relay_is_probed_over_https_with_the_mirrors_ca(name, checked):
    endpoint = _record(tls=True, tls_server_name=name).loopback_endpoint(4000)
    assert endpoint == net.Endpoint("https://127.0.0.1:4000", "/m/hub/ca.crt", checked)


def _auth_config(tmp_path, user="alice"):
    (tmp_path / "alice.pw").write_text("pa55\n")
    (tmp_path / "config.yml").write_text(
        f"storage: {tmp_path / 'data'}\ntls: auto\nauth:\n  users:\n    {user}: {{password_file: alice.pw}}\n"
        "mirrors:\n  hub: {upstream: https://registry-1.docker.io, port: 5000,\n"
        "        warm: [library/alpine:3.19]}\n")
    return str(tmp_path / "config.yml")


def test_with_client_login_warm_gets_a_login_of_its_own_that_the_next_apply_keeps(tmp_path):
    cfg = configmod.load(_auth_config(tmp_path))
    root = str(tmp_path / "root")
    cfg, security = secure.prepare(cfg, root, None, {})
    first = render.render(cfg, security)["hub"]
    login = security.warm_login
    assert login.username == secure.WARM_USER and len(login.password) >= 24
    assert paths.WARM_LOGIN in first.configs  # written 0600 with the configs
    lines = dict(line.split(":", 1) for line in first.configs[paths.HTPASSWD].splitlines())
    assert set(lines) == {"alice", secure.WARM_USER}
    assert bcrypt.checkpw(login.password.encode(), lines[secure.WARM_USER].encode())
    assert login.password not in repr(security) and login.password not in first.record.text()
    previous = {"hub": dict(first.configs)}
    _cfg, again = secure.prepare(configmod.load(_auth_config(tmp_path)), root, None, previous)
    assert again.warm_login == login
    assert again.htpasswd == security.htpasswd  # same file: no mirror restarts for nothing


def test_warm_pulls_over_https_with_the_mirrors_ca_and_its_login(tmp_path):
    (tmp_path / paths.WARM_LOGIN).write_text('{"username": "registry-cache-warm", "password": "s3cret"}')
    record = MirrorRecord("hub", "https://x.io", "0.0.0.0", 5000, "/d", tls=True,
                          tls_server_name="127.0.0.1", client_auth=True, directory=str(tmp_path))
    warmer = Warmer(record)
    assert warmer.base == "https://127.0.0.1:5000"
    assert warmer.session.auth == ("registry-cache-warm", "s3cret")


def test_the_warm_login_name_is_refused_as_a_user_of_the_config(tmp_path):
    with pytest.raises(configmod.ConfigError) as err:
        configmod.load(_auth_config(tmp_path, user=secure.WARM_USER))
    assert "the agent's own login for `registry-cache warm`" in str(err.value)
