"""The mirrors in the box run with the limits their units really give them, and hold a CI fleet's connections.

A unit without LimitNOFILE= gets a soft limit of 1,024 open files: about 500 connections to a
mirror's port. The runner is read as systemd started it (/proc/PID/limits), then a few hundred
idle clients are held open inside the box while a request goes through the same port, and a
real pull follows from the test's namespace.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from lab import images
from lab.machines import Machine

pytestmark = pytest.mark.box

IDLE_CLIENTS = 600  # 1,200 file descriptors in the runner: past a default unit's 1,024

# runs in the guest: hold IDLE_CLIENTS silent connections, ask /v2/ through a new one meanwhile
HOLD_AND_ASK = """
import socket, ssl, sys, urllib.error, urllib.request
host, port, scheme, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
held = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
try:
    urllib.request.urlopen(f"{scheme}://{host}:{port}/v2/", timeout=30,
                           context=ssl._create_unverified_context())
    print("answered 200")
except urllib.error.HTTPError as exc:
    print(f"answered {exc.code}")
for sock in held:
    sock.close()
"""


def test_each_mirror_runner_may_hold_tens_of_thousands_of_files(machine: Machine):
    for name in machine.mirrors:
        pid = machine.unit(name)["MainPID"]
        limits = machine.host.file(f"/proc/{pid}/limits").content_string
        soft, hard = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
        assert int(soft) >= 65536 and int(hard) >= 65536, f"{name}: {limits}"


def test_a_mirror_answers_while_hundreds_of_idle_clients_hold_its_port_and_pulls_after(
    machine: Machine, lab, tmp_path: Path
):
    listen = machine.config["listen"]
    host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
    scheme = "https" if machine.config.get("tls") else "http"
    argv = ["python3", "-c", HOLD_AND_ASK, host, str(machine.mirrors["team"]), scheme, str(IDLE_CLIENTS)]
    out = machine.ssh(shlex.join(argv), timeout=120)
    assert re.search(r"answered (200|401)", out), out
    pulled = images.pull(lab.image.ref(machine.mirror_host("team")), tmp_path / "pull", timeout=300)
    assert pulled.digest == lab.image.digest
    journal = machine.host.check_output("journalctl -b -o cat -u 'registry-cache-mirror@*'")
    assert "cannot take new connections" not in journal, journal[-2000:]
