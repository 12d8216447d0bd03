"""lab.qemuvm.unpack_box reads the boxes the build really writes (Packer's own tar included)."""

import tarfile
from pathlib import Path

import pytest

from lab.qemuvm import unpack_box

pytestmark = pytest.mark.integration


def _gnu_header_with_times(name: str, data: bytes) -> bytes:
    """A GNU-format tar member with atime/ctime set, as Packer's vagrant post-processor writes it."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_764_350_000
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    # GNU header: atime at offset 345, ctime at 357 (12-byte octal fields), where ustar has its prefix
    header[345:357] = b"15302610461\0"
    header[357:369] = b"15302610461\0"
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    padding = b"\0" * (-len(data) % 512)
    return bytes(header) + data + padding


def test_unpack_box_keeps_member_names_of_gnu_headers_with_access_times(tmp_path: Path):
    box = tmp_path / "packer.box"
    box.write_bytes(_gnu_header_with_times("box.img", b"disk") +
                    _gnu_header_with_times("metadata.json", b"{}") + b"\0" * 1024)

    unpacked = unpack_box(box, tmp_path / "out")

    assert sorted(p.name for p in unpacked.iterdir()) == ["box.img", "metadata.json"]
    assert (unpacked / "box.img").read_bytes() == b"disk"
