"""box.run.stream: long host commands (vagrant up) show each line as it comes, with its time."""

import re
import sys

import pytest

from box.run import CommandError, stream

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
