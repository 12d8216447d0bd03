"""config.yml's max_size and warm keys: parsed into the model and the mirror record, checked as FILE:LINE."""

import pytest
from registry_cache import config, sizes
from registry_cache.render import render

from tests.unit.agent.configfiles import problems, write


def load(tmp_path, text):
    path = write(tmp_path, text)
    return config.load(path), path


@pytest.mark.parametrize("text, expected", [
    ("50GB", 50 * 10**9), ("1.5TB", 1_500_000_000_000), ("512MiB", 512 * 2**20),
    ("64 gib", 64 * 2**30), (10**9, 10**9), ("2G", 2 * 10**9),
])
def test_sizes_read_decimal_and_binary_units(text, expected):
    assert sizes.parse_size(text) == expected


@pytest.mark.parametrize("text", ["50XB", "lots", "-1GB", "100", "0.5MB", True])
def test_sizes_refuse_what_is_not_a_size_or_below_one_mib(text):
    with pytest.raises(ValueError):
        sizes.parse_size(text)


def test_max_size_and_warm_reach_the_mirror_record(tmp_path):
    cfg, _ = load(tmp_path, """\
        storage: data
        max_size: 100GB
        mirrors:
          hub:
            upstream: https://registry-1.docker.io
            port: 5000
            max_size: 40GB
            warm:
              - library/alpine:3.19
              - image: library/debian@sha256:%s
                platforms: [linux/amd64, linux/arm64/v8]
          ghcr:
            upstream: https://ghcr.io
            port: 5001
        """ % ("a" * 64))
    records = {name: m.record for name, m in render(cfg).items()}
    assert records["hub"].max_size == 40 * 10**9 and records["hub"].cache_max_size == 100 * 10**9
    assert records["hub"].warm == (
        {"image": "library/alpine:3.19", "platforms": None},
        {"image": "library/debian@sha256:" + "a" * 64, "platforms": ["linux/amd64", "linux/arm64/v8"]},
    )
    assert records["ghcr"].max_size is None and records["ghcr"].warm == ()
    assert '"max_size"' not in render(cfg)["ghcr"].record.text().replace("cache_max_size", "")


def test_a_record_without_gc_or_warm_settings_reads_as_before():
    cfg = config.parse("mirrors: {hub: {upstream: 'https://ghcr.io', port: 5000}}\n", "c.yml",
                       base_dir="/", check_storage=False)
    text = render(cfg)["hub"].record.text()
    assert "max_size" not in text and "warm" not in text


def test_bad_sizes_and_warm_references_are_reported_with_file_line_and_key_path(tmp_path):
    found = problems(tmp_path, """\
        max_size: lots
        mirrors:
          hub:
            upstream: https://registry-1.docker.io
            port: 5000
            max_size: 10XB
            warm:
              - https://registry-1.docker.io/library/alpine
              - image: Library/Alpine:latest
              - image: library/alpine
                platforms: [amd64]
              - 42
        """)
    assert found == [
        "1: max_size: 'lots' is not a size; write e.g. 50GB, 500MB or 1.5TB",
        "6: mirrors.hub.max_size: '10XB' is not a size; write e.g. 50GB, 500MB or 1.5TB",
        "8: mirrors.hub.warm.0: 'https://registry-1.docker.io/library/alpine' is a URL; give the image "
        "as the mirror serves it, e.g. library/alpine:3.19",
        "9: mirrors.hub.warm.1.image: 'Library/Alpine:latest' is not an image reference; write repo:tag "
        "or repo@sha256:<64 hex>, lower-case repository, e.g. library/alpine:3.19 (no registry host: "
        "the mirror is it)",
        "11: mirrors.hub.warm.2.platforms.0: 'amd64' is not a platform; write os/arch[/variant], "
        "e.g. linux/amd64 or linux/arm64/v8",
        "12: mirrors.hub.warm.3: must be a string or a mapping of keys, not 42",
    ]
