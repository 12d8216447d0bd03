"""`apply` with nothing changed takes the no-op fast path, whatever the config format.

The fast path validates nothing, renders nothing and restarts nothing: it only checks that
the files the last apply read, the cache owner and the rendered files are as they were.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from registry_cache import apply as applymod
from registry_cache import config as configmod
from registry_cache import converge as convergemod
from registry_cache import paths, systemd, written

FORMATS = {
    "registry-cache": (
        "listen: 127.0.0.1\nstorage: cache\nmirrors:\n"
        "  hub: {upstream: 'http://127.0.0.1:9', port: 5000, username: alice, password_file: hub.token}\n"
        "  ghcr: {upstream: 'http://127.0.0.1:8', port: 5001}\n"
    ),
    # a plain Distribution config (version: 0.1 and proxy:), run as the mirror "default"
    "seed": (
        "version: 0.1\nstorage: {filesystem: {rootdirectory: cache/hub}}\n"
        "http: {addr: '127.0.0.1:5000'}\n"
        "proxy: {remoteurl: 'http://127.0.0.1:9', username: alice, password: s3cret}\n"
    ),
}


class Tripwire:
    """Stands in for a step the fast path must not take; counts the calls."""

    def __init__(self, real):
        self.real = real
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture
def agent(monkeypatch, tmp_path):
    """systemd as in the box (every mirror active), and a tripwire on each step of a full apply."""
    systemctl_calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(systemd, "running", lambda: True)
    monkeypatch.setattr(paths, "UNIT_DIR", str(tmp_path / "units"))
    monkeypatch.setattr(systemd, "systemctl", lambda *args: systemctl_calls.append(args))
    monkeypatch.setattr(systemd, "is_active", lambda name: True)
    monkeypatch.setattr(convergemod, "warn_about_upstreams", lambda wanted, plan, out: None)
    monkeypatch.setattr(applymod, "_wait_until_serving", lambda wanted, out: None)
    trips = {
        "validate": Tripwire(configmod.load),
        "render": Tripwire(convergemod.render),
        "write": Tripwire(written.write_rendered),
    }
    monkeypatch.setattr(configmod, "load", trips["validate"])
    monkeypatch.setattr(convergemod, "render", trips["render"])
    monkeypatch.setattr(written, "write_rendered", trips["write"])
    (tmp_path / "hub.token").write_text("dckr_pat_SECRET\n")
    return trips, systemctl_calls


def apply(tmp_path, text=None):
    config = tmp_path / "config.yml"
    if text is not None:
        config.write_text(text)
    out = io.StringIO()
    plan = applymod.apply(str(config), str(tmp_path / "root"), out)
    return plan, out.getvalue()


def calls(trips):
    return {name: trip.calls for name, trip in trips.items()}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_apply_with_nothing_changed_validates_renders_and_restarts_nothing(agent, tmp_path, fmt):
    trips, systemctl_calls = agent
    first, _ = apply(tmp_path, FORMATS[fmt])
    assert first.add and calls(trips) == {"validate": 1, "render": 1, "write": len(first.add)}
    systemctl_calls.clear()

    again, said = apply(tmp_path)

    assert calls(trips) == {"validate": 1, "render": 1, "write": len(first.add)}, "took the slow path"
    assert systemctl_calls == []
    assert (again.keep, again.changes) == (sorted(first.add), False)
    assert said.splitlines() == [f"keep   {n}: unchanged: left running" for n in sorted(first.add)]


@pytest.mark.parametrize(("change", "updated"), [
    ("config text", ["ghcr", "hub"]),
    ("password file", ["hub"]),
    ("rendered file", ["hub"]),
    ("cache reset", []),
])
def test_any_change_of_an_input_or_the_output_renders_again(agent, tmp_path, change, updated):
    trips, _ = agent
    apply(tmp_path, FORMATS["registry-cache"])
    if change == "config text":
        (tmp_path / "config.yml").write_text(FORMATS["registry-cache"] + "log_level: debug\n")
    elif change == "password file":
        (tmp_path / "hub.token").write_text("dckr_pat_ROTATED\n")
    elif change == "rendered file":
        (tmp_path / "root" / paths.MIRRORS / "hub" / paths.PROXY_CONFIG).write_text("edited\n")
    else:
        (tmp_path / "cache" / "ghcr" / paths.STORAGE_MARKER).unlink()

    plan, _ = apply(tmp_path)

    assert trips["validate"].calls == 2
    assert plan.update == updated
    assert (tmp_path / "cache" / "ghcr" / paths.STORAGE_MARKER).exists()


def test_the_first_apply_after_an_agent_upgrade_renders_again(agent, tmp_path):
    # applied.json as an agent without input tracking wrote it
    trips, _ = agent
    apply(tmp_path, FORMATS["seed"])
    applied = tmp_path / "root" / paths.APPLIED
    old = json.loads(applied.read_text())
    applied.write_text(json.dumps({k: old[k] for k in ("source", "mirrors", "fingerprint", "rendered")}))

    apply(tmp_path)
    apply(tmp_path)

    assert trips["validate"].calls == 2  # once again after the upgrade, then the fast path


def test_another_config_file_is_never_taken_for_the_last_one(agent, tmp_path):
    trips, _ = agent
    apply(tmp_path, FORMATS["seed"])
    other = tmp_path / "other.yml"
    other.write_text(FORMATS["registry-cache"])

    plan = applymod.apply(str(other), str(tmp_path / "root"), io.StringIO())

    assert trips["validate"].calls == 2
    assert (plan.add, plan.remove) == (["ghcr", "hub"], ["default"])


def test_the_same_relative_config_name_in_another_folder_is_another_config(agent, tmp_path, monkeypatch):
    trips, _ = agent
    for folder, fmt in (("a", "seed"), ("b", "registry-cache")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "config.yml").write_text(FORMATS[fmt])
        (tmp_path / folder / "hub.token").write_text("dckr_pat_SECRET\n")
    root = str(tmp_path / "root")
    monkeypatch.chdir(tmp_path / "a")
    applymod.apply("config.yml", root, io.StringIO())
    monkeypatch.chdir(tmp_path / "b")

    plan = applymod.apply("config.yml", root, io.StringIO())

    assert trips["validate"].calls == 2
    assert (plan.add, plan.remove) == (["ghcr", "hub"], ["default"])


NO_OP_AND_MODULES = """\
import io, json, sys
from registry_cache import apply
said = io.StringIO()
apply.apply(sys.argv[1], sys.argv[2], said)
print(json.dumps({"said": said.getvalue(), "modules": sorted(sys.modules)}))
"""


@pytest.mark.allow_subprocess
def test_apply_with_nothing_changed_loads_neither_yaml_nor_the_config_reader(tmp_path):
    (tmp_path / "hub.token").write_text("dckr_pat_SECRET\n")
    (tmp_path / "config.yml").write_text(FORMATS["registry-cache"])
    argv = [sys.executable, "-c", NO_OP_AND_MODULES, str(tmp_path / "config.yml"), str(tmp_path / "root")]
    subprocess.run(argv, check=True, capture_output=True)  # the first apply renders

    again = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)

    assert again["said"].startswith("keep "), "took the slow path"
    loaded = set(again["modules"])
    assert not loaded & {"yaml", "jsonschema", "jinja2", "registry_cache.config.read",
                         "registry_cache.render"}
