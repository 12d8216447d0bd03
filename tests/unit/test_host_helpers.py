"""The host side's small helpers: the deadline loop, atomic writes, the size formatter."""

from __future__ import annotations

import os
import stat
import time

import pytest

from box.files import atomic_write, atomic_write_text
from box.sizes import format_size
from box.wait import WaitTimeout, wait_until

# --- wait_until ---------------------------------------------------------------------------


def test_wait_until_returns_the_first_true_answer_after_retrying():
    answers = iter([None, 0, "", "ready"])
    assert wait_until(lambda: next(answers), "the answer", timeout=5, interval=0.001) == "ready"


def test_wait_until_names_what_it_awaited_and_the_detail_on_timeout():
    with pytest.raises(WaitTimeout, match=r"^the mirror hub answering: not within 0.05 s; log: boom$"):
        wait_until(lambda: False, "the mirror hub answering", timeout=0.05, interval=0.01,
                   detail=lambda: "log: boom")


def test_wait_until_gives_up_near_its_deadline_and_tries_once_more_at_it():
    calls = []
    began = time.monotonic()
    with pytest.raises(WaitTimeout):
        wait_until(lambda: calls.append(time.monotonic()), "nothing", timeout=0.2, interval=10)
    took = time.monotonic() - began
    assert 0.2 <= took < 5  # the 10 s pause is cut to the time left
    assert len(calls) == 2 and calls[-1] - began >= 0.2


def test_wait_until_raises_the_callers_error_type():
    with pytest.raises(AssertionError, match="ssh: not within 0 s"):
        wait_until(lambda: False, "ssh", timeout=0, error=AssertionError)


def test_wait_until_stops_early_when_the_check_raises():
    def died() -> bool:
        raise RuntimeError("QEMU exited")

    began = time.monotonic()
    with pytest.raises(RuntimeError, match="QEMU exited"):
        wait_until(died, "ssh", timeout=30)
    assert time.monotonic() - began < 5


def test_wait_until_doubles_its_pause_up_to_max_interval(monkeypatch):
    pauses = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    answers = iter([False] * 6 + [True])
    wait_until(lambda: next(answers), "x", timeout=60, interval=0.01, max_interval=0.05)
    assert pauses == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05, 0.05])


# --- atomic writes ------------------------------------------------------------------------


def test_atomic_write_text_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "dist" / "build.json"
    target.parent.mkdir()
    target.write_text("old")
    atomic_write_text(target, '{"version": "1.0.0"}\n')
    assert target.read_text() == '{"version": "1.0.0"}\n'
    assert [p.name for p in target.parent.iterdir()] == ["build.json"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_a_failed_atomic_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "build.json"
    target.write_text("old")

    def half(out) -> None:
        out.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["build.json"]


def test_an_atomic_write_with_a_private_mode_is_never_readable_by_others(tmp_path):
    target = tmp_path / "config.yml"
    seen = []
    atomic_write(target, lambda out: seen.append(stat.S_IMODE(os.fstat(out.fileno()).st_mode)),
                 mode=0o600)
    assert seen == [0o600]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# --- sizes --------------------------------------------------------------------------------


def test_box_sizes_are_shown_in_decimal_megabytes():
    assert format_size(131_700_000) == "131.7 MB"
    assert format_size(0) == "0.0 MB"


def test_memory_is_shown_in_mebibytes_when_asked():
    assert format_size(37 * 1024 * 1024, "MiB") == "37.0 MiB"


def test_an_unknown_size_unit_is_refused():
    with pytest.raises(KeyError):
        format_size(1, "MiB ")
