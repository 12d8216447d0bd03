"""The README says what the project really does: its commands parse, its config table is the schema."""

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from registry_cache import cli
from registry_cache import config as configmod

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
# `registry-cache SUBCOMMAND ...` up to the end of its code span, quoted string or line
COMMAND = re.compile(r"registry-cache ((?:check|apply|serve|status|logs|metrics|client-config)\b[^`\"\n]*)")


def config_reference(schema):
    """The README's config.yml table, as it must read for this schema."""

    def row(key, spec, required):
        # a key with several forms (tls: auto, off or a mapping) names them in its title
        kind = spec.get("type") or spec.get("title") or "one of " + ", ".join(spec["enum"])
        kind = " or ".join(kind) if isinstance(kind, list) else kind
        default = "required" if required else f"`{spec['default']}`" if "default" in spec else "—"
        return f"| `{key}` | {kind} | {default} | {spec.get('description', '')} |"

    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    rows += [row(k, v, k in schema.get("required", [])) for k, v in schema["properties"].items()]
    mirror = schema["definitions"]["mirror"]
    rows += [row(f"mirrors.NAME.{k}", v, k in mirror["required"]) for k, v in mirror["properties"].items()]
    return "\n".join(rows)


def test_readme_opens_with_a_quickstart_of_exactly_build_box_and_test():
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quickstart, re.S).group(1)
    assert block.splitlines() == ["./invoke build-box", "./invoke test"]
    first_section = re.search(r"^## (.+)$", README, re.M).group(1)
    assert first_section == "Quickstart"


def test_ci_runs_the_readme_test_command():
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec ./invoke test")


def test_readme_config_table_matches_the_shipped_schema():
    expected = config_reference(configmod.load_schema())
    assert expected in README, "put this table between the config-reference markers:\n" + expected


def test_every_invoke_task_the_readme_names_exists():
    from tasks import ns

    named = set(re.findall(r"\./invoke ([a-z][a-z-]*)", README))
    assert {"build-box", "test", "publish"} <= named
    assert named <= set(ns.task_names), named - set(ns.task_names)


def _commands():
    """registry-cache commands in the README's shell blocks and in inline code that has options."""
    places = re.findall(r"```sh\n(.*?)```", README, re.S)
    places += [span for span in re.findall(r"`([^`\n]+)`", README) if " --" in span]
    return sorted({command.strip() for place in places for command in COMMAND.findall(place)})


COMMANDS = _commands()


def test_readme_shows_each_client_config_format_and_the_check_command():
    shown = " ".join(COMMANDS)
    for fmt in ("docker", "containerd", "k3s", "podman"):
        assert f"--format {fmt}" in shown
    assert "check --config examples/multi-upstream.yml" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_registry_cache_command_in_the_readme_parses(command):
    argv = shlex.split(command)
    args = cli._parser().parse_args(argv)
    assert args.func is not None
    config = getattr(args, "config", None)
    if config and config.startswith("examples/"):
        assert (ROOT / config).is_file(), f"the README names {config}, which does not exist"


def test_every_example_the_readme_names_exists():
    for name in set(re.findall(r"examples/[\w.-]+\.yml", README)):
        assert (ROOT / name).is_file(), name


def test_readme_json_example_is_what_client_config_prints_for_the_default():
    block = README.split("### Docker\n", 1)[1]
    shown = json.loads(re.search(r"```json\n(.*?)```", block, re.S).group(1))
    golden = ROOT / "tests" / "unit" / "golden" / "client" / "dockerhub" / "docker.txt"
    assert shown == json.loads(golden.read_text())


@pytest.mark.parametrize(
    ("heading", "fence", "fmt", "parse"),
    [
        ("### containerd and Kubernetes\n", "toml", "containerd", tomllib.loads),
        ("### k3s\n", "yaml", "k3s", yaml.safe_load),
        ("### Podman, Buildah, Skopeo, CRI-O\n", "toml", "podman", tomllib.loads),
    ],
)
def test_readme_client_snippet_means_what_client_config_prints_for_the_default(heading, fence, fmt, parse):
    block = README.split(heading, 1)[1]
    shown = parse(re.search(rf"```{fence}\n(.*?)```", block, re.S).group(1))
    golden = ROOT / "tests" / "unit" / "golden" / "client" / "dockerhub" / f"{fmt}.txt"
    # one of the files client-config prints (containerd's: one per registry and `_default`)
    files = re.split(r"\n(?=# /etc/)", golden.read_text())
    assert shown in [parse(text) for text in files]


def test_readme_first_hour_goes_from_build_box_through_the_drop_in_to_status_and_a_pull():
    section = README.split("### The first hour", 1)[1].split("\n## ", 1)[0]
    steps = re.search(r"```sh\n(.*?)```", section, re.S).group(1).splitlines()
    commands = [line.split("  #")[0].strip() for line in steps]
    assert commands[0] == "sudo ./invoke build-box"
    assert commands[1].startswith("cp Vagrantfile ")
    assert re.fullmatch(r"REGISTRY_CACHE_BOX_URL=file://\S+/dist/catalog/registry-cache\.json "
                        r"vagrant up", commands[3]), commands[3]
    assert commands[4] == 'vagrant ssh -c "registry-cache status"'
    assert "192.168.56.50:5000/library/alpine" in commands[5]


def test_readme_gives_a_team_the_gitignore_lines_for_the_drop_in():
    assert "```\n/data/\n/secrets/\n.vagrant/\n```" in README
