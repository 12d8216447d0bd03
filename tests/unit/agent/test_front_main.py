"""`python -m registry_cache.front`, the manual front: its counters file and its credentials."""

from __future__ import annotations

import json
import threading

import pytest
from registry_cache.front import __main__ as entry


def test_the_stats_file_holds_the_counters_without_the_time_and_is_world_readable(tmp_path):
    path = tmp_path / "stats.json"

    entry.write_stats(str(path), {"upstream_requests": 3, "updated": 1.5})

    assert json.loads(path.read_text()) == {"upstream_requests": 3}
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_the_stats_file_is_rewritten_every_interval_until_the_front_stops(tmp_path, monkeypatch):
    monkeypatch.setattr(entry, "STATS_INTERVAL", 0.01)
    path = tmp_path / "stats.json"
    stop = threading.Event()
    calls = []

    def counters():
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        return {"blob_transfers": len(calls)}

    entry.keep_stats(counters, str(path), stop)

    assert json.loads(path.read_text()) == {"blob_transfers": 3}


def test_without_a_stats_file_the_front_just_waits_for_its_stop(tmp_path):
    stop = threading.Event()
    stop.set()

    entry.keep_stats(lambda: pytest.fail("no counters without a stats file"), None, stop)


def test_a_username_without_a_password_is_refused(monkeypatch):
    monkeypatch.delenv(entry.PASSWORD_ENV, raising=False)

    with pytest.raises(SystemExit, match="needs a password"):
        entry.read_credentials("robot", None)


def test_the_password_comes_from_its_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv(entry.PASSWORD_ENV, "from-env")

    assert entry.read_credentials("robot", str(secret)).password == "s3cret"
    assert entry.read_credentials("robot", None).password == "from-env"
    assert entry.read_credentials(None, None) is None
