"""Reads a config file: picks its format, collects every problem, and records the files it read."""

from __future__ import annotations

import dataclasses
import logging
import os
from importlib import resources
from typing import Optional

from registry_cache.config.document import Document, os_reason
from registry_cache.config.fingerprint import digest
from registry_cache.config.model import EMBEDDED_DEFAULT, CacheConfig, ConfigError, Problem
from registry_cache.config.rules import Checker
from registry_cache.config.seed import SeedChecker, is_seed

log = logging.getLogger("registry_cache.config")


def default_config_text() -> str:
    """Return the embedded default config: one Docker Hub mirror on port 5000."""
    return resources.files("registry_cache").joinpath("default-config.yml").read_text("utf-8")


def load(path: Optional[str], *, check_storage: bool = True, default_if_missing: bool = False) -> CacheConfig:
    """Read and validate a config file; None, or a missing file when allowed: the embedded default.

    A file that does not exist is a ConfigError naming it, unless `default_if_missing`
    (the Vagrantfile's optional /vagrant/config.yml). Warnings are logged, and kept in the model.
    """
    if path is not None and not os.path.exists(path) and not default_if_missing:
        raise ConfigError([Problem(path, 1, "(file)", "does not exist; give the path of your "
                                   "config.yml (or --config-if-exists to fall back to the "
                                   "embedded default when it is missing)")])
    if path is None or not os.path.exists(path):
        return parse(default_config_text(), EMBEDDED_DEFAULT, base_dir="/", check_storage=False)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, 1, "(file)", f"cannot read the file: {os_reason(exc)}")]) from exc
    base_dir = os.path.dirname(os.path.abspath(path))
    config = parse(text, path, base_dir=base_dir, check_storage=check_storage)
    for warning in config.warnings:
        log.warning("%s", warning)
    return dataclasses.replace(config, inputs=((os.path.abspath(path), digest(raw)), *config.inputs))


def parse(text: str, filename: str, *, base_dir: str, check_storage: bool = True) -> CacheConfig:
    """Validate config text; raise ConfigError listing every problem, or return the model."""
    doc = Document(filename)
    data = doc.load(text)
    if doc.problems and data is None:
        raise ConfigError(doc.problems)
    if not isinstance(data, dict):
        what = "empty" if data is None else f"a {type(data).__name__}, not a mapping"
        doc.add((), f"the file is {what}; it needs a 'mirrors:' section (see examples/)")
        raise ConfigError(doc.problems)
    if is_seed(data):
        config = SeedChecker(doc, base_dir, check_storage).check(data)
    elif "version" in data and "mirrors" not in data:
        doc.add(("version",), "this is a plain Distribution registry config without a 'proxy:' "
                "section, so it would cache nothing; add 'proxy: {remoteurl: "
                "https://registry-1.docker.io}' to run it as one mirror (the seed format), or "
                "write a registry-cache config with 'mirrors:' (see examples/)")
        raise ConfigError(doc.problems)
    else:
        config = Checker(doc, base_dir, check_storage).check(data)
    if doc.problems or config is None:
        raise ConfigError(doc.problems)
    return dataclasses.replace(config, inputs=tuple(sorted(doc.inputs.items())),
                               warnings=tuple(doc.warnings))
