"""config.yml validation: every problem reported at once, as FILE:LINE: key.path: message."""

import pytest
from registry_cache import config

from tests.unit.agent.configfiles import problems, write

GOOD = """\
listen: 0.0.0.0
storage: data
mirrors:
  dockerhub:
    upstream: https://registry-1.docker.io
    port: 5000
  ghcr:
    upstream: https://ghcr.io
    port: 5001
"""


def test_valid_config_gives_one_mirror_per_upstream_with_storage_below_the_root(tmp_path):
    cfg = config.load(write(tmp_path, GOOD))
    assert [(m.name, m.port, m.upstream) for m in cfg.mirrors] == [
        ("dockerhub", 5000, "https://registry-1.docker.io"),
        ("ghcr", 5001, "https://ghcr.io"),
    ]
    assert cfg.storage == str(tmp_path / "data")
    assert cfg.mirror("ghcr").storage == str(tmp_path / "data" / "ghcr")
    assert cfg.mirror("dockerhub").debug_port == 15000
    assert cfg.mirror("dockerhub").is_docker_hub
    assert not cfg.mirror("ghcr").is_docker_hub


def test_missing_config_file_when_allowed_gives_the_embedded_default_docker_hub_mirror(tmp_path):
    cfg = config.load(str(tmp_path / "absent.yml"), default_if_missing=True)
    assert cfg.source == config.EMBEDDED_DEFAULT
    assert [(m.name, m.port, m.upstream) for m in cfg.mirrors] == [
        ("dockerhub", 5000, "https://registry-1.docker.io")
    ]


def test_password_file_is_read_relative_to_the_config_file(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hub.token").write_text("dckr_pat_123\n")
    cfg = config.load(write(tmp_path, """\
        mirrors:
          hub:
            upstream: https://registry-1.docker.io
            port: 5000
            username: alice
            password_file: secrets/hub.token
        """))
    assert cfg.mirror("hub").username == "alice"
    assert cfg.mirror("hub").password == "dckr_pat_123"


def test_the_password_never_shows_in_the_models_repr(tmp_path):
    cfg = config.load(write(tmp_path, """\
        mirrors:
          hub: {upstream: "https://registry-1.docker.io", port: 5000, username: a, password: hunter2}
        """))
    assert "hunter2" not in repr(cfg)


BAD_CONFIGS = [
    pytest.param(
        "mirrors:\n  hub:\n    upstream: https://ghcr.io\n   port: 5000\n",
        ["4: (top level): YAML syntax error: while parsing a block mapping expected <block end>, "
         "but found '<block mapping start>'; check the indentation and quoting"],
        id="yaml-syntax",
    ),
    pytest.param(
        "mirrors:\n  hub:\n    upstream: https://ghcr.io\n    port: 5000\n    port: 5001\n",
        ["5: mirrors.hub.port: duplicate key (first on line 4); YAML would silently keep only "
         "the last one: remove or rename one of them"],
        id="duplicate-key",
    ),
    pytest.param(
        "mirrors:\n  hub:\n    upstrem: https://ghcr.io\n    port: 5000\n",
        ["2: mirrors.hub.upstream: missing; add it. Root URL of the upstream registry, "
         "e.g. https://registry-1.docker.io, or its host alone (ghcr.io)",
         "3: mirrors.hub.upstrem: unknown key; did you mean 'upstream'?"],
        id="unknown-key-did-you-mean",
    ),
    pytest.param(
        "listen: 0.0.0.0\nmirors: {}\n",
        ["1: mirrors: missing; add it. Mirrors by name (lower-case letters, digits and dashes).",
         "2: mirors: unknown key; did you mean 'mirrors'?"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 5000}\n"
        "  b: {upstream: 'https://quay.io', port: 5000}\n",
        ["3: mirrors.b.port: port 5000 is already used by mirrors.a.port; give each mirror its own port"],
        id="two-mirrors-one-port",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 5000, debug_port: 6000}\n"
        "  b: {upstream: 'https://quay.io', port: 6000}\n",
        ["3: mirrors.b.port: port 6000 is already used by mirrors.a.debug_port; "
         "give each mirror its own port"],
        id="port-taken-by-a-debug-port",
    ),
    pytest.param(
        "mirrors:\n  b: {upstream: 'https://quay.io', port: 6000}\n"
        "  a: {upstream: 'https://ghcr.io', port: 5000, debug_port: 6000}\n",
        ["3: mirrors.a.debug_port: port 6000 is already used by mirrors.b.port; "
         "give each mirror its own port"],
        id="debug-port-taken-by-a-port",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 70000}\n",
        ["2: mirrors.a.port: 70000 is out of range; use a number from 1 to 65535"],
        id="port-out-of-range",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 0}\n",
        ["2: mirrors.a.port: 0 is out of range; use a number from 1 to 65535"],
        id="port-zero",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io', port: '5000'}\n",
        ["2: mirrors.a.port: must be a whole number, not '5000'"],
        id="port-as-string",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'ftp://ghcr.io', port: 5000}\n",
        ["2: mirrors.a.upstream: 'ftp://ghcr.io' is not an http(s) URL; use the registry root, e.g. https://ghcr.io"],
        id="upstream-not-a-url",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://ghcr.io/v2/org', port: 5000}\n",
        ["2: mirrors.a.upstream: 'https://ghcr.io/v2/org' has a path; Distribution proxies a "
         "whole registry, so give its root: https://ghcr.io"],
        id="upstream-with-path",
    ),
    pytest.param(
        "mirrors:\n  a: {upstream: 'https://bob:pw@ghcr.io', port: 5000}\n",
        ["2: mirrors.a.upstream: must not carry credentials; use username and password_file instead"],
        id="upstream-with-credentials",
    ),
    pytest.param(
        "mirrors:\n  a:\n    upstream: https://ghcr.io\n    port: 5000\n    username: bob\n"
        "    password: hunter2\n    password_file: token\n",
        ["7: mirrors.a.password_file: give either password or password_file, not both"],
        id="password-and-password-file",
    ),
    pytest.param(
        "mirrors:\n  a:\n    upstream: https://ghcr.io\n    port: 5000\n    username: bob\n"
        "    password_file: nope.token\n",
        ["6: mirrors.a.password_file: {dir}/nope.token does not exist; put the password or token "
         "in it (chmod 600), or fix the path (relative to this file)"],
        id="missing-password-file",
    ),
    pytest.param(
        "mirrors:\n  a:\n    upstream: https://ghcr.io\n    port: 5000\n    username: bob\n",
        ["5: mirrors.a.username: needs a password_file (or password) beside it"],
        id="username-without-password",
    ),
    pytest.param(
        "mirrors:\n  Docker_Hub: {upstream: 'https://registry-1.docker.io', port: 5000}\n",
        ["2: mirrors.Docker_Hub: a mirror name must be 1-32 lower-case letters, digits or dashes "
         "(it names a systemd unit and a cache folder), e.g. 'docker-hub'"],
        id="bad-mirror-name",
    ),
    pytest.param(
        "listen: localhost\nmirrors:\n  a: {upstream: 'https://ghcr.io', port: 5000}\n",
        ["1: listen: 'localhost' is not an IP address; use 0.0.0.0 (every interface) or one "
         "address of this machine such as 127.0.0.1"],
        id="listen-not-an-ip",
    ),
    pytest.param(
        "mirrors: {}\n",
        ["1: mirrors: defines no mirror; add one, e.g. 'dockerhub: {upstream: "
         "https://registry-1.docker.io, port: 5000}'"],
        id="no-mirror",
    ),
    pytest.param(
        "",
        ["1: (top level): the file is empty; it needs a 'mirrors:' section (see examples/)"],
        id="empty-file",
    ),
    pytest.param(
        "log_level: loud\nreconnect_interval: 0\nmirrors:\n  a: {upstream: 'https://ghcr.io', port: 5000}\n",
        ["1: log_level: 'loud' is not allowed; use one of: error, warn, info, debug",
         "2: reconnect_interval: 0 is out of range; use a number from 1 to 3600"],
        id="enum-and-minimum",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_reported_with_file_line_and_key_path(tmp_path, text, expected):
    expected = [e.replace("{dir}", str(tmp_path)) for e in expected]
    assert problems(tmp_path, text) == expected


def test_every_problem_in_a_file_is_reported_at_once_in_line_order(tmp_path):
    found = problems(tmp_path, """\
        listen: nowhere
        mirrors:
          a:
            upstream: ftp://x
            port: 99999
          a:
            upstream: https://ghcr.io
            port: 5001
        """)
    assert [p.split(":")[0] for p in found] == ["1", "4", "5", "6"]


def test_a_secret_value_is_never_echoed_in_an_error(tmp_path):
    found = problems(tmp_path, """\
        mirrors:
          a:
            upstream: https://ghcr.io
            port: 5000
            username: bob
            password: [hunter2]
        """)
    assert found == ["6: mirrors.a.password: must be a string"]
    assert not any("hunter2" in p for p in found)


def test_an_empty_password_file_is_refused(tmp_path):
    (tmp_path / "empty.token").write_text("\n")
    found = problems(tmp_path, """\
        mirrors:
          a: {upstream: "https://ghcr.io", port: 5000, username: bob, password_file: empty.token}
        """)
    assert found == [f"2: mirrors.a.password_file: {tmp_path}/empty.token is empty; "
                     "put the password or token in it"]


def test_a_storage_path_that_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    found = problems(tmp_path, """\
        storage: afile/cache
        mirrors:
          a: {upstream: "https://ghcr.io", port: 5000}
        """)
    assert found == [f"1: storage: {tmp_path}/afile is not a directory, so "
                     f"{tmp_path}/afile/cache cannot be created; pick another path"]


def test_seed_distribution_config_runs_as_one_mirror_as_written(tmp_path):
    cfg = config.load(write(tmp_path, """\
        version: 0.1
        storage:
          filesystem:
            rootdirectory: /var/lib/registry
        http:
          addr: :5000
        proxy:
          remoteurl: https://registry-1.docker.io
        """))
    (mirror,) = cfg.mirrors
    assert (mirror.name, mirror.port, mirror.upstream, mirror.storage) == (
        "default", 5000, "https://registry-1.docker.io", "/var/lib/registry")
    assert mirror.raw["proxy"] == {"remoteurl": "https://registry-1.docker.io"}


def test_seed_config_without_remoteurl_names_the_missing_key(tmp_path):
    found = problems(tmp_path, """\
        version: 0.1
        storage: {filesystem: {rootdirectory: /var/lib/registry}}
        http: {addr: ":5000"}
        proxy: {}
        """)
    assert found == ["4: proxy.remoteurl: missing; set it to the upstream registry's root URL"]


def test_the_shipped_schema_is_a_valid_json_schema():
    import jsonschema

    jsonschema.Draft7Validator.check_schema(config.load_schema())
