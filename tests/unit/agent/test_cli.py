"""The `registry-cache` command line: global options anywhere, config flags, exit codes, logs."""

from __future__ import annotations

import json

import pytest
from registry_cache import cli, journal, render, status, written
from registry_cache import config as configmod

GOOD = "storage: cache\nmirrors:\n  hub: {upstream: 'https://ghcr.io', port: 5000}\n"
BAD = "mirrors:\n  hub: {upstream: 'https://ghcr.io', prot: 5000}\n"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "config.yml").write_text(GOOD)
    return tmp_path


def rendered_root(tmp_path, text=GOOD):
    """A root holding the mirrors `apply` would render from `text`."""
    path = tmp_path / "applied.yml"
    path.write_text(text)
    root = tmp_path / "root"
    for mirror in render.render(configmod.load(str(path), check_storage=False)).values():
        written.write_rendered(str(root), mirror, owner=None)
    return root


@pytest.mark.parametrize("where", ["before", "after"])
def test_root_and_verbose_work_before_and_after_the_command(tmp_path, monkeypatch, where):
    root = rendered_root(tmp_path)
    seen = {}
    monkeypatch.setattr(status, "collect", lambda r, rate_limit: seen.setdefault("root", r) and [])
    options = ["--root", str(root), "-v"]
    argv = [*options, "status"] if where == "before" else ["status", *options]
    args = cli._parser().parse_args(argv)
    assert (args.root, args.verbose) == (str(root), True)
    cli.main(argv)
    assert seen["root"] == str(root)


def test_global_options_keep_their_defaults_when_given_nowhere():
    args = cli._parser().parse_args(["status"])
    assert (args.root, args.verbose) == (None, False)


def test_an_invalid_config_exits_3_and_a_usage_error_2(project, capsys):
    (project / "config.yml").write_text(BAD)
    assert cli.main(["check", "--config", str(project / "config.yml")]) == cli.EXIT_INVALID == 3
    with pytest.raises(SystemExit) as usage:
        cli.main(["check", "--no-such-flag"])
    assert usage.value.code == cli.EXIT_USAGE == 2


def test_check_of_a_bad_config_says_nothing_about_running_mirrors(project, capsys):
    (project / "config.yml").write_text(BAD)
    cli.main(["check", "--config", str(project / "config.yml")])
    err = capsys.readouterr().err
    assert err.rstrip().endswith("2 problem(s) found.")
    assert "running mirrors" not in err and "nothing was changed" not in err


def test_apply_of_a_bad_config_says_the_running_mirrors_keep_serving(project, capsys):
    (project / "config.yml").write_text(BAD)
    code = cli.main(["--root", str(project / "root"), "apply", "--config", str(project / "config.yml")])
    assert code == cli.EXIT_INVALID
    assert "nothing was changed: running mirrors keep serving" in capsys.readouterr().err


def test_config_naming_a_missing_file_fails_naming_it(tmp_path, capsys):
    missing = tmp_path / "confg.yml"
    assert cli.main(["check", "--config", str(missing)]) == cli.EXIT_INVALID
    assert f"{missing}:1: (file): does not exist" in capsys.readouterr().err


def test_config_if_exists_falls_back_to_the_embedded_default_and_says_so(tmp_path, capsys):
    missing = tmp_path / "config.yml"
    assert cli.main(["check", "--config-if-exists", str(missing)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"{missing} does not exist: checking the embedded default" in out
    assert "dockerhub (port 5000 -> https://registry-1.docker.io)" in out


def test_config_if_exists_reads_the_file_when_it_is_there(project, capsys):
    assert cli.main(["check", "--config-if-exists", str(project / "config.yml")]) == cli.EXIT_OK
    assert "hub (port 5000 -> https://ghcr.io)" in capsys.readouterr().out


def test_config_and_config_if_exists_are_exclusive():
    with pytest.raises(SystemExit) as usage:
        cli._parser().parse_args(["check", "--config", "a.yml", "--config-if-exists", "b.yml"])
    assert usage.value.code == cli.EXIT_USAGE


def test_status_with_config_reports_the_mirrors_that_config_names(project, monkeypatch, capsys):
    monkeypatch.setattr("registry_cache.net.serving", lambda url: False)
    code = cli.main(["--root", str(project / "root"), "status", "--json", "--no-rate-limit",
                     "--config", str(project / "config.yml")])
    assert code == cli.EXIT_FAILURE  # named, but not running
    (mirror,) = json.loads(capsys.readouterr().out)
    # its cache folder was never created: the config's mirror, not anything applied elsewhere
    assert (mirror["name"], mirror["port"], mirror["healthy"]) == ("hub", 5000, False)
    assert mirror["storage"] == str(project / "cache" / "hub")


def test_status_with_an_invalid_config_exits_3(project):
    (project / "config.yml").write_text(BAD)
    assert cli.main(["status", "--config", str(project / "config.yml")]) == cli.EXIT_INVALID


def test_help_lists_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for code in ("0  success", "1  failure", "2  usage error", "3  invalid config"):
        assert code in out


def test_the_readme_documents_the_same_exit_codes():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in (cli.EXIT_OK, cli.EXIT_FAILURE, cli.EXIT_USAGE, cli.EXIT_INVALID):
        assert f"| {code} |" in section


# -- logs -------------------------------------------------------------------------------------


def test_logs_of_one_mirror_runs_journalctl_for_its_unit(tmp_path, monkeypatch):
    root = rendered_root(tmp_path)
    monkeypatch.setattr(journal, "available", lambda: True)
    ran = []
    monkeypatch.setattr("os.execvp", lambda file, argv: ran.append(argv))
    cli.main(["--root", str(root), "logs", "hub", "-f"])
    assert ran == [["journalctl", "--output=short-iso", "--lines=200",
                    "--unit", "registry-cache-mirror@hub.service", "--follow"]]


def test_logs_without_a_mirror_shows_every_mirror_and_the_agents_units():
    argv = journal.command(None, lines=50)
    assert argv == ["journalctl", "--output=short-iso", "--lines=50",
                    "--unit", "registry-cache-mirror@*.service",
                    "--unit", "registry-cache-metrics.service",
                    "--unit", "registry-cache-boot.service", "--no-pager"]


def test_logs_of_a_mirror_that_is_not_applied_names_the_applied_ones(tmp_path, monkeypatch, capsys):
    root = rendered_root(tmp_path)
    monkeypatch.setattr(journal, "available", lambda: True)
    monkeypatch.setattr("os.execvp", lambda file, argv: pytest.fail("must not run journalctl"))
    assert cli.main(["--root", str(root), "logs", "ghcr"]) == cli.EXIT_USAGE
    assert "no mirror 'ghcr' is applied (applied: hub)" in capsys.readouterr().err


def test_logs_without_journald_says_so_and_where_the_logs_are(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(journal, "JOURNAL_SOCKETS", str(tmp_path / "no-journal"))
    assert cli.main(["--root", str(tmp_path), "logs"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "journald is not running here" in err and "registry-cache serve" in err
