"""box.run, the host's one process runner: streamed long commands, background processes, stop by pid.

stream: long host commands (vagrant up) show each line as it comes, with its time.
"""

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from box.run import CommandError, start, stop_pids, stream
from box.wait import wait_until

pytestmark = pytest.mark.integration

SCRIPT = (
    "import sys, time\n"
    "print('first', flush=True)\n"
    "print('oops', file=sys.stderr, flush=True)\n"
    "time.sleep(0.3)\n"
    "print('last', flush=True)\n"
    "sys.exit(3)\n"
)


def test_stream_echoes_each_line_with_its_seconds_and_returns_both_streams_in_order(capsys):
    result = stream([sys.executable, "-c", SCRIPT], timeout=30)

    assert result.returncode == 3
    assert result.stdout == "first\noops\nlast\n"
    echoed = capsys.readouterr().err.splitlines()
    assert [line.split("] ", 1)[1] for line in echoed] == ["first", "oops", "last"]
    seconds = [float(re.match(r"\[\s*([0-9.]+) s\]", line).group(1)) for line in echoed]
    assert seconds == sorted(seconds) and seconds[2] >= 0.3


def test_stream_kills_a_command_that_outlives_its_timeout_and_says_so():
    with pytest.raises(CommandError) as caught:
        stream([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
               timeout=1)
    assert caught.value.returncode == 124
    assert "timed out after 1 s" in str(caught.value) and "started" in str(caught.value)


def test_stream_names_a_missing_program():
    with pytest.raises(CommandError, match="no-such-program-here: not found"):
        stream(["no-such-program-here"], timeout=5)


# a child that ignores SIGTERM, and says so once it does
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)")


def _started(process, timeout=10.0):
    wait_until(lambda: "ready" in process.log_text(), f"{process.name} saying ready", timeout=timeout,
               interval=0.02, detail=process.log_tail, error=AssertionError)


def test_a_background_process_writes_its_output_to_its_log_and_reports_its_exit(tmp_path):
    process = start("echo", [sys.executable, "-c", "print('hello'); raise SystemExit(4)"],
                    tmp_path / "logs" / "echo.log")

    assert process.wait(timeout=30) == 4
    assert not process.alive()
    assert process.log_tail() == "hello"


def test_stop_ends_a_process_with_sigterm_at_once(tmp_path):
    process = start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                    tmp_path / "sleeper.log")
    began = time.monotonic()

    status = process.stop(timeout=10)

    assert status == -15
    assert time.monotonic() - began < 5


def test_stop_kills_a_process_that_ignores_sigterm_after_the_grace_period(tmp_path, caplog):
    process = start("stubborn", [sys.executable, "-c", STUBBORN], tmp_path / "stubborn.log")
    _started(process)

    with caplog.at_level(logging.WARNING, logger="box.run"):
        status = process.stop(timeout=0.5)

    assert status == -9
    assert "stubborn (pid" in caplog.text and "ignored SIGTERM" in caplog.text


def test_stop_pids_stops_processes_we_did_not_start_and_names_those_it_had_to_kill(tmp_path):
    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE, text=True)
    assert stubborn.stdout.readline() == "ready\n"

    killed = stop_pids([polite.pid, stubborn.pid], timeout=0.5)

    assert killed == [stubborn.pid]
    # both ended and were reaped (no zombie left under /proc)
    assert not Path(f"/proc/{polite.pid}").exists() and not Path(f"/proc/{stubborn.pid}").exists()


def test_wait_on_a_process_that_keeps_running_names_it(tmp_path):
    process = start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
                    tmp_path / "sleeper.log")
    try:
        with pytest.raises(TimeoutError, match=r"sleeper \(pid \d+\) still runs after 0.2 s"):
            process.wait(timeout=0.2)
    finally:
        process.stop()


def test_start_names_a_missing_program(tmp_path):
    with pytest.raises(CommandError, match="no-such-program-here: not found"):
        start("missing", ["no-such-program-here"], tmp_path / "missing.log")
