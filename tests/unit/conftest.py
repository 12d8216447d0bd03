"""Unit tests are pure: any attempt to start a subprocess fails the test."""

import subprocess

import pytest


@pytest.fixture(autouse=True)
def _no_subprocess(monkeypatch, request):
    if request.node.get_closest_marker("allow_subprocess"):
        return

    def refuse(*args, **kwargs):
        raise AssertionError(f"unit tests must not run subprocesses: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
