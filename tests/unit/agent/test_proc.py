"""The agent's runner words a failed command exactly as the host's runner does."""

import pytest
from registry_cache import proc

from box import run as host_run

CASES = [
    (["systemctl", "start", "registry-cache-mirror@hub.service"], 1,
     "Job failed.\nSee 'journalctl -xe' for details.\n"),
    (["systemctl", "daemon-reload"], 124, ""),
    (["docker-registry", "serve", "/etc/my config.yml"], 2, "\n".join(f"line {i}" for i in range(40))),
]


@pytest.mark.parametrize(("argv", "code", "stderr"), CASES)
def test_a_failed_command_reads_the_same_as_on_the_host(argv, code, stderr):
    assert str(proc.CommandError(argv, code, stderr)) == str(host_run.CommandError(argv, code, stderr))


def test_a_failed_command_shows_command_exit_code_and_the_end_of_stderr():
    error = proc.CommandError(["systemctl", "start", "x"], 1, "\n".join(f"line {i}" for i in range(40)))
    lines = str(error).splitlines()
    assert lines[0] == "command failed (exit 1): systemctl start x"
    assert lines[1:] == [f"line {i}" for i in range(20, 40)]
