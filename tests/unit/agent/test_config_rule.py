"""The validation rule: a config that passes `check` runs exactly the mirrors it names, as written.

One test per way a config used to slip past it (issue #14), then the rule itself over
generated configs.
"""

import logging
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_cache import config, render

from tests.unit.agent.configfiles import problems, write


def test_a_port_written_as_a_float_is_refused_not_dropped(tmp_path):
    found = problems(tmp_path, "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 5001.0}\n")
    assert found == ["2: mirrors.a.port: must be a whole number, not 5001.0"]


@pytest.mark.parametrize("key", ["debug_port", "metrics_port", "reconnect_interval"])
def test_every_integer_key_refuses_a_float(tmp_path, key):
    where = f"  a: {{upstream: 'https://ghcr.io', port: 5000, {key}: 30.0}}\n"
    text = f"mirrors:\n{where}" if key == "debug_port" else \
        f"{key}: 30.0\nmirrors:\n  a: {{upstream: 'https://ghcr.io', port: 5000}}\n"
    assert any(f"{key}: must be a whole number, not 30.0" in p for p in problems(tmp_path, text))


def test_a_config_file_that_does_not_exist_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "confg.yml")
    with pytest.raises(config.ConfigError) as caught:
        config.load(missing)
    assert str(caught.value).startswith(f"{missing}:1: (file): does not exist")
    assert "--config-if-exists" in str(caught.value)


@pytest.mark.parametrize("url", ["https://docker.io", "https://hub.docker.com", "https://www.docker.io/"])
def test_docker_hubs_website_names_are_refused_as_upstream_pointing_at_registry_1(tmp_path, url):
    found = problems(tmp_path, f"mirrors:\n  hub: {{upstream: '{url}', port: 5000}}\n")
    assert found == [f"2: mirrors.hub.upstream: '{url}' is Docker Hub's name, not its registry "
                     "endpoint; use https://registry-1.docker.io"]


def test_the_seed_formats_remoteurl_refuses_docker_io_too(tmp_path):
    found = problems(tmp_path, """\
        version: 0.1
        storage: {filesystem: {rootdirectory: cache}}
        http: {addr: ":5000"}
        proxy: {remoteurl: "https://docker.io"}
        """)
    assert found == ["4: proxy.remoteurl: 'https://docker.io' is Docker Hub's name, not its "
                     "registry endpoint; use https://registry-1.docker.io"]


def test_a_mirror_whose_default_debug_port_is_another_mirrors_port_runs_without_a_debug_port(tmp_path):
    # b's default debug port (5000 + 10000) is a's port: nothing to complain about, b just has none
    cfg = config.load(write(tmp_path, """\
        storage: cache
        mirrors:
          a: {upstream: "https://ghcr.io", port: 15000}
          b: {upstream: "https://quay.io", port: 5000}
        """))
    assert [(m.name, m.port, m.debug_port) for m in cfg.mirrors] == [("a", 15000, 25000), ("b", 5000, None)]
    readonly = render.render(cfg)["b"].configs["readonly.yml"]
    assert "debug" not in yaml.safe_load(readonly)["http"]


def test_a_clash_with_an_explicit_debug_port_names_the_key_that_holds_it(tmp_path):
    found = problems(tmp_path, """\
        mirrors:
          a: {upstream: "https://ghcr.io", port: 5000, debug_port: 5001}
          b: {upstream: "https://quay.io", port: 5001}
        """)
    assert found == ["3: mirrors.b.port: port 5001 is already used by mirrors.a.debug_port; "
                     "give each mirror its own port"]


def test_an_unclosed_quote_is_reported_on_its_own_line(tmp_path):
    found = problems(tmp_path, """\
        mirrors:
          a:
            upstream: "https://ghcr.io
            port: 5000
          b:
            upstream: https://quay.io
            port: 5001
        """)
    assert found == ["3: (top level): YAML syntax error: a quote opened on this line is never closed; "
                     "close it"]


@pytest.mark.parametrize("port", [55536, 60000, 65535])
def test_a_mirror_port_above_55535_needs_no_debug_port(tmp_path, port):
    cfg = config.load(write(tmp_path, "storage: cache\nmirrors:\n"
                                      f"  a: {{upstream: 'https://ghcr.io', port: {port}}}\n"))
    assert [(m.port, m.debug_port) for m in cfg.mirrors] == [(port, None)]


def test_a_password_file_others_can_read_gets_a_warning_naming_it_and_the_chmod(tmp_path, caplog):
    (tmp_path / "secrets").mkdir()
    token = tmp_path / "secrets" / "hub.token"
    token.write_text("dckr_pat_secret\n")
    os.chmod(token, 0o644)
    path = write(tmp_path, """\
        storage: cache
        mirrors:
          hub:
            upstream: https://registry-1.docker.io
            port: 5000
            username: a
            password_file: secrets/hub.token
        """)
    with caplog.at_level(logging.WARNING):
        cfg = config.load(path)
    assert [str(w) for w in cfg.warnings] == [
        f"{path}:7: mirrors.hub.password_file: {token} can be read by its group or others (mode 0644) "
        "though it holds a secret; run `chmod 600 secrets/hub.token` in the folder of config.yml"
    ]
    assert str(cfg.warnings[0]) in caplog.text
    assert "dckr_pat_secret" not in caplog.text


def test_a_private_password_file_gets_no_warning(tmp_path):
    token = tmp_path / "hub.token"
    token.write_text("dckr_pat_secret\n")
    os.chmod(token, 0o600)
    cfg = config.load(write(tmp_path, """\
        storage: cache
        mirrors:
          hub: {upstream: "https://registry-1.docker.io", port: 5000, username: a, password_file: hub.token}
        """))
    assert cfg.warnings == ()


def test_a_plain_distribution_config_without_proxy_gets_one_error_saying_what_it_is(tmp_path):
    found = problems(tmp_path, """\
        version: 0.1
        storage:
          filesystem:
            rootdirectory: /var/lib/registry
        http:
          addr: :5000
        """)
    assert len(found) == 1
    assert found[0].startswith("1: version: this is a plain Distribution registry config without "
                               "a 'proxy:' section")
    assert "proxy: {remoteurl: https://registry-1.docker.io}" in found[0]


def test_a_mirror_on_the_default_metrics_port_is_told_to_move_metrics_port(tmp_path):
    found = problems(tmp_path, "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 9110}\n")
    assert found == ["2: mirrors.a.port: port 9110 is already used by the metrics endpoint "
                     "(metrics_port, default 9110); set metrics_port to a port no mirror uses"]


def test_metrics_port_moves_the_endpoint_and_clashes_name_it(tmp_path):
    cfg = config.load(write(tmp_path, "storage: cache\nmetrics_port: 9200\n"
                                      "mirrors:\n  a: {upstream: 'https://ghcr.io', port: 9110}\n"))
    assert cfg.metrics_port == 9200
    found = problems(tmp_path, "metrics_port: 5000\nmirrors:\n"
                               "  a: {upstream: 'https://ghcr.io', port: 5000}\n")
    assert found == ["3: mirrors.a.port: port 5000 is already used by metrics_port; "
                     "set metrics_port to a port no mirror uses"]


@pytest.mark.parametrize("key", ["true", "5000", "null", "no"])
def test_a_mirror_is_named_as_written_even_when_yaml_reads_its_name_as_another_type(tmp_path, key):
    cfg = config.load(write(tmp_path, "storage: cache\nmirrors:\n"
                                      f"  {key}: {{upstream: 'https://ghcr.io', port: 5000}}\n"))
    assert [m.name for m in cfg.mirrors] == [key]  # not "True", "None" or "False"


def test_a_mirror_name_yaml_reads_as_a_float_is_refused_for_its_dot(tmp_path):
    found = problems(tmp_path, "mirrors:\n  1.5: {upstream: 'https://ghcr.io', port: 5000}\n")
    assert found == ["2: mirrors.1.5: a mirror name must be 1-32 lower-case letters, digits or "
                     "dashes (it names a systemd unit and a cache folder), e.g. 'docker-hub'"]


# -- the rule, over generated configs ---------------------------------------------------------

NAMES = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,8}\Z")
GOOD_PORTS = st.one_of(st.integers(min_value=1, max_value=65535), st.sampled_from([5000, 9110, 15000, 55536]))
ODD_PORTS = st.one_of(
    st.sampled_from([-1, 0, 65536, 70000]),
    # YAML that reads as something else than the integer it looks like
    st.sampled_from(["5001.0", "'5002'", "true", "0x1389", "1_000", "5e3", "~", "05000", "+5000", "83:20"]),
)
# mostly good values, so that many generated configs pass and the rule is put to the test
PORTS = st.one_of(GOOD_PORTS, GOOD_PORTS, GOOD_PORTS, ODD_PORTS).map(str)
UPSTREAMS = st.one_of(
    st.sampled_from(["https://registry-1.docker.io", "https://ghcr.io", "http://127.0.0.1:9", "https://quay.io/"]),
    st.sampled_from(["https://docker.io", "ghcr.io", "https://ghcr.io/v2"]),
)
MIRROR = st.fixed_dictionaries(
    {"upstream": UPSTREAMS, "port": PORTS},
    optional={"debug_port": PORTS},
)
CONFIGS = st.fixed_dictionaries(
    {"mirrors": st.lists(st.tuples(NAMES, MIRROR), min_size=1, max_size=4)},
    optional={"metrics_port": PORTS},
)


def _text(generated) -> str:
    lines = ["storage: cache"]
    if "metrics_port" in generated:
        lines.append(f"metrics_port: {generated['metrics_port']}")
    lines.append("mirrors:")
    for name, spec in generated["mirrors"]:
        lines.append(f"  {name}:")
        lines += [f"    {key}: {value}" for key, value in spec.items()]
    return "\n".join(lines) + "\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(generated=CONFIGS)
def test_a_config_that_passes_check_renders_exactly_its_mirrors_with_the_ports_as_written(
    tmp_path, generated
):
    text = _text(generated)
    try:
        cfg = config.parse(text, "config.yml", base_dir=str(tmp_path), check_storage=False)
    except config.ConfigError:
        return  # refused: nothing runs, which the rule allows
    rendered = render.render(cfg)
    assert sorted(rendered) == sorted(name for name, _ in generated["mirrors"])
    for name, spec in generated["mirrors"]:
        record = rendered[name].record
        # as written: plain decimal digits, and the very number they spell
        assert re.fullmatch(r"[1-9][0-9]*", spec["port"]) and record.port == int(spec["port"]), text
        proxy = yaml.safe_load(rendered[name].configs["proxy.yml"])
        assert proxy["http"]["addr"] == f"0.0.0.0:{spec['port']}"
        if "debug_port" in spec:
            assert proxy["http"]["debug"]["addr"] == f"127.0.0.1:{spec['debug_port']}", text
    taken = [m.port for m in cfg.mirrors] + [m.debug_port for m in cfg.mirrors if m.debug_port]
    taken.append(cfg.metrics_port)
    assert len(taken) == len(set(taken)), text


@pytest.mark.parametrize(
    ("written", "read"), [("05000", 2560), ("0x1389", 5001), ("83:20", 5000), ("1_000", 1000)]
)
def test_a_port_yaml_reads_as_another_number_is_refused(tmp_path, written, read):
    found = problems(tmp_path, f"mirrors:\n  a:\n    upstream: https://ghcr.io\n    port: {written}\n")
    assert found == [f"4: mirrors.a.port: '{written}' reads as the number {read}; write a number as "
                     "plain decimal digits"]
