"""config.yml files for the validation tests: write one, or load one and get its problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from registry_cache import config


def write(tmp_path: Path, text: str, name: str = "config.yml") -> str:
    """Write `text` (dedented) to tmp_path/`name`; return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems `config.load` reports for `text`, each as `LINE: key.path: message`."""
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as caught:
        config.load(path)
    return [str(p).replace(path + ":", "") for p in caught.value.problems]
