"""Client login: the htpasswd file the mirrors check, and what render makes of `tls:` and `auth:`."""

import bcrypt
import yaml
from registry_cache import clientauth, paths, render, secure, tlsca
from registry_cache import config as configmod
from registry_cache.clientauth import ClientUser

HASH = bcrypt.hashpw(b"made-elsewhere", bcrypt.gensalt(4)).decode()


def test_a_password_is_hashed_with_bcrypt_and_never_written_in_clear():
    text = clientauth.htpasswd_text([ClientUser("alice", password="pa55")])
    user, hashed = text.strip().split(":", 1)
    assert user == "alice" and "pa55" not in text
    assert bcrypt.checkpw(b"pa55", hashed.encode())
    assert hashed.startswith(f"$2b${clientauth.BCRYPT_ROUNDS:02d}$")


def test_an_unchanged_password_keeps_its_hash_and_a_changed_one_gets_a_new_one():
    first = clientauth.htpasswd_text([ClientUser("alice", password="pa55")])
    assert clientauth.htpasswd_text([ClientUser("alice", password="pa55")], first) == first
    changed = clientauth.htpasswd_text([ClientUser("alice", password="other")], first)
    assert changed != first and bcrypt.checkpw(b"other", changed.strip().split(":", 1)[1].encode())


def test_a_given_bcrypt_hash_is_written_as_is():
    assert clientauth.htpasswd_text([ClientUser("ci", bcrypt_hash=HASH)]) == f"ci:{HASH}\n"


def test_passwords_never_show_in_a_repr():
    assert "pa55" not in repr(ClientUser("alice", password="pa55"))
    assert HASH not in repr(configmod.AuthSettings((ClientUser("ci", bcrypt_hash=HASH),)))


def test_auth_users_come_from_password_files_and_hashes(tmp_path):
    (tmp_path / "alice.pw").write_text("pa55\n")
    (tmp_path / "config.yml").write_text(
        f"storage: {tmp_path / 'data'}\ntls: auto\nauth:\n  users:\n    alice: {{password_file: alice.pw}}\n"
        f"    ci: {{bcrypt: '{HASH}'}}\n"
        "mirrors:\n  hub: {upstream: https://registry-1.docker.io, port: 5000}\n")
    cfg = configmod.load(str(tmp_path / "config.yml"))
    assert [(u.name, u.password, u.bcrypt_hash) for u in cfg.auth.users] == [
        ("alice", "pa55", None), ("ci", None, HASH)]
    assert str(tmp_path / "alice.pw") in dict(cfg.inputs)


def test_render_serves_tls_and_htpasswd_from_the_mirror_folder(tmp_path):
    (tmp_path / "config.yml").write_text(
        f"storage: {tmp_path / 'data'}\ntls: auto\nauth: {{users: {{ci: {{bcrypt: '{HASH}'}}}}}}\n"
        "mirrors:\n  hub: {upstream: https://registry-1.docker.io, port: 5000}\n")
    cfg = configmod.load(str(tmp_path / "config.yml"))
    ca_cert, ca_key = tlsca.make_ca(0 + 1_780_000_000)
    cert, key = tlsca.issue_server(ca_cert, ca_key, ["127.0.0.1"], 1_780_000_000)
    security = secure.Security(root="/etc/registry-cache", htpasswd=f"ci:{HASH}\n",
                               tls=tlsca.ServerTls(cert, key, ca_cert, "127.0.0.1", 123, ("h",)))
    mirror = render.render(cfg, security)["hub"]
    folder = "/etc/registry-cache/mirrors/hub"
    for name in (paths.PROXY_CONFIG, paths.READONLY_CONFIG):
        data = yaml.safe_load(mirror.configs[name])
        assert data["http"]["tls"] == {"certificate": f"{folder}/tls.crt", "key": f"{folder}/tls.key"}
        assert data["auth"] == {"htpasswd": {"realm": "registry-cache", "path": f"{folder}/htpasswd"}}
    assert mirror.configs[paths.MIRROR_TLS_KEY] == key  # written 0600 with the configs
    assert {k: v for k, v in mirror.public_files.items() if k != paths.ENDPOINT} == \
        {paths.MIRROR_TLS_CERT: cert, paths.MIRROR_CA: ca_cert}
    assert (mirror.record.tls, mirror.record.client_auth, mirror.record.tls_renew_after) == (True, True, 123)
    assert key not in mirror.record.text()


def test_render_without_tls_is_unchanged_by_security():
    cfg = configmod.load(None)
    plain = render.render(cfg)["dockerhub"]
    assert render.render(cfg, secure.Security(root="/r"))["dockerhub"].configs == plain.configs
    assert "tls" not in plain.configs[paths.PROXY_CONFIG]
