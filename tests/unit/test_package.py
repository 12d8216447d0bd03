"""dist/: box names, checksums and build.json in the shape the test and publish tasks read."""

import datetime
import hashlib
import json
import tarfile

from box import package


def test_box_file_name_carries_name_version_and_provider():
    assert package.box_file_name("rc", "1.2.3", "libvirt") == "rc-1.2.3-libvirt.box"


def test_tool_versions_keep_only_the_version_number():
    assert package.tool_versions({
        "packer": "Packer v1.6.6",
        "qemu": "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)",
        "debootstrap": "debootstrap 1.0.128+nmu2+deb12u2",
    }) == {"packer": "1.6.6", "qemu": "7.2.22", "debootstrap": "1.0.128+nmu2+deb12u2"}


def test_sha256sums_is_in_sha256sum_check_format():
    boxes = [{"file": "a.box", "sha256": "ab" * 32}, {"file": "b.box", "sha256": "cd" * 32}]
    assert package.sha256sums(boxes) == f"{'ab' * 32}  a.box\n{'cd' * 32}  b.box\n"


def test_build_metadata_has_exactly_the_published_shape(tmp_path):
    box = tmp_path / "rc-1.0.0-libvirt.box"
    box.write_bytes(b"box")
    entry = package.box_entry("libvirt", box)
    meta = package.build_metadata(
        name="rc", version="1.0.0", description="d", git_revision="abc", git_dirty=False,
        tools={"packer": "1.6.6", "qemu": "7.2", "debootstrap": "1.0"}, boxes=[entry],
        created=datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    assert list(meta) == ["name", "version", "description", "git_revision", "git_dirty",
                          "created", "tools", "boxes"]
    assert meta["created"] == "2025-01-02T03:04:05+00:00"
    assert meta["boxes"] == [{"provider": "libvirt", "architecture": "amd64", "file": "rc-1.0.0-libvirt.box",
                              "sha256": hashlib.sha256(b"box").hexdigest(), "size": 3}]
    json.dumps(meta)


def test_write_box_is_a_gzipped_tar_with_files_at_its_root(tmp_path):
    (tmp_path / "metadata.json").write_text("{}")
    target = tmp_path / "x.box"
    package.write_box(target, {"metadata.json": tmp_path / "metadata.json"})
    with tarfile.open(target, "r:gz") as tar:
        assert tar.getnames() == ["metadata.json"]


def test_build_json_records_the_checksum_publish_verifies(tmp_path):
    from box.publish.dist import sha256_file

    box = tmp_path / "rc-1.0.0-libvirt.box"
    box.write_bytes(b"box" * 5_000_000)  # more than one read chunk
    assert package.box_entry("libvirt", box)["sha256"] == sha256_file(box)
    assert sha256_file(box) == hashlib.sha256(box.read_bytes()).hexdigest()
